"""The map between the free parameters' unconstrained vector and ``ParameterValues``.

One place for every constraint (STYLE: a bijector registry):

* a theta without bounds is scaled by its initial magnitude; a theta bounded below
  only is ``lower + exp(x)``, above only ``upper - exp(x)``, on both sides
  ``lower + (upper - lower) * sigmoid(x)``;
* each OMEGA block is a Cholesky factor with a log diagonal (so it stays positive
  definite); IOV variances are log-transformed, and sigmas too (``lower + exp(x)``
  with a lower bound, the sigmoid map with an upper one).

Fixed parameters are not in the vector; they keep the values of ``base`` (a
``ParameterValues`` passed at run time, so a new set of initial or fixed values does
not make JAX compile again: the transform itself depends only on the declarations).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .parameters import ParameterSpec, ParameterValues


class ParameterTransform:
    """Flatten the free parameters of a model to an unconstrained vector and back."""

    def __init__(self, spec: ParameterSpec):
        self.spec = spec
        self.theta_free = [i for i, t in enumerate(spec.thetas) if not t.fixed]
        # OMEGA: free elements of the Cholesky factor, block by block.
        n = spec.n_eta
        self.omega_blocks = []  # (start, size)
        i = 0
        while i < n:
            k = 1
            while i + k < n and spec.omega_structure[i, i + k]:
                k += 1
            self.omega_blocks.append((i, k))
            i += k
        self.omega_free_blocks = [(s, k) for s, k in self.omega_blocks if not spec.omega_fixed[s, s]]
        self.iov_free = not spec.iov_fixed and len(spec.iov_names) > 0
        self.sigma_free = [i for i, s in enumerate(spec.sigmas) if not s.fixed]
        self.names = self._names()

    # The names of the vector's entries (for messages and progress output).
    def _names(self):
        s = self.spec
        names = [s.theta_names[i] for i in self.theta_free]
        for start, k in self.omega_free_blocks:
            for r in range(k):
                for c in range(r + 1):
                    names.append(f"chol({s.eta_names[start + r]},{s.eta_names[start + c]})")
        if self.iov_free:
            names += list(s.iov_names)
        names += [s.sigma_names[i] for i in self.sigma_free]
        return names

    @property
    def size(self) -> int:
        return len(self.names)

    def prediction_entries(self) -> list[int]:
        """The vector's entries that can move predictions or residual variances: the
        free thetas and sigmas (OMEGA and the IOV variances enter only the eta prior)."""
        n_sigma = len(self.sigma_free)
        return list(range(len(self.theta_free))) + list(range(self.size - n_sigma, self.size))

    # ---- theta
    @staticmethod
    def _scale(base_theta):
        # Unbounded thetas move in units of their initial magnitude.
        return jnp.maximum(jnp.abs(base_theta), 1e-2)

    def _theta_to_x(self, i, v, scale):
        t = self.spec.thetas[i]
        lo, hi = t.lower, t.upper
        if math.isinf(lo) and math.isinf(hi):
            return v / scale
        if math.isinf(hi):
            return math.log(v - lo)
        if math.isinf(lo):
            return math.log(hi - v)
        p = (v - lo) / (hi - lo)
        return math.log(p / (1 - p))

    def _theta_from_x(self, i, x, scale):
        t = self.spec.thetas[i]
        lo, hi = t.lower, t.upper
        if math.isinf(lo) and math.isinf(hi):
            return x * scale
        if math.isinf(hi):
            return lo + jnp.exp(x)
        if math.isinf(lo):
            return hi - jnp.exp(x)
        return lo + (hi - lo) * jax.nn.sigmoid(x)

    # ---- sigma: above its lower bound (0 by default), below its upper bound if any
    def _sigma_to_x(self, i, v):
        s = self.spec.sigmas[i]
        if math.isinf(s.upper):
            return math.log(v - s.lower)
        p = (v - s.lower) / (s.upper - s.lower)
        return math.log(p / (1 - p))

    def _sigma_from_x(self, i, x):
        s = self.spec.sigmas[i]
        if math.isinf(s.upper):
            return s.lower + jnp.exp(x) if s.lower else jnp.exp(x)
        return s.lower + (s.upper - s.lower) * jax.nn.sigmoid(x)

    # ---- whole vector
    def to_vector(self, values: ParameterValues, base: ParameterValues) -> jax.Array:
        """Unconstrained vector of ``values`` (host-side, numpy)."""
        v = ParameterValues(*(np.asarray(a, dtype=float) for a in values))
        scale = np.asarray(self._scale(np.asarray(base.theta, dtype=float)))
        out = [self._theta_to_x(i, v.theta[i], scale[i]) for i in self.theta_free]
        for start, k in self.omega_free_blocks:
            L = np.linalg.cholesky(v.omega[start:start + k, start:start + k])
            for r in range(k):
                for c in range(r + 1):
                    out.append(math.log(L[r, c]) if r == c else L[r, c])
        if self.iov_free:
            out += list(0.5 * np.log(v.iov))
        for i in self.sigma_free:
            out.append(self._sigma_to_x(i, float(v.sigma[i])))
        return jnp.asarray(out, dtype=jnp.float64)

    def from_vector(self, x: jax.Array, base: ParameterValues) -> ParameterValues:
        """``ParameterValues`` of the vector ``x``; fixed parameters from ``base``."""
        b = base
        j = 0
        theta = jnp.asarray(b.theta)
        scale = self._scale(theta)
        for i in self.theta_free:
            theta = theta.at[i].set(self._theta_from_x(i, x[j], scale[i]))
            j += 1
        omega = jnp.asarray(b.omega)
        for start, k in self.omega_free_blocks:
            L = jnp.zeros((k, k))
            for r in range(k):
                for c in range(r + 1):
                    L = L.at[r, c].set(jnp.exp(x[j]) if r == c else x[j])
                    j += 1
            omega = omega.at[start:start + k, start:start + k].set(L @ L.T)
        iov = jnp.asarray(b.iov)
        if self.iov_free:
            iov = jnp.exp(2.0 * x[j:j + iov.shape[0]])
            j += iov.shape[0]
        sigma = jnp.asarray(b.sigma)
        for i in self.sigma_free:
            sigma = sigma.at[i].set(self._sigma_from_x(i, x[j]))
            j += 1
        return ParameterValues(theta=theta, omega=omega, iov=iov, sigma=sigma)

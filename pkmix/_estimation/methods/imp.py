"""Importance sampling (IMP, NONMEM's METHOD=IMP with EONLY=1 for ``evaluate``): each
subject's marginal likelihood by importance sampling around its eta mode.

The proposal is the mode's normal (or multivariate t) approximation: eta = eta^ + C'^-1 u,
with A = C C' = 1/2 d2l/deta2 at the mode (the exact Hessian, as Laplace) and u drawn
from the standard normal (t) density g. With the OFV convention of Laplace and AGQ
(``agq`` module):

    OFV_i = log|A| - 2 log (1/K) sum_k exp(-l(eta_k)/2) / ((2 pi)^(q/2) g(u_k))

(for the normal proposal exp(-(l(eta_k) - u_k'u_k)/2): AGQ's integrand at random points). The K draws are fixed:
a scrambled Sobol sequence (``scipy.stats.qmc.Sobol``, seeded) mapped through the
normal (and chi-square) quantiles on the host when the program is traced, the same for
every subject and every call, so the OFV is a smooth deterministic function of the
parameters (common random numbers: ``fit`` can differentiate it) and a given seed
reproduces it exactly.

The Monte Carlo standard error of the OFV (``mc_standard_errors``) is the delta
method's 2 sd(w)/(sqrt(K) mean(w)) per subject (w the importance weights), combined over
subjects in quadrature. It is the error of plain Monte Carlo draws; quasi-random draws
usually do better, so it is an upper estimate of the actual error.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from .agq import scaled_terms
from .base import AbstractMethod

PROPOSALS = ("normal", "t")


def sobol_draws(samples: int, q: int, seed: int, proposal: str, df: float):
    """[samples, q] standardised proposal draws and their log density under the
    proposal plus (q/2) log 2 pi [samples] (0 for a draw at the origin of the normal)."""
    from scipy.special import gammaln, ndtri
    from scipy.stats import chi2, qmc

    dims = q + (1 if proposal == "t" else 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Sobol's balance warning for sample sizes not a power of 2
        s = qmc.Sobol(d=dims, scramble=True, seed=seed).random(samples)
    s = np.clip(s, 1e-12, 1.0 - 1e-12)
    z = ndtri(s[:, :q])
    if proposal == "normal":
        return z, -0.5 * np.sum(z**2, axis=1)
    v = chi2.ppf(s[:, q], df)
    u = z / np.sqrt(v / df)[:, None]
    log_g = (gammaln((df + q) / 2) - gammaln(df / 2) - 0.5 * q * math.log(df * math.pi)
             - 0.5 * (df + q) * np.log1p(np.sum(u**2, axis=1) / df))
    return u, log_g + 0.5 * q * math.log(2 * math.pi)


class IMP(AbstractMethod):
    """``method="imp"`` (1024 Sobol draws a subject, normal proposal, seed 0) or
    ``IMP(samples=, seed=, proposal="normal"|"t", df=)``."""

    name = "imp"
    interaction = True
    supports_blq = True
    supports_likelihood = True

    def __init__(self, samples: int = 1024, seed: int = 0, proposal: str = "normal", df: float = 4.0):
        samples, proposal, df = int(samples), str(proposal).lower(), float(df)
        if samples < 2:
            raise ValueError(f"method 'imp' needs at least 2 samples a subject, got {samples}")
        if proposal not in PROPOSALS:
            raise ValueError(f"method 'imp': proposal must be one of {PROPOSALS}, got {proposal!r}")
        if not df > 0:
            raise ValueError(f"method 'imp': the t proposal's df must be positive, got {df}")
        self.samples, self.seed, self.proposal, self.df = samples, int(seed), proposal, df
        self._draws = {}

    def _key(self):
        return (self.samples, self.seed, self.proposal, self.df if self.proposal == "t" else None)

    def __repr__(self):  # part of the compiled programs' cache key
        extra = f", df={self.df:g}" if self.proposal == "t" else ""
        return f"IMP(samples={self.samples}, seed={self.seed}, proposal={self.proposal!r}{extra})"

    def __eq__(self, other):
        return type(other) is type(self) and other._key() == self._key()

    def __hash__(self):
        return hash((type(self).__name__,) + self._key())

    def draws(self, q: int):
        if q not in self._draws:
            self._draws[q] = sobol_draws(self.samples, q, self.seed, self.proposal, self.df)
        return self._draws[q]

    def pieces_suffice(self, opts):
        return False  # l at every draw and the exact eta-Hessian at the mode

    def log_weights(self, model, values, eta, subject, opts, omega_inv, logdet_omega):
        """(log|A|, the log importance weights [K] less 1/2 log|A|)."""
        u, log_g = self.draws(eta.shape[0])
        logdet_A, terms = scaled_terms(model, values, eta, subject, opts, omega_inv, logdet_omega, u)
        # terms = l_k - u_k'u_k; the weight's exponent is -l_k/2 - log g(u_k) - q/2 log 2pi.
        return logdet_A, -0.5 * terms - 0.5 * jnp.sum(jnp.asarray(u) ** 2, axis=1) - jnp.asarray(log_g)

    def subject_ofv(self, model, values, eta, subject, opts, omega_inv, logdet_omega):
        logdet_A, logw = self.log_weights(model, values, eta, subject, opts, omega_inv, logdet_omega)
        return logdet_A - 2.0 * (logsumexp(logw) - math.log(self.samples))


def mc_standard_errors(model, method: IMP, opts, values, etas, batch):
    """Each subject's Monte Carlo standard error of its OFV at the modes ``etas``:
    2 sd(w) / (sqrt(K) mean(w)) (the delta method on -2 log mean(w))."""
    from ..objective import omega_terms

    omega_inv, logdet = omega_terms(model, values, batch.n_occasions)

    def one(eta, subject):
        _, logw = method.log_weights(model, values, eta, subject, opts, omega_inv, logdet)
        r = jnp.exp(logw - logsumexp(logw) + math.log(method.samples))  # w_k / mean(w)
        return 2.0 * jnp.std(r, ddof=1) / math.sqrt(method.samples)

    return jax.vmap(one)(etas, batch)

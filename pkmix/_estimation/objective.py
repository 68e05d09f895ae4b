"""The population objective as a function of the unconstrained parameter vector.

``subject_ofvs`` is the one place that turns parameters and eta modes into each
subject's OFV contribution; the outer optimiser, the covariance step and ``evaluate``
all call it. Its gradient is exact: each mode enters through one differentiable Newton
step (``newton_correction``), which carries the implicit-function-theorem term
d eta^/d theta (Almquist et al. 2015). Derivatives are taken in forward mode only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .inner import InnerResult, newton_correction, solve_eta


def omega_terms(model, values, n_occasions):
    omega = model.omega_full(values, n_occasions)
    chol = jnp.linalg.cholesky(omega)
    eye = jnp.eye(omega.shape[0])
    omega_inv = jax.scipy.linalg.cho_solve((chol, True), eye)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    return omega_inv, logdet


def solve_modes(model, method, opts, values, etas0, batch, *, max_iter=100, tol=1e-8) -> InnerResult:
    """Every subject's eta mode (vmapped); FO's are zero by definition."""
    values = jax.lax.stop_gradient(values)
    if not method.estimates_eta:
        n = etas0.shape[0]
        zeros = jnp.zeros(n)
        return InnerResult(jnp.zeros_like(etas0), jnp.ones(n, bool), jnp.zeros(n, jnp.int32), zeros, zeros)
    omega_inv, logdet = omega_terms(model, values, batch.n_occasions)
    return jax.vmap(
        lambda e, s: solve_eta(model, values, e, s, opts, omega_inv, logdet, max_iter=max_iter, tol=tol)
    )(etas0, batch)


def subject_ofvs(model, method, opts, values, etas, batch, *, newton_steps=1):
    """Each subject's OFV at the given modes, differentiable in ``values``."""
    omega_inv, logdet = omega_terms(model, values, batch.n_occasions)

    def one(eta, subject):
        eta = jax.lax.stop_gradient(eta)
        if method.estimates_eta:
            eta = newton_correction(model, values, eta, subject, opts, omega_inv, logdet, steps=newton_steps)
        return method.subject_ofv(model, values, eta, subject, opts, omega_inv, logdet)

    return jax.vmap(one)(etas, batch)


def total_ofv(model, method, opts, transform, x, base, etas, batch, *, newton_steps=1):
    values = transform.from_vector(x, base)
    return jnp.sum(subject_ofvs(model, method, opts, values, etas, batch, newton_steps=newton_steps))


def value_and_gradient(model, method, opts, transform, x, base, etas, batch):
    """(OFV, dOFV/dx) at ``x`` for the given modes, by forward-mode differentiation."""

    def f(x):
        v = total_ofv(model, method, opts, transform, x, base, etas, batch)
        return v, v

    grad, value = jax.jacfwd(f, has_aux=True)(x)
    return value, grad

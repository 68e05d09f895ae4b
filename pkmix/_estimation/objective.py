"""The population objective as a function of the unconstrained parameter vector.

``subject_ofvs`` is the one place that turns parameters and eta modes into each
subject's OFV contribution; the outer optimiser, the covariance step and ``evaluate``
all call it. Its gradient is exact: each mode enters through ``inner.implicit_mode``,
whose derivative is the implicit-function-theorem term d eta^/d theta (Almquist et al.
2015). Derivatives are taken in forward mode only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._linalg import cho_solve, cholesky
from . import inner
from .inner import InnerResult, implicit_mode, solve_eta


def omega_terms(model, values, n_occasions):
    omega = model.omega_full(values, n_occasions)
    chol = cholesky(omega)
    omega_inv = cho_solve(chol, jnp.eye(omega.shape[0]))
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    return omega_inv, logdet


def solve_modes(model, method, opts, values, etas0, batch, *, max_iter=inner.MAX_ITER, tol=inner.TOL,
                etas_guess=None) -> InnerResult:
    """Every subject's eta mode (vmapped); FO's are zero by definition. With
    ``etas_guess`` each subject's first step heads for its guess when that descends
    (see ``inner.solve_eta``)."""
    values = jax.lax.stop_gradient(values)
    if not method.estimates_eta:
        n = etas0.shape[0]
        zeros = jnp.zeros(n)
        return InnerResult(jnp.zeros_like(etas0), jnp.ones(n, bool), jnp.zeros(n, jnp.int32), zeros, zeros)
    omega_inv, logdet = omega_terms(model, values, batch.n_occasions)

    def one(eta0, subject, guess=None):
        return solve_eta(model, values, eta0, subject, opts, omega_inv, logdet, max_iter=max_iter, tol=tol,
                         eta_guess=guess)

    if etas_guess is None:
        return jax.vmap(one)(etas0, batch)
    return jax.vmap(one)(etas0, batch, etas_guess)


def _ofvs_and_modes(model, method, opts, values, etas, batch):
    """Each subject's OFV and the modes, both as functions of ``values`` (the modes
    through the implicit-function theorem, constant for FO)."""
    omega_inv, logdet = omega_terms(model, values, batch.n_occasions)

    def one(eta, subject):
        if method.estimates_eta:
            eta = implicit_mode(model, values, eta, subject, opts)
        else:
            eta = jax.lax.stop_gradient(eta)
        return method.subject_ofv(model, values, eta, subject, opts, omega_inv, logdet), eta

    return jax.vmap(one)(etas, batch)


def subject_ofvs(model, method, opts, values, etas, batch):
    """Each subject's OFV at the given (converged) modes, differentiable in ``values``:
    the modes follow the parameters through the implicit-function theorem."""
    return _ofvs_and_modes(model, method, opts, values, etas, batch)[0]


def subject_ofvs_and_jacobian(model, method, opts, transform, x, base, etas, batch):
    """Each subject's OFV, its gradient with respect to ``x`` and the modes' derivative
    d eta^/dx ([N], [N, p], [N, q, p]), by forward-mode differentiation (the cost of the
    Jacobian equals that of the total's gradient in forward mode; the covariance step's
    S matrix needs the rows). The modes' derivative comes with it at no extra cost: the
    optimiser uses it to predict the modes at its next trial point."""

    def f(x):
        ofvs, modes = _ofvs_and_modes(model, method, opts, transform.from_vector(x, base), etas, batch)
        return (ofvs, modes), ofvs

    (jac, eta_slope), ofvs = jax.jacfwd(f, has_aux=True)(x)
    return ofvs, jac, eta_slope


def total_ofv(model, method, opts, transform, x, base, etas, batch):
    values = transform.from_vector(x, base)
    return jnp.sum(subject_ofvs(model, method, opts, values, etas, batch))

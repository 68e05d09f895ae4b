"""The population objective as a function of the unconstrained parameter vector.

``subject_ofvs`` is the one place that turns parameters and eta modes into each
subject's OFV contribution (``evaluate`` and the diagnostics call it);
``subject_ofvs_and_jacobian`` adds the exact gradient, which the optimiser and the
covariance step use. The gradient carries the implicit-function-theorem term
d eta^/d theta (Almquist et al. 2015): for FO, FOCE and FOCE-I (without M3) it is built
from one second-order forward pass over the predictions at the modes; for Laplace and
M3, whose OFV needs the exact eta-Hessian, by differentiating ``subject_ofvs``, where
each mode enters through ``inner.implicit_mode``. Derivatives of model code (closed
forms, ODE solves) are taken in forward mode only; reverse mode is used once, on the
Taylor model's small algebra, which holds no model code.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._linalg import cho_solve, cholesky, spd_solve
from . import inner
from .inner import InnerResult, implicit_mode, polish, solve_eta
from .likelihood import Pieces, gaussian_term_derivatives, predictions


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
    d eta^/dx ([N], [N, p], [N, q, p]), in forward mode (the cost of the Jacobian equals
    that of the total's gradient in forward mode; the covariance step's S matrix needs
    the rows). The modes' derivative comes with it at no extra cost: the optimiser uses
    it to predict the modes at its next trial point."""
    if method.pieces_suffice(opts):
        return _jacobian_from_second_order_pieces(model, method, opts, transform, x, base, etas, batch)

    def f(x):
        ofvs, modes = _ofvs_and_modes(model, method, opts, transform.from_vector(x, base), etas, batch)
        return (ofvs, modes), ofvs

    (jac, eta_slope), ofvs = jax.jacfwd(f, has_aux=True)(x)
    return ofvs, jac, eta_slope


def _jacobian_from_second_order_pieces(model, method, opts, transform, x, base, etas, batch):
    """``subject_ofvs_and_jacobian`` for methods whose OFV is a function of the
    predictions and their first eta-derivatives (``method.ofv_from_pieces``).

    The OFV's exact gradient needs, at the mode, the predictions' second derivatives in
    eta (the exact eta-Hessian of l, for the implicit-function term d eta^/dx) and their
    mixed derivatives in eta and x (how the eta-gradient of l and the slopes in the OFV
    move with x). Differentiating the OFV through ``inner.implicit_mode`` traces these
    in three separate passes over the model; here one second-order forward pass (the
    predictions' x- and eta-directions, differentiated again in eta) gives them all, and
    the rest works on the exact second-order Taylor model of the predictions around
    (mode, x), which involves no model code. The fit program is about half the size
    (theophylline: 16,721 -> 9,466 lines of StableHLO) and the numbers are the same: the
    Taylor model is exact in every derivative used at the mode, and the OFV is taken at
    the polished mode (``inner.polish``), a step of at most ``inner.POLISH_MAX_STEP`` (at
    a converged mode about 1e-7) whose third-order terms it leaves out.
    """
    n_x = x.shape[0]
    values, push_values = jax.linearize(lambda z: transform.from_vector(z, base), x)
    value_dirs = jax.vmap(push_values)(jnp.eye(n_x))  # d values/dx, one leading row per x
    (omega_inv, logdet), (d_omega_inv, d_logdet) = jax.vmap(  # [p, q, q] and [p]
        lambda dv: jax.jvp(lambda v: omega_terms(model, v, batch.n_occasions), (values,), (dv,)),
        out_axes=(None, 0))(value_dirs)

    # Only the thetas and sigmas move the predictions (OMEGA and the IOV variances enter
    # the eta prior alone): their directions are pushed through the model, the others'
    # slopes are zero (1-cmt oral: 7 directions instead of 10).
    moving = np.asarray(transform.prediction_entries(), dtype=int)
    n_moving = len(moving)

    def one(eta, subject):
        n_eta = eta.shape[0]
        # x-directions and eta-directions of the predictions, pushed forward in one batch.
        dirs_values = jax.tree_util.tree_map(
            lambda d: jnp.concatenate([jnp.zeros((n_eta,) + d.shape[1:], d.dtype), d[moving]]), value_dirs)
        dirs_eta = jnp.concatenate([jnp.eye(n_eta), jnp.zeros((n_moving, n_eta))])

        def compared(v, e):  # [2, records]: the compared-scale prediction and its variance
            _, ft, var = predictions(model, v, e, subject, opts)
            return jnp.stack([ft, var])

        def slopes(e):
            y, dy = jax.vmap(lambda dv, de: jax.jvp(compared, (values, e), (dv, de)), out_axes=(None, 0))(
                dirs_values, dirs_eta)
            return dy, (dy, y)

        # slope: [q + m, 2, records]; curvature: its eta-derivative [q + m, 2, records, q].
        curvature, (slope, y) = jax.jacfwd(slopes, has_aux=True)(eta)
        A, B = slope[:n_eta], curvature[:n_eta]
        C = jnp.zeros((n_x,) + slope.shape[1:]).at[moving].set(slope[n_eta:])  # [p, 2, records]
        D = jnp.zeros((n_x,) + curvature.shape[1:]).at[moving].set(curvature[n_eta:])

        def local(delta, s):
            """Pieces and OMEGA terms at (eta + delta, x + s), to second order."""
            y_at = (y + jnp.einsum("jcr,j->cr", A, delta) + jnp.einsum("kcr,k->cr", C, s)
                    + 0.5 * jnp.einsum("jcrk,j,k->cr", B, delta, delta) + jnp.einsum("kcrj,k,j->cr", D, s, delta))
            a_at = A + jnp.einsum("jcrk,k->jcr", B, delta) + jnp.einsum("kcrj,k->jcr", D, s)  # [q, 2, records]
            p = Pieces(f=None, ft=y_at[0], var=y_at[1], a=a_at[:, 0].T, dvar=a_at[:, 1].T)
            return p, omega_inv + jnp.einsum("k,kij->ij", s, d_omega_inv), logdet + s @ d_logdet

        zero_eta, zero_x = jnp.zeros(n_eta), jnp.zeros(n_x)
        if method.estimates_eta:
            # l's eta-gradient g, eta-Hessian H and mixed derivative dg = d g/dx at the
            # mode, by the chain rule through each record's term (its derivatives in the
            # compared prediction and variance) and the prior term (eta' OMEGA^-1 eta):
            # the same numbers as differentiating l of the Taylor model twice, in a few
            # contractions instead of a second-order pass over it.
            first, second = gaussian_term_derivatives(model, subject, y[0], y[1])
            g = jnp.einsum("cr,jcr->j", first, A) + 2.0 * omega_inv @ eta
            H = (jnp.einsum("cr,jcri->ji", first, B) + jnp.einsum("jcr,cdr,idr->ji", A, second, A)
                 + 2.0 * omega_inv)
            dg = (jnp.einsum("cr,kcrj->jk", first, D) + jnp.einsum("jcr,cdr,kdr->jk", A, second, C)
                  + 2.0 * jnp.einsum("kij,j->ik", d_omega_inv, eta))
            mode_slope = -spd_solve(H, dg)  # d eta^/dx [q, p]
            offset = polish(eta, g, H) - eta
        else:  # FO: the modes are zero whatever x
            mode_slope, offset = jnp.zeros((n_eta, n_x)), zero_eta

        def ofv_along(s):
            delta = offset + mode_slope @ s
            p, o_inv, o_logdet = local(delta, s)
            ofv = method.ofv_from_pieces(model, p, eta + delta, subject, opts, o_inv, o_logdet)
            return ofv, ofv

        # Reverse mode: a scalar of p inputs made of a few contractions and small
        # factorisations (no model code), cheaper than p forward tangents (1-cmt, 100
        # subjects: the whole jacobian 2.96 -> 2.50 ms).
        grad, ofv = jax.grad(ofv_along, has_aux=True)(zero_x)
        return ofv, grad, mode_slope

    return jax.vmap(one)(etas, batch)


class Evaluation(NamedTuple):
    """What ``gradient_program`` returns for the point ``x``."""

    ofvs: jax.Array  # each subject's OFV [N]
    jac: jax.Array  # their exact gradients [N, p]
    etas: jax.Array  # the modes [N, q]
    converged: jax.Array  # the modes' convergence flags [N]
    eta_slope: jax.Array  # d eta^/dx [N, q, p]


def gradient_program(model, method, opts, transform, inner_max_iter, inner_tol, x, base, etas, batch,
                     etas_guess=None) -> Evaluation:
    """Modes re-solved at ``x`` (warm from ``etas``, heading first for ``etas_guess``
    where that descends: see ``inner.solve_eta``), each subject's OFV, its exact gradient, the modes,
    their convergence flags and derivatives: what one evaluation of the fit's loop
    (``engine.fit_program``) needs, at a trial point or a covariance point."""
    modes = solve_modes(model, method, opts, transform.from_vector(x, base), etas, batch,
                        max_iter=inner_max_iter, tol=inner_tol, etas_guess=etas_guess)
    ofvs, jac, eta_slope = subject_ofvs_and_jacobian(model, method, opts, transform, x, base, modes.eta, batch)
    return Evaluation(ofvs, jac, modes.eta, modes.converged, eta_slope)

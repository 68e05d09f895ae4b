"""The inner problem: each subject's eta mode.

A Newton iteration on the Gauss-Newton matrix (positive definite: the exact eta-Hessian
is indefinite far from the mode) plus a secant correction of the part Gauss-Newton
leaves out, with a backtracking line search, stopped on the Newton decrement,
warm-started from the previous outer iteration's modes (or their first-order
prediction), bounded in evaluations, and reporting a convergence flag per subject.
Written for one subject and vmapped. For a model whose observations follow a likelihood
(non-Gaussian data) the matrix is a' H a + 2 Omega^-1, H the Hessian of the records' -2 log
p in the predictions (``likelihood.gradient_and_gauss_newton``): the exact eta-Hessian of
a GLMM, positive semi-definite for the built-in densities.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .._linalg import spd_inv, spd_solve
from .likelihood import Pieces, gradient_and_gauss_newton, m2ll, pieces


class InnerResult(NamedTuple):
    eta: jax.Array  # [q]
    converged: jax.Array  # bool
    iterations: jax.Array  # int: evaluations of l and its derivatives
    m2ll: jax.Array  # l at the mode
    grad_norm: jax.Array  # the Newton decrement g' M^-1 g at eta
    # The predictions with their eta-derivatives and the Gauss-Newton matrix at ``eta``:
    # callers that need them at the mode (pkmix.dosing's MAP) take them from here
    # instead of compiling the model again.
    pieces: Pieces | None = None
    gauss_newton: jax.Array | None = None


# Backtracking: a rejected step is halved while it is at least 1/2, then cut 16-fold,
# down to SMALLEST_STEP (the sequence 1, 1/2, 1/4, 1/64, 1/1024, ...).
SMALLEST_STEP = 1.0 / 65536
# Expansion: after a step along which l fell almost linearly (at least LINEAR_FRACTION
# of the decrease its slope promised; a well-modelled Newton step gets about half), the
# next step starts twice as long (at least the full Newton step), up to LONGEST_STEP
# times the Newton step. Where a proportional error's prediction runs decades above the
# levels, l grows only like log f and neither matrix sees it: Newton steps of 0.005 in
# eta_cl, a subject simulated from the model needing 219 evaluations (the bound is 200)
# and the replicate's fit failing at its initial estimates (33 with the expansion).
LINEAR_FRACTION = 0.9
LONGEST_STEP = 1024.0
# The corrected step is taken only where it is at most this many times as long as the
# Gauss-Newton step: a secant estimate S that leaves M + S positive definite but nearly
# singular gave a step of length ~1e7 (a subject of a simulated replicate at the true
# parameter values; every trial along it failed and the solve stalled, so the
# replicate's fit failed at its initial estimates: 2 of 10,000 replicates).
CORRECTED_REACH = 10.0


# Newton on the Gauss-Newton matrix alone needed over 100 steps from eta = 0 for a
# subject far from typical (proportional error, levels falling five decades: 113 and
# 144 steps seen; 30 with the secant correction and the step expansion), because the
# expected information then misstates the curvature. Converged subjects stop early and
# later solves start from the previous modes, but under vmap every subject waits for
# the slowest, so the bound is not larger.
MAX_ITER = 200  # evaluations (each: predictions with their eta-derivatives)
TOL = 1e-12  # Newton decrement of l (OFV units)
POLISH_MAX_STEP = 1e-3  # the largest final Newton step ``polish`` takes


class _State(NamedTuple):
    eta: jax.Array  # the accepted point
    l: jax.Array  # l there (inf before the first evaluation)
    g: jax.Array  # grad_eta l there
    M: jax.Array  # the Gauss-Newton matrix there
    S: jax.Array  # the secant estimate of (exact Hessian - Gauss-Newton matrix)
    pieces: Pieces  # the predictions and their derivatives there
    decrement: jax.Array  # the Newton decrement g' M^-1 g there
    direction: jax.Array
    t: jax.Array  # the pending trial is eta + t * direction
    it: jax.Array  # evaluations
    done: jax.Array
    stalled: jax.Array


def solve_eta(model, values, eta0, subject, opts, omega_inv, logdet_omega, *, max_iter=MAX_ITER, tol=TOL,
              eta_guess=None) -> InnerResult:
    """The mode of l(eta), from ``eta0``.

    One evaluation per pass of the loop, always with derivatives (the model appears once
    in the compiled loop): the trial point's l, gradient and Gauss-Newton matrix. An
    accepted trial (Armijo's condition) gives the next Newton direction at once; a
    rejected one only shortens the step. With ``eta_guess`` (the optimiser's first-order
    prediction of the mode at a new point) the first direction is the one from ``eta0``
    to the guess when that descends, so the guess is taken when l is lower there and a
    long outer step that carried the prediction far off costs a short backtrack.
    """

    def evaluate(eta):
        p = pieces(model, values, eta, subject, opts)
        l = m2ll(model, values, eta, subject, opts, omega_inv, logdet_omega, p)
        g, M = gradient_and_gauss_newton(model, values, eta, subject, opts, omega_inv, p)
        return jnp.where(jnp.isfinite(l), l, jnp.inf), g, M, p

    def cond(s):
        return ~s.done

    def body(s):
        trial = s.eta + s.t * s.direction
        l, g, M, p = evaluate(trial)
        first = s.it == 0
        accept = first | (l <= s.l + 1e-4 * s.t * (s.g @ s.direction))

        # The part of the Hessian Gauss-Newton leaves out (the residuals times the
        # predictions' second derivatives) by a symmetric rank-one secant update on each
        # accepted step (a structured quasi-Newton method, as NL2SOL's): Gauss-Newton
        # alone converges only linearly where that part is large (a subject far from
        # typical: 62 steps seen where GN^-1 H had an eigenvalue of 1.86), and under
        # vmap every subject waits for the slowest.
        step_taken = trial - s.eta
        r = (g - s.g) - M @ step_taken - s.S @ step_taken
        rs = r @ step_taken
        update = ~first & accept & (jnp.abs(rs) > 1e-8 * jnp.linalg.norm(r) * jnp.linalg.norm(step_taken))
        S = jnp.where(update, s.S + jnp.outer(r, r) / jnp.where(update, rs, 1.0), s.S)

        # At an accepted point: the Newton direction on the corrected matrix where that
        # is positive definite (else on the Gauss-Newton matrix alone) and the Newton
        # decrement g' H^-1 g (about twice the distance of l from its minimum, in OFV
        # units, whatever the scale of the etas, unlike |g|).
        corrected = -spd_solve(M + S, g)
        gauss_newton = -spd_solve(M, g)
        gauss_newton = jnp.where(jnp.all(jnp.isfinite(gauss_newton)), gauss_newton, -g)
        trusted = (jnp.all(jnp.isfinite(corrected)) & (g @ corrected < 0)
                   & (jnp.linalg.norm(corrected) <= CORRECTED_REACH * jnp.linalg.norm(gauss_newton)))
        newton = jnp.where(trusted, corrected, gauss_newton)
        decrement = jnp.abs(g @ newton)
        converged = decrement < tol
        direction = newton
        if eta_guess is not None:
            to_guess = eta_guess - trial
            direction = jnp.where(first & (g @ to_guess < 0), to_guess, newton)
        tiny = ~first & (jnp.max(jnp.abs(s.t * s.direction), initial=0.0) < 1e-12)

        shorter = jnp.where(s.t >= 0.5, 0.5 * s.t, s.t / 16.0)
        nearly_linear = ~first & (s.l - l >= LINEAR_FRACTION * s.t * -(s.g @ s.direction))
        next_t = jnp.where(nearly_linear, jnp.clip(2.0 * s.t, 1.0, LONGEST_STEP), 1.0)
        stalled = jnp.where(accept, tiny & ~converged, s.t <= SMALLEST_STEP)
        keep = lambda new, old: jnp.where(accept, new, old)  # noqa: E731
        return _State(
            eta=keep(trial, s.eta), l=keep(l, s.l), g=keep(g, s.g), M=keep(M, s.M), S=S,
            pieces=jax.tree_util.tree_map(keep, p, s.pieces), decrement=keep(decrement, s.decrement),
            direction=keep(direction, s.direction), t=keep(next_t, shorter), it=s.it + 1,
            done=(accept & converged) | stalled | (s.it + 1 >= max_iter), stalled=stalled)

    r, q = subject.obs_mask.shape[0], eta0.shape[0]
    zeros = lambda *shape: jnp.zeros(shape, eta0.dtype)  # noqa: E731
    init = _State(eta=eta0, l=jnp.asarray(jnp.inf, eta0.dtype), g=zeros(q), M=zeros(q, q), S=zeros(q, q),
                  pieces=Pieces(zeros(r), zeros(r), zeros(r), zeros(r, q), zeros(r, q)),
                  decrement=jnp.asarray(jnp.inf, eta0.dtype), direction=zeros(q), t=jnp.zeros((), eta0.dtype),
                  it=jnp.zeros((), jnp.int32), done=jnp.zeros((), bool), stalled=jnp.zeros((), bool))
    s = lax.while_loop(cond, body, init)
    # A stalled line search close to the mode (rounding noise in l) still counts as
    # converged when the decrement is negligible in OFV units.
    converged = (s.decrement < tol) | (s.stalled & (s.decrement < 1e-6))
    return InnerResult(s.eta, converged, s.it, s.l, s.decrement, s.pieces, s.M)


def polish(eta, g, H):
    """``eta`` after one exact Newton step (g, H: the gradient and exact Hessian of l).

    From a converged mode the error falls from delta to O(delta^2), which matters because
    FOCE's and FOCE-I's OFV is not stationary in eta (its log-determinant term), so a
    mode error shows in the OFV to first order and becomes noise the outer line search
    cannot see through. Skipped when the step is not small (a mode that did not converge).
    """
    step = -spd_solve(H, g)
    small = jnp.all(jnp.isfinite(step)) & (jnp.max(jnp.abs(step), initial=0.0) < POLISH_MAX_STEP)
    return jnp.where(small, eta + step, eta)


def implicit_mode(model, values, eta, subject, opts):
    """The eta mode as a function of the parameters, for differentiation.

    Returns ``eta`` (a converged mode) after one exact Newton step; its derivative with
    respect to the parameters is the implicit-function-theorem term
    d eta^ = -[d2l/deta2]^-1 (d(grad_eta l)/d theta) d theta (Almquist et al. 2015), with
    the exact eta-Hessian. Written as a custom JVP so the Hessian is computed once, not
    differentiated again: forward-mode gradients of the OFV need only second
    derivatives of the predictions.
    """

    def grad_l(v, e):
        # OMEGA^-1 is recomputed from v: the prior term 2 OMEGA^-1 eta depends on it.
        v_omega_inv = spd_inv(model.omega_full(v, subject.n_occasions))
        p = pieces(model, v, e, subject, opts)
        return gradient_and_gauss_newton(model, v, e, subject, opts, v_omega_inv, p)[0]

    @jax.custom_jvp
    def mode(values, eta):
        # The gradient comes out of the Hessian's pass (one trace of the model, not two).
        H, g = jax.jacfwd(lambda z: (grad_l(values, z),) * 2, has_aux=True)(eta)
        return polish(eta, g, H)

    @mode.defjvp
    def mode_jvp(primals, tangents):
        v, e = primals
        dv, _ = tangents
        H = jax.jacfwd(lambda z: grad_l(v, z))(e)
        g, dg = jax.jvp(lambda w: grad_l(w, e), (v,), (dv,))
        return polish(e, g, H), -spd_solve(H, dg)

    return mode(values, jax.lax.stop_gradient(eta))

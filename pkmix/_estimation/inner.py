"""The inner problem: each subject's eta mode.

A Newton iteration on the Gauss-Newton matrix (positive definite: the exact eta-Hessian
is indefinite far from the mode) with a backtracking line search, stopped on a
gradient tolerance, warm-started from the previous outer iteration's modes, bounded in
iterations, and reporting a convergence flag per subject. Written for one subject and
vmapped.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._linalg import spd_inv, spd_solve
from .likelihood import gradient_and_gauss_newton, m2ll, pieces, pieces_value


class InnerResult(NamedTuple):
    eta: jax.Array  # [q]
    converged: jax.Array  # bool
    iterations: jax.Array  # int
    m2ll: jax.Array  # l at the mode
    grad_norm: jax.Array  # the Newton decrement g' M^-1 g at the last evaluation


# Step lengths tried along each Newton direction, longest first.
STEP_CANDIDATES = np.array([1.0, 0.5, 0.25, 0.0625, 1.0 / 256, 1.0 / 4096, 1.0 / 65536])


# Newton on the Gauss-Newton matrix can need over 100 steps from eta = 0 for a subject
# far from typical (proportional error, levels falling five decades: 113 and 144 steps
# seen), because the expected information then overstates the curvature. Converged
# subjects stop early and later solves start from the previous modes, but under vmap
# every subject waits for the slowest, so the bound is not larger.
MAX_ITER = 200
TOL = 1e-12  # Newton decrement of l (OFV units)
POLISH_MAX_STEP = 1e-3  # the largest final Newton step ``implicit_mode`` takes


def solve_eta(model, values, eta0, subject, opts, omega_inv, logdet_omega, *, max_iter=MAX_ITER, tol=TOL,
              eta_guess=None) -> InnerResult:
    """The mode of l(eta) from ``eta0``, or from ``eta_guess`` when l is lower there
    (the optimiser's first-order prediction of the mode at a new point: closer than the
    previous mode after small steps, but a long step can carry it far off)."""
    def evaluate(eta):
        p = pieces(model, values, eta, subject, opts)
        l = m2ll(model, values, eta, subject, opts, omega_inv, logdet_omega, p)
        g, M = gradient_and_gauss_newton(model, values, eta, subject, opts, omega_inv, p)
        return l, g, M

    def value(eta):
        l = m2ll(model, values, eta, subject, opts, omega_inv, logdet_omega,
                 pieces_value(model, values, eta, subject, opts))
        return jnp.where(jnp.isfinite(l), l, jnp.inf)

    class State(NamedTuple):
        eta: jax.Array
        l: jax.Array
        gnorm: jax.Array
        it: jax.Array
        done: jax.Array
        stalled: jax.Array

    # Each pass evaluates the derivatives at the current eta (one call site, so the
    # differentiated model is compiled once), stops there if converged, else takes a
    # Newton step with backtracking.
    def cond(s):
        return ~s.done

    def body(s):
        l, g, M = evaluate(s.eta)
        direction = -spd_solve(M, g)
        direction = jnp.where(jnp.all(jnp.isfinite(direction)), direction, -g)
        slope = g @ direction
        # The Newton decrement g' M^-1 g (about twice the distance of l from its minimum,
        # in OFV units) does not depend on how the etas are scaled, unlike |g|.
        gnorm = jnp.abs(slope)
        converged = gnorm < tol

        # Backtracking without a nested loop: the candidate step lengths are evaluated
        # together (one vmapped prediction) and the longest that satisfies Armijo's
        # condition is taken. Gauss-Newton steps nearly always take the first.
        steps = jnp.asarray(STEP_CANDIDATES)
        trial = jax.vmap(lambda t: value(s.eta + t * direction))(steps)
        ok = trial <= l + 1e-4 * steps * slope
        first_ok = jnp.argmax(ok)
        t = jnp.where(jnp.any(ok), steps[first_ok], 0.0)
        l_new = jnp.where(jnp.any(ok), trial[first_ok], jnp.inf)
        accepted = (l_new <= l + 1e-4 * t * slope) & ~converged
        step = jnp.where(accepted, t * direction, 0.0)
        stalled = ~converged & (~accepted | (jnp.max(jnp.abs(step), initial=0.0) < 1e-12))
        out_of_iterations = s.it + 1 >= max_iter
        return State(s.eta + step, jnp.where(accepted, l_new, l), gnorm, s.it + 1,
                     converged | stalled | out_of_iterations, stalled & ~converged)

    if eta_guess is not None:
        eta0 = jnp.where(value(eta_guess) < value(eta0), eta_guess, eta0)
    init = State(eta0, jnp.inf, jnp.inf, jnp.zeros((), jnp.int32), jnp.zeros((), bool), jnp.zeros((), bool))
    s = lax.while_loop(cond, body, init)
    # ``gnorm`` (the Newton decrement) is the last evaluated point's; after a final
    # accepted step (iteration limit) it is the previous point's, which is conservative.
    # A stalled line search close to the mode (rounding noise in l) still counts as
    # converged when the decrement is negligible in OFV units.
    converged = (s.gnorm < tol) | (s.stalled & (s.gnorm < 1e-6))
    return InnerResult(s.eta, converged, s.it, s.l, s.gnorm)


def implicit_mode(model, values, eta, subject, opts):
    """The eta mode as a function of the parameters, for differentiation.

    Returns ``eta`` (a converged mode) after one exact Newton step; its derivative with respect to the
    parameters is the implicit-function-theorem term
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

    def polished(e, g, H):
        # One exact Newton step from the converged mode: its error falls from delta to
        # O(delta^2), which matters because FOCE's and FOCE-I's OFV is not stationary in
        # eta (its log-determinant term), so a mode error shows in the OFV to first
        # order and becomes noise the outer line search cannot see through. Skipped
        # when the step is not small (a mode that did not converge).
        step = -spd_solve(H, g)
        small = jnp.all(jnp.isfinite(step)) & (jnp.max(jnp.abs(step), initial=0.0) < POLISH_MAX_STEP)
        return jnp.where(small, e + step, e)

    @jax.custom_jvp
    def mode(values, eta):
        H = jax.jacfwd(lambda z: grad_l(values, z))(eta)
        return polished(eta, grad_l(values, eta), H)

    @mode.defjvp
    def mode_jvp(primals, tangents):
        v, e = primals
        dv, _ = tangents
        H = jax.jacfwd(lambda z: grad_l(v, z))(e)
        g, dg = jax.jvp(lambda w: grad_l(w, e), (v,), (dv,))
        return polished(e, g, H), -spd_solve(H, dg)

    return mode(values, jax.lax.stop_gradient(eta))

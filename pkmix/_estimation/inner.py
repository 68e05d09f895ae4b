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
from jax import lax

from .likelihood import gradient_and_gauss_newton, m2ll, pieces, pieces_value


class InnerResult(NamedTuple):
    eta: jax.Array  # [q]
    converged: jax.Array  # bool
    iterations: jax.Array  # int
    m2ll: jax.Array  # l at the mode
    grad_norm: jax.Array


def solve_eta(model, values, eta0, subject, opts, omega_inv, logdet_omega, *, max_iter=100, tol=1e-8,
              max_halvings=40) -> InnerResult:
    def evaluate(eta):
        p = pieces(model, values, eta, subject, opts)
        l = m2ll(model, values, eta, subject, opts, omega_inv, logdet_omega, p)
        g, M = gradient_and_gauss_newton(model, values, eta, subject, opts, omega_inv, p)
        return l, g, M

    def value(eta):
        l = m2ll(model, values, eta, subject, opts, omega_inv, logdet_omega,
                 pieces_value(model, values, eta, subject, opts))
        return jnp.where(jnp.isfinite(l), l, jnp.inf)

    l0, g0, M0 = evaluate(eta0)

    class State(NamedTuple):
        eta: jax.Array
        l: jax.Array
        g: jax.Array
        M: jax.Array
        it: jax.Array
        done: jax.Array
        stalled: jax.Array

    def cond(s):
        return (~s.done) & (s.it < max_iter)

    def body(s):
        direction = -jnp.linalg.solve(s.M, s.g)
        direction = jnp.where(jnp.all(jnp.isfinite(direction)), direction, -s.g)
        slope = s.g @ direction

        def ls_cond(c):
            t, l_new, k = c
            return (l_new > s.l + 1e-4 * t * slope) & (k < max_halvings)

        def ls_body(c):
            t, _, k = c
            t = 0.5 * t
            return t, value(s.eta + t * direction), k + 1

        t, l_new, k = lax.while_loop(ls_cond, ls_body, (1.0, value(s.eta + direction), 0))
        accepted = l_new <= s.l + 1e-4 * t * slope
        eta = jnp.where(accepted, s.eta + t * direction, s.eta)
        l, g, M = evaluate(eta)
        small_step = jnp.max(jnp.abs(t * direction)) < 1e-12
        converged = jnp.max(jnp.abs(g), initial=0.0) < tol
        stalled = (~accepted) | small_step
        return State(eta, l, g, M, s.it + 1, converged | stalled, stalled & ~converged)

    init = State(eta0, l0, g0, M0, jnp.zeros((), jnp.int32),
                 jnp.max(jnp.abs(g0), initial=0.0) < tol, jnp.zeros((), bool))
    s = lax.while_loop(cond, body, init)
    gnorm = jnp.max(jnp.abs(s.g), initial=0.0)
    # A stalled line search close to the mode (rounding noise in l) still counts as
    # converged when the gradient is small on the scale of the curvature.
    near = gnorm < 1e-4
    return InnerResult(s.eta, (gnorm < tol) | (s.stalled & near), s.it, s.l, gnorm)


def newton_correction(model, values, eta, subject, opts, omega_inv, logdet_omega, steps=1):
    """eta - H^-1 grad l(eta) with the exact eta-Hessian, differentiable in ``values``.

    At the mode the value is unchanged, and its derivative with respect to the
    parameters is the implicit-function-theorem term -H^-1 d(grad l)/d(theta). Each extra
    step makes one more order of derivative exact (two steps for the covariance step's
    Hessian).
    """

    def grad_l(e):
        return jax.jacfwd(lambda z: m2ll(model, values, z, subject, opts, omega_inv, logdet_omega))(e)

    for _ in range(steps):
        g = grad_l(eta)
        H = jax.jacfwd(grad_l)(eta)
        eta = eta - jnp.linalg.solve(H, g)
    return eta

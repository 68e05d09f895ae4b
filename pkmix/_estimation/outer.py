"""The outer problem: L-BFGS over the unconstrained parameter vector.

The search direction is optax's L-BFGS (``optax.scale_by_lbfgs``), run on the scale of
an estimate of the OFV's Hessian from the per-subject gradients
(``information_metric``), so it starts from the problem's curvature instead of learning
it step by step; the step length comes from a backtracking (Armijo) line search written
here so that every trial point is evaluated by the same program that gives the OFV's
exact gradient (forward mode, with the implicit-function term for the eta modes). One
program per model and data shape therefore serves the whole fit and the covariance
step, which keeps compile time, the larger part of a small fit's wall time on a CPU,
down to one compilation.

``init``/``step`` are pure functions of an ``OuterState``; ``engine.fit_program`` runs
them in its bounded ``lax.while_loop``, the one loop of ``pkmix.fit``, ``evaluate`` and
``fit_batch``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._linalg import cholesky, solve_triangular
from .objective import Evaluation
from .settings import RESULTS, FitSettings

# The relative damping of ``information_metric``'s diagonal.
MARQUARDT = 1e-3

# An accepted step whose secant curvature s'y is below this fraction of the metric's
# s'LL's shows the metric overstating the OFV's curvature: L-BFGS goes on without it.
METRIC_FLOOR = 0.1


class OuterState(NamedTuple):
    x: jax.Array  # accepted point
    value: jax.Array
    grad: jax.Array
    ofvs: jax.Array  # per subject, at x
    jac: jax.Array  # per-subject gradients at x [N, p] (the covariance step's S matrix)
    etas: jax.Array  # modes at x
    etas_converged: jax.Array  # their convergence flags
    eta_slope: jax.Array  # d modes / dx at x [N, q, p]
    direction: jax.Array
    step: jax.Array  # current trial step length
    lbfgs: optax.OptState
    iterations: jax.Array  # accepted steps
    evaluations: jax.Array
    stall: jax.Array
    status: jax.Array
    # What the current line search can still gain, by the quadratic models at hand: the
    # Newton model -1/2 grad . direction, lowered by the interpolation through the OFV,
    # its slope and the OFV at the first (full-step) trial once that is rejected. Where
    # the line search fails at the OFV's rounding noise, this says how far from a
    # minimum the fit ended (pkmix.fit's noise-floor rule).
    predicted_gain: jax.Array
    # L-BFGS runs on z = L' x, where L L' (``information_metric``) models the OFV's
    # Hessian: set where L-BFGS's memory (re)starts, fixed while the memory lasts.
    metric: jax.Array
    # Whether the metric may still be estimated (``METRIC_FLOOR``).
    trusted: jax.Array

    @property
    def trial(self):
        return self.x + self.step * self.direction

    def etas_at(self, point):
        """The modes at ``point`` predicted to first order from those at ``x``. An inner
        solve starting from an error of order |point - x|^2 instead of |point - x|
        needs fewer steps: on 1,000 simulated subjects
        (benchmarks/bench_fit.py's), after a step of length 0.003 to 0.03 the slowest
        subject (whom the vmapped solve waits for) needed 13-15 steps from the old
        modes and 4-8 from the prediction (measured before the inner solve's secant
        correction)."""
        return self.etas + self.eta_slope @ (point - self.x)


def _lbfgs(settings):
    return optax.scale_by_lbfgs(memory_size=settings.memory_size)


def information_metric(jac):
    """Lower Cholesky factor L of a model L L' of the OFV's Hessian from the per-subject
    gradients g_i ([N, p]): half their centred outer products, the information matrix
    estimated from the subjects' scores (OFV = -2 log L: score_i = -g_i / 2, Hessian =
    2 x information), as in BHHH (Berndt et al. 1974), centred so that a systematic
    misfit far from the optimum (all g_i alike) does not pass for curvature. With 1e-3 of
    each diagonal added (Marquardt's scale-free damping). The identity where that is no
    estimate (no more subjects than parameters, a parameter whose gradient is the same
    in every subject, a factorisation that fails): then L-BFGS runs as without it.
    Returns (L, whether it is the estimate).

    L-BFGS runs on z = L' x, so it starts from this model instead of a multiple of the
    identity: where the parameters' scales and correlations differ widely (2-cmt: Q, V2)
    it has to learn far less. Fits from the true values (eight replicates of
    ``bench_batch.py``'s 1- and 2-cmt designs) took 8-12 iterations instead of 30-61;
    ``bench_fit.py``'s fits from off-truth initial values 18-29 instead of 35-45
    (theophylline 29 instead of 37), with the same OFVs.
    """
    n, p = jac.shape
    if n <= p:
        return jnp.eye(p), jnp.zeros((), bool)
    centred = jac - jnp.mean(jac, axis=0, keepdims=True)
    info = 0.5 * centred.T @ centred
    d = jnp.diag(info)
    L = cholesky(info + jnp.diag(MARQUARDT * d + 1e-12 * jnp.max(d, initial=0.0)))
    ok = jnp.all(jnp.isfinite(L)) & jnp.all(d > 0)
    return jnp.where(ok, L, jnp.eye(p)), ok


def init(settings: FitSettings, x0, etas0) -> OuterState:
    """A state whose first trial point is ``x0`` (accepted unconditionally)."""
    n, s = x0.shape[0], etas0.shape[0]
    return OuterState(
        x=x0, value=jnp.asarray(jnp.inf), grad=jnp.zeros(n), ofvs=jnp.full(s, jnp.inf), jac=jnp.zeros((s, n)),
        etas=etas0,
        etas_converged=jnp.zeros(s, bool), eta_slope=jnp.zeros(etas0.shape + (n,)),
        direction=jnp.zeros(n), step=jnp.asarray(0.0), lbfgs=_lbfgs(settings).init(x0),
        iterations=jnp.zeros((), jnp.int32), evaluations=jnp.zeros((), jnp.int32),
        stall=jnp.zeros((), jnp.int32), status=jnp.asarray(RESULTS.running, jnp.int32),
        predicted_gain=jnp.asarray(jnp.inf), metric=jnp.eye(n), trusted=jnp.asarray(settings.precondition),
    )


def step(settings: FitSettings, state: OuterState, ev: Evaluation, max_iter) -> OuterState:
    """Take the evaluation (per-subject OFVs, their gradients, modes) at ``state.trial``
    and decide: accept it and choose the next direction, or shorten the step
    (``max_iter``: the accepted iterations allowed, a run-time value)."""
    ofvs, jac = ev.ofvs, ev.jac
    value = jnp.sum(ofvs)
    grad = jnp.sum(jac, axis=0)
    finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))
    first = state.evaluations == 0
    slope = state.grad @ state.direction
    armijo = value <= state.value + settings.armijo * state.step * slope
    accept = finite & (first | armijo)
    trial = state.trial

    # Accepted: the new point, convergence checks there, and the next L-BFGS direction.
    x = jnp.where(accept, trial, state.x)
    gmax = jnp.max(jnp.abs(grad), initial=0.0)
    change = jnp.abs(state.value - value) <= settings.ftol * (1.0 + jnp.abs(value))
    stall = jnp.where(accept, jnp.where(change, state.stall + 1, 0), state.stall).astype(jnp.int32)
    iterations = state.iterations + (accept & ~first).astype(jnp.int32)
    lbfgs = _lbfgs(settings)
    # A pair with non-positive curvature would make L-BFGS's matrix indefinite: start
    # its memory again from here instead.
    s_vec = trial - state.x
    y_vec = grad - state.grad
    curvature_ok = (s_vec @ y_vec) > 1e-12 * jnp.linalg.norm(s_vec) * jnp.linalg.norm(y_vec)
    # The memory (re)starts at the first point and after a pair with non-positive
    # curvature; so does the metric, and the direction there is the metric's Newton step.
    # The metric models the Hessian near an optimum, where the subjects' gradients
    # are scores (BHHH). Far from it they grow faster than the curvature: from
    # pheno_noifs.mod's $SIGMA 1e-7 the metric put 10-1000 times the measured curvature
    # along the steps, and the fit crawled 500 iterations at OFV 6.8e6 while plain
    # L-BFGS reached the optimum in 28. The secant pair of each accepted step measures
    # the curvature along it; where the metric overstates it by 1/METRIC_FLOOR,
    # L-BFGS restarts on the plain scale and stays there.
    along = state.metric.T @ s_vec
    overstated = accept & ~first & state.trusted & (s_vec @ y_vec < METRIC_FLOOR * (along @ along))
    trusted = state.trusted & ~overstated
    restart = first | ~curvature_ok | overstated
    if settings.precondition:
        estimated, informed = information_metric(jac)
        estimated, informed = jnp.where(trusted, estimated, jnp.eye(grad.shape[0])), informed & trusted
    else:
        estimated, informed = state.metric, False
    metric = jnp.where(restart, estimated, state.metric)
    to_z = lambda v: metric.T @ v  # noqa: E731
    grad_z = solve_triangular(metric, grad)
    memory = jax.tree_util.tree_map(lambda a, b: jnp.where(restart, b, a), state.lbfgs, lbfgs.init(to_z(trial)))
    precond, new_memory = lbfgs.update(grad_z, memory, to_z(trial))
    # (optax's first step from an empty memory is the gradient scaled to length <= 1;
    # with an estimated metric the unscaled one is the better guess.)
    precond = jnp.where(restart & informed, grad_z, precond)
    direction = -solve_triangular(metric, precond, transpose=True)
    descent = (direction @ grad) < 0
    direction = jnp.where(descent, direction, -grad / jnp.maximum(jnp.linalg.norm(grad), 1.0))
    new_memory = jax.tree_util.tree_map(lambda a, b: jnp.where(descent, a, b), new_memory, lbfgs.init(to_z(trial)))
    newton_gain = -0.5 * (grad @ direction)  # (of the step before the caps below)
    longest = jnp.max(jnp.abs(direction), initial=0.0)
    reach = jnp.where(first, settings.first_step, settings.max_growth * jnp.max(jnp.abs(s_vec), initial=0.0))
    direction = jnp.where(longest > reach, direction * (reach / jnp.where(longest > 0, longest, 1.0)), direction)

    status_accepted = jnp.where(
        gmax < settings.gtol, RESULTS.gradient,
        jnp.where(stall >= settings.patience, RESULTS.no_progress,
                  jnp.where(iterations >= max_iter,
                            RESULTS.max_iter, RESULTS.running)))
    # Rejected: shorten the step to the minimiser of the quadratic through the OFV and
    # slope at the accepted point and the OFV at the trial, kept within [0.1, 0.5] of
    # the step (plain halving when the trial was not finite).
    curvature = value - state.value - state.step * slope
    quad = -slope * state.step**2 / (2.0 * jnp.where(curvature > 0, curvature, 1.0))
    half = jnp.where(finite & (curvature > 0),
                     jnp.clip(quad, 0.1 * state.step, 0.5 * state.step), 0.5 * state.step)
    # That quadratic's minimum lies slope^2 step^2 / (4 curvature) below the OFV. Taken
    # from the full-step trial only: at tiny steps the curvature is rounding noise. (A
    # steepest-descent fallback direction, say, makes -1/2 grad . direction no Newton
    # model: 1/2 |grad|^2, however stiff the direction.)
    line_gain = jnp.where(finite & (curvature > 0) & (state.step == 1.0),
                          slope**2 * state.step**2 / (4.0 * jnp.where(curvature > 0, curvature, 1.0)), jnp.inf)
    status_rejected = jnp.where(first, RESULTS.nonfinite,
                                jnp.where(half * jnp.max(jnp.abs(state.direction), initial=0.0) < settings.min_step,
                                          RESULTS.no_descent, RESULTS.running))
    pick = lambda a, b: jnp.where(accept, a, b)  # noqa: E731
    return OuterState(
        x=x,
        value=pick(value, state.value),
        grad=pick(grad, state.grad),
        ofvs=pick(ofvs, state.ofvs),
        jac=pick(jac, state.jac),
        etas=pick(ev.etas, state.etas),
        etas_converged=pick(ev.converged, state.etas_converged),
        eta_slope=pick(ev.eta_slope, state.eta_slope),
        direction=pick(direction, state.direction),
        step=pick(jnp.asarray(1.0), half),
        lbfgs=jax.tree_util.tree_map(pick, new_memory, state.lbfgs),
        iterations=iterations,
        evaluations=state.evaluations + 1,
        stall=stall,
        status=pick(status_accepted, status_rejected).astype(jnp.int32),
        predicted_gain=pick(newton_gain, jnp.minimum(state.predicted_gain, line_gain)),
        metric=pick(metric, state.metric),
        trusted=pick(trusted, state.trusted),
    )

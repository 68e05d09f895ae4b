"""The outer problem: L-BFGS over the unconstrained parameter vector.

The search direction is optax's L-BFGS (``optax.scale_by_lbfgs``); the step length comes
from a backtracking (Armijo) line search written here so that every trial point is
evaluated by the same program that gives the OFV's exact gradient (forward mode, with
the implicit-function term for the eta modes). One program per model and data shape
therefore serves the whole fit and the covariance step, which keeps compile time, the
larger part of a small fit's wall time on a CPU, down to one compilation.

``init``/``step`` are pure functions of an ``OuterState``: ``pkmix.fit`` drives them from
Python (printing progress), ``fit_batch`` runs them in a bounded ``lax.while_loop``
vmapped over replicate datasets.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from .covariance import gradient_program

# Why the loop stopped (-1: still running).
STATUS_RUNNING = -1
STATUS_GRADIENT = 0  # max |gradient| below gtol: converged
STATUS_NO_PROGRESS = 1  # OFV stopped changing (relative ftol over `patience` iterations)
STATUS_MAX_ITER = 2  # iteration limit reached
STATUS_NONFINITE = 3  # OFV or gradient not finite at the starting point
STATUS_NO_DESCENT = 4  # the line search found no lower OFV along the search direction
STATUS_MESSAGES = {
    STATUS_GRADIENT: "converged: gradient below tolerance",
    STATUS_NO_PROGRESS: "converged: objective no longer changes",
    STATUS_MAX_ITER: "not converged: iteration limit reached",
    STATUS_NONFINITE: "not converged: objective or gradient not finite at the initial estimates",
    STATUS_NO_DESCENT: "stopped: the line search found no lower objective",
}


class OuterSettings(NamedTuple):
    max_iter: int = 500
    gtol: float = 1e-3  # on the unconstrained scale, in OFV units
    ftol: float = 1e-10  # relative change of OFV regarded as no change
    patience: int = 5
    inner_max_iter: int = 100
    inner_tol: float = 1e-8
    memory_size: int = 10
    armijo: float = 1e-4
    min_step: float = 1e-12


class OuterState(NamedTuple):
    x: jax.Array  # accepted point
    value: jax.Array
    grad: jax.Array
    ofvs: jax.Array  # per subject, at x
    etas: jax.Array  # modes at x
    direction: jax.Array
    step: jax.Array  # current trial step length
    lbfgs: optax.OptState
    iterations: jax.Array  # accepted steps
    evaluations: jax.Array
    stall: jax.Array
    status: jax.Array

    @property
    def trial(self):
        return self.x + self.step * self.direction


def _lbfgs(settings):
    return optax.scale_by_lbfgs(memory_size=settings.memory_size)


def init(settings: OuterSettings, x0, etas0) -> OuterState:
    """A state whose first trial point is ``x0`` (accepted unconditionally)."""
    n, s = x0.shape[0], etas0.shape[0]
    return OuterState(
        x=x0, value=jnp.asarray(jnp.inf), grad=jnp.zeros(n), ofvs=jnp.full(s, jnp.inf), etas=etas0,
        direction=jnp.zeros(n), step=jnp.asarray(0.0), lbfgs=_lbfgs(settings).init(x0),
        iterations=jnp.zeros((), jnp.int32), evaluations=jnp.zeros((), jnp.int32),
        stall=jnp.zeros((), jnp.int32), status=jnp.asarray(STATUS_RUNNING, jnp.int32),
    )


def step(settings: OuterSettings, state: OuterState, ofvs, jac, etas) -> OuterState:
    """Take the evaluation (per-subject OFVs, their gradients, modes) at ``state.trial``
    and decide: accept it and choose the next direction, or shorten the step."""
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
    memory = jax.tree_util.tree_map(lambda a, b: jnp.where(first | curvature_ok, a, b),
                                    state.lbfgs, lbfgs.init(trial))
    precond, new_memory = lbfgs.update(grad, memory, trial)
    direction = -precond
    descent = (direction @ grad) < 0
    direction = jnp.where(descent, direction, -grad / jnp.maximum(jnp.linalg.norm(grad), 1.0))
    new_memory = jax.tree_util.tree_map(lambda a, b: jnp.where(descent, a, b), new_memory, lbfgs.init(trial))

    status_accepted = jnp.where(
        gmax < settings.gtol, STATUS_GRADIENT,
        jnp.where(stall >= settings.patience, STATUS_NO_PROGRESS,
                  jnp.where(iterations >= settings.max_iter, STATUS_MAX_ITER, STATUS_RUNNING)))
    # Rejected: halve the step (the trial was worse or not finite).
    half = 0.5 * state.step
    status_rejected = jnp.where(first, STATUS_NONFINITE,
                                jnp.where(half * jnp.max(jnp.abs(state.direction), initial=0.0) < settings.min_step,
                                          STATUS_NO_DESCENT, STATUS_RUNNING))
    pick = lambda a, b: jnp.where(accept, a, b)  # noqa: E731
    return OuterState(
        x=x,
        value=pick(value, state.value),
        grad=pick(grad, state.grad),
        ofvs=pick(ofvs, state.ofvs),
        etas=pick(etas, state.etas),
        direction=pick(direction, state.direction),
        step=pick(jnp.asarray(1.0), half),
        lbfgs=jax.tree_util.tree_map(pick, new_memory, state.lbfgs),
        iterations=iterations,
        evaluations=state.evaluations + 1,
        stall=stall,
        status=pick(status_accepted, status_rejected).astype(jnp.int32),
    )


class _Progress:
    """Prints iteration, OFV and gradient once a fit has run for a couple of seconds, at
    most twice a second (so logs are not flooded)."""

    def __init__(self, enabled: bool, after_s: float = 2.0):
        self.start = time.perf_counter()
        self.enabled = enabled
        self.after_s = after_s
        self.last = -1.0

    def __call__(self, state: OuterState, force=False):
        if not self.enabled:
            return
        now = time.perf_counter() - self.start
        if force or (now >= self.after_s and now - self.last >= 0.5):
            self.last = now
            gmax = float(jnp.max(jnp.abs(state.grad), initial=0.0))
            print(f"  iteration {int(state.iterations):4d}   OFV {float(state.value):14.4f}   "
                  f"max|grad| {gmax:10.3g}   ({now:.1f} s)", flush=True)


_step_jit = jax.jit(step, static_argnums=0)


def minimize_on_host(evaluate, settings: OuterSettings, x0, etas0, *, progress: bool = False) -> OuterState:
    """Run the loop from Python; ``evaluate(x, etas) -> (ofvs, jac, etas)`` is compiled."""
    state = init(settings, x0, etas0)
    report = _Progress(progress)
    while int(state.status) == STATUS_RUNNING:
        ofvs, jac, etas = evaluate(state.trial, state.etas)
        accepted_before = int(state.iterations)
        state = _step_jit(settings, state, ofvs, jac, etas)
        if int(state.iterations) != accepted_before:
            report(state)
        if int(state.evaluations) > 20 * settings.max_iter + 100:  # a line search that never ends
            state = state._replace(status=jnp.asarray(STATUS_NO_DESCENT, jnp.int32))
    return state


def minimize_in_graph(model, method, opts, transform, settings: OuterSettings, x0, base, etas0, batch):
    """The same loop as one bounded ``lax.while_loop`` (vmappable over replicates)."""

    def cond(s):
        return (s.status == STATUS_RUNNING) & (s.evaluations < 20 * settings.max_iter + 100)

    def body(s):
        ofvs, jac, etas = gradient_program(model, method, opts, transform, settings.inner_max_iter,
                                           settings.inner_tol, s.trial, base, s.etas, batch)
        return step(settings, s, ofvs, jac, etas)

    return jax.lax.while_loop(cond, body, init(settings, x0, etas0))

"""The fit engine: one fit of one dataset as one compiled program.

``fit_program`` runs the optimisation (``outer.init``/``outer.step``: L-BFGS with a
backtracking Armijo search, fed by ``objective.gradient_program``) and then the
covariance step's 2p evaluations (the total gradient at x +- h e_k for R by central
differences; S from the per-subject gradients at the estimate) in one bounded
``lax.while_loop``, so the program holds one copy of the objective and its gradient.
``pkmix.fit``, ``pkmix.evaluate`` (no iterations, no covariance) and ``fit_batch``
(vmapped and sharded over replicates) are wrappers around it: one program per model
and data shape serves all three, and ``verdict`` (in ``settings``) reads its result.

Bounds: the loop stops after ``max_iter`` accepted iterations or ``20 max_iter + 100``
evaluations (a line search that never ends, or one member of a vmapped batch that
would hold the others forever); a loop cut short by that bound reports a line search
that found no lower objective.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._model.transforms import ParameterTransform
from .covariance import user_scale
from .objective import gradient_program
from .outer import OuterState, init, step
from .settings import RESULTS, FitSettings

# The relative step of the central differences for R: h_k = R_STEP max(1, |x_k|); the
# error is O(h^2) in the OFV's third derivatives (NONMEM differences its gradients too).
R_STEP = 1e-4


class FitOutput(NamedTuple):
    """What ``fit_program`` returns (per replicate, in ``fit_batch``)."""

    x: jax.Array  # the estimate on the unconstrained scale [p]
    ofvs: jax.Array  # each subject's OFV there [N]
    grad: jax.Array  # the OFV's gradient there [p]
    jac: jax.Array  # the per-subject gradients there [N, p] (S = jac' jac)
    etas: jax.Array  # the modes there [N, q]
    etas_converged: jax.Array  # [N]
    status: jax.Array  # a RESULTS code
    iterations: jax.Array  # accepted steps
    evaluations: jax.Array  # objective evaluations of the optimisation (the covariance's not counted)
    predicted_gain: jax.Array  # outer.OuterState.predicted_gain (the noise-floor rule of ``verdict``)
    values: object  # ParameterValues at x
    natural: jax.Array  # the estimated parameters on the user's scale (covariance.natural_parameters)
    J: jax.Array  # d natural / dx (the delta method's Jacobian)
    R: jax.Array  # d2 OFV / dx2 by central differences [p, p] (zeros without the covariance step)
    history: jax.Array  # [settings.history, 1 + p]: OFV and x at iteration 0, 1, ... (FitSettings.history)


class _Loop(NamedTuple):
    opt: OuterState
    k: jax.Array  # covariance evaluations done
    grads: jax.Array  # total gradients at x + h_j e_j (rows 0..p-1) and x - h_j e_j (rows p..2p-1)
    history: jax.Array  # FitOutput.history


def transform_for(model) -> ParameterTransform:
    """One transform per model (it depends only on the declarations), so repeated fits
    of the same model reuse the compiled programs."""
    t = getattr(model, "_transform", None)
    if t is None:
        t = ParameterTransform(model.spec)
        model._transform = t
    return t


def fit_program(model, method, opts, settings: FitSettings, x0, base, etas0, batch, max_iter,
                with_covariance) -> FitOutput:
    """The fit from ``x0`` (modes from ``etas0``), then its covariance evaluations.

    ``max_iter`` (int32) and ``with_covariance`` (bool) are run-time values: with
    ``max_iter = 0`` and no covariance the program evaluates the OFV, its gradient and
    the modes at ``x0`` and stops (``pkmix.evaluate``). The program has no host callback
    (no progress display from inside the loop): JAX never writes a program with one to
    its persistent cache, and ``jax.export`` cannot serialise it, so every new process
    would trace and compile it again.
    """
    method.check_model(model)  # FO/FOCE/FOCE-I refuse a likelihood model (fit_batch's path too)
    transform = transform_for(model)
    p = x0.shape[0]
    # A padding replicate of fit_batch (max_iter 0) stops after one evaluation and skips
    # the covariance, as evaluate does.
    n_cov = jnp.where(with_covariance & (max_iter > 0), 2 * p, 0)
    bound = 20 * max_iter + 100
    loop0 = _Loop(init(settings, x0, etas0), jnp.zeros((), jnp.int32), jnp.zeros((2 * p, p)),
                  jnp.full((settings.history, 1 + p), jnp.nan))

    def cond(c):
        return (c.opt.status == RESULTS.running) | (c.k < n_cov)

    def body(c):
        optimizing = c.opt.status == RESULTS.running
        # Covariance point k: x + h_j e_j for k = j < p, x - h_j e_j for k = p + j.
        j = c.k % max(p, 1)
        sign = jnp.where(c.k < p, 1.0, -1.0)
        h = R_STEP * jnp.maximum(1.0, jnp.abs(c.opt.x[j])) if p else 0.0
        point = jnp.where(optimizing, c.opt.trial, c.opt.x.at[j].add(sign * h) if p else c.opt.x)
        # The modes start from their first-order prediction at the point (OuterState.etas_at).
        ev = gradient_program(model, method, opts, transform, settings.inner_max_iter, settings.inner_tol,
                              point, base, c.opt.etas, batch, etas_guess=c.opt.etas_at(point))
        new = step(settings, c.opt, ev, max_iter)
        cut = (new.status == RESULTS.running) & (new.evaluations >= bound)
        new = new._replace(status=jnp.where(cut, RESULTS.no_descent, new.status).astype(jnp.int32))
        opt = jax.tree_util.tree_map(lambda a, b: jnp.where(optimizing, a, b), new, c.opt)
        covariance = ~optimizing
        row = jnp.clip(c.k, 0, max(2 * p - 1, 0))
        grads = jnp.where(covariance, c.grads.at[row].set(jnp.sum(ev.jac, axis=0)), c.grads) if p else c.grads
        history = c.history
        if settings.history:
            accepted = optimizing & ((new.iterations > c.opt.iterations) | (c.opt.evaluations == 0))
            row = jnp.minimum(new.iterations, settings.history - 1)
            history = jnp.where(accepted, history.at[row].set(jnp.concatenate([new.value[None], new.x])), history)
        return _Loop(opt, c.k + covariance.astype(jnp.int32), grads, history)

    out = jax.lax.while_loop(cond, body, loop0)
    s = out.opt
    hs = R_STEP * jnp.maximum(1.0, jnp.abs(s.x))
    R = ((out.grads[:p] - out.grads[p:]) / (2.0 * hs)[:, None]).T  # column j: d grad / d x_j
    values, natural, J = user_scale(transform, s.x, base)
    return FitOutput(x=s.x, ofvs=s.ofvs, grad=s.grad, jac=s.jac, etas=s.etas, etas_converged=s.etas_converged,
                     status=s.status, iterations=s.iterations, evaluations=s.evaluations,
                     predicted_gain=s.predicted_gain, values=values, natural=natural, J=J, R=0.5 * (R + R.T),
                     history=out.history)


__all__ = ["FitOutput", "R_STEP", "fit_program", "transform_for"]

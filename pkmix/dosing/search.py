"""The regimen search: one jitted call for every interval, rounding and posterior draw.

The dose for each allowed interval solves exposure(dose) = aim by a safeguarded
regula falsi (Illinois) in log-dose against log-exposure, exact in one step for a
linear model and safe for a nonlinear one. It is then rounded down and up to the
practical unit within the limits, both candidates are evaluated at the MAP and at every
posterior draw (probability of target attainment, PTA), and one is chosen: in the
target range at the MAP, then the highest PTA (within 0.02), then the closest to the
aim (within 1 %), then the current interval, then intervals of at most a day, then the
longer interval (fewer doses). For a linear structure the whole search (every
interval, both roundings, the current regimen, all draws) is one jitted call. Any other
structure (an ODE) is searched at the MAP in that call, and its posterior draws are then
evaluated only for the finalists (`_draw_targets`): each evaluation integrates the ODE
to steady state. A non-finite exposure (no steady state) counts as above the aim.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from .exposure import _Config, _metric, steady_state_metrics, steady_state_target
from .map import TRACES


def _solve_dose(exposure, aim, x_lo, x_hi, max_iter=100):
    """Solve exposure(exp(x)) = aim for x in [x_lo, x_hi] by the Illinois method on
    g(x) = log(exposure) - log(aim): regula falsi that halves the value kept at one end
    when that end survives twice, so it never stalls; exact in one step when exposure
    is proportional to dose. The two bracket ends are the loop's first two evaluations,
    so ``exposure`` is traced once. Returns (dose, exposure at it, status): status 0
    solved, +1 the aim needs more than exp(x_hi), -1 less than exp(x_lo)."""

    def g(x):
        # A non-finite exposure is taken as too high: it is what a nonlinear model gives
        # where no steady state exists (a Michaelis-Menten dose rate at or above VM, the
        # level growing without bound). g = +inf there makes the next point the midpoint,
        # so the dose found stays below that rate.
        e = exposure(jnp.exp(x))
        return jnp.where(jnp.isfinite(e), jnp.log(jnp.maximum(e, 1e-300)) - jnp.log(aim), jnp.inf)

    class S(NamedTuple):
        a: Any
        fa: Any
        b: Any
        fb: Any
        side: Any
        it: Any
        best: Any
        fbest: Any
        status: Any

    def cond(s):
        done = (s.it >= 2) & ((s.status != 0) | (jnp.abs(s.fbest) <= 1e-12) | (s.b - s.a <= 1e-13))
        return (s.it < max_iter + 2) & ~done

    def body(s):
        mid = 0.5 * (s.a + s.b)
        denom = s.fb - s.fa
        c = (s.a * s.fb - s.b * s.fa) / jnp.where(denom > 0, denom, 1.0)
        c = jnp.where((denom > 0) & (c > s.a) & (c < s.b), c, mid)
        x = jnp.where(s.it == 0, s.a, jnp.where(s.it == 1, s.b, c))
        fx = g(x)
        first, second = s.it == 0, s.it == 1
        step = s.it >= 2
        status = jnp.where(second, jnp.where(fx < 0, 1, jnp.where(s.fa > 0, -1, 0)), s.status).astype(jnp.int32)
        replace_b = fx > 0  # fa <= 0 <= fb throughout
        a = jnp.where(step & ~replace_b, x, s.a)
        fa = jnp.where(first, fx, jnp.where(step & ~replace_b, fx, s.fa))
        b = jnp.where(step & replace_b, x, s.b)
        fb = jnp.where(second, fx, jnp.where(step & replace_b, fx, s.fb))
        fa = jnp.where(step & replace_b & (s.side == -1), 0.5 * fa, fa)
        fb = jnp.where(step & ~replace_b & (s.side == 1), 0.5 * fb, fb)
        side = jnp.where(step, jnp.where(replace_b, -1, 1), 0).astype(jnp.int32)
        better = jnp.abs(fx) < jnp.abs(s.fbest)
        return S(a, fa, b, fb, side, s.it + 1, jnp.where(better, x, s.best), jnp.where(better, fx, s.fbest), status)

    zero = jnp.zeros((), jnp.int32)
    x_lo, x_hi = jnp.asarray(x_lo, float), jnp.asarray(x_hi, float)
    s = jax.lax.while_loop(cond, body, S(x_lo, jnp.nan, x_hi, jnp.nan, zero, zero, x_lo, jnp.inf, zero))
    dose = jnp.where(s.status == 0, jnp.exp(s.best), jnp.where(s.status > 0, jnp.exp(x_hi), jnp.exp(x_lo)))
    value = jnp.where(s.status == 0, aim * jnp.exp(s.fbest), jnp.where(s.status > 0, aim * jnp.exp(s.fb),
                                                                        aim * jnp.exp(s.fa)))
    return dose, value, s.status


class _Design(NamedTuple):
    """Array inputs of the regimen search (traced)."""

    taus: Any  # [F] interval of each family
    tinfs: Any  # [F] infusion duration of each family, -1: chosen by the rate rule
    options: Any  # [K] allowed infusion durations (ascending), for the rate rule
    rate_max: Any  # infusion rate limit (inf: none)
    unit: Any
    dmin: Any
    dmax: Any  # [F] the largest dose of each family: every limit (per dose, per 24 h, rate) in one
    aim: Any
    t_query: Any
    peak_at: Any  # bool: the peak is at t_query (else the end of the infusion)
    kind: Any  # int: KIND_INDEX of the target
    mic: Any
    window: Any  # [2]
    current: Any  # [3]: dose, interval, infusion of the current regimen
    cmt: Any  # dose compartment (0-based model default allowed: 0 = model default)


def _tinf_for(d: _Design, dose, tinf):
    need = dose / d.rate_max
    ok = d.options >= need - 1e-9
    rule = jnp.where(jnp.any(ok), jnp.min(jnp.where(ok, d.options, jnp.inf)), jnp.max(d.options))
    return jnp.where(tinf >= 0, tinf, rule)


def _search_impl(model, cfg: _Config, values, eta_map, eta_draws, cov, d: _Design):
    """Every family's dose, the rounded candidates, and their exposure at the MAP and at
    every draw (see the module docstring)."""
    TRACES["regimen"] += 1

    def metrics(eta, amt, tau, tinf):
        return steady_state_metrics(model, cfg, values, eta, cov, amt, tau, tinf, d.cmt, d.t_query, d.peak_at,
                                    d.mic, d.window)

    def family(tau, tinf, dmax):
        x_lo = jnp.log(d.unit * 1e-4)
        x_hi = jnp.log(jnp.maximum(dmax, d.unit) * 1e4)

        def one_pass(_, carry):
            # The infusion for the dose of the previous pass (first: the shortest), then
            # the dose for that infusion: with a rate limit the two settle in two passes.
            dose, _, _, _ = carry
            t = _tinf_for(d, dose, tinf)
            new_dose, value, status = _solve_dose(
                lambda D: _metric(d.kind, metrics(eta_map, D, tau, t), cfg.window), d.aim, x_lo, x_hi)
            return new_dose, t, value, status

        init = (jnp.zeros(()), jnp.zeros(()), jnp.zeros(()), jnp.zeros((), jnp.int32))
        dose, t, value, status = jax.lax.fori_loop(0, 2, one_pass, init)
        dmin_r = jnp.ceil(d.dmin / d.unit - 1e-9) * d.unit
        dmax_r = jnp.floor(dmax / d.unit + 1e-9) * d.unit
        lo = jnp.clip(jnp.floor(dose / d.unit + 1e-9) * d.unit, dmin_r, dmax_r)
        hi = jnp.clip(jnp.ceil(dose / d.unit - 1e-9) * d.unit, dmin_r, dmax_r)
        return dose, t, status, value, jnp.stack([lo, hi])

    cont, cont_tinf, status, exact, rounded = jax.vmap(family)(d.taus, d.tinfs, d.dmax)
    # Candidates: each family rounded down and up, then the current regimen.
    c_dose = jnp.concatenate([rounded.reshape(-1), d.current[:1]])
    c_tau = jnp.concatenate([jnp.repeat(d.taus, 2), d.current[1:2]])
    fam_tinf = jnp.repeat(d.tinfs, 2)
    c_tinf = jnp.concatenate([jax.vmap(lambda D, t: _tinf_for(d, D, t))(c_dose[:-1], fam_tinf), d.current[2:3]])

    def all_metrics(eta):
        m = jax.vmap(lambda D, tau, t: metrics(eta, D, tau, t))(c_dose, c_tau, c_tinf)
        m["target"] = _metric(d.kind, m, cfg.window)
        return m

    # The MAP and the draws in one batch (one trace of the metrics).
    both = jax.vmap(all_metrics)(jnp.concatenate([eta_map[None, :], eta_draws], axis=0))
    at_map = jax.tree_util.tree_map(lambda x: x[0], both)
    draws = jax.tree_util.tree_map(lambda x: x[1:], both)
    return {"cont_dose": cont, "cont_tinf": cont_tinf, "status": status, "cont_exposure": exact,
            "dose": c_dose, "tau": c_tau, "tinf": c_tinf, "map": at_map, "draws": draws}


_search = eqx.filter_jit(_search_impl)


def _draw_targets_impl(model, cfg: _Config, point: bool, values, eta_draws, cov, c_dose, c_tau, c_tinf, d: _Design):
    """The target metric of a few candidate regimens at every posterior draw
    ([draws, candidates]). A structure that is not linear is searched at the MAP first
    (``_search`` with no draws), and only the finalists (the candidates the choice can
    pick, and the current regimen) are evaluated here: each evaluation integrates the
    ODE to steady state, and the draws times every candidate would take minutes."""
    TRACES["regimen_draws"] += 1

    def one(eta, D, tau, t):
        return steady_state_target(model, cfg, point, values, eta, cov, D, tau, t, d.cmt, d.t_query, d.peak_at,
                                   d.mic, d.window, d.kind)

    return jax.vmap(lambda e: jax.vmap(lambda D, tau, t: one(e, D, tau, t))(c_dose, c_tau, c_tinf))(eta_draws)


_draw_targets = eqx.filter_jit(_draw_targets_impl)

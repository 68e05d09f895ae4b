"""Steady-state exposure of a maintenance regimen for one patient.

Exposure of a maintenance regimen is computed at steady state, from the individual
parameters at the patient's latest covariates:

* the amounts just before a dose are the steady-state fixed point of one interval of
  dosing and decay (as the engine computes an SS dose record; `_steady_state_trough`);
* the concentration at any time after the dose is one ``propagate`` of the structure
  from that state (two for an infusion: during and after it), with the model's own
  dose modifiers (F, lag, modelled rate) from the engine's ``dose_schedule``;
* AUC over the interval is integrated by Gauss-Legendre quadrature on the two smooth
  pieces of the profile (during and after the infusion), each split into geometrically
  growing sub-intervals (fine where the distribution phase is steep): exact to ~1e-10
  for sums of exponentials, so AUC24 = AUC_tau * 24 / tau is as accurate as the model;
* the trough is the concentration just before the next dose, the peak the
  concentration at a time after the start of the infusion (default: its end; for oral
  dosing the maximum), %T>MIC the part of the interval above the MIC with log-linear
  interpolation of the crossings.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._data import SubjectBatch
from .._pk.events import cycle_fixed_point, dose_schedule
from .binding import _dose_compartment
from .map import TRACES, MAPResult
from .targets import Target


# ------------------------------------------------------------------- steady-state math
def _gauss_legendre_pieces(pieces: int = 6, nodes: int = 8, ratio: float = 2.0):
    """Nodes and weights on [0, 1]: ``pieces`` sub-intervals growing by ``ratio`` (the
    first, where a distribution phase is steepest, is the smallest), ``nodes``-point
    Gauss-Legendre on each."""
    widths = ratio ** np.arange(pieces, dtype=float)
    widths /= widths.sum()
    edges = np.r_[0.0, np.cumsum(widths)]
    x, w = np.polynomial.legendre.leggauss(nodes)
    u = (edges[:-1, None] + (x[None, :] + 1.0) / 2.0 * widths[:, None]).ravel()
    wt = (w[None, :] / 2.0 * widths[:, None]).ravel()
    return u, wt


_U, _W = _gauss_legendre_pieces()


class _Config(NamedTuple):
    """Static settings of the regimen evaluation (part of the compile key). Everything
    else, the target kind included, is traced, so one compiled search serves every
    target and regimen of a model."""

    oral: bool  # the peak is the maximum (golden-section search), not a set time
    window: bool  # an AUC window [start, end] is integrated


KIND_INDEX = {"auc24": 0, "auc": 1, "trough": 2, "peak": 3, "conc": 4, "ft_mic": 5}


def _one_record(model, amt, tau, tinf, cmt, cov):
    one = jnp.ones(1)
    zero = jnp.zeros(1)
    return SubjectBatch(
        time=zero, amt=amt * one, rate=zero, dur=tinf * one, ii=tau * one, dv=zero, lloq=zero,
        evid=jnp.ones(1, jnp.int32), cmt=jnp.full(1, cmt, jnp.int32), ss=jnp.ones(1, jnp.int32),
        occ=jnp.zeros(1, jnp.int32), obs_mask=jnp.zeros(1, bool), blq=jnp.zeros(1, bool),
        record_mask=jnp.ones(1, bool), covariates=cov[None, :], covariate_names=tuple(model.covariates),
        n_occasions=1,
    )


def _steady_state_trough(structure, prepared, amount, rate, duration, tau, cmt):
    """Amounts just before an administration of a regimen repeated every ``tau`` forever:
    the fixed point of one cycle (the dose, a bolus or an infusion for ``duration``, then
    decay to ``tau``), by ``pkmix._pk.events.cycle_fixed_point``."""
    n_cmt = structure.n_compartments
    unit = jax.nn.one_hot(cmt, n_cmt, dtype=jnp.result_type(float))
    zeros = jnp.zeros(n_cmt)
    infusing = rate > 0
    on = jnp.clip(jnp.where(infusing, duration, 0.0), 0.0, tau)
    bolus = jnp.where(infusing, 0.0, amount) * unit

    def cycle(a):
        a = structure.propagate(a + bolus, rate * unit, jnp.zeros(()), on, prepared)
        return structure.propagate(a, zeros, on, tau - on, prepared)

    if structure.is_linear:
        return cycle_fixed_point(structure, cycle)
    # Without a steady state (a Michaelis-Menten dose rate at or above VM) Newton's
    # iterates grow without bound; an amount a million times the regimen's input per
    # interval is no steady state of any real regimen. There the cycle answers NaN (which
    # ends the Newton loop) from a solve started at zero amounts: an ODE solve from such a
    # state can run to its step limit, and under vmap every draw waits for the slowest.
    scale = 1e6 * (jnp.abs(amount) + jnp.abs(rate) * on) + 1.0

    def guarded(a):
        bad = ~jnp.all(jnp.isfinite(a)) | jnp.any(jnp.abs(a) > scale)
        return jnp.where(bad, jnp.nan, cycle(jnp.where(bad, 0.0, a)))

    return cycle_fixed_point(structure, guarded)


def _steady_state_profile(model, values, eta, cov, amt, tau, tinf, cmt):
    """The steady-state cycle of ``amt`` every ``tau`` for one eta vector: ``(conc, dur,
    lag, steady)``, ``conc(s)`` the concentration s after the administration (one
    propagate), ``dur`` the infusion's length within the interval, ``lag`` the dose's
    lag, ``steady`` whether a steady state exists (else every metric is NaN)."""
    structure = model.structure
    n_cmt = structure.n_compartments
    subj = _one_record(model, amt, tau, tinf, cmt, cov)
    ip_rec = model.individual_parameters(values, eta, subj)
    ip = {k: v[0] for k, v in ip_rec.items()}
    sched = dose_schedule(structure, subj, ip_rec)
    amount, rate, duration = sched.amount[0], sched.rate[0], sched.duration[0]
    lag = sched.admin_time[0]
    c = sched.cmt[0]
    prepared = structure.prepare(ip)
    trough_state = _steady_state_trough(structure, prepared, amount, rate, duration, tau, c)
    # No steady state (a Michaelis-Menten dose rate at or above VM: the level grows without
    # bound) or a failed solve: the metrics are NaN, and the solves below start from zero
    # amounts, so they cost what a regular profile costs (an ODE solve from a non-finite
    # state would run to its step limit in every node, and under vmap every lane waits).
    steady = jnp.all(jnp.isfinite(trough_state))
    trough_state = jnp.where(steady, trough_state, 0.0)
    unit = jax.nn.one_hot(c, n_cmt, dtype=trough_state.dtype)
    infusing = rate > 0
    dur = jnp.where(infusing, jnp.minimum(duration, tau), 0.0)
    a0 = trough_state + jnp.where(infusing, 0.0, amount) * unit
    r_on = rate * unit
    zero = jnp.zeros(())
    a_end = structure.propagate(a0, r_on, zero, dur, prepared)

    def conc(s):
        """Concentration s after the administration (post-dose at s = 0), 0 <= s <= tau:
        one propagate, from the dose during the infusion or from its end after it."""
        during = s <= dur
        a = structure.propagate(jnp.where(during, a0, a_end), jnp.where(during, r_on, 0.0),
                                jnp.where(during, zero, dur), jnp.where(during, jnp.maximum(s, 0.0), s - dur),
                                prepared)
        return model._observe_one(a, ip, values, cov)

    return conc, dur, lag, steady


def _points(tau, dur, lag, t_query, peak_at):
    """Times after the administration of the trough, the peak (non-oral) and the query."""
    s_trough = tau - jnp.clip(lag, 0.0, tau)
    s_peak = jnp.clip(jnp.where(peak_at, t_query, dur), 0.0, tau)
    s_query = jnp.mod(jnp.maximum(t_query - lag, 0.0), tau)
    return s_trough, s_peak, s_query


def steady_state_metrics(model, cfg: _Config, values, eta, cov, amt, tau, tinf, cmt, t_query, peak_at, mic,
                         window):
    """Steady-state exposure of ``amt`` every ``tau`` (infusion ``tinf``; 0 = bolus or
    oral) for one eta vector (BSV etas then one occasion's IOV etas). Traceable.

    ``t_query``: the time after the start of the dose of ``conc`` (and of ``peak`` when
    ``peak_at``); ``mic`` for ``ft_mic``; ``window`` [start, end] for ``auc_window``."""
    conc, dur, lag, steady = _steady_state_profile(model, values, eta, cov, amt, tau, tinf, cmt)
    zero = jnp.zeros(())

    # Every concentration needed comes from ONE vectorised call of conc (each call site
    # would add the whole propagate-and-observe graph to the program): the quadrature
    # nodes of the two smooth pieces, the AUC window's nodes, then the trough, the peak,
    # the query time, and s = 0.
    u, w = jnp.asarray(_U), jnp.asarray(_W)
    s_on, w_on = u * dur, w * dur
    s_off, w_off = dur + u * (tau - dur), w * (tau - dur)
    n_nodes = 2 * u.shape[0]
    parts = [s_on, s_off]
    if cfg.window:
        lo1, hi1 = jnp.clip(window[0], 0.0, tau), jnp.clip(jnp.minimum(window[1], dur), 0.0, tau)
        lo2, hi2 = jnp.clip(jnp.maximum(window[0], dur), 0.0, tau), jnp.clip(window[1], 0.0, tau)
        len1, len2 = jnp.maximum(hi1 - lo1, 0.0), jnp.maximum(hi2 - lo2, 0.0)
        parts += [lo1 + u * len1, lo2 + u * len2]
    s_trough, s_peak, s_query = _points(tau, dur, lag, t_query, peak_at)
    points = jnp.stack([s_trough, s_peak, s_query, zero])
    c_every = jax.vmap(conc)(jnp.concatenate(parts + [points]))
    s_all, c_all = jnp.concatenate([s_on, s_off]), c_every[:n_nodes]
    trough, peak, c_query, c_zero = c_every[-4], c_every[-3], c_every[-2], c_every[-1]
    auc_tau = jnp.sum(jnp.concatenate([w_on, w_off]) * c_all)
    out = {"auc_tau": auc_tau, "auc24": auc_tau * 24.0 / tau, "trough": trough, "conc": c_query}
    if cfg.window:
        k = u.shape[0]
        c1, c2 = c_every[n_nodes:n_nodes + k], c_every[n_nodes + k:n_nodes + 2 * k]
        out["auc_window"] = jnp.sum(w * len1 * c1) + jnp.sum(w * len2 * c2)
    s_grid = jnp.concatenate([jnp.zeros(1), s_all, tau * jnp.ones(1)])
    c_grid = jnp.concatenate([c_zero[None], c_all, trough[None]])
    if cfg.oral:
        # Cmax: the best node, refined by golden-section search between its neighbours
        # (the profile is unimodal over one interval); the two inner points of each step
        # are one vectorised call.
        i = jnp.argmax(c_grid)
        a = s_grid[jnp.maximum(i - 1, 0)]
        b = s_grid[jnp.minimum(i + 1, s_grid.shape[0] - 1)]
        g = (math.sqrt(5.0) - 1.0) / 2.0

        def golden(_, state):
            a, b, best = state
            x = jnp.stack([b - g * (b - a), a + g * (b - a)])
            cx = jax.vmap(conc)(x)
            left = cx[0] >= cx[1]
            return jnp.where(left, a, x[0]), jnp.where(left, x[1], b), jnp.maximum(best, jnp.max(cx))

        a, b, best = jax.lax.fori_loop(0, 40, golden, (a, b, jnp.max(c_grid)))
        out["peak"] = best
        out["tmax"] = 0.5 * (a + b)
    else:
        out["peak"] = peak
    # %T>MIC from the nodes, crossings interpolated log-linearly (cheap: computed always,
    # so the target kind can be traced).
    l = jnp.log(jnp.maximum(c_grid, 1e-300) / mic)
    l0, l1 = l[:-1], l[1:]
    length = s_grid[1:] - s_grid[:-1]
    above = jnp.where((l0 > 0) & (l1 > 0), length,
                      jnp.where((l0 > 0) & (l1 <= 0), length * l0 / jnp.where(l0 - l1 != 0, l0 - l1, 1.0),
                                jnp.where((l0 <= 0) & (l1 > 0),
                                          length * l1 / jnp.where(l1 - l0 != 0, l1 - l0, 1.0), 0.0)))
    out["ft_mic"] = 100.0 * jnp.sum(above) / tau
    return {k: jnp.where(steady, v, jnp.nan) for k, v in out.items()}


POINT_KINDS = ("trough", "conc")  # with "peak" when not oral: one time after the dose


def is_point_target(kind: str, oral: bool) -> bool:
    """Whether a target's metric is the level at one time of the interval."""
    return kind in POINT_KINDS or (kind == "peak" and not oral)


def steady_state_target(model, cfg: _Config, point: bool, values, eta, cov, amt, tau, tinf, cmt, t_query, peak_at,
                        mic, window, kind):
    """The target's metric alone (``kind``: a traced index of KIND_INDEX), as
    ``_metric(kind, steady_state_metrics(...))`` gives it. With ``point`` (static, see
    `is_point_target`) it is one propagate from the steady state, not the profile's
    quadrature nodes: for an ODE structure each node is an ODE solve."""
    if not point:
        m = steady_state_metrics(model, cfg, values, eta, cov, amt, tau, tinf, cmt, t_query, peak_at, mic, window)
        return _metric(kind, m, cfg.window)
    conc, dur, lag, steady = _steady_state_profile(model, values, eta, cov, amt, tau, tinf, cmt)
    s_trough, s_peak, s_query = _points(tau, dur, lag, t_query, peak_at)
    s = jnp.where(kind == KIND_INDEX["trough"], s_trough, jnp.where(kind == KIND_INDEX["conc"], s_query, s_peak))
    return jnp.where(steady, conc(s), jnp.nan)


def _metric(kind, m: dict, window: bool):
    """The target's metric (``kind``: a traced index of KIND_INDEX) from a metrics dict."""
    auc = m["auc_window"] if window else m["auc_tau"]
    stack = jnp.stack([m["auc24"], auc, m["trough"], m["peak"], m["conc"], m["ft_mic"]], axis=-1)
    return jnp.take_along_axis(stack, jnp.broadcast_to(kind, stack.shape[:-1])[..., None], axis=-1)[..., 0]


@eqx.filter_jit
def _exposure(model, cfg: _Config, values, etas, cov, amt, tau, tinf, cmt, t_query, peak_at, mic, window):
    TRACES["exposure"] += 1
    return jax.vmap(lambda e: steady_state_metrics(model, cfg, values, e, cov, amt, tau, tinf, cmt, t_query, peak_at,
                                                   mic, window))(etas)


def steady_state_exposure(fit: MAPResult, dose: float, interval: float, infusion_duration: float = 0.0, *,
                          route: str | None = None, target: Target | str | None = None, etas=None) -> dict:
    """Steady-state exposure of a regimen for a fitted patient (at the MAP, or for each
    row of ``etas``): ``{"auc24", "auc_tau", "trough", "peak", "conc", "ft_mic", ...}``.

    Args:
        fit: a `MAPResult`.
        dose, interval, infusion_duration: the regimen (hours; 0 = bolus or oral).
        route: "iv" or "oral" (default the patient's).
        target: adds the target's metric as ``"target"`` (and uses its time, MIC, window).
        etas: [k, n_eta] BSV etas (default the MAP); future IOV etas are 0.
    """
    if isinstance(target, str):
        target = Target.parse(target)
    info = fit.info
    m = fit.model
    route = (route or fit.bound.route).lower()
    cmt = _dose_compartment(info, route, None, "route")
    n_eta, n_iov = m.spec.n_eta, len(m.iov_names)
    if etas is None:
        etas = np.asarray(fit.eta)[None, :n_eta]
    etas = np.atleast_2d(np.asarray(etas, float))[:, :n_eta]
    etas = np.concatenate([etas, np.zeros((etas.shape[0], n_iov))], axis=1)
    window = target is not None and target.start is not None
    cfg = _Config(oral=route == "oral", window=window)
    t_query = float(target.time) if target is not None and target.time is not None else 0.0
    out = _exposure(m, cfg, fit.values, jnp.asarray(etas), jnp.asarray(fit.bound.cov_now, float),
                    jnp.asarray(float(dose)), jnp.asarray(float(interval)), jnp.asarray(float(infusion_duration)),
                    jnp.asarray(cmt, jnp.int32), jnp.asarray(t_query),
                    jnp.asarray(target is not None and target.time is not None),
                    jnp.asarray(float(target.mic) if target is not None and target.mic else 1.0),
                    jnp.asarray([target.start or 0.0, target.end or 0.0] if target is not None else [0.0, 0.0]))
    out = {k: np.asarray(v) for k, v in out.items()}
    if target is not None:
        out["target"] = np.asarray(_metric(KIND_INDEX[target.kind], {k: jnp.asarray(v) for k, v in out.items()},
                                           window))
    if etas.shape[0] == 1:
        out = {k: float(v[0]) for k, v in out.items()}
    return out

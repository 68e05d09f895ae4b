"""Regimen optimisation: the dose, interval and infusion that hit an exposure target.

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

The dose for each allowed interval solves exposure(dose) = aim by a safeguarded
regula falsi (Illinois) in log-dose against log-exposure, exact in one step for a
linear model and safe for a nonlinear one. It is then rounded down and up to the
practical unit within the limits, both candidates are evaluated at the MAP and at every
posterior draw (probability of target attainment, PTA), and one is chosen: in the
target range at the MAP, then the highest PTA (within 0.02), then the closest to the
aim (within 1 %), then the current interval, then intervals of at most a day, then the
longer interval (fewer doses). The whole search (every interval, both roundings, the
current regimen, all draws) is one jitted call.

A loading dose and the time a level falls below a threshold are computed by the event
engine from the patient's own history (so earlier doses count), at the MAP.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._data import SubjectBatch
from .._pk.events import cycle_fixed_point, dose_schedule
from .map import CURVE_POINTS, TRACES, MAPResult, _bucket, call_program, map_estimate, model_fingerprint, simulate
from .patient import _dose_compartment
from .posterior import Draws, nuts_draws, sir_draws

TARGET_KINDS = {
    "auc24": "AUC over 24 h at steady state (mg*h/L for mg and L)",
    "auc": "AUC over the dosing interval at steady state, or over [start, end] h after the start of a dose",
    "trough": "concentration just before the next dose at steady state",
    "peak": "concentration at `time` h after the start of the infusion at steady state "
            "(default: the end of the infusion; oral: the maximum)",
    "conc": "concentration at `time` h after a dose at steady state",
    "ft_mic": "percentage of the dosing interval with the concentration above `mic`",
}
_ALIASES = {"auc_24": "auc24", "auc0-24": "auc24", "auctau": "auc", "auc_tau": "auc", "cmin": "trough",
            "cmax": "peak", "c": "conc", "ftmic": "ft_mic", "t>mic": "ft_mic", "fmic": "ft_mic", "%t>mic": "ft_mic"}
POINT_TOLERANCE = 0.10  # a point target v counts as attained within v +/- 10 %
PTA_TIE = 0.02  # PTA differences smaller than this are Monte Carlo noise when choosing


@dataclasses.dataclass(frozen=True)
class Target:
    """An exposure target.

    Args:
        kind: one of ``auc24``, ``auc``, ``trough``, ``peak``, ``conc``, ``ft_mic``.
        low, high: the target range (either may be None for a one-sided target).
        value: a point target instead of a range (attained within ``+/- tolerance``).
        time: hours after the start of the dose for ``peak`` (default the end of the
            infusion) and ``conc`` (required).
        mic: the MIC for ``ft_mic`` (then ``low``/``high``/``value`` are percentages).
        start, end: a window for ``auc`` (hours after the start of the dose).
        aim: the value the dose is solved for (default: the point, the middle of the
            range, or the one bound given).
        tolerance: relative half-width of a point target.

    Example:
        >>> Target("auc24", 400, 600)
        >>> Target("trough", value=15)
        >>> Target("ft_mic", low=50, mic=2)
        >>> Target.parse("peak=20:40,time=1")
    """

    kind: str
    low: float | None = None
    high: float | None = None
    value: float | None = None
    time: float | None = None
    mic: float | None = None
    start: float | None = None
    end: float | None = None
    aim: float | None = None
    tolerance: float = POINT_TOLERANCE

    def __post_init__(self):
        kind = _ALIASES.get(str(self.kind).strip().lower(), str(self.kind).strip().lower())
        if kind not in TARGET_KINDS:
            raise ValueError(f"target kind '{self.kind}' is not known; use one of {', '.join(TARGET_KINDS)}")
        object.__setattr__(self, "kind", kind)
        low, high = self.low, self.high
        if self.value is not None:
            if low is not None or high is not None:
                raise ValueError("target: give either value= (a point) or low=/high= (a range), not both")
            v = float(self.value)
            if not v > 0:
                raise ValueError(f"target {kind}: the value must be positive, got {v:g}")
            low, high = v * (1 - self.tolerance), v * (1 + self.tolerance)
            object.__setattr__(self, "aim", float(self.aim) if self.aim is not None else v)
        if low is None and high is None:
            raise ValueError(f"target {kind}: give a value, a range low:high, or one bound")
        for name, x in (("low", low), ("high", high)):
            if x is not None and not (math.isfinite(float(x)) and float(x) >= 0):
                raise ValueError(f"target {kind}: {name} must be a non-negative number, got {x!r}")
        if low is not None and high is not None and float(low) > float(high):
            raise ValueError(f"target {kind}: low {low:g} is above high {high:g}")
        object.__setattr__(self, "low", None if low is None else float(low))
        object.__setattr__(self, "high", None if high is None else float(high))
        if kind == "ft_mic":
            if self.mic is None or not float(self.mic) > 0:
                raise ValueError("target ft_mic needs a positive mic=")
            for x in (self.low, self.high):
                if x is not None and x > 100:
                    raise ValueError(f"target ft_mic is a percentage of the interval; {x:g} is above 100")
        if kind == "conc" and self.time is None:
            raise ValueError("target conc needs time= (hours after the start of the dose)")
        if self.time is not None and not float(self.time) >= 0:
            raise ValueError(f"target {kind}: time must be >= 0, got {self.time!r}")
        if (self.start is None) != (self.end is None):
            raise ValueError("target auc: give both start= and end= for a window")
        if self.start is not None:
            if kind != "auc":
                raise ValueError(f"start/end apply to an auc target, not {kind}")
            if not 0 <= float(self.start) < float(self.end):
                raise ValueError(f"target auc window: need 0 <= start < end, got {self.start:g} to {self.end:g}")
        if self.aim is None:
            if self.low is not None and self.high is not None:
                aim = 0.5 * (self.low + self.high)
            else:
                aim = self.low if self.low is not None else self.high
            object.__setattr__(self, "aim", float(aim))
        if not self.aim > 0:
            raise ValueError(f"target {kind}: the aim must be positive, got {self.aim:g}")

    @classmethod
    def parse(cls, text: str) -> "Target":
        """``"auc24=400:600"``, ``"trough=15"`` (point), ``"trough=10:"`` (at least 10),
        ``"peak=20:40,time=1"``, ``"ft_mic=50:,mic=2"``, ``"auc=200:300,start=0,end=12"``."""
        parts = [p.strip() for p in str(text).split(",") if p.strip()]
        if not parts or "=" not in parts[0]:
            raise ValueError(f"target '{text}': expected KIND=LOW:HIGH or KIND=VALUE (e.g. auc24=400:600)")
        kind, rng = (x.strip() for x in parts[0].split("=", 1))
        kwargs: dict[str, Any] = {}
        try:
            if ":" in rng:
                lo, hi = rng.split(":", 1)
                kwargs["low"] = float(lo) if lo.strip() else None
                kwargs["high"] = float(hi) if hi.strip() else None
            else:
                kwargs["value"] = float(rng)
            for extra in parts[1:]:
                if "=" not in extra:
                    raise ValueError(f"'{extra}' is not key=value")
                k, v = (x.strip() for x in extra.split("=", 1))
                if k not in ("time", "mic", "start", "end", "aim", "tolerance"):
                    raise ValueError(f"unknown option '{k}' (time, mic, start, end, aim, tolerance)")
                kwargs[k] = float(v)
        except ValueError as e:
            raise ValueError(f"target '{text}': {e}") from None
        return cls(kind, **kwargs)

    def attained(self, x):
        x = np.asarray(x, dtype=float)
        ok = np.isfinite(x)
        if self.low is not None:
            ok &= x >= self.low
        if self.high is not None:
            ok &= x <= self.high
        return ok

    def distance(self, x) -> np.ndarray:
        """Relative distance from the range (0 inside)."""
        x = np.asarray(x, dtype=float)
        d = np.zeros_like(x)
        if self.low is not None:
            d = np.maximum(d, (self.low - x) / self.aim)
        if self.high is not None:
            d = np.maximum(d, (x - self.high) / self.aim)
        return np.where(np.isfinite(x), d, np.inf)

    def describe(self, unit: str = "") -> str:
        if self.kind == "auc24":
            name = "AUC24"
        elif self.kind == "auc":
            name = "AUC(interval)" if self.start is None else f"AUC({self.start:g}-{self.end:g} h)"
        elif self.kind == "ft_mic":
            name = f"%T>MIC({self.mic:g})"
        elif self.kind == "conc":
            name = f"C({self.time:g} h after dose)"
        elif self.kind == "peak" and self.time is not None:
            name = f"peak ({self.time:g} h after start)"
        else:
            name = self.kind
        u = "%" if self.kind == "ft_mic" else (f" {unit}" if unit else "")
        if self.value is not None:
            return f"{name} = {self.value:g}{u}"
        if self.low is not None and self.high is not None:
            return f"{name} {self.low:g}-{self.high:g}{u}"
        return f"{name} >= {self.low:g}{u}" if self.low is not None else f"{name} <= {self.high:g}{u}"


def default_target(info) -> Target:
    """The first target in the model's METADATA['targets']."""
    targets = info.metadata.get("targets") or {}
    for kind, spec in targets.items():
        rng = spec.get("range") if isinstance(spec, dict) else spec
        try:
            if isinstance(rng, (list, tuple)) and len(rng) == 2:
                return Target(kind, float(rng[0]), float(rng[1]))
        except ValueError:
            continue
    raise ValueError(f"no target given and model {info.name} lists none in METADATA['targets']; "
                     "give one, e.g. auc24=400:600")


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

    return cycle_fixed_point(structure, cycle)


def steady_state_metrics(model, cfg: _Config, values, eta, cov, amt, tau, tinf, cmt, t_query, peak_at, mic,
                         window):
    """Steady-state exposure of ``amt`` every ``tau`` (infusion ``tinf``; 0 = bolus or
    oral) for one eta vector (BSV etas then one occasion's IOV etas). Traceable.

    ``t_query``: the time after the start of the dose of ``conc`` (and of ``peak`` when
    ``peak_at``); ``mic`` for ``ft_mic``; ``window`` [start, end] for ``auc_window``."""
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
    s_trough = tau - jnp.clip(lag, 0.0, tau)
    s_peak = jnp.clip(jnp.where(peak_at, t_query, dur), 0.0, tau)
    s_query = jnp.mod(jnp.maximum(t_query - lag, 0.0), tau)
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
    return out


def _metric(kind, m: dict, window: bool):
    """The target's metric (``kind``: a traced index of KIND_INDEX) from a metrics dict."""
    auc = m["auc_window"] if window else m["auc_tau"]
    stack = jnp.stack([m["auc24"], auc, m["trough"], m["peak"], m["conc"], m["ft_mic"]], axis=-1)
    return jnp.take_along_axis(stack, jnp.broadcast_to(kind, stack.shape[:-1])[..., None], axis=-1)[..., 0]


def _solve_dose(exposure, aim, x_lo, x_hi, max_iter=100):
    """Solve exposure(exp(x)) = aim for x in [x_lo, x_hi] by the Illinois method on
    g(x) = log(exposure) - log(aim): regula falsi that halves the value kept at one end
    when that end survives twice, so it never stalls; exact in one step when exposure
    is proportional to dose. The two bracket ends are the loop's first two evaluations,
    so ``exposure`` is traced once. Returns (dose, exposure at it, status): status 0
    solved, +1 the aim needs more than exp(x_hi), -1 less than exp(x_lo)."""

    def g(x):
        return jnp.log(jnp.maximum(exposure(jnp.exp(x)), 1e-300)) - jnp.log(aim)

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
    dmax: Any
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

    def family(tau, tinf):
        x_lo = jnp.log(d.unit * 1e-4)
        x_hi = jnp.log(jnp.maximum(d.dmax, d.unit) * 1e4)

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
        dmax_r = jnp.floor(d.dmax / d.unit + 1e-9) * d.unit
        lo = jnp.clip(jnp.floor(dose / d.unit + 1e-9) * d.unit, dmin_r, dmax_r)
        hi = jnp.clip(jnp.ceil(dose / d.unit - 1e-9) * d.unit, dmin_r, dmax_r)
        return dose, t, status, value, jnp.stack([lo, hi])

    cont, cont_tinf, status, exact, rounded = jax.vmap(family)(d.taus, d.tinfs)
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


# --------------------------------------------------------------------- continuation
def _extend_eta(fit: MAPResult, eta):
    """The MAP etas of the patient's occasions plus a new occasion (IOV etas 0) for the
    future records."""
    n_iov = len(fit.model.iov_names)
    if not n_iov:
        return jnp.asarray(eta)
    return jnp.concatenate([jnp.asarray(eta), jnp.zeros(n_iov)])


def _merged_positions(record_times, extra_times) -> np.ndarray:
    """Positions of the extra records in the merged order (see patient.merge_records)."""
    n, g = len(record_times), len(extra_times)
    times = np.r_[np.asarray(record_times, float), np.asarray(extra_times, float)]
    is_extra = np.r_[np.zeros(n, bool), np.ones(g, bool)]
    order = np.lexsort((np.arange(n + g), is_extra, times))
    pos = np.empty(n + g, dtype=np.int64)
    pos[order] = np.arange(n + g)
    return pos[n:]


def continue_history(fit: MAPResult, doses=(), queries=(), curve=()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IPRED (at the MAP) at ``queries`` and ``curve`` times after the patient's history
    with further ``doses`` [(time, amount, infusion hours, cmt)] (at most 16).

    The extra records form one fixed-size block (`CURVE_POINTS`), so every call for a
    patient reuses the compiled program of the MAP curve.
    """
    bound = fit.bound
    n_dose_slots = 16
    if len(doses) > n_dose_slots:
        raise ValueError(f"at most {n_dose_slots} future doses")
    q_times = [float(t) for t in queries]
    c_times = [float(t) for t in curve]
    n_fill = CURVE_POINTS - n_dose_slots - len(q_times) - len(c_times)
    if n_fill < 0:
        raise ValueError("too many query and curve points")
    end = max([0.0] + q_times + c_times + [t for t, *_ in doses] + list(bound.records["TIME"])) + 1.0
    # Order within the block matters at equal times: queries first (a trough is taken
    # before a dose at the same time), then doses, then curve points.
    time = q_times + [float(t) for t, *_ in doses] + [end] * (n_dose_slots - len(doses)) + c_times + [end] * n_fill
    k = len(time)
    amt = np.zeros(k)
    dur = np.zeros(k)
    evid = np.full(k, 2)
    cmt = np.zeros(k, dtype=np.int64)
    for i, (t, a, tinf, c) in enumerate(doses):
        j = len(q_times) + i
        amt[j], dur[j], evid[j], cmt[j] = a, tinf, 1, c
    extra = {"TIME": np.asarray(time), "AMT": amt, "DUR": dur, "EVID": evid, "CMT": cmt}
    n_occ = max(bound.n_occasions, 1)
    iov = bool(fit.model.iov_names)
    if iov:
        extra["OCC"] = np.full(k, n_occ)
    width = _bucket(bound.n_records + k, 64)
    subject = bound.subject(n_records=width, extra=extra, rule=fit.covariate_rule,
                            n_occasions=n_occ + 1 if iov else n_occ)
    eta = _extend_eta(fit, fit.eta)
    has_ss = bound.has_steady_state
    pred = np.asarray(simulate(fit.model, has_ss, fit.covariate_rule, fit.values, jnp.stack([eta, eta]), subject,
                               fingerprint=model_fingerprint(fit.info)))[0]
    pos = _merged_positions(bound.records["TIME"], np.asarray(time))
    nq = len(q_times)
    q = pred[pos[:nq]]
    start_c = nq + n_dose_slots
    c = pred[pos[start_c:start_c + len(c_times)]]
    return q, c, np.asarray(c_times)


def time_below(fit: MAPResult, threshold: float, *, horizon: float | None = None) -> dict:
    """When the level falls below ``threshold`` after the last dose (MAP prediction).

    Returns:
        ``{"threshold", "time", "hours_after_last_dose", "datetime", "status"}`` with
        status "found", "already below" (even the peak after the last dose is below the
        threshold), "not within" (the horizon), or "no dose".
    """
    last = fit.bound.last_dose
    if last is None:
        return {"threshold": threshold, "time": None, "hours_after_last_dose": None, "datetime": None,
                "status": "no dose"}
    horizon = horizon or max(72.0, 4.0 * (last.get("interval") or 12.0))
    n = 200
    grid = last["time"] + np.linspace(0.0, horizon, n)
    _, c, _ = continue_history(fit, curve=grid)
    # The fall after the last dose's peak (the end of an infusion, or the maximum after
    # an oral dose).
    peak = int(np.argmax(c))
    below = (c < threshold) & (np.arange(n) > peak)
    status = "found"
    if c[peak] < threshold:
        t = float(grid[peak])
        status = "already below"
    elif not below.any():
        t = None
        status = "not within"
    else:
        i = int(np.argmax(below))
        c0, c1 = c[i - 1], c[i]
        t0, t1 = grid[i - 1], grid[i]
        if c0 > 0 and c1 > 0:  # log-linear between the two points (exponential decline)
            frac = math.log(c0 / threshold) / math.log(c0 / c1)
        else:
            frac = (c0 - threshold) / (c0 - c1)
        t = float(t0 + frac * (t1 - t0))
    return {"threshold": float(threshold), "time": t,
            "hours_after_last_dose": None if t is None else t - last["time"],
            "datetime": None if t is None or fit.bound.patient.reference_time is None
            else fit.bound.patient.datetime_of(t).isoformat(timespec="minutes"),
            "status": status}


def _window_nodes(start, end, kinks, budget):
    """Gauss-Legendre nodes and weights on [start, end] split at ``kinks``."""
    edges = sorted({start, end, *[k for k in kinks if start < k < end]})
    pieces = len(edges) - 1
    per = max(budget // max(pieces, 1), 6)
    n_sub = 2 if per >= 12 else 1
    k = per // n_sub
    u, w = _gauss_legendre_pieces(pieces=n_sub, nodes=k, ratio=2.0)
    t, wt = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        t.append(a + u * (b - a))
        wt.append(w * (b - a))
    return np.concatenate(t), np.concatenate(wt)


def _loading_exposure(fit, target: Target, start, ld, ld_tinf, dose, tau, tinf, cmt, curve=()):
    """The first-interval exposure after a loading dose ``ld`` at ``start`` followed by
    the maintenance regimen; (value, curve concentrations)."""
    window = 24.0 if target.kind == "auc24" else tau
    n_doses = int(min(16, math.ceil((max(window, tau) + tau) / tau) + 1))
    doses = [(start, ld, ld_tinf, cmt)] + [(start + k * tau, dose, tinf, cmt) for k in range(1, n_doses)]
    if target.kind in ("auc24", "auc", "ft_mic"):
        kinks = [start + ld_tinf] + [t for t, *_ in doses] + [t + tinf for t, *_ in doses[1:]]
        lo, hi = (start, start + window)
        if target.kind == "auc" and target.start is not None:
            lo, hi = start + target.start, start + min(target.end, tau)
        nodes, weights = _window_nodes(lo, hi, kinks, 150)
        q, c, _ = continue_history(fit, doses, queries=list(nodes), curve=curve)
        if target.kind == "ft_mic":
            s = np.r_[nodes]
            l = np.log(np.maximum(q, 1e-300) / target.mic)
            above = 0.0
            for i in range(len(s) - 1):
                a, b, L = l[i], l[i + 1], s[i + 1] - s[i]
                if a > 0 and b > 0:
                    above += L
                elif a > 0 >= b:
                    above += L * a / (a - b)
                elif b > 0 >= a:
                    above += L * b / (b - a)
            return 100.0 * above / (hi - lo), c
        return float(np.sum(weights * q)), c
    if target.kind == "trough":
        t = start + tau
    elif target.kind == "peak":
        t = start + (target.time if target.time is not None else ld_tinf)
    else:
        t = start + target.time
    q, c, _ = continue_history(fit, doses, queries=[t], curve=curve)
    return float(q[0]), c


# --------------------------------------------------------------------- the front end
@dataclasses.dataclass
class Regimen:
    dose: float
    interval: float
    infusion_duration: float
    route: str
    start_time: float | None = None
    loading_dose: float | None = None
    loading_infusion_duration: float | None = None

    def describe(self, unit="mg") -> str:
        how = "orally" if self.route == "oral" else (
            f"over {self.infusion_duration:g} h" if self.infusion_duration > 0 else "as a bolus")
        text = f"{self.dose:g} {unit} every {self.interval:g} h {how}"
        if self.loading_dose:
            ld_how = "" if self.route == "oral" else f" over {self.loading_infusion_duration:g} h"
            text = f"loading dose {self.loading_dose:g} {unit}{ld_how}, then " + text
        return text


@dataclasses.dataclass
class Recommendation:
    """The outcome of `recommend` (see its docstring). ``summary()`` prints it."""

    target: Target
    regimen: Regimen
    reachable: bool
    message: str
    dose_unrounded: float
    exposure_unrounded: float
    predicted: dict  # trough, peak, auc24, target metric at the MAP for the rounded regimen
    pta: float
    current: dict | None
    next_dose: dict | None
    loading: dict | None
    alternatives: Any  # DataFrame of every candidate
    fit: MAPResult
    posterior: dict
    warnings: list
    units: dict
    curve: Any = None  # predicted concentrations under the recommended regimen

    def summary(self) -> str:
        u = self.units
        lines = [self.fit.summary(), ""]
        if self.current is not None:
            cr = self.current
            lines.append(f"Current regimen: {cr['regimen']}")
            lines.append(f"  at steady state: trough {cr['trough']:.3g} {u['conc']}, peak {cr['peak']:.3g} "
                         f"{u['conc']}, AUC24 {cr['auc24']:.4g} {u['auc']}; P(target) = {cr['pta']:.2f}")
        if self.next_dose is not None:
            nd = self.next_dose
            if nd["status"] == "found":
                when = f" ({nd['datetime']})" if nd.get("datetime") else ""
                lines.append(f"Level falls below {nd['threshold']:g} {u['conc']} at t = {nd['time']:.1f} h{when}, "
                             f"{nd['hours_after_last_dose']:.1f} h after the last dose")
            else:
                lines.append(f"Level below {nd['threshold']:g} {u['conc']}: {nd['status']}")
        lines.append("")
        lines.append(f"Target: {self.target.describe(u['auc'] if self.target.kind.startswith('auc') else u['conc'])}")
        lines.append(f"Recommendation: {self.regimen.describe(u['dose'])}")
        if self.regimen.start_time is not None:
            dt = self.fit.bound.patient.datetime_of(self.regimen.start_time)
            lines.append(f"  start at t = {self.regimen.start_time:.1f} h" +
                         (f" ({dt.isoformat(timespec='minutes')})" if dt else ""))
        p = self.predicted
        lines.append(f"  predicted at steady state: trough {p['trough']:.3g} {u['conc']}, peak {p['peak']:.3g} "
                     f"{u['conc']}, AUC24 {p['auc24']:.4g} {u['auc']}; target metric {p['target']:.4g}")
        lines.append(f"  probability of target attainment {self.pta:.2f} "
                     f"({self.posterior['method'].upper()}, {self.posterior['n']} draws)")
        lines.append(f"  unrounded dose {self.dose_unrounded:.1f} {u['dose']} gives {self.exposure_unrounded:.4g}")
        if self.loading is not None:
            lines.append(f"  loading: {self.loading['message']}")
        if not self.reachable or self.message:
            lines.append(("NOT REACHABLE: " if not self.reachable else "  note: ") + self.message)
        for w in self.warnings:
            lines.append(f"warning: {w}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        alt = self.alternatives
        return {
            "target": {k: v for k, v in dataclasses.asdict(self.target).items() if v is not None},
            "recommendation": dataclasses.asdict(self.regimen) | {"text": self.regimen.describe(self.units["dose"])},
            "reachable": self.reachable, "message": self.message,
            "dose_unrounded": self.dose_unrounded, "exposure_unrounded": self.exposure_unrounded,
            "predicted": self.predicted, "probability_of_target_attainment": self.pta,
            "current_regimen": self.current, "next_dose": self.next_dose, "loading": self.loading,
            "alternatives": alt.replace({np.nan: None}).to_dict("records") if alt is not None else [],
            "posterior": self.posterior, "warnings": list(self.warnings), "units": self.units,
        }


def _options_from(value, default):
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return (float(value),)
    return tuple(float(v) for v in value)


def recommend(model, patient, target=None, *, intervals=None, dose_unit=None, dose_min=None, dose_max=None,
              infusion_duration=None, max_infusion_rate=None, loading_dose: bool = False,
              loading_dose_max=None, max_daily_dose=None, n_samples: int = 2000, posterior: str = "sir",
              seed: int = 0, route: str | None = None, threshold: float | None = None,
              start_time: float | None = None, covariate_rule: str = "nonmem", params=None,
              metadata=None, draws: Draws | None = None, curve: bool = True) -> Recommendation:
    """The regimen that best hits ``target`` for this patient, with its PTA.

    Args:
        model: a ``pkmix.Model``, library module or name.
        patient: a patient (`load_patient` input) or a `MAPResult` (reused). A patient
            without levels gets a priori dosing from covariates alone.
        target: a `Target`, a string (``"auc24=400:600"``), or None for the model's
            first METADATA target.
        intervals: allowed dosing intervals in hours (default the model's METADATA
            ``dosing.intervals_h``, else 8, 12, 24).
        dose_unit: the practical dose step (default METADATA ``dose_step_mg``, else 250).
        dose_min, dose_max: dose limits (default METADATA, else one unit and no maximum).
        infusion_duration: a duration or a tuple of allowed ones (hours). With a maximum
            infusion rate (``max_infusion_rate`` or METADATA ``infusion_rate_max_mg_per_h``)
            the shortest allowed duration that respects it is used; without one every
            duration given is a candidate. Ignored for oral dosing.
        loading_dose: also compute a loading dose, so the first interval (first 24 h for
            an AUC24 target) already reaches the aim.
        loading_dose_max: cap of the loading dose (default ``dose_max``).
        max_daily_dose: leave out regimens above this daily amount.
        n_samples: posterior draws for the probability of target attainment.
        posterior: "sir" (fast) or "nuts".
        seed: random seed of the posterior draws.
        route: "iv" or "oral" (default: the route of the last dose, else the model's).
        threshold: report when the level falls below this concentration after the last
            dose; the new regimen then starts at that time.
        start_time: when the new regimen starts (hours; default the threshold time, else
            the next dose due under the current regimen, else 0).
        covariate_rule, params, metadata: as for `map_estimate`.
        draws: posterior draws to reuse (e.g. from `sir_draws`).
        curve: also predict the concentration profile of the recommended regimen
            (``Recommendation.curve``), from the patient's history on.

    Returns:
        A `Recommendation`. Its ``reachable`` is False, with a message, when no dose
        within the limits reaches the target; the dose returned is never above
        ``dose_max``.
    """
    import pandas as pd

    fit = patient if isinstance(patient, MAPResult) else map_estimate(
        model, patient, covariate_rule=covariate_rule, params=params, metadata=metadata)
    info = fit.info
    m = fit.model
    dosing = info.dosing
    if target is None:
        target = default_target(info)
    elif isinstance(target, str):
        target = Target.parse(target)
    elif not isinstance(target, Target):
        raise TypeError(f"target: expected a Target or a string like 'auc24=400:600', got {type(target).__name__}")
    if info.time_unit not in ("h", "hr", "hour", "hours"):
        raise ValueError(f"regimen design works in hours; model {info.name} uses time unit {info.time_unit}")
    intervals = _options_from(intervals, tuple(dosing.get("intervals_h", (8.0, 12.0, 24.0))))
    if not intervals or any(not t > 0 for t in intervals):
        raise ValueError(f"intervals must be positive hours, got {intervals}")
    unit = float(dose_unit if dose_unit is not None else dosing.get("dose_step_mg", 250.0))
    if not unit > 0:
        raise ValueError(f"dose_unit must be positive, got {unit:g}")
    dmin = float(dose_min if dose_min is not None else dosing.get("dose_min_mg", unit))
    dmax = float(dose_max if dose_max is not None else dosing.get("dose_max_mg", math.inf))
    if not 0 < dmin <= dmax:
        raise ValueError(f"need 0 < dose_min <= dose_max, got {dmin:g} and {dmax:g}")
    if math.isfinite(dmax) and math.floor(dmax / unit + 1e-9) * unit < dmin - 1e-9:
        raise ValueError(f"no multiple of the dose unit {unit:g} lies between dose_min {dmin:g} and dose_max {dmax:g}")
    route = (route or fit.bound.route).lower()
    if route not in ("iv", "oral"):
        raise ValueError(f"route must be 'iv' or 'oral', got {route!r}")
    cmt = _dose_compartment(info, route, None, "route")
    oral = route == "oral"
    rate_max = max_infusion_rate if max_infusion_rate is not None else dosing.get("infusion_rate_max_mg_per_h")
    if oral:
        fam_tinf = [0.0]
        options = (1.0,)
        rate_max = None
    elif infusion_duration is not None:
        options = _options_from(infusion_duration, None)
        if any(t < 0 for t in options):
            raise ValueError(f"infusion durations must be >= 0, got {options}")
        fam_tinf = [-1.0] if (rate_max and len(options) > 1) else list(options)
    else:
        if "infusion_h" in dosing:
            options = _options_from(dosing["infusion_h"], None)
        elif "default_infusion_h" in dosing:
            options = (float(dosing["default_infusion_h"]),)
        elif rate_max:
            options = tuple(np.arange(1.0, 24.0 + 1e-9, 0.5))
        else:
            options = (1.0,)
        fam_tinf = [-1.0] if (rate_max and len(options) > 1) else list(options)
    options = tuple(sorted(options))
    for t in intervals:
        if not oral and min(options) >= t:
            raise ValueError(f"infusion duration {min(options):g} h does not fit in a {t:g} h interval")
    taus, tinfs = [], []
    for t in intervals:
        for ti in fam_tinf:
            if ti >= t:
                continue
            taus.append(float(t))
            tinfs.append(float(ti))
    if target.kind in ("auc",) and target.start is not None and target.end > min(intervals):
        raise ValueError(f"target auc window ends at {target.end:g} h, after the shortest interval {min(intervals):g} h")
    if target.time is not None and target.time > max(intervals):
        raise ValueError(f"target time {target.time:g} h is beyond the longest interval {max(intervals):g} h")

    # Posterior draws for the probability of target attainment.
    if draws is None:
        draws = (nuts_draws(fit, n_samples=max(n_samples // 4, 1), seed=seed) if posterior == "nuts"
                 else sir_draws(fit, n_samples=n_samples, seed=seed, parameters=False))
    flat = draws.flat_eta
    n_eta = m.spec.n_eta
    n_iov = len(m.iov_names)
    rng = np.random.default_rng(seed)
    future_iov = (rng.standard_normal((flat.shape[0], n_iov)) * np.sqrt(np.asarray(fit.values.iov))
                  if n_iov else np.zeros((flat.shape[0], 0)))
    eta_draws = np.concatenate([flat[:, :n_eta], future_iov], axis=1)
    eta_map = np.concatenate([np.asarray(fit.eta)[:n_eta], np.zeros(n_iov)])

    last = fit.bound.last_dose
    if last is not None and last.get("interval"):
        current = (last["amount"], last["interval"], last["duration"] if not oral else 0.0)
    else:
        current = (max(dmin, unit), float(intervals[0]), float(options[0]) if not oral else 0.0)
    cfg = _Config(oral=oral, window=target.start is not None)
    # Families padded to a multiple of 4 (copies of the first, ignored below) so the
    # usual choices of intervals share one compiled search.
    n_fam = len(taus)
    pad = (-n_fam) % 4
    design = _Design(
        taus=np.asarray(taus + [taus[0]] * pad), tinfs=np.asarray(tinfs + [tinfs[0]] * pad),
        options=np.asarray(options, float),
        rate_max=np.asarray(float(rate_max) if rate_max else np.inf), unit=np.asarray(unit), dmin=np.asarray(dmin),
        dmax=np.asarray(dmax if math.isfinite(dmax) else 1e12),
        aim=np.asarray(min(target.aim, 99.9) if target.kind == "ft_mic" else target.aim),
        t_query=np.asarray(float(target.time) if target.time is not None else 0.0),
        peak_at=np.asarray(target.time is not None), kind=np.asarray(KIND_INDEX[target.kind], np.int32),
        mic=np.asarray(float(target.mic or 1.0)),
        window=np.asarray([target.start or 0.0, target.end or 0.0], float),
        current=np.asarray(current, float), cmt=np.asarray(cmt, np.int32),
    )
    cov = np.asarray(fit.bound.cov_now, float)
    out = call_program("regimen", _search_impl, _search, (m, cfg),
                       (fit.values, eta_map, eta_draws, cov, design),
                       model_fingerprint(info))
    out = jax.tree_util.tree_map(np.asarray, out)

    # ---- choose (host)
    for k in ("cont_dose", "cont_tinf", "status", "cont_exposure"):
        out[k] = out[k][:n_fam]
    n_c = 2 * n_fam
    out["map"] = {k: np.r_[v[:n_c], v[-1:]] for k, v in out["map"].items()}
    out["draws"] = {k: np.concatenate([v[:, :n_c], v[:, -1:]], axis=1) for k, v in out["draws"].items()}
    for k in ("dose", "tau", "tinf"):
        out[k] = np.r_[out[k][:n_c], out[k][-1:]]
    fam_of = np.repeat(np.arange(len(taus)), 2)
    mv = out["map"]
    dv = out["draws"]
    pta = target.attained(dv["target"]).mean(axis=0)
    rows = []
    for i in range(n_c):
        dose, tau, tinf = float(out["dose"][i]), float(out["tau"][i]), float(out["tinf"][i])
        feasible = True
        why = ""
        if max_daily_dose is not None and dose * 24.0 / tau > max_daily_dose + 1e-9:
            feasible, why = False, f"daily dose above {max_daily_dose:g}"
        if rate_max and not oral and tinf > 0 and dose / tinf > float(rate_max) + 1e-9:
            feasible, why = False, f"infusion rate above {float(rate_max):g}/h"
        rows.append({"interval": tau, "dose": dose, "infusion": tinf, "target_metric": float(mv["target"][i]),
                     "trough": float(mv["trough"][i]), "peak": float(mv["peak"][i]), "auc24": float(mv["auc24"][i]),
                     "pta": float(pta[i]), "in_range": bool(target.attained(mv["target"][i])),
                     "feasible": feasible, "note": why,
                     "unrounded_dose": float(out["cont_dose"][fam_of[i]]),
                     "status": int(out["status"][fam_of[i]])})
    table = pd.DataFrame(rows).drop_duplicates(subset=["interval", "dose", "infusion"]).reset_index(drop=True)
    feas = table[table["feasible"]]
    if feas.empty:
        feas = table
    inr = feas[feas["in_range"]]
    current_tau = last.get("interval") if last is not None else None

    def preference(pool):
        # Ties (within 1 % of the aim) keep the current interval, then prefer intervals
        # of at most a day, then fewer doses.
        return pool.assign(_cur=(pool["interval"] != current_tau).astype(int),
                           _long=(pool["interval"] > 24.0).astype(int), _neg=-pool["interval"])

    if not inr.empty:
        best_p = inr["pta"].max()
        pool = inr[inr["pta"] >= best_p - PTA_TIE]
        dist = np.abs(pool["target_metric"] - target.aim) / target.aim
        pool = preference(pool.assign(_d=np.round(dist, 2)))
        choice = pool.sort_values(["_d", "_cur", "_long", "_neg"]).iloc[0]
    else:
        dist = target.distance(feas["target_metric"].to_numpy())
        pool = preference(feas.assign(_d=np.round(dist, 4), _p=-feas["pta"]))
        choice = pool.sort_values(["_d", "_p", "_cur", "_long", "_neg"]).iloc[0]
    fam_rows = [j for j in range(len(taus)) if taus[j] == choice["interval"]]
    fam = min(fam_rows, key=lambda j: abs(float(out["cont_tinf"][j]) - choice["infusion"]))
    status = out["status"]
    units = {"dose": info.unit("dose", "mg").split()[0], "conc": info.unit("concentration", "mg/L").split()[0],
             "auc": info.unit("auc", "mg*h/L").split()[0]}
    reachable = True
    message = ""
    if np.all(status > 0) or np.all(out["cont_dose"] > dmax * (1 + 1e-9)):
        reachable = False
        message = (f"the target cannot be reached within the dose limits: even {choice['dose']:g} {units['dose']} "
                   f"every {choice['interval']:g} h gives {target.kind} {choice['target_metric']:.4g} "
                   f"(the aim {target.aim:g} needs about {float(np.min(out['cont_dose'])):.0f} {units['dose']} "
                   f"per dose; maximum {dmax:g})")
    elif np.all(status < 0) or np.all(out["cont_dose"] < dmin * (1 - 1e-9)):
        reachable = False
        message = (f"the target cannot be reached within the dose limits: even the minimum dose {choice['dose']:g} "
                   f"{units['dose']} every {choice['interval']:g} h gives {target.kind} "
                   f"{choice['target_metric']:.4g}, above the aim {target.aim:g}; consider a longer interval")
    elif not choice["in_range"]:
        message = (f"after rounding to {unit:g} {units['dose']} the predicted {target.kind} is "
                   f"{choice['target_metric']:.4g} (outside the range)")
    warnings_list = list(fit.warnings)
    if draws.method == "sir" and draws.stats.get("ess", np.inf) < 0.1 * flat.shape[0]:
        warnings_list.append(f"SIR effective sample size {draws.stats['ess']:.0f} is small: the posterior is far "
                             "from normal; use posterior='nuts' for the probability of target attainment")

    # ---- current regimen, next dose, loading dose
    cur = None
    if last is not None and last.get("interval"):
        creg = Regimen(dose=current[0], interval=current[1], infusion_duration=current[2], route=route)
        cur = {"regimen": creg.describe(units["dose"]), "dose": current[0], "interval": current[1],
               "infusion": current[2], "trough": float(mv["trough"][-1]), "peak": float(mv["peak"][-1]),
               "auc24": float(mv["auc24"][-1]), "target_metric": float(mv["target"][-1]), "pta": float(pta[-1])}
    next_dose = time_below(fit, threshold) if threshold is not None else None
    if start_time is None:
        if next_dose is not None and next_dose.get("time") is not None:
            start_time = next_dose["time"]
        elif last is not None:
            start_time = last["time"] + (last.get("interval") or 0.0)
        else:
            start_time = 0.0
    regimen = Regimen(dose=float(choice["dose"]), interval=float(choice["interval"]),
                      infusion_duration=float(choice["infusion"]), route=route, start_time=float(start_time))
    loading = None
    # The predicted profile: from the last dose (so the decline before the new regimen
    # shows) to a few intervals into it.
    curve_from = min(last["time"], start_time) if last is not None else start_time
    curve_t = np.linspace(curve_from, start_time + max(48.0, 3 * regimen.interval), 150)
    if loading_dose:
        loading = _design_loading(fit, target, regimen, unit, dmin,
                                  float(loading_dose_max if loading_dose_max is not None else dmax),
                                  options, rate_max, oral, cmt, curve_t)
        regimen.loading_dose = loading["dose"]
        regimen.loading_infusion_duration = loading["infusion"]
        curve_c = loading.pop("_curve")
    elif curve:
        doses = [(start_time + k * regimen.interval, regimen.dose, regimen.infusion_duration, cmt)
                 for k in range(int(min(16, math.ceil((curve_t[-1] - start_time) / regimen.interval) + 1)))]
        _, curve_c, _ = continue_history(fit, doses, curve=curve_t)
    profile = pd.DataFrame({"TIME": curve_t, "IPRED": curve_c}) if (curve or loading_dose) else None
    predicted = {"trough": float(choice["trough"]), "peak": float(choice["peak"]), "auc24": float(choice["auc24"]),
                 "target": float(choice["target_metric"])}
    posterior_info = {"method": draws.method, "n": int(flat.shape[0])}
    if draws.method == "sir":
        posterior_info["ess"] = float(draws.stats["ess"])
    return Recommendation(
        target=target, regimen=regimen, reachable=reachable, message=message,
        dose_unrounded=float(out["cont_dose"][fam]), exposure_unrounded=float(out["cont_exposure"][fam]),
        predicted=predicted, pta=float(choice["pta"]), current=cur, next_dose=next_dose, loading=loading,
        alternatives=table, fit=fit, posterior=posterior_info, warnings=warnings_list, units=units, curve=profile,
    )


def _design_loading(fit, target, regimen: Regimen, unit, dmin, ld_max, options, rate_max, oral, cmt, curve_t):
    """A loading dose so the first interval reaches the aim (secant on the dose)."""
    aim = min(target.aim, 99.9) if target.kind == "ft_mic" else target.aim

    def tinf_for(dose):
        if oral:
            return 0.0
        if rate_max:
            ok = [t for t in options if t >= dose / float(rate_max) - 1e-9]
            return float(min(ok)) if ok else float(max(options))
        return regimen.infusion_duration

    def f(ld):
        value, _ = _loading_exposure(fit, target, regimen.start_time, ld, tinf_for(ld), regimen.dose,
                                     regimen.interval, regimen.infusion_duration, cmt)
        return value

    x0, x1 = 0.0, max(regimen.dose, unit)
    f0, f1 = f(x0), f(x1)
    ld = x1
    for _ in range(12):
        if f1 == f0:
            break
        ld = x1 + (aim - f1) * (x1 - x0) / (f1 - f0)
        ld = float(np.clip(ld, 0.0, 10 * max(ld_max, regimen.dose)))
        fl = f(ld)
        if abs(fl - aim) <= 1e-6 * aim:
            break
        x0, f0, x1, f1 = x1, f1, ld, fl
    unrounded = ld
    if unrounded <= regimen.dose + 1e-9:
        chosen = regimen.dose
        message = "no loading dose needed (the maintenance dose already reaches the aim in the first interval)"
    else:
        chosen = float(np.clip(round(unrounded / unit) * unit, max(dmin, regimen.dose), math.floor(ld_max / unit) * unit))
        message = f"{chosen:g} (unrounded {unrounded:.1f})"
        if unrounded > ld_max + 1e-9:
            message += f"; capped at the maximum {ld_max:g}"
    tinf = tinf_for(chosen)
    value, c = _loading_exposure(fit, target, regimen.start_time, chosen, tinf, regimen.dose, regimen.interval,
                                 regimen.infusion_duration, cmt, curve=curve_t)
    message += f"; predicted first-{'24 h' if target.kind == 'auc24' else 'interval'} {target.kind} {value:.4g}"
    return {"dose": chosen if chosen > regimen.dose else None, "infusion": tinf, "unrounded": unrounded,
            "unrounded_infusion": tinf_for(unrounded), "predicted": value, "message": message, "_curve": c}


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

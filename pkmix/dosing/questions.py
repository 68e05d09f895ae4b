"""The everyday dosing questions beyond "which regimen hits the target at steady state".

Each takes a `MAPResult` (a patient's individual fit; a patient without levels gives the
a priori one) and answers from the patient's own history, through the event engine (so
every earlier dose counts):

* `next_dose`: the amount (and infusion) to give at a chosen time for a target over
  what follows (AUC over the next interval or 24 h, trough, peak, concentration).
* `history_exposure`: AUC over any window, the concentration at any time, and each given
  dose's peak and trough, with credible intervals from posterior draws.
* `interval_for`: the dosing interval at which a given dose meets a trough, peak or
  AUC24 target at steady state.
* `what_if`: any regimen's predictions (each of its first n doses' peak and trough,
  and steady state) at the MAP, at given etas, or a priori.

Continuous infusion is a regimen of `recommend` (``continuous=True``).
Every dose proposed respects the hard limits of `pkmix.dosing.safety.DoseLimits`.
"""

from __future__ import annotations

import math

import numpy as np

from .binding import _dose_compartment
from .exposure import steady_state_exposure
from .history import _extend_eta, _window_nodes, history_predictions
from .map import MAPResult
from .safety import DoseLimits, stricter, units_of
from .targets import Target

# Queries per call of the history program (its block holds CURVE_POINTS - 16).
_MAX_QUERIES = 300
# Just before a dose: a level "at" a dose time is taken before that dose.
_BEFORE = 1e-7


def _target(target) -> Target:
    if isinstance(target, Target):
        return target
    if isinstance(target, str):
        return Target.parse(target)
    raise TypeError(f"target: expected a Target or a string like 'trough=15', got {type(target).__name__}")


def _route_cmt(fit: MAPResult, route):
    route = (route or fit.bound.route).lower()
    if route not in ("iv", "oral"):
        raise ValueError(f"route must be 'iv' or 'oral', got {route!r}")
    return route, _dose_compartment(fit.info, route, None, "route")


def _limits(fit: MAPResult, dose_unit=None, dose_min=None, dose_max=None, max_daily_dose=None,
            max_infusion_rate=None, oral=False) -> DoseLimits:
    dosing = fit.info.dosing
    unit = float(dose_unit if dose_unit is not None else dosing.get("dose_step_mg", 250.0))
    per_dose = stricter(dose_max, dosing.get("dose_max_mg"))
    rate = stricter(max_infusion_rate, dosing.get("infusion_rate_max_mg_per_h"))
    return DoseLimits(per_dose=math.inf if per_dose is None else per_dose,
                      per_day=stricter(max_daily_dose, dosing.get("daily_dose_max_mg")),
                      rate=None if oral else rate, unit=unit,
                      dose_min=float(dose_min if dose_min is not None else dosing.get("dose_min_mg", unit)))


def _history_doses(fit: MAPResult) -> list[tuple[float, float]]:
    """(time, amount) of every dose in the patient's history."""
    rec = fit.bound.records
    is_dose = np.isin(rec["EVID"], (1, 4))
    return list(zip(rec["TIME"][is_dose].tolist(), rec["AMT"][is_dose].tolist()))


def _window_metric(fit, target: Target, start: float, doses, window: float, etas=None):
    """The target's metric over what follows ``start`` (doses [(t, amt, tinf, cmt)])."""
    etas = [_extend_eta(fit, fit.eta)] if etas is None else etas
    kind = target.kind
    if kind in ("auc24", "auc", "ft_mic"):
        lo, hi = start, start + (24.0 if kind == "auc24" else window)
        if kind == "auc" and target.start is not None:
            lo, hi = start + target.start, start + target.end
        kinks = [t for t, *_ in doses] + [t + d for t, _, d, _ in doses]
        nodes, weights = _window_nodes(lo, hi, kinks, 150)
        q, _ = history_predictions(fit, etas, doses, queries=nodes)
        if kind != "ft_mic":
            return q @ weights
        mic = float(target.mic)
        above = np.zeros(q.shape[0])
        for j in range(q.shape[0]):
            l = np.log(np.maximum(q[j], 1e-300) / mic)
            for i in range(len(nodes) - 1):
                a, b, L = l[i], l[i + 1], nodes[i + 1] - nodes[i]
                above[j] += L if (a > 0 and b > 0) else (L * a / (a - b) if a > 0 >= b else
                                                         (L * b / (b - a) if b > 0 >= a else 0.0))
        return 100.0 * above / (hi - lo)
    if kind == "trough":
        t = start + window - _BEFORE
    elif kind == "peak":
        t = start + (target.time if target.time is not None else max(doses[0][2], 0.0))
    else:
        t = start + target.time
    q, _ = history_predictions(fit, etas, doses, queries=[t])
    return q[:, 0]


def _secant(f, aim, x1, hi, iters=30):
    """A dose x in [0, hi] with f(x) = aim (f increasing in x); f linear: exact in one step."""
    x0, f0 = 0.0, f(0.0)
    f1 = f(x1)
    x = x1
    for _ in range(iters):
        if f1 == f0:
            break
        x = x1 + (aim - f1) * (x1 - x0) / (f1 - f0)
        x = float(np.clip(x, 0.0, hi))
        fx = f(x)
        if abs(fx - aim) <= 1e-9 * abs(aim) or x == x1:
            break
        x0, f0, x1, f1 = x1, f1, x, fx
    return x


# ------------------------------------------------------------------------------ next dose
def next_dose(fit: MAPResult, target, at: float, *, interval: float | None = None,
              infusion_duration: float | None = None, route: str | None = None, dose_unit: float | None = None,
              dose_min: float | None = None, dose_max: float | None = None, max_daily_dose: float | None = None,
              max_infusion_rate: float | None = None) -> dict:
    """The dose to give at time ``at`` (hours, the patient's clock) so that what follows
    meets ``target``, given the patient's whole history.

    The target is read over what follows the dose: ``auc24`` the AUC over the next 24 h,
    ``auc`` over the next ``interval`` (or the target's window after ``at``), ``trough``
    the level just before ``at + interval``, ``peak`` the level at the end of the
    infusion (or ``time`` h after ``at``), ``conc`` the level ``time`` h after ``at``,
    ``ft_mic`` the part of the next interval above the MIC. No further dose is assumed.

    Args:
        fit: the patient's `MAPResult`.
        target: a `Target` or a string (``"trough=15"``, ``"auc24=400:600"``).
        at: when the dose is given (hours since the patient's time 0).
        interval: the time to the following dose (default: the current interval, else 24 h).
        infusion_duration: hours (default: the last dose's, else the model's usual, lengthened in
            half hours when the dose needs it under the infusion rate limit; 0 a bolus).
        route, dose_unit, dose_min, dose_max, max_daily_dose, max_infusion_rate: as for
            `recommend`; the maxima (the stricter of these and the model's METADATA) are
            hard limits, the 24 h limit counting the history's doses in the 24 h before ``at``.

    Returns:
        ``{"time", "dose", "infusion", "unrounded", "predicted", "reachable", "message",
        "target", "limits"}``: ``predicted`` is the target's metric for the rounded dose.
    """
    target = _target(target)
    at = float(at)
    if not math.isfinite(at):
        raise ValueError(f"at: the time of the dose must be a finite number of hours, got {at!r}")
    last = fit.bound.last_dose
    if last is not None and at < last["time"]:
        raise ValueError(f"at: {at:g} h is before the last dose in the history ({last['time']:g} h)")
    route, cmt = _route_cmt(fit, route)
    oral = route == "oral"
    limits = _limits(fit, dose_unit, dose_min, dose_max, max_daily_dose, max_infusion_rate, oral)
    tau = float(interval if interval is not None else ((last or {}).get("interval") or 24.0))
    if not tau > 0:
        raise ValueError(f"interval must be positive hours, got {tau!r}")
    if oral:
        tinf = 0.0
    elif infusion_duration is not None:
        tinf = float(infusion_duration)
    else:
        tinf = float((last or {}).get("duration") or fit.info.dosing.get("default_infusion_h", 1.0))
    if tinf < 0 or (tinf > 0 and tinf > tau):
        raise ValueError(f"infusion_duration {tinf:g} h must be between 0 and the interval {tau:g} h")
    cap_no_rate = limits.per_dose
    if limits.per_day is not None:
        given = sum(a for t, a in _history_doses(fit) if at - 24.0 < t <= at)
        cap_no_rate = min(cap_no_rate, limits.per_day - given)
    unit = limits.unit
    aim = min(target.aim, 99.9) if target.kind == "ft_mic" else target.aim
    if infusion_duration is None and limits.rate is not None and tinf > 0:
        # The infusion long enough for the dose at the rate limit (in half hours, within the interval).
        def f0(dose):
            return float(_window_metric(fit, target, at, [(at, dose, tinf, cmt)], tau)[0])

        need = _secant(f0, aim, max(unit, 1e-9), 100.0 * max(unit * 100, min(cap_no_rate, 1e9)))
        need = min(need, cap_no_rate) / limits.rate
        tinf = float(min(max(tinf, math.ceil(need * 2 - 1e-9) / 2), tau))
    cap = cap_no_rate
    if limits.rate is not None and tinf > 0:
        cap = min(cap, limits.rate * tinf)
    if np.floor(cap / unit + 1e-9) * unit < limits.dose_min - 1e-9:
        raise ValueError(f"no dose at {at:g} h is within the limits ({limits.describe(units_of(fit.info)['dose'])}; "
                         "the 24 h limit counts the doses already given in the 24 h before)")

    def f(dose):
        return float(_window_metric(fit, target, at, [(at, dose, tinf, cmt)], tau)[0])

    hi = 100.0 * max(cap if math.isfinite(cap) else 0.0, unit * 100)
    unrounded = _secant(f, aim, max(unit, 1e-9), hi)
    lo_r = max(math.ceil(limits.dose_min / unit - 1e-9) * unit, unit)
    hi_r = float(np.floor(cap / unit + 1e-9)) * unit
    candidates = sorted({float(np.clip(np.floor(unrounded / unit + 1e-9) * unit, lo_r, hi_r)),
                         float(np.clip(np.ceil(unrounded / unit - 1e-9) * unit, lo_r, hi_r))})
    values = [f(d) for d in candidates]
    dist = [float(target.distance(np.asarray([v]))[0]) for v in values]
    close = [abs(v - aim) for v in values]
    k = min(range(len(candidates)), key=lambda i: (dist[i], close[i]))
    dose, value = candidates[k], values[k]
    units = units_of(fit.info)
    reachable = bool(unrounded <= cap * (1 + 1e-9) and unrounded >= limits.dose_min * (1 - 1e-9))
    if not reachable and unrounded > cap:
        message = (f"the target cannot be reached within the limits ({limits.describe(units['dose'])}): the best "
                   f"dose within them is {dose:g} {units['dose']}, expected {target.kind} {value:.4g} (aim {aim:g})")
    elif not reachable:
        message = (f"even the smallest dose {dose:g} {units['dose']} gives {target.kind} {value:.4g}, above the aim "
                   f"{aim:g}: consider a later time")
    else:
        message = "" if target.attained(value) else (f"after rounding to {unit:g} {units['dose']} the predicted "
                                                     f"{target.kind} is {value:.4g} (outside the range)")
    if limits.violations(dose, None, tinf):
        raise RuntimeError(f"internal error: next dose {dose:g} above a limit")
    return {"time": at, "datetime": _clock(fit, at), "dose": dose, "infusion": tinf, "route": route,
            "interval": tau, "unrounded": unrounded, "predicted": value, "reachable": reachable, "message": message,
            "target": target.describe(), "limits": limits.to_dict(), "units": units}


def _clock(fit, t):
    dt = fit.bound.patient.datetime_of(t)
    return None if dt is None else dt.isoformat(timespec="minutes")


# ------------------------------------------------------------------------------- exposure
def posterior_etas(fit: MAPResult, n: int = 200, seed: int = 0) -> np.ndarray:
    """``n`` posterior draws of the patient's full eta vector (SIR), plus the new
    occasion's IOV etas at 0, for credible intervals of history predictions."""
    from .posterior import sir_draws

    if fit.model.spec.n_eta == 0 and not fit.model.iov_names:
        return np.zeros((0, 0))
    draws = sir_draws(fit, n_samples=2000, seed=seed, parameters=False).flat_eta
    pick = draws[np.linspace(0, draws.shape[0] - 1, min(n, draws.shape[0])).astype(int)]
    n_new = len(fit.model.iov_names)
    return np.concatenate([pick, np.zeros((pick.shape[0], n_new))], axis=1)


def _interval(values: np.ndarray, level: float):
    if values.size == 0:
        return None
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def history_exposure(fit: MAPResult, *, windows=(), times=(), doses: bool = True, n_draws: int = 200, level: float = 0.95,
             seed: int = 0) -> dict:
    """Exposure over the patient's actual history: AUC over windows, the concentration at
    times, and each given dose's peak and trough, at the MAP with credible intervals.

    Args:
        fit: the patient's `MAPResult`.
        windows: ``[(start, end), ...]`` hours on the patient's clock (AUC0-24 is (0, 24)).
        times: hours at which to report the concentration.
        doses: also report each dose's peak (end of the infusion; for oral doses the
            highest level before the next dose) and trough (just before the next dose).
        n_draws: posterior draws (SIR) for the credible intervals (0: none).
        level: the credible level (0.95: the 2.5th to 97.5th percentile).
        seed: seed of the draws.

    Returns:
        ``{"auc": [{"start", "end", "value", "ci"}], "concentrations": [{"time", "value",
        "ci"}], "doses": [{"time", "amount", "peak", "peak_time", "trough", "trough_time",
        "peak_ci", "trough_ci"}], "level", "n_draws", "units"}``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    windows = [(float(a), float(b)) for a, b in windows]
    for i, (a, b) in enumerate(windows):
        if not (math.isfinite(a) and math.isfinite(b) and b > a):
            raise ValueError(f"windows[{i}]: need start < end, got {a:g} to {b:g}")
    times = [float(t) for t in times]
    if any(not math.isfinite(t) for t in times):
        raise ValueError("times: every time must be a finite number of hours")
    rec = fit.bound.records
    is_dose = np.isin(rec["EVID"], (1, 4))
    d_time, d_amt = rec["TIME"][is_dose], rec["AMT"][is_dose]
    d_dur = np.where(rec["RATE"][is_dose] > 0, rec["AMT"][is_dose] / np.where(rec["RATE"][is_dose] > 0,
                                                                                rec["RATE"][is_dose], 1.0),
                     rec["DUR"][is_dose])
    last = fit.bound.last_dose or {}
    oral = fit.bound.route == "oral"
    queries: list[float] = []
    blocks = []
    kinks = list(d_time) + list(d_time + d_dur)
    for a, b in windows:
        nodes, w = _window_nodes(a, b, kinks, 60)
        blocks.append(("auc", (a, b), len(queries), len(nodes), w))
        queries += list(nodes)
    for t in times:
        blocks.append(("conc", t, len(queries), 1, None))
        queries.append(t)
    dose_rows = []
    if doses:
        for i, (t, amt, dur) in enumerate(zip(d_time, d_amt, d_dur)):
            nxt = d_time[i + 1] if i + 1 < len(d_time) else (t + last["interval"] if last.get("interval") else None)
            if oral:
                end = nxt if nxt is not None else t + 24.0
                grid = list(np.linspace(t, end - _BEFORE, 12)[1:])
                dose_rows.append((t, amt, len(queries), len(grid), nxt))
                queries += grid
            else:
                dose_rows.append((t, amt, len(queries), 1, nxt))
                queries.append(t + dur)
            if nxt is not None:
                queries.append(nxt - _BEFORE)
    if len(queries) > _MAX_QUERIES:
        raise ValueError(f"too many points asked for at once ({len(queries)} > {_MAX_QUERIES}): fewer windows, times "
                         "or doses")
    etas = [_extend_eta(fit, fit.eta)]
    draws = posterior_etas(fit, n_draws, seed) if n_draws else np.zeros((0, 0))
    all_etas = np.concatenate([np.atleast_2d(etas[0]), draws]) if len(draws) else np.atleast_2d(etas[0])
    q, _ = history_predictions(fit, all_etas, queries=queries)
    units = units_of(fit.info)
    out = {"auc": [], "concentrations": [], "doses": [], "level": level, "n_draws": int(all_etas.shape[0] - 1),
           "units": units}
    for kind, what, start, n, w in blocks:
        vals = q[:, start:start + n]
        if kind == "auc":
            v = vals @ w
            out["auc"].append({"start": what[0], "end": what[1], "value": float(v[0]), "ci": _interval(v[1:], level)})
        else:
            out["concentrations"].append({"time": what, "datetime": _clock(fit, what), "value": float(vals[0, 0]),
                                          "ci": _interval(vals[1:, 0], level)})
    for t, amt, start, n, nxt in dose_rows:
        vals = q[:, start:start + n]
        j = int(np.argmax(vals[0]))
        peak = vals[:, j] if not oral else vals.max(axis=1)
        peak_time = queries[start + j]
        row = {"time": float(t), "amount": float(amt), "peak": float(peak[0]), "peak_time": float(peak_time),
               "peak_ci": _interval(peak[1:], level), "trough": None, "trough_time": None, "trough_ci": None}
        if nxt is not None:
            tr = q[:, start + n]
            row.update({"trough": float(tr[0]), "trough_time": float(nxt), "trough_ci": _interval(tr[1:], level)})
        out["doses"].append(row)
    return out


# ------------------------------------------------------------------------ interval solver
def interval_for(fit: MAPResult, dose: float, target, *, infusion_duration: float | None = None,
                 route: str | None = None, shortest: float = 1.0, longest: float = 168.0) -> dict:
    """The dosing interval at which ``dose`` meets ``target`` at steady state (MAP).

    The trough, the peak and AUC24 all fall as the interval grows, so the interval that
    gives the aim is found by bisection on log(interval) between ``shortest`` and
    ``longest`` hours, each step an exact steady-state evaluation (`steady_state_exposure`).

    Returns:
        ``{"interval", "dose", "infusion", "target", "predicted", "status"}``; status
        "found", or "below" / "above" when even ``longest`` / ``shortest`` gives a value
        above / below the aim (interval is then that bound).
    """
    target = _target(target)
    if target.kind not in ("trough", "peak", "auc24", "conc"):
        raise ValueError(f"target: the interval solver needs a trough, peak, conc or auc24 target, got {target.kind}")
    dose = float(dose)
    if not (math.isfinite(dose) and dose > 0):
        raise ValueError(f"dose must be a positive number, got {dose!r}")
    route, _ = _route_cmt(fit, route)
    last = fit.bound.last_dose or {}
    tinf = 0.0 if route == "oral" else float(infusion_duration if infusion_duration is not None
                                             else (last.get("duration") or 1.0))
    lo, hi = max(float(shortest), tinf * (1 + 1e-9) if tinf > 0 else 0.0), float(longest)
    if not 0 < lo < hi:
        raise ValueError(f"need 0 < shortest < longest (and the infusion {tinf:g} h shorter), got {lo:g}, {hi:g}")

    def g(tau):
        return steady_state_exposure(fit, dose, tau, tinf, route=route, target=target)["target"]

    aim = target.aim
    g_lo, g_hi = g(lo), g(hi)
    if not (np.isfinite(g_lo) and np.isfinite(g_hi)):
        raise ValueError("the model gives non-finite exposure for this patient")
    status = "found"
    if g_hi > aim:
        tau, status = hi, "below"
    elif g_lo < aim:
        tau, status = lo, "above"
    else:
        a, b = math.log(lo), math.log(hi)
        for _ in range(60):
            m = 0.5 * (a + b)
            if g(math.exp(m)) > aim:
                a = m
            else:
                b = m
            if b - a < 1e-10:
                break
        tau = math.exp(0.5 * (a + b))
    exp = steady_state_exposure(fit, dose, tau, tinf, route=route, target=target)
    return {"interval": tau, "dose": dose, "infusion": tinf, "route": route, "target": target.describe(),
            "predicted": exp["target"], "trough": exp["trough"], "peak": exp["peak"], "auc24": exp["auc24"],
            "status": status}


# -------------------------------------------------------------------------------- what if
def what_if(fit: MAPResult, dose: float, interval: float, infusion_duration: float = 0.0, *, n_doses: int = 4,
            start: float | None = None, etas=None, route: str | None = None, times=(),
            target=None) -> dict:
    """Predictions for a regimen: the first ``n_doses`` doses (each one's peak and the
    trough before the next, e.g. the trough before the 4th dose), the level at ``times``,
    and steady state, continuing the patient's history.

    Args:
        fit: the patient's `MAPResult` (a patient without levels: the a priori fit).
        dose, interval, infusion_duration: the regimen (hours; 0 a bolus or oral;
            ``infusion_duration == interval`` is a continuous infusion).
        n_doses: doses to report one by one (1 to 15).
        start: the time of the first dose (default: when the next dose is due, else 0).
        etas: None or "map" (the MAP), "prior" (a priori: every eta 0), or the BSV etas
            (a list in the order of ``fit.eta_names``' BSV part, e.g. an earlier MAP).
        route: "iv" or "oral" (default the patient's).
        times: hours on the patient's clock at which to report the level.
        target: adds the target's metric at steady state.
    """
    dose, interval, tinf = float(dose), float(interval), float(infusion_duration)
    if not (dose > 0 and math.isfinite(dose)):
        raise ValueError(f"dose must be a positive number, got {dose!r}")
    if not (interval > 0 and math.isfinite(interval)):
        raise ValueError(f"interval must be positive hours, got {interval!r}")
    if not 0 <= tinf <= interval:
        raise ValueError(f"infusion_duration must be between 0 and the interval, got {tinf!r}")
    if isinstance(n_doses, bool) or not isinstance(n_doses, int) or not 1 <= n_doses <= 15:
        raise ValueError(f"n_doses must be a whole number from 1 to 15, got {n_doses!r}")
    route, cmt = _route_cmt(fit, route)
    if route == "oral":
        tinf = 0.0
    last = fit.bound.last_dose
    if start is None:
        start = (last["time"] + (last.get("interval") or 0.0)) if last is not None else 0.0
    start = float(start)
    n_bsv = fit.model.spec.n_eta
    if etas is None or (isinstance(etas, str) and etas == "map"):
        full = _extend_eta(fit, fit.eta)
        bsv = np.asarray(fit.eta)[:n_bsv]
        source = "map"
    elif isinstance(etas, str) and etas == "prior":
        full = np.zeros(len(np.asarray(_extend_eta(fit, fit.eta))))
        bsv = np.zeros(n_bsv)
        source = "prior"
    else:
        bsv = np.asarray(etas, float).ravel()
        if bsv.shape != (n_bsv,) or not np.all(np.isfinite(bsv)):
            raise ValueError(f"etas: expected {n_bsv} finite numbers ({', '.join(fit.model.eta_names)}), got "
                             f"{list(np.ravel(etas))}")
        full = np.zeros(len(np.asarray(_extend_eta(fit, fit.eta))))
        full[:n_bsv] = bsv
        source = "given"
    continuous = tinf >= interval
    # A continuous infusion is one long infusion over the n intervals (no troughs).
    if continuous:
        doses = [(start, dose * n_doses, interval * n_doses, cmt)]
    else:
        doses = [(start + k * interval, dose, tinf, cmt) for k in range(n_doses)]
    queries = []
    for k in range(n_doses):
        t0 = start + k * interval
        queries += [t0 + (tinf if not continuous else interval) if route != "oral" else t0,
                    t0 + interval - _BEFORE]
    if route == "oral":
        # Oral peaks: the highest of 8 points in each interval.
        grid = [start + k * interval + interval * j / 9 for k in range(n_doses) for j in range(1, 9)]
    else:
        grid = []
    q, c = history_predictions(fit, [full], doses, queries=queries + [float(t) for t in times], curve=grid)
    rows = []
    for k in range(n_doses):
        peak = float(q[0, 2 * k])
        peak_time = queries[2 * k]
        if route == "oral":
            seg = c[0, 8 * k:8 * k + 8]
            peak = float(seg.max())
            peak_time = grid[8 * k + int(seg.argmax())]
        rows.append({"dose_number": k + 1, "time": start + k * interval, "peak": peak, "peak_time": peak_time,
                     "trough_before_next": float(q[0, 2 * k + 1]), "trough_time": start + (k + 1) * interval})
    ss = steady_state_exposure(fit, dose, interval, tinf, route=route, target=target, etas=bsv[None, :])
    return {"regimen": {"dose": dose, "interval": interval, "infusion": tinf, "route": route, "start": start,
                        "continuous": continuous},
            "etas": {"source": source, "values": [float(x) for x in bsv]}, "doses": rows,
            "concentrations": [{"time": float(t), "value": float(v)} for t, v in zip(times, q[0, len(queries):])],
            "steady_state": {k: float(v) for k, v in ss.items()}, "units": units_of(fit.info)}


__all__ = ["next_dose", "history_exposure", "interval_for", "what_if", "posterior_etas"]

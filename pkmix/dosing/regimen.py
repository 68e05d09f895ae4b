"""Regimen optimisation: the dose, interval and infusion that hit an exposure target.

`recommend` solves, for each allowed interval, the dose that meets the target at
steady state (`pkmix.dosing.search`), rounds it, evaluates it at the MAP and at every
posterior draw (`pkmix.dosing.exposure`) and chooses; loading doses and the time a level
falls below a threshold continue the patient's history (`pkmix.dosing.history`).
Targets are in `pkmix.dosing.targets`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from .binding import _dose_compartment
from .exposure import (KIND_INDEX, _Config, _exposure, _metric, is_point_target, steady_state_exposure,
                       steady_state_metrics)
from .history import _loading_exposure, continue_history, time_below
from .map import MAPResult, call_program, map_estimate, model_fingerprint
from .posterior import Draws, nuts_draws, sir_draws
from .search import _Design, _draw_targets, _draw_targets_impl, _search, _search_impl, _solve_dose
from .safety import DoseLimits, stricter, units_of
from .targets import PTA_TIE, TARGET_KINDS, Target, default_target

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
    continuous: bool = False  # a continuous infusion: ``dose`` every ``interval`` h, infused throughout

    def describe(self, unit="mg") -> str:
        if self.continuous:
            text = (f"continuous infusion {self.dose * 24.0 / self.interval:g} {unit} per 24 h "
                    f"({self.dose / self.interval:.4g} {unit}/h)")
            if self.loading_dose:
                text = f"loading dose {self.loading_dose:g} {unit} over {self.loading_infusion_duration:g} h, then " + text
            return text
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
    limits: dict | None = None  # the hard limits the regimen respects (see `DoseLimits`)

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
        label = "Recommendation" if self.reachable else "Best regimen within the limits (the target is NOT reached)"
        lines.append(f"{label}: {self.regimen.describe(u['dose'])}")
        if self.regimen.start_time is not None:
            dt = self.fit.bound.patient.datetime_of(self.regimen.start_time)
            lines.append(f"  start at t = {self.regimen.start_time:.1f} h" +
                         (f" ({dt.isoformat(timespec='minutes')})" if dt else ""))
        p = self.predicted
        lines.append(f"  predicted at steady state: trough {p['trough']:.3g} {u['conc']}, peak {p['peak']:.3g} "
                     f"{u['conc']}, AUC24 {p['auc24']:.4g} {u['auc']}; target metric {p['target']:.4g}")
        lines.append(f"  probability of target attainment {self.pta:.2f} "
                     f"({self.posterior['method'].upper()}, {self.posterior['n']} draws)")
        # More than one rounding step above the final dose: a limit, not the rounding, stopped it.
        step = float((self.limits or {}).get("dose_unit") or 0.0)
        beyond = " (beyond the limits)" if self.dose_unrounded > (self.regimen.dose + step) * (1 + 1e-9) \
            and not self.reachable else ""
        lines.append(f"  unrounded dose {self.dose_unrounded:.1f} {u['dose']} gives {self.exposure_unrounded:.4g}{beyond}")
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
            "limits": self.limits,
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
              metadata=None, draws: Draws | None = None, curve: bool = True,
              continuous: bool = False) -> Recommendation:
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
        dose_min, dose_max: dose limits (METADATA ``dose_min_mg``/``dose_max_mg``, else one
            unit and no maximum). A maximum given here and one in METADATA: the stricter.
        infusion_duration: a duration or a tuple of allowed ones (hours). With a maximum
            infusion rate (``max_infusion_rate`` or METADATA ``infusion_rate_max_mg_per_h``)
            the shortest allowed duration that respects it is used; without one every
            duration given is a candidate. Ignored for oral dosing.
        loading_dose: also compute a loading dose, so the first interval (first 24 h for
            an AUC24 target) already reaches the aim.
        loading_dose_max: cap of the loading dose (default ``dose_max``).
        max_daily_dose: the largest amount per 24 h (default METADATA ``dosing.daily_dose_max_mg``).
            ``dose_max``, ``max_daily_dose`` and the infusion rate limit are hard limits
            (`DoseLimits`): no regimen or loading dose above them is ever returned.
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
        continuous: a continuous infusion: the amount per 24 h (``intervals`` and
            ``infusion_duration`` default to 24 h; the infusion lasts the whole interval).
            Targets: ``trough`` or ``conc`` (the steady-state level) or ``auc24``. With
            ``loading_dose``, a loading dose infused over the shortest of 0.5 to 12 h
            that respects the rate limit (1 h without one).

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
    if continuous:
        intervals = _options_from(intervals, (24.0,))
        if infusion_duration is not None and _options_from(infusion_duration, None) != tuple(intervals):
            raise ValueError("infusion_duration: a continuous infusion lasts the whole interval; leave it out")
        infusion_duration = tuple(intervals)
        if len(intervals) != 1:
            raise ValueError("intervals: a continuous infusion takes one interval (the bag's duration)")
    intervals = _options_from(intervals, tuple(dosing.get("intervals_h", (8.0, 12.0, 24.0))))
    if not intervals or any(not t > 0 for t in intervals):
        raise ValueError(f"intervals must be positive hours, got {intervals}")
    unit = float(dose_unit if dose_unit is not None else dosing.get("dose_step_mg", 250.0))
    if not unit > 0:
        raise ValueError(f"dose_unit must be positive, got {unit:g}")
    dmin = float(dose_min if dose_min is not None else dosing.get("dose_min_mg", unit))
    dmax = stricter(dose_max, dosing.get("dose_max_mg"))
    dmax = math.inf if dmax is None else dmax
    if not 0 < dmin <= dmax:
        raise ValueError(f"need 0 < dose_min <= dose_max, got {dmin:g} and {dmax:g}")
    if math.isfinite(dmax) and math.floor(dmax / unit + 1e-9) * unit < dmin - 1e-9:
        raise ValueError(f"no multiple of the dose unit {unit:g} lies between dose_min {dmin:g} and dose_max {dmax:g}")
    route = (route or fit.bound.route).lower()
    if route not in ("iv", "oral"):
        raise ValueError(f"route must be 'iv' or 'oral', got {route!r}")
    cmt = _dose_compartment(info, route, None, "route")
    oral = route == "oral"
    rate_max = stricter(max_infusion_rate, dosing.get("infusion_rate_max_mg_per_h"))
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
    if continuous and oral:
        raise ValueError("route: a continuous infusion is intravenous")
    for t in intervals:
        if not oral and not continuous and min(options) >= t:
            raise ValueError(f"infusion duration {min(options):g} h does not fit in a {t:g} h interval")
    daily_max = stricter(max_daily_dose, dosing.get("daily_dose_max_mg"))
    limits = DoseLimits(per_dose=dmax, per_day=None if daily_max is None else float(daily_max),
                        rate=None if (oral or not rate_max) else float(rate_max), unit=unit, dose_min=dmin)
    taus, tinfs, caps = [], [], []
    for t in intervals:
        for ti in fam_tinf:
            if ti > t or (ti == t and not continuous):
                continue
            cap = limits.cap(float(t), float(ti) if ti >= 0 else max(options))
            if np.floor(cap / unit + 1e-9) * unit < dmin - 1e-9:
                continue  # no practical dose of this interval is within the limits
            taus.append(float(t))
            tinfs.append(float(ti))
            caps.append(cap)
    if not taus:
        raise ValueError(f"no regimen is within the limits: {limits.describe(units_of(info)['dose'])} allows no "
                         f"dose of at least {dmin:g} at any of the intervals {', '.join(f'{t:g}' for t in intervals)} h")
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
        # Padded with the longest duration (a repeat changes no choice) so any list of
        # durations shares the compiled search.
        options=np.asarray(options + (options[-1],) * ((-len(options)) % 48), float),
        rate_max=np.asarray(float(rate_max) if rate_max else np.inf), unit=np.asarray(unit), dmin=np.asarray(dmin),
        dmax=np.asarray([min(c, 1e12) for c in caps + [caps[0]] * pad], float),
        aim=np.asarray(min(target.aim, 99.9) if target.kind == "ft_mic" else target.aim),
        t_query=np.asarray(float(target.time) if target.time is not None else 0.0),
        peak_at=np.asarray(target.time is not None), kind=np.asarray(KIND_INDEX[target.kind], np.int32),
        mic=np.asarray(float(target.mic or 1.0)),
        window=np.asarray([target.start or 0.0, target.end or 0.0], float),
        current=np.asarray(current, float), cmt=np.asarray(cmt, np.int32),
    )
    cov = np.asarray(fit.bound.cov_now, float)
    # A linear structure is searched with every draw in the same call; any other at the
    # MAP first, then its finalists at the draws (see `_draw_targets_impl`).
    linear = bool(m.structure.is_linear)
    out = call_program("regimen", _search_impl, _search, (m, cfg),
                       (fit.values, eta_map, eta_draws if linear else eta_draws[:0], cov, design),
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

    def feasibility(i):
        dose, tau, tinf = float(out["dose"][i]), float(out["tau"][i]), float(out["tinf"][i])
        if max_daily_dose is not None and dose * 24.0 / tau > max_daily_dose + 1e-9:
            return False, f"daily dose above {max_daily_dose:g}"
        if rate_max and not oral and tinf > 0 and dose / tinf > float(rate_max) + 1e-9:
            return False, f"infusion rate above {float(rate_max):g}/h"
        return True, ""

    if linear:
        pta = target.attained(out["draws"]["target"]).mean(axis=0)
    else:
        pta = _finalists_pta(m, cfg, fit, info, eta_draws, cov, design, out, target, n_c, feasibility)
    rows = []
    for i in range(n_c):
        dose, tau, tinf = float(out["dose"][i]), float(out["tau"][i]), float(out["tinf"][i])
        feasible, why = feasibility(i)
        rows.append({"interval": tau, "dose": dose, "infusion": tinf, "target_metric": float(mv["target"][i]),
                     "trough": float(mv["trough"][i]), "peak": float(mv["peak"][i]), "auc24": float(mv["auc24"][i]),
                     "pta": float(pta[i]), "in_range": bool(target.attained(mv["target"][i])),
                     "feasible": feasible, "note": why,
                     "unrounded_dose": float(out["cont_dose"][fam_of[i]]),
                     "status": int(out["status"][fam_of[i]])})
    table = pd.DataFrame(rows).drop_duplicates(subset=["interval", "dose", "infusion"]).reset_index(drop=True)
    feas = table[table["feasible"]]
    if feas.empty:  # the search caps every family's dose at its limits: cannot happen
        raise RuntimeError("internal error: no candidate regimen within the limits")
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
    units = units_of(info)
    reachable = True
    message = ""
    fam_caps = np.asarray(caps)
    if np.all(status > 0) or np.all(out["cont_dose"] > fam_caps * (1 + 1e-9)):
        reachable = False
        message = (f"the target cannot be reached within the limits ({limits.describe(units['dose'])}). The best "
                   f"regimen within them is {choice['dose']:g} {units['dose']} every {choice['interval']:g} h, "
                   f"expected {target.kind} {choice['target_metric']:.4g} (aim {target.aim:g}; it would need about "
                   f"{float(np.min(out['cont_dose'] * 24.0 / np.asarray(taus))):.0f} {units['dose']} per 24 h)")
    elif np.all(status < 0) or np.all(out["cont_dose"] < dmin * (1 - 1e-9)):
        reachable = False
        message = (f"the target cannot be reached within the dose limits: even the minimum dose {choice['dose']:g} "
                   f"{units['dose']} every {choice['interval']:g} h gives {target.kind} "
                   f"{choice['target_metric']:.4g}, above the aim {target.aim:g}; consider a longer interval")
    elif not choice["in_range"]:
        message = (f"after rounding to {unit:g} {units['dose']} the predicted {target.kind} is "
                   f"{choice['target_metric']:.4g} (outside the range)")
    no_steady = table[~np.isfinite(table["target_metric"].to_numpy(float))]
    if not no_steady.empty and not choice["in_range"]:
        first = no_steady.sort_values("dose").iloc[0]
        message += (f"; {first['dose']:g} {units['dose']} every {first['interval']:g} h has no steady state for "
                    f"this patient (the level rises without bound: the dose rate reaches the model's maximum "
                    f"elimination rate)")
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
                      infusion_duration=float(choice["infusion"]), route=route, start_time=float(start_time),
                      continuous=continuous)
    loading = None
    # The predicted profile: from the last dose (so the decline before the new regimen
    # shows) to a few intervals into it.
    curve_from = min(last["time"], start_time) if last is not None else start_time
    curve_t = np.linspace(curve_from, start_time + max(48.0, 3 * regimen.interval), 150)
    if loading_dose:
        ld_options = options
        if continuous:  # a short infusion alongside the continuous one
            ld_options = tuple(np.arange(0.5, 12.0 + 1e-9, 0.5)) if rate_max else (1.0,)
        ld_cap = limits.loading_cap(regimen.interval, max(ld_options) if not oral else 0.0, regimen.dose,
                                    loading_dose_max, concurrent=continuous)
        loading = _design_loading(fit, target, regimen, unit, dmin, ld_cap, ld_options, rate_max, oral, cmt,
                                  curve_t)
        regimen.loading_dose = loading["dose"]
        regimen.loading_infusion_duration = loading["infusion"]
        curve_c = loading.pop("_curve")
    elif curve:
        doses = [(start_time + k * regimen.interval, regimen.dose, regimen.infusion_duration, cmt)
                 for k in range(int(min(16, math.ceil((curve_t[-1] - start_time) / regimen.interval) + 1)))]
        _, curve_c, _ = continue_history(fit, doses, curve=curve_t)
    limits.check(regimen)
    profile = pd.DataFrame({"TIME": curve_t, "IPRED": curve_c}) if (curve or loading_dose) else None
    predicted = {"trough": float(choice["trough"]), "peak": float(choice["peak"]), "auc24": float(choice["auc24"]),
                 "target": float(choice["target_metric"])}
    reachable, message = _reached(target, predicted["target"], reachable, message, units)
    posterior_info = {"method": draws.method, "n": int(flat.shape[0])}
    if draws.method == "sir":
        posterior_info["ess"] = float(draws.stats["ess"])
    return Recommendation(
        target=target, regimen=regimen, reachable=reachable, message=message,
        dose_unrounded=float(out["cont_dose"][fam]), exposure_unrounded=float(out["cont_exposure"][fam]),
        predicted=predicted, pta=float(choice["pta"]), current=cur, next_dose=next_dose, loading=loading,
        alternatives=table, fit=fit, posterior=posterior_info, warnings=warnings_list, units=units, curve=profile,
        limits=limits.to_dict(),
    )


def _reached(target, metric, reachable, message, units):
    """The one rule for ``Recommendation.reachable``: the final regimen (rounded, within
    every limit) reaches the target only if its predicted target metric at the MAP is
    inside the target range, whatever the search said about the unrounded dose."""
    if reachable and not bool(target.attained(metric)):
        unit = units["auc"] if target.kind.startswith("auc") else ("%" if target.kind == "ft_mic" else units["conc"])
        reachable = False
        message = message or (f"the predicted {target.kind} of this regimen, {metric:.4g} {unit}, is outside "
                              f"the target range")
    return reachable, message


def _finalists_pta(m, cfg, fit, info, eta_draws, cov, design, out, target, n_c, feasibility):
    """PTA of the candidates the choice below can pick, NaN for the others: the feasible
    candidates in the target range at the MAP (the choice takes the highest PTA among
    them), else the feasible ones closest to the range (ties broken by PTA), and the
    current regimen (the last candidate)."""
    metric = out["map"]["target"][:n_c]
    feasible = np.array([feasibility(i)[0] for i in range(n_c)])
    inside = feasible & target.attained(metric)
    if inside.any():
        chosen = np.flatnonzero(inside)
    else:
        dist = np.where(feasible, np.round(target.distance(metric), 4), np.inf)
        chosen = np.flatnonzero(feasible & (dist == dist.min()))
    idx = np.r_[chosen, n_c]
    # Padded to a multiple of 4 (copies of the first) so searches share a compiled program.
    padded = np.r_[idx, np.repeat(idx[:1], (-len(idx)) % 4)]
    point = is_point_target(target.kind, cfg.oral)
    values = call_program("regimen_draws", _draw_targets_impl, _draw_targets, (m, cfg, point),
                          (fit.values, eta_draws, cov, out["dose"][padded], out["tau"][padded], out["tinf"][padded],
                           design), model_fingerprint(info))
    values = np.asarray(values)[:, :len(idx)]
    pta = np.full(n_c + 1, np.nan)
    pta[idx] = target.attained(values).mean(axis=0)
    return pta


def _design_loading(fit, target, regimen: Regimen, unit, dmin, ld_max, options, rate_max, oral, cmt, curve_t):
    """A loading dose so the first interval reaches the aim (secant on the dose)."""
    aim = min(target.aim, 99.9) if target.kind == "ft_mic" else target.aim

    def tinf_for(dose):
        if oral:
            return 0.0
        if rate_max:
            ok = [t for t in options if t >= dose / float(rate_max) - 1e-9]
            return float(min(ok)) if ok else float(max(options))
        return float(min(options)) if regimen.continuous else regimen.infusion_duration

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
    # A loading dose replaces the first maintenance dose; next to a continuous infusion
    # it comes on top of it.
    base = 0.0 if regimen.continuous else regimen.dose
    top = float(np.floor(ld_max / unit + 1e-9)) * unit
    if unrounded <= base + (0.5 * unit if regimen.continuous else 1e-9) or top <= base:
        chosen = base
        message = ("no loading dose needed (the maintenance dose already reaches the aim in the first interval)"
                   if top > base or unrounded <= base + 1e-9 else f"no loading dose within the limits (at most {ld_max:g})")
    else:
        chosen = float(np.clip(round(unrounded / unit) * unit, max(dmin, base + unit if regimen.continuous else base),
                               top))
        message = f"{chosen:g} (unrounded {unrounded:.1f})"
        if unrounded > ld_max + 1e-9:
            message += f"; capped at the maximum {ld_max:g}"
    tinf = tinf_for(chosen)
    value, c = _loading_exposure(fit, target, regimen.start_time, chosen, tinf, regimen.dose, regimen.interval,
                                 regimen.infusion_duration, cmt, curve=curve_t)
    message += f"; predicted first-{'24 h' if target.kind == 'auc24' else 'interval'} {target.kind} {value:.4g}"
    return {"dose": chosen if chosen > base else None, "infusion": tinf, "unrounded": unrounded,
            "unrounded_infusion": tinf_for(unrounded), "predicted": value, "message": message, "_curve": c}

"""Model averaging and selection: one patient, several published models of one drug.

Which population model describes a patient best is not known in advance (a vancomycin
patient may be closer to Goti's hospitalised adults or to Thomson's ward patients). As
mapbayr and InsightRx do, each model is fitted to the patient's levels (its MAP
estimate), weighted by how well it explains those levels, and the answers are combined::

    import pkmix.dosing as dosing
    avg = dosing.average(["vancomycin_goti2018", "vancomycin_thomson2009"], "patient.json",
                         "auc24=400:600")
    print(avg.summary())        # weights, each model's fit and regimen, the averaged regimen
    avg.to_dict()               # the same, JSON-ready

Only the public API of `pkmix.dosing` is used (`map_estimate`, `recommend`,
`steady_state_exposure`, `DoseLimits`), so each model's answer is exactly what it gives
alone.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

WEIGHT_SCHEMES = ("laplace", "ofv", "aic")
# A model whose weight is below this is left out of the averaged regimen search (its
# fit is still shown): its exposures would not move the average.
NEGLIGIBLE_WEIGHT = 1e-6
# Posterior draws per model for the mixture probability of target attainment.
DEFAULT_DRAWS = 1000
# Probability-of-attainment differences below this are Monte Carlo noise when choosing
# (the tolerance `recommend` uses).
PTA_TIE = 0.02


class AveragingError(ValueError):
    """The models cannot be averaged (different drugs or units, bad options)."""


@dataclasses.dataclass
class AveragedRecommendation:
    """The outcome of `average`. ``summary()`` prints it, ``to_dict()`` is JSON-ready.

    Attributes:
        models: the model names, in the order given.
        weights: ``{model: weight}``, summing to 1.
        scheme: the weighting scheme (see `average`).
        scores: ``{model: score}``, the -2 log weight before normalisation (smaller is better).
        fits: ``{model: MAPResult}``.
        recommendations: ``{model: Recommendation}``, each model's own answer.
        regimen: the averaged recommendation (a `Regimen`), or None when no model gave one.
        predicted: the model-averaged steady-state exposure of ``regimen`` at each
            model's MAP (``trough``, ``peak``, ``auc24``, ``target``).
        per_model: ``{model: {...}}`` the same exposures under each model.
        pta: the mixture probability of target attainment of ``regimen``.
        reachable, message: as in `Recommendation`.
        curve: the fitted concentration profiles (TIME, one IPRED column per model and the
            weighted ``IPRED_averaged``).
        observations: the levels with each model's IPRED and the weighted average.
        warnings: every model's warnings, prefixed by its name.
    """

    models: list
    weights: dict
    scheme: str
    scores: dict
    fits: dict
    recommendations: dict
    target: Any
    regimen: Any
    predicted: dict
    per_model: dict
    pta: float
    reachable: bool
    message: str
    curve: Any
    observations: Any
    units: dict
    warnings: list

    @property
    def best(self) -> str:
        """The model with the largest weight (model selection)."""
        return max(self.models, key=lambda m: self.weights[m])

    def table(self):
        """The models side by side (a DataFrame, one row per model)."""
        import pandas as pd

        rows = []
        for m in self.models:
            fit, rec = self.fits[m], self.recommendations[m]
            row = {"model": m, "weight": self.weights[m], "score": self.scores[m], "objective": fit.objective,
                   "converged": fit.converged, "n_levels": int(len(fit.observations)),
                   "regimen": rec.regimen.describe(self.units["dose"]), "reachable": rec.reachable,
                   "target_metric": rec.predicted.get("target"), "pta": rec.pta}
            for k, v in (self.per_model.get(m) or {}).items():
                row[f"averaged_regimen_{k}"] = v
            row.update({f"param_{k}": v for k, v in fit.current.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> str:
        u = self.units
        lines = [f"Model averaging ({self.scheme} weights) for {self.fits[self.models[0]].patient_id}, "
                 f"target {self.target.describe(u['auc'] if self.target.kind.startswith('auc') else u['conc'])}"]
        width = max(len(m) for m in self.models)
        lines.append(f"  {'model':<{width}}  weight  objective  {'own recommendation':<40}  target  P(target)")
        for m in self.models:
            rec = self.recommendations[m]
            text = rec.regimen.describe(u["dose"])
            lines.append(f"  {m:<{width}}  {self.weights[m]:6.3f}  {self.fits[m].objective:9.3f}  {text:<40}  "
                         f"{rec.predicted['target']:6.4g}  {rec.pta:9.2f}")
        if self.regimen is not None:
            p = self.predicted
            lines.append(f"Averaged recommendation: {self.regimen.describe(u['dose'])}")
            lines.append(f"  model-averaged at steady state: trough {p['trough']:.3g} {u['conc']}, peak "
                         f"{p['peak']:.3g} {u['conc']}, AUC24 {p['auc24']:.4g} {u['auc']}; target metric "
                         f"{p['target']:.4g}; P(target) {self.pta:.2f} (mixture)")
        if not self.reachable or self.message:
            lines.append(("NOT REACHABLE: " if not self.reachable else "  note: ") + self.message)
        for w in self.warnings:
            lines.append(f"warning: {w}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return v

        return {
            "models": list(self.models), "scheme": self.scheme, "best": self.best,
            "weights": {m: float(w) for m, w in self.weights.items()},
            "scores": {m: float(s) for m, s in self.scores.items()},
            "target": {k: v for k, v in dataclasses.asdict(self.target).items() if v is not None},
            "recommendation": (None if self.regimen is None else
                               dataclasses.asdict(self.regimen) | {"text": self.regimen.describe(self.units["dose"])}),
            "reachable": self.reachable, "message": self.message,
            "predicted": {k: clean(float(v)) for k, v in self.predicted.items()},
            "probability_of_target_attainment": self.pta,
            "side_by_side": [{k: clean(v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
                             for row in self.table().to_dict("records")],
            "per_model": {m: self.recommendations[m].to_dict() for m in self.models},
            "warnings": list(self.warnings), "units": self.units,
        }


# ----------------------------------------------------------------------- helpers
def _resolve(model, metadata):
    """(name, the argument map_estimate takes, METADATA) for a name, module or Model."""
    import pkmix.models as library

    if isinstance(model, str):
        try:
            module = library.load(model)
        except KeyError as err:
            raise AveragingError(str(err.args[0])) from None
        return model, model, module.METADATA
    if hasattr(model, "METADATA") and hasattr(model, "model"):  # a library module
        return model.METADATA["name"], model, model.METADATA
    meta = (metadata or {}).get(getattr(model, "name", None))
    if meta is None:
        raise AveragingError(f"model '{getattr(model, 'name', model)}': a Model that is not from the library "
                             "needs its METADATA in metadata={name: METADATA} (drug and units)")
    return model.name, model, meta


def _check_comparable(names, metas):
    drugs = {n: str(m.get("drug", "")).strip().lower() for n, m in zip(names, metas)}
    if len(set(drugs.values())) > 1 or "" in drugs.values():
        listed = ", ".join(f"{n} ({d or 'no drug in METADATA'})" for n, d in drugs.items())
        raise AveragingError(f"models: averaging needs models of one drug; got {listed}")
    for key in ("dose", "time", "concentration"):
        units = {n: str(m.get("units", {}).get(key, "")).strip() for n, m in zip(names, metas)}
        if len({u.lower() for u in units.values()}) > 1:
            listed = ", ".join(f"{n} ({u or 'none'})" for n, u in units.items())
            raise AveragingError(f"models: the {key} units differ ({listed}); averaged exposures need one unit")


def _scores(fits, scheme):
    """-2 log of each model's unnormalised weight."""
    out = []
    for fit in fits:
        if scheme == "laplace":
            sign, logdet = np.linalg.slogdet(np.asarray(fit.covariance, float))
            out.append(fit.objective - logdet if sign > 0 else math.inf)
        elif scheme == "ofv":
            out.append(fit.objective)
        else:  # aic
            out.append(fit.objective + 2.0 * len(fit.eta))
    return np.asarray(out, float)


def model_weights(fits: Sequence, scheme: str = "laplace") -> np.ndarray:
    """The averaging weights (summing to 1) of MAP fits of one patient by several models.

    Args:
        fits: `MAPResult` objects, one per model, of the same patient's levels.
        scheme: "laplace", "ofv" or "aic" (see `average`).
    """
    if scheme not in WEIGHT_SCHEMES:
        raise AveragingError(f"scheme: expected one of {', '.join(WEIGHT_SCHEMES)}, got {scheme!r}")
    if len(fits) == 0:
        raise AveragingError("fits: give at least one MAP fit")
    return _weights(_scores(fits, scheme))


def _weights(scores):
    finite = np.isfinite(scores)
    if not finite.any():
        raise AveragingError("no model gives a finite objective for this patient: none can be weighted")
    w = np.where(finite, np.exp(-0.5 * (scores - np.min(scores[finite]))), 0.0)
    return w / w.sum()


def _posterior_draws(fit, n, rng):
    """Draws of the BSV etas from the Laplace posterior N(MAP, covariance)."""
    k = fit.model.spec.n_eta
    mean = np.asarray(fit.eta, float)[:k]
    cov = np.asarray(fit.covariance, float)[:k, :k]
    return rng.multivariate_normal(mean, 0.5 * (cov + cov.T), size=n, method="eigh")


def _limits_of(recs, options):
    """The strictest hard limits of every model's recommendation (`DoseLimits`)."""
    from . import DoseLimits

    per_dose, per_day, rate = math.inf, None, None
    for rec in recs:
        lim = rec.limits or {}
        if lim.get("dose_max") is not None:
            per_dose = min(per_dose, float(lim["dose_max"]))
        if lim.get("max_daily_dose") is not None:
            per_day = float(lim["max_daily_dose"]) if per_day is None else min(per_day, float(lim["max_daily_dose"]))
        if lim.get("max_rate") is not None:
            rate = float(lim["max_rate"]) if rate is None else min(rate, float(lim["max_rate"]))
    if options.get("dose_max") is not None:
        per_dose = min(per_dose, float(options["dose_max"]))
    if options.get("max_daily_dose") is not None:
        md = float(options["max_daily_dose"])
        per_day = md if per_day is None else min(per_day, md)
    return DoseLimits(per_dose=per_dose, per_day=per_day, rate=rate)


def _candidates(recs, weights, unit):
    """Regimens to compare: every model's feasible candidates and, per (interval,
    infusion), the dose steps between the smallest and largest of them (the averaged
    exposure is monotone in the dose, so its solution lies there)."""
    families: dict = {}
    for rec, w in zip(recs, weights):
        if w < NEGLIGIBLE_WEIGHT or rec.alternatives is None or len(rec.alternatives) == 0:
            continue
        alt = rec.alternatives
        alt = alt[alt["feasible"]] if "feasible" in alt else alt
        for row in alt.itertuples(index=False):
            families.setdefault((float(row.interval), float(row.infusion)), set()).add(float(row.dose))
        r = rec.regimen
        families.setdefault((float(r.interval), float(r.infusion_duration)), set()).add(float(r.dose))
    out = []
    for (tau, tinf), doses in sorted(families.items()):
        lo, hi = min(doses), max(doses)
        grid = set(doses) | {lo + k * unit for k in range(int(round((hi - lo) / unit)) + 1)}
        out += [(d, tau, tinf) for d in sorted(grid)]
    return out


# ---------------------------------------------------------------------------- API
def average(models: Sequence, patient, target=None, *, scheme: str = "laplace", n_draws: int = DEFAULT_DRAWS,
            seed: int = 0, metadata: dict | None = None, covariate_rule: str = "nonmem",
            **recommend_options) -> AveragedRecommendation:
    """Fit several models of one drug to a patient, weight them, and average the answers.

    Each model is fitted by `map_estimate` and asked for its own regimen by `recommend`
    (with ``target`` and ``recommend_options``, e.g. ``intervals``, ``dose_max``,
    ``max_daily_dose``, ``continuous``, ``n_samples``). The models are then weighted by
    how well each explains the patient's levels, with equal prior probabilities:

    * ``scheme="laplace"`` (default): the posterior model probability, w_k proportional
      to the marginal likelihood p(levels | model k) by Laplace's approximation at the
      MAP: -2 log p = l_k - log|C_k| + const, where l_k is the MAP objective (-2 log
      posterior density, `MAPResult.objective`, which includes log|Omega|) and C_k the
      posterior covariance of the etas. This is Bayesian model averaging proper: the
      log|C_k| term is the "Occam factor" that the objective alone leaves out, and with
      no levels at all every model gets the same weight (the prior), where weights from
      the objective alone would favour the model with the smallest Omega.
    * ``scheme="ofv"``: w_k proportional to exp(-l_k / 2), the likelihood weighting of
      Uster et al. 2021 (Clin Pharmacol Ther 109:175, doi:10.1002/cpt.2065) and mapbayr's
      ``model_averaging(scheme = "LL")``, on pkmix's objective.
    * ``scheme="aic"``: exp(-l_k / 2 - n_eta), mapbayr's ``scheme = "AIC"``.

    The averaged regimen is chosen among every model's feasible candidates (and the dose
    steps between them) by the same rules as `recommend`: in the target range under the
    model-averaged exposure (sum of w_k times each model's steady-state exposure at its
    MAP), then the highest mixture probability of target attainment (each model's draws
    from its Laplace posterior N(MAP, C_k), ``n_draws`` per model, pooled with the
    weights), then the closest to the aim. It respects the strictest hard limits of all
    the models and of ``recommend_options`` (`DoseLimits`). With one model (or all the
    weight on one) the answer is that model's own `recommend` result.

    Args:
        models: library model names, library modules, or ``pkmix.Model`` objects (these
            need ``metadata={name: METADATA}``), all of one drug and with the same dose,
            time and concentration units.
        patient: a patient file path, JSON dict or `Patient` (not a `MAPResult`: each
            model needs its own fit).
        target: a `Target` or string (``"auc24=400:600"``); default the first model's
            first METADATA target, used for every model.
        scheme: "laplace", "ofv" or "aic" (see above).
        n_draws: posterior draws per model for the mixture PTA.
        seed: random seed of those draws (and of each `recommend`).
        metadata: METADATA of models given as bare ``Model`` objects, by model name.
        covariate_rule: as for `map_estimate`.
        **recommend_options: passed to every `recommend` call.

    Returns:
        An `AveragedRecommendation`.

    Raises:
        AveragingError (a ValueError): no model, models of different drugs or with
            different units, an unknown scheme, or an option that cannot be averaged.
        PatientError: a fault in the patient's record (as `map_estimate`).
    """
    from . import MAPResult, Target, map_estimate, recommend, steady_state_exposure

    if isinstance(models, (str, bytes)) or not isinstance(models, Sequence):
        models = [models]
    if len(models) == 0:
        raise AveragingError("models: give at least one model")
    if scheme not in WEIGHT_SCHEMES:
        raise AveragingError(f"scheme: expected one of {', '.join(WEIGHT_SCHEMES)}, got {scheme!r}")
    if isinstance(patient, MAPResult):
        raise AveragingError("patient: give the patient (file, dict or Patient), not a MAPResult: "
                             "every model needs its own fit")
    if not (isinstance(n_draws, int) and n_draws >= 1):
        raise AveragingError(f"n_draws: expected a positive integer, got {n_draws!r}")
    for bad in ("loading_dose", "draws", "model", "patient"):
        if recommend_options.get(bad):
            raise AveragingError(f"{bad}: not available with model averaging (each model's own "
                                 "recommendation can give it)")
    resolved = [_resolve(m, metadata) for m in models]
    names = [r[0] for r in resolved]
    if len(set(names)) != len(names):
        raise AveragingError(f"models: each model once; got {', '.join(names)}")
    metas = [r[2] for r in resolved]
    _check_comparable(names, metas)
    if target is None:
        targets = metas[0].get("targets") or {}
        if not targets:
            raise AveragingError(f"target: none given and {names[0]} has no METADATA target")
    if isinstance(target, str):
        target = Target.parse(target)

    # Library models take their own METADATA (and their cached compiled programs).
    extra = [{} if isinstance(arg, str) or hasattr(arg, "METADATA") else {"metadata": meta}
             for (_, arg, meta) in resolved]
    fits = [map_estimate(arg, patient, covariate_rule=covariate_rule, **kw)
            for (_, arg, _), kw in zip(resolved, extra)]
    recs = []
    for (_, arg, _), fit, kw in zip(resolved, fits, extra):
        recs.append(recommend(arg, fit, target, seed=seed, **kw, **recommend_options))
        target = recs[0].target  # the first model's default target, when none was given, for all
    units = dict(recs[0].units)
    scores = _scores(fits, scheme)
    weights = _weights(scores)
    warnings = [f"{n}: {w}" for n, rec in zip(names, recs) for w in rec.warnings]

    curve, observations = _averaged_profiles(names, fits, weights)
    active = [i for i, w in enumerate(weights) if w >= NEGLIGIBLE_WEIGHT]

    if len(active) == 1:  # one model carries the weight: its own answer, unchanged
        rec = recs[active[0]]
        return AveragedRecommendation(
            models=names, weights=dict(zip(names, map(float, weights))), scheme=scheme,
            scores=dict(zip(names, map(float, scores))), fits=dict(zip(names, fits)),
            recommendations=dict(zip(names, recs)), target=target, regimen=rec.regimen,
            predicted={k: float(v) for k, v in rec.predicted.items()},
            per_model={names[active[0]]: {k: float(v) for k, v in rec.predicted.items()}},
            pta=float(rec.pta), reachable=bool(rec.reachable), message=rec.message, curve=curve,
            observations=observations, units=units, warnings=warnings)

    continuous = bool(recommend_options.get("continuous", False))
    unit = float(recommend_options.get("dose_unit") or
                 min(float(m.get("dosing", {}).get("dose_step_mg", 250.0)) for m in metas))
    limits = _limits_of(recs, recommend_options)
    route = recs[active[0]].regimen.route
    rng = np.random.default_rng(seed)
    draws = {i: _posterior_draws(fits[i], n_draws, rng) for i in active}
    rows = []
    for dose, tau, tinf in _candidates([recs[i] for i in active], weights[active], unit):
        if limits.violations(dose, tau, tinf, per_24h=dose * 24.0 / tau if continuous else None):
            continue
        mean = {"trough": 0.0, "peak": 0.0, "auc24": 0.0, "target": 0.0}
        pta = 0.0
        each = {}
        for i in active:
            at_map = steady_state_exposure(fits[i], dose, tau, tinf, route=route, target=target)
            sampled = steady_state_exposure(fits[i], dose, tau, tinf, route=route, target=target, etas=draws[i])
            each[names[i]] = {k: float(at_map[k]) for k in mean}
            for k in mean:
                mean[k] += weights[i] * float(at_map[k])
            pta += weights[i] * float(np.mean(target.attained(np.asarray(sampled["target"]))))
        rows.append({"dose": dose, "interval": tau, "infusion": tinf, **mean, "pta": pta, "per_model": each})
    if not rows:
        raise AveragingError("no candidate regimen of the models lies within the dose limits "
                             f"({limits.describe(units['dose'])})")
    regimen, chosen, reachable, message = _choose(rows, target, recs, active, route, continuous, units)
    return AveragedRecommendation(
        models=names, weights=dict(zip(names, map(float, weights))), scheme=scheme,
        scores=dict(zip(names, map(float, scores))), fits=dict(zip(names, fits)),
        recommendations=dict(zip(names, recs)), target=target, regimen=regimen,
        predicted={k: chosen[k] for k in ("trough", "peak", "auc24", "target")}, per_model=chosen["per_model"],
        pta=float(chosen["pta"]), reachable=reachable, message=message, curve=curve,
        observations=observations, units=units, warnings=warnings)


def _choose(rows, target, recs, active, route, continuous, units):
    """`recommend`'s preference order on the model-averaged exposures."""
    from . import Regimen

    aim = float(target.aim)
    current = recs[active[0]].fit.bound.last_dose if recs[active[0]].fit.bound is not None else None
    current_tau = (current or {}).get("interval")

    def key_in_range(r):
        return (round(abs(r["target"] - aim) / aim, 2), r["interval"] != current_tau, r["interval"] > 24.0,
                -r["interval"])

    in_range = [r for r in rows if target.attained(r["target"])]
    if in_range:
        best_p = max(r["pta"] for r in in_range)
        pool = [r for r in in_range if r["pta"] >= best_p - PTA_TIE]
        chosen = min(pool, key=key_in_range)
        reachable, message = True, ""
    else:
        chosen = min(rows, key=lambda r: (round(float(target.distance(np.asarray([r["target"]]))[0]), 4),
                                          -r["pta"], r["interval"] != current_tau, r["interval"] > 24.0,
                                          -r["interval"]))
        reachable = False
        message = (f"no regimen within the limits reaches the target under the averaged models; the closest "
                   f"gives {chosen['target']:.4g} (aim {aim:g})")
    starts = {recs[i].regimen.start_time for i in active}
    start = recs[active[0]].regimen.start_time if len(starts) > 1 else starts.pop()
    regimen = Regimen(dose=chosen["dose"], interval=chosen["interval"], infusion_duration=chosen["infusion"],
                      route=route, start_time=start, continuous=continuous)
    return regimen, chosen, reachable, message


def _averaged_profiles(names, fits, weights):
    """Each model's fitted curve and IPRED at the levels, and their weighted average
    (the mean of the model mixture)."""
    import pandas as pd

    grid = np.asarray(fits[0].curve["TIME"], float)
    curve = pd.DataFrame({"TIME": grid})
    total = np.zeros_like(grid)
    for n, fit, w in zip(names, fits, weights):
        t = np.asarray(fit.curve["TIME"], float)
        y = np.asarray(fit.curve["IPRED"], float)
        y = y if (len(t) == len(grid) and np.allclose(t, grid)) else np.interp(grid, t, y)
        curve[f"IPRED_{n}"] = y
        total = total + w * y
    curve["IPRED_averaged"] = total
    obs = fits[0].observations[["TIME", "DV"]].copy()
    avg = np.zeros(len(obs))
    for n, fit, w in zip(names, fits, weights):
        ipred = np.asarray(fit.observations["IPRED"], float)
        obs[f"IPRED_{n}"] = ipred
        avg = avg + w * ipred
    obs["IPRED_averaged"] = avg
    return curve, obs

"""Safety of a dose answer: hard dose limits and plausibility checks.

`DoseLimits` holds the hard maxima (per dose, per 24 h, infusion rate) from the user and
the model's METADATA (the stricter of the two wins). The regimen search caps every
candidate at them, and `DoseLimits.check` refuses, as an error, any regimen that would
still exceed one: a recommendation above a stated maximum is never returned.

`plausibility` looks at the patient's record and the MAP fit before anything is
recommended: dates in the future or decades apart, a level outside the model's 99 %
predictive interval or etas beyond 4 prior SDs ("check this level"), and non-finite
model values (an error, never a regimen with NaN). Each finding is a `Finding` with a
code, the field or level it concerns, and a message, so a page can show it next to
that field.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math

import numpy as np

# Beyond this many prior SDs an eta says the level, not the patient, is unusual.
ETA_SD_LIMIT = 4.0
# Two-sided probability outside which a level is implausible under the model's
# predictive distribution (the population prediction with BSV and residual error).
PREDICTIVE_LEVEL = 0.99
# Records more than this many years apart are almost surely a mistyped date.
YEARS_APART = 5.0


def units_of(info) -> dict:
    """The model's dose, concentration and AUC units, as printed."""
    return {"dose": info.unit("dose", "mg").split()[0], "conc": info.unit("concentration", "mg/L").split()[0],
            "auc": info.unit("auc", "mg*h/L").split()[0]}


def doses_in_24h(interval: float) -> int:
    """The most doses of a regimen repeated every ``interval`` h that fall in any 24 h."""
    return max(1, math.ceil(24.0 / interval - 1e-9))


@dataclasses.dataclass(frozen=True)
class DoseLimits:
    """Hard limits on a regimen. ``per_dose`` may be infinite; None: no limit."""

    per_dose: float = math.inf
    per_day: float | None = None
    rate: float | None = None  # dose units per hour
    unit: float = 1.0  # the practical dose step (doses are multiples of it)
    dose_min: float = 0.0

    def cap(self, interval: float, longest_infusion: float) -> float:
        """The largest dose every ``interval`` h (infused over at most ``longest_infusion`` h)."""
        cap = self.per_dose
        if self.per_day is not None:
            cap = min(cap, self.per_day / doses_in_24h(interval))
        if self.rate is not None and longest_infusion > 0:
            cap = min(cap, self.rate * longest_infusion)
        return cap

    def loading_cap(self, interval: float, longest_infusion: float, maintenance: float,
                    loading_max: float | None = None, *, concurrent: bool = False) -> float:
        """The largest loading dose followed by ``maintenance`` every ``interval`` h (or,
        ``concurrent``, alongside its first dose: a continuous infusion): its own limit,
        the per-dose and rate limits, and the 24 h that begin with it."""
        cap = self.per_dose if loading_max is None else min(self.per_dose, float(loading_max))
        if self.per_day is not None:
            cap = min(cap, self.per_day - maintenance * (doses_in_24h(interval) - (0 if concurrent else 1)))
        if self.rate is not None and longest_infusion > 0:
            cap = min(cap, self.rate * longest_infusion)
        return cap

    def violations(self, dose: float, interval: float | None, infusion: float = 0.0, *,
                   loading: float | None = None, loading_infusion: float | None = None,
                   per_24h: float | None = None, concurrent: bool = False) -> list[str]:
        """What a regimen exceeds (empty: within every limit). ``per_24h`` gives the amount
        per 24 h directly (a continuous infusion)."""
        out = []
        eps = 1e-9
        if dose > self.per_dose * (1 + eps):
            out.append(f"dose {dose:g} is above the maximum {self.per_dose:g} per dose")
        daily = per_24h if per_24h is not None else (dose * doses_in_24h(interval) if interval else dose)
        if self.per_day is not None and daily > self.per_day * (1 + eps):
            out.append(f"{daily:g} per 24 h is above the maximum {self.per_day:g} per 24 h")
        if self.rate is not None and infusion > 0 and dose / infusion > self.rate * (1 + eps):
            out.append(f"infusion rate {dose / infusion:g}/h is above the maximum {self.rate:g}/h")
        if loading:
            if loading > self.per_dose * (1 + eps):
                out.append(f"loading dose {loading:g} is above the maximum {self.per_dose:g} per dose")
            if self.per_day is not None and interval:
                first = loading + dose * (doses_in_24h(interval) - (0 if concurrent else 1))
                if first > self.per_day * (1 + eps):
                    out.append(f"{first:g} in the first 24 h is above the maximum {self.per_day:g} per 24 h")
            if self.rate is not None and loading_infusion and loading / loading_infusion > self.rate * (1 + eps):
                out.append(f"loading infusion rate {loading / loading_infusion:g}/h is above the maximum "
                           f"{self.rate:g}/h")
        return out

    def check(self, regimen) -> None:
        """Raise `LimitError` if ``regimen`` (a `Regimen`) exceeds any limit."""
        bad = self.violations(regimen.dose, regimen.interval, regimen.infusion_duration,
                              loading=regimen.loading_dose, loading_infusion=regimen.loading_infusion_duration,
                              concurrent=getattr(regimen, "continuous", False))
        if bad:
            raise LimitError("; ".join(bad))

    def describe(self, unit: str = "mg") -> str:
        parts = [f"at most {self.per_dose:g} {unit} per dose" if math.isfinite(self.per_dose) else "no per-dose maximum"]
        if self.per_day is not None:
            parts.append(f"{self.per_day:g} {unit} per 24 h")
        if self.rate is not None:
            parts.append(f"{self.rate:g} {unit}/h")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {"dose_max": self.per_dose if math.isfinite(self.per_dose) else None,
                "max_daily_dose": self.per_day, "max_rate": self.rate, "dose_unit": self.unit,
                "dose_min": self.dose_min}


class LimitError(RuntimeError):
    """A regimen above a hard limit reached the point of being returned (a bug)."""


def stricter(user: float | None, model: float | None) -> float | None:
    """The stricter of a user's and a model's maximum (None: not stated)."""
    given = [float(x) for x in (user, model) if x is not None]
    return min(given) if given else None


# ------------------------------------------------------------------------ plausibility
@dataclasses.dataclass
class Finding:
    """One plausibility finding. ``field`` names the input it concerns (``levels[1]``,
    ``doses[0].datetime``); ``level`` is the index of the level, when it is one."""

    code: str
    message: str
    field: str | None = None
    level: int | None = None
    severity: str = "warning"  # "warning" or "error"

    def to_dict(self) -> dict:
        out = {"code": self.code, "message": self.message, "severity": self.severity}
        if self.field is not None:
            out["field"] = self.field
        if self.level is not None:
            out["level"] = self.level
        return out


class PlausibilityError(ValueError):
    """The model gives non-finite values for this patient: no recommendation."""

    def __init__(self, finding: Finding):
        self.finding = finding
        self.field = finding.field or "model"
        super().__init__(finding.message)


def check_dates(patient, now: _dt.datetime | None = None) -> list[Finding]:
    """Clock times in the future, and records decades apart (a mistyped year)."""
    out = []
    if patient.reference_time is None:
        return out
    now = now or _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
    items = [(d.field, d.time) for d in patient.doses] + [(lv.field, lv.time) for lv in patient.levels]
    for field, hours in items:
        when = patient.datetime_of(hours)
        if when is not None and when > now + _dt.timedelta(minutes=5):
            out.append(Finding("date_in_future", f"{field}: {when.isoformat(timespec='minutes')} is in the future: "
                                                 "check the date", field=field))
    if items:
        times = [t for _, t in items]
        span_years = (max(times) - min(times)) / (24 * 365.25)
        if span_years > YEARS_APART:
            first = min(items, key=lambda x: x[1])[0]
            last = max(items, key=lambda x: x[1])[0]
            out.append(Finding("dates_far_apart", f"{first} and {last} are {span_years:.0f} years apart: check the "
                                                  "dates (a mistyped year?)", field=last))
    return out


def check_fit(fit) -> list[Finding]:
    """Levels the model finds implausible, and non-finite model values (an error)."""
    eta = np.asarray(fit.eta, float)
    current = np.asarray(list(fit.current.values()), float)
    if not np.all(np.isfinite(eta)) or not np.all(np.isfinite(current)) or not np.isfinite(fit.objective):
        raise PlausibilityError(Finding(
            "non_finite", f"model {fit.model_name} gives non-finite values for this patient (individual "
                          "parameters or etas are NaN or infinite): no dose can be recommended; check the "
                          "covariates and levels", field="model", severity="error"))
    out = []
    levels = _level_fields(fit)
    obs = fit.observations
    if len(obs) and fit.bound.n_observations:
        # Each level against the model's predictive distribution: the typical prediction
        # with between-subject and residual variability (a normal on the error model's
        # scale, the variance from the MAP's linearisation at eta = 0 is not at hand, so
        # the individual residual variance plus the prior spread of IPRED).
        z = _predictive_z(fit)
        from scipy.stats import norm

        limit = float(norm.ppf(0.5 + PREDICTIVE_LEVEL / 2))
        for i, zi in enumerate(z):
            if np.isfinite(zi) and abs(zi) > limit:
                field = levels[i] if i < len(levels) else f"levels[{i}]"
                row = obs.iloc[i]
                out.append(Finding("level_implausible",
                                   f"{field}: the level {row['DV']:.4g} at t = {row['TIME']:.4g} h is outside the "
                                   f"model's {100 * PREDICTIVE_LEVEL:.0f} % predictive interval for this patient: "
                                   "check this level (time, dose history, units, sampling site)", field=field,
                                   level=i))
    prior_sd = np.sqrt(np.diag(np.asarray(fit.prior_covariance)))
    for name, e, sd in zip(fit.eta_names, eta, prior_sd):
        if sd > 0 and abs(e) > ETA_SD_LIMIT * sd:
            which = ", ".join(levels) if levels else "the levels"
            out.append(Finding("eta_extreme", f"{name} = {e:.3g} is {abs(e) / sd:.1f} prior SDs from the typical "
                                              f"patient: check this level ({which})", field=levels[-1] if levels
                               else None))
    return out


def _level_fields(fit) -> list[str]:
    """The input name of each quantified or BLQ level, in the order of `fit.observations`."""
    patient = fit.bound.patient
    if patient.frame is not None:
        f = patient.frame
        obs = ((f["EVID"] == 0) & (f["MDV"] == 0)).to_numpy()
        return [f"record {r}" for r in f["REC"].to_numpy()[obs]]
    order = sorted(range(len(patient.levels)), key=lambda i: (patient.levels[i].time, i))
    return [patient.levels[i].field or f"levels[{i}]" for i in order]


def _predictive_z(fit) -> np.ndarray:
    """Standardised distance of each quantified level from the model's prediction for a
    typical patient with these covariates and this history, on the error model's scale:
    (y - PRED) / sqrt(a Omega a' + R(PRED)), with a the sensitivity of the prediction to
    the etas at eta = 0 (finite differences through the compiled history program)."""
    from .history import history_predictions

    obs = fit.observations
    times = obs["TIME"].to_numpy(float)
    dv = obs["DV"].to_numpy(float)
    blq = obs["BLQ"].to_numpy(bool)
    omega = np.asarray(fit.prior_covariance, float)
    q = omega.shape[0]
    n_new = len(fit.model.iov_names)
    h = 1e-4
    etas = np.zeros((q + 1, q + n_new))
    etas[1:, :q] = h * np.eye(q)
    at_q, _ = history_predictions(fit, etas, queries=times)
    import jax.numpy as jnp

    tr = fit.model.error.transform
    f = np.asarray(tr(jnp.asarray(np.maximum(at_q, 1e-300))))
    a = (f[1:] - f[0]).T / h  # [levels, q]
    res_var = np.asarray(fit.model.residual_variance(fit.values, jnp.asarray(at_q[0])))
    var = np.einsum("ij,jk,ik->i", a, omega, a) + res_var
    y = np.asarray(tr(jnp.asarray(np.maximum(dv, 1e-300))))
    z = (y - f[0]) / np.sqrt(np.maximum(var, 1e-300))
    return np.where(blq | ~np.isfinite(z), np.nan, z)

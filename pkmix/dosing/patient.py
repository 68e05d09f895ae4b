"""One patient's record for dosing: reading, validation, units, and the padded arrays.

A `Patient` is what the pharmacist typed (covariates with units, the dose history, the
measured levels), independent of any model. `bind` turns it into the records of one
NONMEM subject *in the model's units*: doses and levels converted, covariates converted
and checked against the model's validated ranges, time-varying covariates as EVID 2
records, then sorted. `BoundPatient.subject` pads those records into a `SubjectBatch`
of a bucketed length, so a second patient of similar size reuses the compiled program.

Every fault is a `PatientError` naming the field at fault (``levels[1].value``,
``covariates.WT``): nothing bad reaches JAX. A covariate outside the range the model
was developed on is a `PatientWarning` (also listed in ``BoundPatient.warnings`` so
the command line can print it). The JSON format is documented in docs/patient_format.md.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import json
import math
import re
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping

import numpy as np

# Records are padded to a multiple of this, so patients with a few more or fewer
# records share one compiled program.
RECORD_BUCKET = 16


class PatientError(ValueError):
    """A fault in a patient's record. ``field`` names where (``doses[2].duration``)."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class PatientWarning(UserWarning):
    """The patient is usable but outside what the model was built on."""


# ----------------------------------------------------------------------------- units
# Factors to a reference unit, per dimension. A value v in unit u is v * f[u] in the
# reference unit; conversion between two units of one dimension is v * f[src] / f[dst].
_MASS = {"mg": 1.0, "g": 1000.0, "ug": 1e-3, "mcg": 1e-3, "ng": 1e-6, "kg": 1e6}
_CONCENTRATION = {
    "mg/l": 1.0, "ug/ml": 1.0, "mcg/ml": 1.0, "g/l": 1000.0, "mg/ml": 1000.0,
    "ug/l": 1e-3, "mcg/l": 1e-3, "ng/ml": 1e-3, "ng/l": 1e-6, "pg/ml": 1e-6, "mg/dl": 10.0,
}
_TIME = {"h": 1.0, "hr": 1.0, "hrs": 1.0, "hour": 1.0, "hours": 1.0, "min": 1 / 60, "minute": 1 / 60,
         "minutes": 1 / 60, "d": 24.0, "day": 24.0, "days": 24.0, "week": 168.0, "weeks": 168.0}
_WEIGHT = {"kg": 1.0, "g": 1e-3, "lb": 0.45359237, "lbs": 0.45359237}
_HEIGHT = {"cm": 1.0, "m": 100.0, "mm": 0.1, "in": 2.54, "inch": 2.54, "inches": 2.54}
_AGE = {"years": 1.0, "year": 1.0, "y": 1.0, "yr": 1.0, "yrs": 1.0, "months": 1 / 12, "month": 1 / 12,
        "weeks": 7 / 365.25, "week": 7 / 365.25, "wk": 7 / 365.25, "days": 1 / 365.25, "day": 1 / 365.25}
# Serum creatinine: 1 mg/dL = 88.42 umol/L (the factor of pkmix.dosing.covariates).
_CREATININE = {"mg/dl": 1.0, "umol/l": 1 / 88.42, "mmol/l": 1000 / 88.42, "mg/l": 0.1}
_CLEARANCE = {"ml/min": 1.0, "l/h": 1000 / 60, "ml/h": 1 / 60, "l/min": 1000.0, "l/d": 1000 / 1440}
_PRESSURE = {"mmhg": 1.0, "kpa": 7.50062}
_DIMENSIONS = (_WEIGHT, _HEIGHT, _AGE, _CREATININE, _CLEARANCE, _PRESSURE)

# Plausibility limits (in kg, years, cm, mg/dL): beyond them a value is a typing error,
# not an unusual patient. Applied to covariates whose unit says what they are.
_IMPOSSIBLE = {
    id(_WEIGHT): ("weight", 0.2, 700.0, "kg"),
    id(_AGE): ("age", 0.0, 125.0, "years"),
    id(_HEIGHT): ("height", 20.0, 280.0, "cm"),
    id(_CREATININE): ("serum creatinine", 0.0, 30.0, "mg/dl"),
}
# Covariate names that are known to be body weight, age, height or creatinine even when
# the model does not state a unit.
_NAME_DIMENSION = {
    "WT": _WEIGHT, "BW": _WEIGHT, "TBW": _WEIGHT, "WEIGHT": _WEIGHT, "AGE": _AGE,
    "HT": _HEIGHT, "HEIGHT": _HEIGHT, "SCR": _CREATININE, "CREAT": _CREATININE,
}


def _norm_unit(unit: str) -> str:
    """'µmol/L (serum)' -> 'umol/l': the first word, lower case, micro signs spelt out."""
    text = str(unit).strip()
    text = re.split(r"\s|\(", text, maxsplit=1)[0] if text else text
    return text.replace("µ", "u").replace("μ", "u").replace("·", "*").lower()


def _dimension_of(unit: str | None):
    if unit is None:
        return None
    u = _norm_unit(unit)
    for table in _DIMENSIONS:
        if u in table:
            return table
    return None


def convert(value: float, unit: str, to: str, table: Mapping[str, float], field: str) -> float:
    """``value`` from ``unit`` to ``to`` within one dimension ``table``.

    Raises:
        PatientError: ``unit`` is not one of the table's units.
    """
    src, dst = _norm_unit(unit), _norm_unit(to)
    if src not in table:
        raise PatientError(field, f"unit '{unit}' is not a known unit here; expected one of "
                                  f"{', '.join(sorted(table))} (the model uses {to})")
    if dst not in table:
        raise PatientError(field, f"the model's unit '{to}' is not one pkmix can convert to")
    return float(value) * table[src] / table[dst]


def _categories(description: str) -> dict[str, float] | None:
    """'1 = male, 0 = female' -> {'male': 1, 'female': 0}; None when not of that form."""
    pairs = re.findall(r"(-?\d+(?:\.\d+)?)\s*=\s*([A-Za-z][^,;]*)", str(description))
    if not pairs:
        return None
    out: dict[str, float] = {}
    for number, label in pairs:
        label = label.strip().lower()
        out[label] = float(number)
        first = re.split(r"[\s(]", label)[0]
        out.setdefault(first, float(number))
    return out


_SYNONYMS = {"m": "male", "man": "male", "f": "female", "woman": "female", "yes": "1", "no": "0",
             "true": "1", "false": "0"}


# --------------------------------------------------------------------------- the model
@dataclasses.dataclass
class ModelInfo:
    """A model with what its library module says about it (units, ranges, dosing)."""

    model: Any
    metadata: dict
    derived: Callable | None = None  # derived_covariates(**covariates) -> {name: value}
    module: ModuleType | None = None  # the module that defines the model, when known

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or getattr(self.model, "name", "model"))

    def unit(self, kind: str, default: str) -> str:
        return str((self.metadata.get("units") or {}).get(kind, default))

    @property
    def dose_unit(self) -> str:
        return _norm_unit(self.unit("dose", "mg"))

    @property
    def concentration_unit(self) -> str:
        return _norm_unit(self.unit("concentration", "mg/L"))

    @property
    def time_unit(self) -> str:
        return _norm_unit(self.unit("time", "h"))

    @property
    def dosing(self) -> dict:
        return dict(self.metadata.get("dosing") or {})

    def covariate_unit(self, name: str) -> str | None:
        units = self.metadata.get("covariate_units") or {}
        for k, v in units.items():
            if k.upper() == name.upper():
                return str(v)
        return None

    def covariate_range(self, name: str, derived: bool = False):
        key = "derived_covariate_ranges" if derived else "covariate_ranges"
        for k, v in (self.metadata.get(key) or {}).items():
            if k.upper() == name.upper():
                return tuple(float(x) for x in v)
        return None


def _find_module_of(model) -> ModuleType | None:
    for module in list(sys.modules.values()):
        try:
            if getattr(module, "model", None) is model and hasattr(module, "METADATA"):
                return module
        except Exception:  # some modules raise on attribute access
            continue
    return None


def model_info(model, metadata: Mapping | None = None) -> ModelInfo:
    """A `ModelInfo` from a ``pkmix.Model``, a library module, or a library model name.

    For a ``Model``, the metadata comes from ``metadata`` when given, else from the
    module that defines it (found among the imported modules), else it is empty.
    """
    from .._model.model import Model

    module = None
    if isinstance(model, ModelInfo):
        return model
    if isinstance(model, str):
        try:
            module = importlib.import_module(f"pkmix.models.{model}")
        except ModuleNotFoundError:
            import pkmix.models as lib

            raise PatientError("model", f"no model '{model}' in the library; available: "
                                        f"{', '.join(lib.available())}") from None
        model = module.model
    elif isinstance(model, ModuleType):
        module = model
        model = getattr(module, "model", None)
    if not isinstance(model, Model):
        raise TypeError(f"expected a pkmix.Model, a library module or a model name, got {type(model).__name__}")
    if module is None and metadata is None:
        module = _find_module_of(model)
    meta = dict(metadata) if metadata is not None else dict(getattr(module, "METADATA", {}) or {})
    derived = getattr(module, "derived_covariates", None) if module is not None else None
    return ModelInfo(model=model, metadata=meta, derived=derived, module=module)


# ---------------------------------------------------------------------------- patient
@dataclasses.dataclass
class Covariate:
    """A covariate as given: constant (one value) or measured at times (hours)."""

    name: str
    values: list  # numbers or category labels
    times: list  # hours since the reference time; [None] for a constant
    unit: str | None = None
    field: str = ""


@dataclasses.dataclass
class Dose:
    """One administration (or a series: ``count`` doses every ``interval``)."""

    time: float
    amount: float
    route: str = "iv"  # "iv" (infusion or bolus), "oral", or anything with cmt=
    duration: float = 0.0  # infusion duration in hours (0: bolus)
    unit: str | None = None
    cmt: int | None = None
    steady_state: bool = False
    interval: float | None = None
    count: int = 1
    occasion: float = 1.0
    field: str = ""


@dataclasses.dataclass
class Level:
    """One measured concentration; ``blq`` when below ``lloq`` (then M3)."""

    time: float
    value: float | None
    lloq: float | None = None
    blq: bool = False
    unit: str | None = None
    occasion: float = 1.0
    field: str = ""


@dataclasses.dataclass
class Patient:
    """A patient's record for dosing. Build with `load_patient` (JSON, dict, or CSV).

    Attributes:
        id: a label.
        covariates: ``{name: Covariate}`` as given (units converted at `bind`).
        doses, levels: the history, times in hours since ``reference_time``.
        reference_time: the datetime of time 0 when the input used datetimes.
        frame: for a NONMEM-format CSV, its records (already in the model's units).
        source: the file it came from.
    """

    id: str = "patient"
    covariates: dict = dataclasses.field(default_factory=dict)
    doses: list = dataclasses.field(default_factory=list)
    levels: list = dataclasses.field(default_factory=list)
    reference_time: _dt.datetime | None = None
    frame: Any = None
    source: str | None = None

    @property
    def has_levels(self) -> bool:
        if self.frame is not None:
            return bool(((self.frame["EVID"] == 0) & (self.frame["MDV"] == 0)).any())
        return bool(self.levels)

    def datetime_of(self, hours: float) -> _dt.datetime | None:
        """The clock time of ``hours`` after the reference (None without datetimes)."""
        if self.reference_time is None:
            return None
        return self.reference_time + _dt.timedelta(hours=float(hours))


# ------------------------------------------------------------------------ JSON reading
def _number(value, field: str, *, allow_none=False) -> float | None:
    if value is None:
        if allow_none:
            return None
        raise PatientError(field, "missing value")
    if isinstance(value, bool):
        raise PatientError(field, f"expected a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise PatientError(field, f"expected a number, got {value!r}") from None
    if not math.isfinite(x):
        raise PatientError(field, f"expected a finite number, got {value!r}")
    return x


def _parse_datetime(text, field: str) -> _dt.datetime:
    if isinstance(text, _dt.datetime):
        return text.replace(tzinfo=None) if text.tzinfo is None else text
    try:
        value = _dt.datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise PatientError(field, f"'{text}' is not an ISO date-time (e.g. 2024-03-01T08:00)") from None
    if value.tzinfo is not None:
        value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return value


class _Clock:
    """Turns 'time' (in the file's time unit) or 'datetime' into hours since time 0."""

    def __init__(self, data: Mapping, time_unit: str):
        self.time_unit = time_unit
        self.factor = convert(1.0, time_unit, "h", _TIME, "time_unit")
        ref = data.get("reference_time")
        self.reference = _parse_datetime(ref, "reference_time") if ref is not None else None
        if self.reference is None:
            stamps = []
            for key in ("doses", "levels"):
                for i, item in enumerate(data.get(key) or []) if isinstance(data.get(key), list) else []:
                    if isinstance(item, Mapping) and item.get("datetime") is not None:
                        stamps.append(_parse_datetime(item["datetime"], f"{key}[{i}].datetime"))
            if stamps:
                # Time 0 is the first dose (or level) given as a clock time.
                self.reference = min(stamps)

    def hours(self, item: Mapping, field: str, *, required=True) -> float | None:
        if item.get("datetime") is not None:
            if self.reference is None:
                raise PatientError(f"{field}.datetime", "a clock time, but no dose or level has one and no "
                                                        "reference_time is given: time 0 is unknown")
            when = _parse_datetime(item["datetime"], f"{field}.datetime")
            return (when - self.reference).total_seconds() / 3600.0
        if item.get("time") is not None:
            return _number(item["time"], f"{field}.time") * self.factor
        if required:
            raise PatientError(field, "needs a 'time' (hours) or a 'datetime'")
        return None


def _covariate(name: str, spec, clock: _Clock) -> Covariate:
    field = f"covariates.{name}"
    if isinstance(spec, Mapping):
        unit = spec.get("unit")
        if "values" in spec:
            series = spec["values"]
            if not isinstance(series, list) or not series:
                raise PatientError(f"{field}.values", "expected a non-empty list of {time or datetime, value}")
            values, times = [], []
            for k, item in enumerate(series):
                if not isinstance(item, Mapping) or "value" not in item:
                    raise PatientError(f"{field}.values[{k}]", "expected {\"time\" or \"datetime\", \"value\"}")
                values.append(item["value"])
                times.append(clock.hours(item, f"{field}.values[{k}]"))
            order = np.argsort(np.asarray(times, dtype=float), kind="stable")
            return Covariate(name, [values[i] for i in order], [times[i] for i in order], unit, field)
        if "value" not in spec:
            raise PatientError(field, "expected a number, {\"value\", \"unit\"} or {\"unit\", \"values\": [...]}")
        return Covariate(name, [spec["value"]], [None], unit, field)
    return Covariate(name, [spec], [None], None, field)


_ROUTES = {"iv": "iv", "intravenous": "iv", "infusion": "iv", "iv_infusion": "iv", "bolus": "iv",
           "iv_bolus": "iv", "oral": "oral", "po": "oral", "enteral": "oral"}


def _dose(item, i: int, clock: _Clock, default_unit) -> Dose:
    field = f"doses[{i}]"
    if not isinstance(item, Mapping):
        raise PatientError(field, "expected an object with time/datetime, amount, route, duration")
    time = clock.hours(item, field)
    if "amount" not in item:
        raise PatientError(f"{field}.amount", "missing dose amount")
    amount = _number(item["amount"], f"{field}.amount")
    if amount <= 0:
        raise PatientError(f"{field}.amount", f"dose amount must be positive, got {amount:g}")
    route_text = str(item.get("route", "iv")).strip().lower()
    if route_text not in _ROUTES and item.get("cmt") is None:
        raise PatientError(f"{field}.route", f"unknown route '{item.get('route')}'; expected one of "
                                             f"{', '.join(sorted(set(_ROUTES)))} (or give 'cmt')")
    route = _ROUTES.get(route_text, route_text)
    duration = 0.0
    if item.get("duration") is not None:
        duration = _number(item["duration"], f"{field}.duration") * clock.factor
        if item.get("duration_unit"):
            duration = convert(_number(item["duration"], f"{field}.duration"), item["duration_unit"], "h",
                               _TIME, f"{field}.duration_unit")
    if item.get("rate") is not None:
        rate = _number(item["rate"], f"{field}.rate")
        if rate <= 0:
            raise PatientError(f"{field}.rate", f"infusion rate must be positive, got {rate:g}")
        if item.get("duration") is not None:
            raise PatientError(f"{field}.rate", "give either 'rate' or 'duration', not both")
        duration = amount / rate * clock.factor  # rate per time unit of the file
    if duration < 0:
        raise PatientError(f"{field}.duration", f"infusion duration must be >= 0, got {duration:g}")
    if route == "oral" and duration > 0:
        raise PatientError(f"{field}.duration", "an oral dose has no infusion duration")
    if route_text == "infusion" and duration <= 0:
        raise PatientError(f"{field}.duration", "an infusion needs a duration (hours) or a rate")
    cmt = item.get("cmt")
    if cmt is not None:
        c = _number(cmt, f"{field}.cmt")
        if c < 1 or c != round(c):
            raise PatientError(f"{field}.cmt", f"compartment must be a positive integer, got {cmt!r}")
        cmt = int(c)
    ss = bool(item.get("steady_state", item.get("ss", False)))
    interval = item.get("interval", item.get("ii"))
    interval = None if interval is None else _number(interval, f"{field}.interval") * clock.factor
    count = item.get("count", 1)
    count_value = _number(count, f"{field}.count")
    if count_value < 1 or count_value != round(count_value):
        raise PatientError(f"{field}.count", f"number of doses must be a positive integer, got {count!r}")
    if (ss or count_value > 1) and (interval is None or interval <= 0):
        raise PatientError(f"{field}.interval", "a steady-state dose or a series (count > 1) needs a "
                                                "positive dosing interval")
    if interval is not None and duration > 0 and duration >= interval:
        raise PatientError(f"{field}.duration", f"infusion duration {duration:g} h is not shorter than the "
                                                f"dosing interval {interval:g} h")
    occasion = _number(item.get("occasion", 1), f"{field}.occasion")
    return Dose(time=time, amount=amount, route=route, duration=duration, unit=item.get("unit", default_unit),
                cmt=cmt, steady_state=ss, interval=interval, count=int(count_value), occasion=occasion,
                field=field)


def _level(item, i: int, clock: _Clock, default_unit) -> Level:
    field = f"levels[{i}]"
    if not isinstance(item, Mapping):
        raise PatientError(field, "expected an object with time/datetime and value")
    time = clock.hours(item, field)
    raw = item.get("value", item.get("concentration"))
    lloq = _number(item.get("lloq"), f"{field}.lloq", allow_none=True)
    blq = bool(item.get("blq", False))
    if isinstance(raw, str) and raw.strip().startswith("<"):
        # "<2" as a lab reports it: below a quantification limit of 2.
        blq = True
        limit = _number(raw.strip()[1:], f"{field}.value")
        lloq = limit if lloq is None else lloq
        raw = None
    value = _number(raw, f"{field}.value", allow_none=True)
    if value is None and not blq:
        raise PatientError(f"{field}.value", "missing concentration (give a number, or \"blq\": true "
                                             "with an \"lloq\" for a level below the limit)")
    if value is not None and value < 0:
        raise PatientError(f"{field}.value", f"negative concentration {value:g}")
    if lloq is not None and lloq <= 0:
        raise PatientError(f"{field}.lloq", f"the quantification limit must be positive, got {lloq:g}")
    if blq and lloq is None:
        raise PatientError(f"{field}.lloq", "a level below the quantification limit needs the limit (lloq)")
    if value is not None and lloq is not None and value < lloq:
        blq = True
    occasion = _number(item.get("occasion", 1), f"{field}.occasion")
    return Level(time=time, value=value, lloq=lloq, blq=blq, unit=item.get("unit", default_unit),
                 occasion=occasion, field=field)


def patient_from_dict(data: Mapping, *, source: str | None = None) -> Patient:
    """A `Patient` from the JSON structure of docs/patient_format.md.

    Raises:
        PatientError: naming the field at fault.
    """
    if not isinstance(data, Mapping):
        raise PatientError("patient", f"expected a JSON object, got {type(data).__name__}")
    known = {"id", "name", "drug", "reference_time", "time_unit", "dose_unit", "concentration_unit",
             "covariates", "doses", "levels", "notes", "comment", "model", "target"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise PatientError(unknown[0], f"unknown field; the patient format has {', '.join(sorted(known))}")
    clock = _Clock(data, str(data.get("time_unit", "h")))
    covs = data.get("covariates") or {}
    if not isinstance(covs, Mapping):
        raise PatientError("covariates", "expected an object {name: value}")
    covariates = {}
    for name, spec in covs.items():
        key = str(name).strip().upper()
        if key in covariates:
            raise PatientError(f"covariates.{name}", "given twice (names are case-insensitive)")
        covariates[key] = _covariate(str(name), spec, clock)
    doses_in = data.get("doses") or []
    levels_in = data.get("levels") or []
    if not isinstance(doses_in, list):
        raise PatientError("doses", "expected a list of doses")
    if not isinstance(levels_in, list):
        raise PatientError("levels", "expected a list of levels")
    doses = [_dose(d, i, clock, data.get("dose_unit")) for i, d in enumerate(doses_in)]
    levels = [_level(v, i, clock, data.get("concentration_unit")) for i, v in enumerate(levels_in)]
    _check_history(doses, levels)
    return Patient(id=str(data.get("id", data.get("name", "patient"))), covariates=covariates, doses=doses,
                   levels=levels, reference_time=clock.reference, source=source)


def _check_history(doses: list[Dose], levels: list[Level]) -> None:
    if levels and not doses:
        raise PatientError(levels[0].field, "a level but no dose: give the dose history (levels are "
                                            "interpreted from the doses that preceded them)")
    if not doses:
        return
    first = min(d.time for d in doses)
    for lv in levels:
        if lv.time <= first:
            raise PatientError(f"{lv.field}.time", f"level at {lv.time:g} h is not after the first dose "
                                                   f"({first:g} h): a level before any dose cannot be "
                                                   "interpreted (for a steady-state trough, put it at the "
                                                   "time of the next dose)")


def _from_frame(frame, source) -> Patient:
    """A `Patient` from a one-subject NONMEM dataset (records in the model's units)."""
    from .._data import Dataset

    ds = frame if isinstance(frame, Dataset) else None
    f = ds.frame if ds is not None else frame
    ids = f["ID"].unique()
    if len(ids) != 1:
        raise PatientError("ID", f"a patient file holds one patient; found {len(ids)} IDs "
                                 f"({', '.join(map(str, ids[:5]))}{'...' if len(ids) > 5 else ''})")
    obs = ((f["EVID"] == 0) & (f["MDV"] == 0)).to_numpy()
    dose = f["EVID"].isin((1, 4)).to_numpy()
    time = f["TIME"].to_numpy(dtype=float)
    rec = f["REC"].to_numpy()
    dv = f["DV"].to_numpy(dtype=float)
    for i in np.flatnonzero(obs):
        if dv[i] < 0:
            raise PatientError(f"record {rec[i]}, DV", f"negative concentration {dv[i]:g}")
    if obs.any():
        if not dose.any():
            raise PatientError(f"record {rec[np.flatnonzero(obs)[0]]}, TIME", "a level but no dose")
        first = int(np.flatnonzero(dose)[0])
        for i in np.flatnonzero(obs):
            if i < first or time[i] < time[first]:
                raise PatientError(f"record {rec[i]}, TIME",
                                   f"level at {time[i]:g} h comes before any dose (first dose at "
                                   f"{time[first]:g} h)")
    return Patient(id=str(ids[0]), frame=f.reset_index(drop=True), source=source)


def load_patient(source, *, model=None) -> Patient:
    """Read a patient: a JSON file or dict (docs/patient_format.md), or a one-patient
    NONMEM-format CSV (read with `pkmix.read_nonmem`) or DataFrame.

    Args:
        source: path (``.json`` or a CSV), a dict, a DataFrame, or a `Patient`.
        model: optional; when given the patient is also bound to it (units, covariates,
            ranges) so every fault shows here rather than at estimation.

    Raises:
        PatientError: naming the field (JSON) or record and column (CSV) at fault.
        FileNotFoundError: the file does not exist.
    """
    import pandas as pd

    if isinstance(source, Patient):
        patient = source
    elif isinstance(source, Mapping):
        patient = patient_from_dict(source)
    elif isinstance(source, pd.DataFrame):
        patient = _read_nonmem(source, None)
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"patient file not found: {path}")
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8-sig"))
            except json.JSONDecodeError as e:
                raise PatientError(str(path), f"not valid JSON: {e}") from None
            patient = patient_from_dict(data, source=str(path))
        else:
            patient = _read_nonmem(path, str(path))
    if model is not None:
        bind(model_info(model), patient)
    return patient


def _read_nonmem(source, label) -> Patient:
    from .._data import DatasetError, read_nonmem

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no observations" is normal for a priori dosing
            ds = read_nonmem(source)
    except DatasetError as e:
        v = e.violations[0]
        where = f"record {v.record}, {v.column}" if v.record is not None else (v.column or "dataset")
        more = f" (and {len(e.violations) - 1} more problems)" if len(e.violations) > 1 else ""
        raise PatientError(where, f"{v.message} (rule: {v.rule}){more}") from e
    return _from_frame(ds.frame, label)


# ---------------------------------------------------------------------------- binding
@dataclasses.dataclass
class BoundPatient:
    """A patient's records in one model's units, sorted, ready to pad.

    ``records`` holds numpy arrays by NONMEM item (TIME, AMT, RATE, DUR, II, SS, EVID,
    CMT, DV, LLOQ, BLQ, OBS, OCC) and ``COV`` [n, n_covariates] in the model's
    covariate order.
    """

    info: ModelInfo
    patient: Patient
    records: dict
    occasions: np.ndarray  # the occasion labels, sorted (index = OCC)
    covariates_now: dict  # {name: value in model units} at the last record
    derived_now: dict
    warnings: list
    route: str  # the route of the last dose ("iv"/"oral"), or the model's
    last_dose: dict | None  # amount, time, duration, interval, cmt of the last dose

    @property
    def n_records(self) -> int:
        return int(self.records["TIME"].shape[0])

    @property
    def n_occasions(self) -> int:
        return int(len(self.occasions))

    @property
    def has_steady_state(self) -> bool:
        return bool(np.any(self.records["SS"] > 0))

    @property
    def has_blq(self) -> bool:
        return bool(np.any(self.records["BLQ"]))

    @property
    def n_observations(self) -> int:
        return int(np.sum(self.records["OBS"]))

    @property
    def cov_now(self) -> np.ndarray:
        return self.records["COV"][-1] if self.n_records else np.zeros(len(self.info.model.covariates))

    def subject(self, n_records: int | None = None, extra: dict | None = None, *, rule: str = "nonmem",
                n_occasions: int | None = None):
        """The padded `SubjectBatch` (one subject, no subject axis).

        Args:
            n_records: the padded length (default: the next multiple of 16).
            extra: more records (dict of arrays: TIME, and optionally AMT, RATE, DUR, II,
                SS, EVID, CMT, OCC) merged in by time; at equal times they come after
                the patient's records. Their covariates come from the next patient
                record (``rule="nonmem"``: the values that govern that interval) or the
                previous one (``"locf"``), so they change no prediction.
            n_occasions: the occasion count of the batch (default the patient's).
        """
        rec = merge_records(self.records, extra, rule=rule) if extra else self.records
        return to_subject(rec, self.info.model.covariates, n_records=n_records,
                          n_occasions=n_occasions or max(self.n_occasions, 1))


_ITEMS = ("TIME", "AMT", "RATE", "DUR", "II", "SS", "EVID", "CMT", "DV", "LLOQ", "BLQ", "OBS", "OCC")


def merge_records(records: dict, extra: dict, *, rule: str = "nonmem") -> dict:
    """``records`` with ``extra`` records merged in by time (see `BoundPatient.subject`)."""
    n_extra = len(extra["TIME"])
    n = len(records["TIME"])
    full = {}
    for k in _ITEMS:
        default = {"EVID": 2}.get(k, 0)
        dtype = bool if k in ("BLQ", "OBS") else (np.int64 if k in ("EVID", "CMT", "SS", "OCC") else float)
        e = np.asarray(extra.get(k, np.full(n_extra, default)), dtype=dtype)
        full[k] = np.concatenate([np.asarray(records[k], dtype=dtype), e])
    is_extra = np.r_[np.zeros(n, bool), np.ones(n_extra, bool)]
    order = np.lexsort((np.arange(n + n_extra), is_extra, full["TIME"]))
    out = {k: v[order] for k, v in full.items()}
    is_extra = is_extra[order]
    # Covariates (and, unless given, the occasion) of the extra records.
    real_pos = np.flatnonzero(~is_extra)
    cov = records["COV"]
    if n == 0:
        out["COV"] = np.zeros((n_extra, cov.shape[1] if cov.ndim == 2 else 0))
        return out
    idx = np.arange(n + n_extra)
    if rule == "nonmem":
        nxt = np.searchsorted(real_pos, idx, side="left")
        src = np.where(nxt < n, nxt, n - 1)
    else:
        prev = np.searchsorted(real_pos, idx, side="right") - 1
        src = np.where(prev >= 0, prev, 0)
    # Positions among the original records (real_pos is increasing, so index k = record k).
    out["COV"] = np.asarray(cov)[src]
    occ_given = "OCC" in extra
    if not occ_given:
        out["OCC"] = np.where(is_extra, np.asarray(records["OCC"])[src], out["OCC"])
    return out


def to_subject(rec: dict, covariate_names, *, n_records: int | None = None, n_occasions: int = 1):
    """Padded `SubjectBatch` (numpy arrays) for one subject from record arrays."""
    from .._data import SubjectBatch

    n = len(rec["TIME"])
    width = n_records if n_records is not None else max(RECORD_BUCKET, -(-n // RECORD_BUCKET) * RECORD_BUCKET)
    if width < n:
        raise ValueError(f"n_records={width} is smaller than the {n} records of the patient")
    pad = width - n
    last = max(n - 1, 0)

    def col(name, fill=None, dtype=float):
        x = np.asarray(rec[name], dtype=dtype)
        if n == 0:
            return np.zeros(width, dtype=dtype) if fill is None else np.full(width, fill, dtype=dtype)
        tail = np.full(pad, x[last] if fill is None else fill, dtype=dtype)
        return np.concatenate([x, tail])

    mask = np.r_[np.ones(n, bool), np.zeros(pad, bool)]
    cov = np.asarray(rec["COV"], dtype=float).reshape(n, len(covariate_names))
    cov = np.concatenate([cov, np.repeat(cov[last:last + 1] if n else np.zeros((1, cov.shape[1])), pad, axis=0)])
    # numpy arrays: the jitted callers move them to the device in one go, which is much
    # cheaper than one jnp.asarray per field.
    i32 = np.int32
    return SubjectBatch(
        time=col("TIME"), amt=col("AMT", 0.0), rate=col("RATE", 0.0), dur=col("DUR", 0.0),
        ii=col("II", 0.0), dv=col("DV", 0.0), lloq=col("LLOQ", 0.0),
        evid=col("EVID", 2, np.int64).astype(i32), cmt=col("CMT", 0, np.int64).astype(i32),
        ss=col("SS", 0, np.int64).astype(i32), occ=col("OCC", None, np.int64).astype(i32),
        obs_mask=col("OBS", False, bool), blq=col("BLQ", False, bool), record_mask=mask,
        covariates=cov, covariate_names=tuple(covariate_names), n_occasions=int(n_occasions),
    )


def _dose_compartment(info: ModelInfo, route: str, cmt: int | None, field: str) -> int:
    names = tuple(info.model.compartment_names)
    if cmt is not None:
        if cmt > len(names):
            raise PatientError(f"{field}.cmt", f"compartment {cmt} does not exist; the model has "
                                               f"{', '.join(f'{i + 1}={n}' for i, n in enumerate(names))}")
        return cmt
    model_route = str(info.metadata.get("route", "")).lower()
    if route == "oral":
        if "depot" in names:
            return names.index("depot") + 1
        if model_route.startswith("oral"):
            return 0  # the model's default dose compartment (e.g. the first transit compartment)
        raise PatientError(f"{field}.route", f"oral dose, but model {info.name} has no absorption "
                                             f"compartment ({', '.join(names)}); it is for "
                                             f"{model_route or 'intravenous'} dosing")
    if route == "iv":
        if "central" in names:
            return names.index("central") + 1
        if not model_route or model_route.startswith("intra") or model_route == "iv":
            return 0
        raise PatientError(f"{field}.route", f"intravenous dose, but model {info.name} is for {model_route} "
                                             "dosing and has no 'central' compartment; give 'cmt'")
    return 0


def _scalar_category(value, table: dict | None, field: str, name: str):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool):
        return float(value)
    text = str(value).strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    if table is None:
        raise PatientError(field, f"'{value}' is not a number and the model does not say how {name} is coded")
    key = _SYNONYMS.get(text, text)
    if key in table:
        return table[key]
    for label, number in table.items():
        if label.startswith(key) or key.startswith(label.split()[0]):
            return number
    raise PatientError(field, f"'{value}' is not one of {name}'s categories ({', '.join(table)})")


_REFERENCE_UNIT = {id(_WEIGHT): "kg", id(_AGE): "years", id(_HEIGHT): "cm"}


def _covariate_value(info: ModelInfo, cov: Covariate, k: int, *, used: bool = True) -> float | None:
    """One value of a covariate in the model's unit, checked for plausibility.

    A covariate the model does not use (``used=False``) is only checked for impossible
    values; it returns None when it is not a number.
    """
    name = cov.name.upper()
    field = cov.field + (f".values[{k}]" if cov.times[0] is not None else "")
    model_unit = info.covariate_unit(name) if used else None
    dim_model = _dimension_of(model_unit)
    categories = _categories(model_unit) if model_unit and dim_model is None else None
    value = cov.values[k]
    if categories is not None:
        if cov.unit:
            raise PatientError(f"{cov.field}.unit", f"{name} is a category ({model_unit}); it has no unit")
        return _scalar_category(value, categories, field, name)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            if not used:
                return None
            raise PatientError(field, f"'{value}' is not a number"
                                      + (f" ({name} is in {model_unit})" if model_unit else "")) from None
    x = _number(value, field)
    dim = dim_model or _NAME_DIMENSION.get(name) or (None if used else _dimension_of(cov.unit))
    if dim is None:
        # A quantity pkmix has no units for: the unit, when given, must be the model's.
        if used and cov.unit and model_unit and _norm_unit(cov.unit) != _norm_unit(model_unit):
            raise PatientError(f"{cov.field}.unit", f"unit '{cov.unit}' does not match the model's "
                                                    f"'{model_unit}' and pkmix cannot convert it")
        return x
    if dim_model is not None:
        target = _norm_unit(model_unit)
    elif id(dim) in _REFERENCE_UNIT:
        target = _REFERENCE_UNIT[id(dim)]  # kg, years, cm when the model does not say
    else:
        target = None
    if cov.unit:
        if _dimension_of(cov.unit) is not dim:
            raise PatientError(f"{cov.field}.unit", f"unit '{cov.unit}' does not match {name}"
                                                    + (f" (the model uses {target})" if target else ""))
        if target is None:
            if used:
                raise PatientError(f"{cov.field}.unit", f"the model does not state the unit of {name}; "
                                                        "give the value in the model's unit without 'unit'")
            target = _norm_unit(cov.unit)
        x = convert(x, cov.unit, target, dim, f"{cov.field}.unit")
    elif dim is _CREATININE and target is not None:
        # Creatinine without a unit is ambiguous by a factor of 88: refuse values that
        # are implausible in the model's unit rather than guess.
        in_mgdl = x * _CREATININE[target]
        if not 0.1 <= in_mgdl <= 20.0:
            raise PatientError(f"{cov.field}.unit", f"{name} = {x:g} without a unit is implausible in the "
                                                    f"model's unit ({model_unit}); give the unit "
                                                    "(mg/dL or umol/L)")
    if target is not None and id(dim) in _IMPOSSIBLE:
        what, lo, hi, ref_unit = _IMPOSSIBLE[id(dim)]
        in_ref = x * dim[target] / dim[ref_unit]
        if not (lo < in_ref <= hi) and not (what == "age" and in_ref == 0.0):
            raise PatientError(field, f"impossible {what}: {x:g} {target} (expected {lo:g} to {hi:g} {ref_unit})")
    return x


def bind(info: ModelInfo, patient: Patient, *, warn: bool = True) -> BoundPatient:
    """The patient's records in the model's units (see `BoundPatient`).

    Raises:
        PatientError: a missing covariate, a unit that does not match, an impossible
            value, a dose route the model cannot take.
    Warns:
        PatientWarning: a covariate outside the model's validated range.
    """
    model = info.model
    if patient.frame is not None:
        bound = _bind_frame(info, patient)
    else:
        bound = _bind_json(info, patient)
    # Validated ranges (warnings): the model's covariates, then derived ones (CrCL).
    msgs = []
    for j, name in enumerate(model.covariates):
        rng = info.covariate_range(name)
        if rng is None or bound.n_records == 0:
            continue
        values = np.unique(bound.records["COV"][:, j])
        for v in values:
            if v < rng[0] or v > rng[1]:
                msgs.append(f"{name} = {v:g} is outside the range the model was developed on "
                            f"({rng[0]:g} to {rng[1]:g}): predictions extrapolate")
    derived_rows = {}
    if info.derived is not None and bound.n_records:
        for row in np.unique(bound.records["COV"], axis=0):
            try:
                derived = info.derived(**{n: float(v) for n, v in zip(model.covariates, row)})
            except Exception:  # a derivation the values cannot support is reported by the model
                continue
            derived_rows[tuple(row)] = derived
            for name, v in derived.items():
                rng = info.covariate_range(name, derived=True)
                if rng is not None and (v < rng[0] or v > rng[1]):
                    msgs.append(f"{name} = {v:.4g} (derived) is outside the range the model was developed "
                                f"on ({rng[0]:g} to {rng[1]:g}): predictions extrapolate")
    seen = set()
    for m in msgs:
        if m not in seen:
            seen.add(m)
            bound.warnings.append(m)
            if warn:
                warnings.warn(m, PatientWarning, stacklevel=3)
    now = derived_rows.get(tuple(bound.records["COV"][-1])) if bound.n_records else None
    bound.derived_now = {k: float(v) for k, v in (now or {}).items()}
    return bound


def _occasions(values) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=float)
    labels = np.unique(values) if values.size else np.array([1.0])
    return labels, np.searchsorted(labels, values)


def _bind_json(info: ModelInfo, patient: Patient) -> BoundPatient:
    model = info.model
    dose_unit = info.dose_unit
    conc_unit = info.concentration_unit
    if info.time_unit not in _TIME:
        raise PatientError("model", f"the model's time unit '{info.time_unit}' is not one pkmix knows")
    time_factor = 1.0 / _TIME[info.time_unit]  # hours -> model time units

    # Covariates: every model covariate must be given.
    given = patient.covariates
    missing = [n for n in model.covariates if n.upper() not in given]
    if missing:
        units = {n: info.covariate_unit(n) for n in missing}
        listing = ", ".join(f"{n} ({u})" if u else n for n, u in units.items())
        raise PatientError(f"covariates.{missing[0]}", f"missing; model {info.name} needs {listing}")
    series = {}
    for name in model.covariates:
        cov = given[name.upper()]
        vals = [_covariate_value(info, cov, k) for k in range(len(cov.values))]
        times = [None if t is None else t * time_factor for t in cov.times]
        series[name] = (times, vals)
    used = {n.upper() for n in model.covariates}
    for key, cov in given.items():  # covariates the model does not use: impossible values only
        if key not in used:
            for k in range(len(cov.values)):
                _covariate_value(info, cov, k, used=False)

    rows = []  # (time, kind order, fields)
    for d in patient.doses:
        amount = convert(d.amount, d.unit or dose_unit, dose_unit, _MASS, f"{d.field}.unit")
        cmt = _dose_compartment(info, d.route, d.cmt, d.field)
        times = [d.time + k * (d.interval or 0.0) for k in range(d.count)]
        for k, t in enumerate(times):
            rows.append(dict(TIME=t * time_factor, AMT=amount, RATE=0.0, DUR=d.duration * time_factor,
                             II=(d.interval or 0.0) * time_factor if (d.steady_state and k == 0) else 0.0,
                             SS=1 if (d.steady_state and k == 0) else 0, EVID=1, CMT=cmt, DV=0.0, LLOQ=0.0,
                             BLQ=False, OBS=False, OCCV=d.occasion, _order=2))
    for lv in patient.levels:
        value = None if lv.value is None else convert(lv.value, lv.unit or conc_unit, conc_unit, _CONCENTRATION,
                                                      f"{lv.field}.unit")
        lloq = None if lv.lloq is None else convert(lv.lloq, lv.unit or conc_unit, conc_unit, _CONCENTRATION,
                                                    f"{lv.field}.unit")
        dv = value if value is not None else lloq
        rows.append(dict(TIME=lv.time * time_factor, AMT=0.0, RATE=0.0, DUR=0.0, II=0.0, SS=0, EVID=0, CMT=0,
                         DV=float(dv), LLOQ=float(lloq or 0.0), BLQ=bool(lv.blq), OBS=True, OCCV=lv.occasion,
                         _order=1))
    # Time-varying covariates: an EVID 2 record at each change, so the new value takes
    # effect there (under NONMEM's rule from the previous record on).
    change_times = sorted({t for times, _ in series.values() for t in times if t is not None})
    for t in change_times:
        rows.append(dict(TIME=t, AMT=0.0, RATE=0.0, DUR=0.0, II=0.0, SS=0, EVID=2, CMT=0, DV=0.0, LLOQ=0.0,
                         BLQ=False, OBS=False, OCCV=np.nan, _order=0))
    if not rows:
        # A priori: no dose or level yet. One "other" record carries the covariates.
        rows.append(dict(TIME=0.0, AMT=0.0, RATE=0.0, DUR=0.0, II=0.0, SS=0, EVID=2, CMT=0, DV=0.0, LLOQ=0.0,
                         BLQ=False, OBS=False, OCCV=1.0, _order=0))
    rows.sort(key=lambda r: (r["TIME"], r["_order"]))
    n = len(rows)
    rec = {k: np.array([r[k] for r in rows]) if n else np.zeros(0) for k in _ITEMS if k != "OCC"}
    for k in ("EVID", "CMT", "SS"):
        rec[k] = rec[k].astype(np.int64)
    for k in ("BLQ", "OBS"):
        rec[k] = rec[k].astype(bool)
    # Occasion of a covariate record: that of the next dose or level (else the last).
    occv = np.array([r["OCCV"] for r in rows], dtype=float)
    if n:
        s = np.where(np.isnan(occv), np.nan, occv)
        idx = np.where(~np.isnan(s), np.arange(n), n)
        nxt = np.minimum.accumulate(idx[::-1])[::-1]
        prev = np.maximum.accumulate(np.where(~np.isnan(s), np.arange(n), -1))
        fill = np.where(nxt < n, nxt, np.maximum(prev, 0))
        s = np.where(np.isnan(s), s[np.clip(fill, 0, n - 1)] if n else s, s)
        s = np.where(np.isnan(s), 1.0, s)
        occv = s
    labels, occ = _occasions(occv)
    rec["OCC"] = occ.astype(np.int64)
    # Covariate values per record: the latest measurement at or before the record.
    cov = np.zeros((n, len(model.covariates)))
    now = {}
    for j, name in enumerate(model.covariates):
        times, vals = series[name]
        if times[0] is None:
            cov[:, j] = vals[0]
        else:
            t = np.asarray(times, dtype=float)
            k = np.searchsorted(t, rec["TIME"], side="right") - 1 if n else np.zeros(0, int)
            cov[:, j] = np.asarray(vals)[np.clip(k, 0, len(vals) - 1)]
        now[name] = float(cov[-1, j]) if n else float(series[name][1][-1])
    rec["COV"] = cov
    last = _last_dose(rec, patient.doses, time_factor)
    route = patient.doses[-1].route if patient.doses else _model_route(info)
    return BoundPatient(info=info, patient=patient, records=rec, occasions=labels, covariates_now=now,
                        derived_now={}, warnings=[], route=route, last_dose=last)


def _model_route(info: ModelInfo) -> str:
    route = str(info.metadata.get("route", "")).lower()
    if route.startswith("oral") or ("depot" in info.model.compartment_names and not route):
        return "oral"
    return "iv"


def _last_dose(rec: dict, doses, time_factor) -> dict | None:
    is_dose = np.isin(rec["EVID"], (1, 4))
    if not is_dose.any():
        return None
    idx = np.flatnonzero(is_dose)
    i = idx[-1]
    interval = None
    if rec["II"][i] > 0:
        interval = float(rec["II"][i])
    elif len(idx) > 1:
        interval = float(rec["TIME"][i] - rec["TIME"][idx[-2]])
    if doses:
        src = sorted(doses, key=lambda d: d.time)[-1]
        if src.interval and not interval:
            interval = src.interval * time_factor
    duration = float(rec["DUR"][i])
    if rec["RATE"][i] > 0:
        duration = float(rec["AMT"][i] / rec["RATE"][i])
    return {"time": float(rec["TIME"][i]), "amount": float(rec["AMT"][i]), "duration": duration,
            "interval": interval, "cmt": int(rec["CMT"][i])}


def _bind_frame(info: ModelInfo, patient: Patient) -> BoundPatient:
    model = info.model
    f = patient.frame
    cols = {c.upper(): c for c in f.columns}
    missing = [n for n in model.covariates if n.upper() not in cols]
    if missing:
        raise PatientError(missing[0], f"column missing; model {info.name} needs covariates "
                                       f"{', '.join(model.covariates)}")
    n_cmt = model.n_compartments
    bad = f["CMT"].to_numpy() > n_cmt
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise PatientError(f"record {f['REC'].iloc[i]}, CMT", f"compartment {f['CMT'].iloc[i]} does not exist "
                                                              f"(the model has {n_cmt})")
    n = len(f)
    evid = f["EVID"].to_numpy().astype(np.int64)
    mdv = f["MDV"].to_numpy()
    obs = (evid == 0) & (mdv == 0)
    rec = {
        "TIME": f["TIME"].to_numpy(dtype=float), "AMT": f["AMT"].to_numpy(dtype=float),
        "RATE": f["RATE"].to_numpy(dtype=float), "DUR": f["DUR"].to_numpy(dtype=float),
        "II": f["II"].to_numpy(dtype=float), "SS": f["SS"].to_numpy().astype(np.int64), "EVID": evid,
        "CMT": f["CMT"].to_numpy().astype(np.int64),
        "DV": np.nan_to_num(f["DV"].to_numpy(dtype=float)), "LLOQ": np.nan_to_num(f["LLOQ"].to_numpy(dtype=float)),
        "BLQ": obs & (f["BLQ"].to_numpy() == 1), "OBS": obs,
    }
    occ_col = model.occasion_column
    if occ_col is not None and occ_col.upper() in cols:
        labels, occ = _occasions(f[cols[occ_col.upper()]].to_numpy(dtype=float))
    elif "OCC" in f.columns:
        labels, occ = _occasions(f["OCC"].to_numpy(dtype=float))
    else:
        labels, occ = np.array([1.0]), np.zeros(n, np.int64)
    rec["OCC"] = occ.astype(np.int64)
    cov = np.column_stack([f[cols[c.upper()]].to_numpy(dtype=float) for c in model.covariates]) \
        if model.covariates else np.zeros((n, 0))
    for j, name in enumerate(model.covariates):
        col = cov[:, j]
        if np.isnan(col).any():
            i = int(np.flatnonzero(np.isnan(col))[0])
            raise PatientError(f"record {f['REC'].iloc[i]}, {name}", "missing covariate value")
        dim = _NAME_DIMENSION.get(name.upper()) or _dimension_of(info.covariate_unit(name))
        if dim is not None and id(dim) in _IMPOSSIBLE:
            what, lo, hi, ref_unit = _IMPOSSIBLE[id(dim)]
            unit = _norm_unit(info.covariate_unit(name) or ref_unit)
            unit = unit if unit in dim else ref_unit
            in_ref = col * dim[unit] / dim[ref_unit]
            bad = ~((in_ref > lo) & (in_ref <= hi)) & ~((what == "age") & (in_ref == 0))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise PatientError(f"record {f['REC'].iloc[i]}, {name}",
                                   f"impossible {what}: {col[i]:g} {unit} (expected {lo:g} to {hi:g} {ref_unit})")
    rec["COV"] = cov
    now = {name: float(cov[-1, j]) for j, name in enumerate(model.covariates)}
    last = _last_dose(rec, [], 1.0)
    route = _model_route(info)
    if last is not None:
        names = model.compartment_names
        if "depot" in names and last["cmt"] == names.index("depot") + 1:
            route = "oral"
        elif "central" in names and last["cmt"] == names.index("central") + 1:
            route = "iv"
    return BoundPatient(info=info, patient=patient, records=rec, occasions=labels, covariates_now=now,
                        derived_now={}, warnings=[], route=route, last_dose=last)

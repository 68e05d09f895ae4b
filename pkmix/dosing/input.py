"""Reading a patient: the JSON format of docs/patient_format.md, or a one-patient
NONMEM-format CSV, into a model-independent `Patient` (times in hours since time 0).
Every fault is a `PatientError` naming the field at fault."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .units import _TIME, PatientError, convert

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
    reset: bool = False  # EVID 4: the system is reset (washed out) just before this dose


@dataclasses.dataclass
class Reset:
    """A reset of the system (EVID 3): every compartment emptied, e.g. a new course."""

    time: float
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
    resets: list = dataclasses.field(default_factory=list)  # `Reset`s (EVID 3)
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
    reset = item.get("reset", False)
    if not isinstance(reset, bool):
        raise PatientError(f"{field}.reset", f"expected true or false, got {reset!r}")
    return Dose(time=time, amount=amount, route=route, duration=duration, unit=item.get("unit", default_unit),
                cmt=cmt, steady_state=ss, interval=interval, count=int(count_value), occasion=occasion,
                field=field, reset=reset)


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
             "covariates", "doses", "levels", "resets", "notes", "comment", "model", "target"}
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
    resets_in = data.get("resets") or []
    if not isinstance(resets_in, list):
        raise PatientError("resets", "expected a list of {time or datetime}")
    resets = []
    for i, item in enumerate(resets_in):
        field = f"resets[{i}]"
        if not isinstance(item, Mapping):
            raise PatientError(field, "expected an object with time or datetime")
        resets.append(Reset(time=clock.hours(item, field), occasion=_number(item.get("occasion", 1),
                                                                            f"{field}.occasion"), field=field))
    _check_history(doses, levels)
    return Patient(id=str(data.get("id", data.get("name", "patient"))), covariates=covariates, doses=doses,
                   levels=levels, reference_time=clock.reference, source=source, resets=resets)


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
        from .binding import bind, model_info

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

"""Binding a patient to a model: the records of one NONMEM subject in the model's units.

`bind` converts doses, levels and covariates to the model's units, checks covariates
against the model's validated ranges (warnings), writes time-varying covariates as
EVID 2 records and sorts. `BoundPatient.subject` pads the records into a
`SubjectBatch` with the dataset's own padder (`pkmix._data.Dataset.batch`), to a
bucketed length, so a second patient of similar size reuses the compiled program.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import warnings
from types import ModuleType
from typing import Any, Callable, Mapping

import numpy as np

from .input import Covariate, Patient, _number
from .units import (_CREATININE, _IMPOSSIBLE, _MASS, _NAME_DIMENSION, _REFERENCE_UNIT, _TIME,
                    PatientError, PatientWarning, _categories, _dimension_of, _norm_unit, _SYNONYMS, convert,
                    convert_concentration)


# Records are padded to a multiple of this, so patients with a few more or fewer
# records share one compiled program.
RECORD_BUCKET = 16


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
    """Padded `SubjectBatch` (numpy arrays) for one subject from record arrays.

    The padding is the dataset's own (`pkmix._data.Dataset.batch`: padding records
    repeat the last time, covariates and occasion, with EVID 2 and every mask False), so
    the dosing programs see exactly what the estimation programs see.
    """
    import pandas as pd

    from .._data import Dataset, SubjectBatch
    from .._data.dataset import padded_length

    n = len(rec["TIME"])
    width = n_records if n_records is not None else padded_length(n, RECORD_BUCKET)
    if width < n:
        raise ValueError(f"n_records={width} is smaller than the {n} records of the patient")
    names = tuple(covariate_names)
    obs = np.asarray(rec["OBS"], bool)
    cov = np.asarray(rec["COV"], dtype=float).reshape(n, len(names))
    columns = {
        "ID": np.ones(n), "TIME": np.asarray(rec["TIME"], float), "DV": np.asarray(rec["DV"], float),
        "AMT": np.asarray(rec["AMT"], float), "EVID": np.asarray(rec["EVID"], np.int64),
        "MDV": (~obs).astype(np.int64), "CMT": np.asarray(rec["CMT"], np.int64),
        "RATE": np.asarray(rec["RATE"], float), "DUR": np.asarray(rec["DUR"], float),
        "II": np.asarray(rec["II"], float), "ADDL": np.zeros(n, np.int64), "SS": np.asarray(rec["SS"], np.int64),
        "LLOQ": np.asarray(rec["LLOQ"], float), "BLQ": np.asarray(rec["BLQ"], np.int64),
        "REC": np.arange(1, n + 1), "OCC": np.asarray(rec["OCC"], float),
    }
    # Covariates under positional names: a covariate may share a name with a data item.
    columns.update({f"COV_{j}": cov[:, j] for j in range(len(names))})
    batch = Dataset(pd.DataFrame(columns)).batch([f"COV_{j}" for j in range(len(names))], n_records=width)
    # The occasion is set here: Dataset.batch would renumber the occasions present, but
    # the records' OCC already is the 0-based index, and the batch may count occasions
    # that no record has yet.
    # numpy arrays: the jitted callers move them to the device in one go.
    fields = {f: np.asarray(getattr(batch, f))[0] for f in ("time", "amt", "rate", "dur", "ii", "dv", "lloq", "evid",
                                                             "cmt", "ss", "obs_mask", "blq", "record_mask",
                                                             "covariates")}
    occ = np.asarray(rec["OCC"], np.int32)
    fields["occ"] = np.r_[occ, np.full(width - n, occ[-1] if n else 0, np.int32)]
    return SubjectBatch(**fields, covariate_names=names, n_occasions=int(n_occasions))


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
                             SS=1 if (d.steady_state and k == 0) else 0, EVID=4 if (d.reset and k == 0) else 1,
                             CMT=cmt, DV=0.0, LLOQ=0.0,
                             BLQ=False, OBS=False, OCCV=d.occasion, _order=2))
    for lv in patient.levels:
        molar_mass = info.metadata.get("molar_mass")
        value = None if lv.value is None else convert_concentration(lv.value, lv.unit or conc_unit, conc_unit,
                                                                    f"{lv.field}.unit", molar_mass)
        lloq = None if lv.lloq is None else convert_concentration(lv.lloq, lv.unit or conc_unit, conc_unit,
                                                                  f"{lv.field}.unit", molar_mass)
        dv = value if value is not None else lloq
        rows.append(dict(TIME=lv.time * time_factor, AMT=0.0, RATE=0.0, DUR=0.0, II=0.0, SS=0, EVID=0, CMT=0,
                         DV=float(dv), LLOQ=float(lloq or 0.0), BLQ=bool(lv.blq), OBS=True, OCCV=lv.occasion,
                         _order=1))
    # Resets (EVID 3: dialysis washing the drug out, a new course): after a level at the
    # same time, before a dose.
    for r in patient.resets:
        rows.append(dict(TIME=r.time * time_factor, AMT=0.0, RATE=0.0, DUR=0.0, II=0.0, SS=0, EVID=3, CMT=0, DV=0.0,
                         LLOQ=0.0, BLQ=False, OBS=False, OCCV=r.occasion, _order=1.5))
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

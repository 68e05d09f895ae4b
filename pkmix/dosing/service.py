"""One dose question, answered the same way for every caller.

``pkmix dose`` (the command line) and ``pkmix serve`` (the web app) both turn what the
user gave into a `DoseRequest` and call `answer`, so the JSON the command prints with
``--json`` and the JSON the web API returns are one and the same object.

    from pkmix.dosing.service import parse_request, answer, library_model_info
    req = parse_request({"model": "vancomycin_goti2018", "patient": {...}, "target": "auc24=400:600"})
    out = answer(req, library_model_info(req.model))
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .patient import ModelInfo, PatientError
from .safety import check_dates


class RequestError(ValueError):
    """A fault in a dose request. ``field`` names the option at fault (``samples``)."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclasses.dataclass(frozen=True)
class DoseRequest:
    """Everything a dose recommendation depends on (the options of ``pkmix dose``)."""

    model: str
    patient: object                      # a patient JSON dict, a path, or a Patient
    target: str | None = None
    interval: tuple[float, ...] | None = None
    dose_unit: float | None = None
    dose_min: float | None = None
    dose_max: float | None = None
    infusion: tuple[float, ...] | None = None
    max_rate: float | None = None
    max_daily_dose: float | None = None
    route: str | None = None
    loading: bool = False
    threshold: float | None = None
    start: float | None = None
    posterior: str = "sir"
    samples: int = 2000
    seed: int = 0
    covariate_rule: str = "nonmem"
    curve: bool = False
    audit: bool = True                   # store the answer in the audit database
    audit_db: str | None = None          # its path (default: PKMIX_AUDIT_DB, else the user's data dir)


_CHOICES = {"route": (None, "iv", "oral"), "posterior": ("sir", "nuts"), "covariate_rule": ("nonmem", "locf")}
# Options that must be finite and > 0 (amounts, durations, rates), and the integers' lower bounds.
_POSITIVE = ("dose_unit", "dose_max", "max_rate", "max_daily_dose", "threshold")
_NONNEGATIVE = ("dose_min", "start")
_INTEGERS = {"samples": 1, "seed": 0}


def _number(field: str, value, *, lower: float, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(field, f"expected a number, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or v < lower or (strict and v == lower):
        raise RequestError(field, f"must be a finite number {'above' if strict else 'of at least'} {lower:g}, "
                                  f"got {value!r}")
    return v


def _numbers(field: str, value) -> tuple[float, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise RequestError(field, "no values given")
    return tuple(_number(f"{field}[{i}]", v, lower=0.0, strict=True) for i, v in enumerate(items))


def parse_request(data: Mapping) -> DoseRequest:
    """A `DoseRequest` from a JSON-like mapping; every fault is a `RequestError` naming the field."""
    if not isinstance(data, Mapping):
        raise RequestError("request", f"expected a JSON object, got {type(data).__name__}")
    fields = {f.name for f in dataclasses.fields(DoseRequest)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise RequestError(unknown[0], f"unknown option (known: {', '.join(sorted(fields))})")
    for name in ("model", "patient"):
        if data.get(name) in (None, ""):
            raise RequestError(name, "required")
    if not isinstance(data["model"], str):
        raise RequestError("model", f"expected a model name, got {data['model']!r}")
    values = dict(data)
    for name in _POSITIVE:
        if values.get(name) is not None:
            values[name] = _number(name, values[name], lower=0.0, strict=True)
    for name in _NONNEGATIVE:
        if values.get(name) is not None:
            values[name] = _number(name, values[name], lower=0.0, strict=False)
    for name in ("interval", "infusion"):
        if values.get(name) is not None:
            values[name] = _numbers(name, values[name])
    for name, lower in _INTEGERS.items():
        if name in values:
            v = values[name]
            if isinstance(v, bool) or not isinstance(v, int) or v < lower:
                raise RequestError(name, f"must be a whole number of at least {lower}, got {v!r}")
    for name, allowed in _CHOICES.items():
        if name in values and values[name] not in allowed:
            raise RequestError(name, f"must be one of {', '.join(a for a in allowed if a)}, got {values[name]!r}")
    for name in ("loading", "curve", "audit"):
        if name in values and not isinstance(values[name], bool):
            raise RequestError(name, f"expected true or false, got {values[name]!r}")
    if values.get("audit_db") is not None and not isinstance(values["audit_db"], str):
        raise RequestError("audit_db", f"expected a file path, got {values['audit_db']!r}")
    if values.get("target") is not None and not isinstance(values["target"], str):
        raise RequestError("target", f"expected a target such as 'auc24=400:600', got {values['target']!r}")
    return DoseRequest(**values)


def library_model_info(name: str) -> ModelInfo:
    """The `ModelInfo` of a library model (``pkmix.models``); RequestError if there is none."""
    import pkmix.models as library

    try:
        module = library.load(name)
    except KeyError:
        raise RequestError("model", f"no model '{name}' in the library (available: "
                                    f"{', '.join(library.available())})") from None
    return module_model_info(module)


def module_model_info(module) -> ModelInfo:
    """The `ModelInfo` of a module that defines ``model`` (and optionally ``METADATA``)."""
    return ModelInfo(model=module.model, metadata=dict(getattr(module, "METADATA", {}) or {}),
                     derived=getattr(module, "derived_covariates", None), module=module)


def answer(request: DoseRequest, info: ModelInfo) -> dict:
    """MAP estimates, the current regimen's exposure and the recommendation, as the JSON
    object that ``pkmix dose --json`` prints: ``map``, ``recommendation``, ``timing``,
    ``warnings`` (a list of ``{"code", "message", "severity", "field"?, "level"?}``: the
    field or level index each concerns), ``limits`` (the hard limits respected) and
    ``audit_id`` (the id in the audit database; None with ``audit=False``).

    Plausibility (`pkmix.dosing.safety`) is checked first: dates in the future or years
    apart and levels the model finds implausible are warnings; a model that gives
    non-finite values for the patient raises `RequestError` (field ``model``).
    """
    return answer_objects(request, info)[0]


def answer_objects(request: DoseRequest, info: ModelInfo):
    """``(json_dict, MAPResult, Recommendation)`` for `answer` and callers that plot."""
    from .map import map_estimate
    from .patient import load_patient
    from .regimen import recommend

    t_start = time.perf_counter()
    patient = load_patient(request.patient)
    findings = check_dates(patient)
    fit = map_estimate(info, patient, covariate_rule=request.covariate_rule,
                       curve_points=None if request.curve else 0)
    findings += _check_fit(fit)
    t1 = time.perf_counter()
    try:
        rec = recommend(info, fit, request.target, intervals=request.interval, dose_unit=request.dose_unit,
                        dose_min=request.dose_min, dose_max=request.dose_max, infusion_duration=request.infusion,
                        max_infusion_rate=request.max_rate, max_daily_dose=request.max_daily_dose,
                        loading_dose=request.loading, n_samples=request.samples, posterior=request.posterior,
                        seed=request.seed, route=request.route, threshold=request.threshold,
                        start_time=request.start, curve=request.curve)
    except ValueError as e:
        field = "target" if str(e).startswith("target") else "request"
        raise RequestError(field, str(e)) from None
    _check_finite_recommendation(rec)
    t2 = time.perf_counter()
    timing = {"map_s": round(t1 - t_start, 4), "recommendation_s": round(t2 - t1, 4),
              "total_s": round(t2 - t_start, 4)}
    warnings = [f.to_dict() for f in findings] + _fit_warnings(fit)
    if not rec.reachable:
        warnings.append({"code": "target_not_reachable", "field": "target", "severity": "warning",
                         "message": rec.message})
    out = {"map": fit.to_dict(), "recommendation": rec.to_dict(), "timing": timing, "warnings": warnings,
           "limits": rec.limits}
    out = to_json_safe(out)
    out["audit_id"] = _audit(request, info, out, "dose")
    return out, fit, rec


def _check_fit(fit):
    from .safety import PlausibilityError, check_fit

    try:
        return check_fit(fit)
    except PlausibilityError as e:
        raise RequestError(e.field, str(e)) from None


def _check_finite_recommendation(rec) -> None:
    values = [rec.regimen.dose, rec.regimen.interval, rec.pta, *rec.predicted.values()]
    if not all(np.isfinite(float(v)) for v in values):
        raise RequestError("model", "the model gives non-finite exposure for this patient (NaN or infinite "
                                    "predictions): no dose can be recommended; check the covariates and levels")


def _fit_warnings(fit) -> list[dict]:
    """The MAP's warnings (covariate ranges, convergence) as structured items."""
    out = []
    names = {n.upper(): n for n in fit.model.covariates}
    for text in fit.warnings:
        head = text.split(" ", 1)[0]
        if head.upper() in names and "outside the range" in text:
            out.append({"code": "covariate_out_of_range", "field": f"covariates.{names[head.upper()]}",
                        "severity": "warning", "message": text})
        elif "outside the range" in text:
            out.append({"code": "covariate_out_of_range", "field": "covariates", "severity": "warning",
                        "message": text})
        else:
            out.append({"code": "fit", "field": "levels", "severity": "warning", "message": text})
    return out


def _audit(request: DoseRequest, info: ModelInfo, out: dict, question: str, extra: dict | None = None):
    """Store the answer (unless ``request.audit`` is False); its id, or None."""
    if not request.audit:
        return None
    from . import audit

    try:
        patient = audit.patient_record(request.patient)
    except audit.AuditError as e:
        raise RequestError(e.field, e.message) from None
    req = {k: v for k, v in dataclasses.asdict(request).items() if k not in ("patient", "audit", "audit_db")}
    req.update(extra or {})
    try:
        return audit.record(to_json_safe(req), patient, info, out, question=question, path=request.audit_db)
    except audit.AuditError as e:
        raise RequestError(e.field, e.message) from None


def replay(audit_id: int, audit_db: str | None = None) -> dict:
    """Answer a stored recommendation again and compare the numbers.

    Returns ``{"audit_id", "identical", "differences", "stored", "replayed",
    "model_changed", "pkmix_version": {"stored", "now"}}``; ``differences`` lists the
    JSON paths whose values differ (timings aside).
    """
    import tempfile

    import pkmix

    from . import audit

    try:
        row = audit.fetch(audit_id, audit_db)
    except audit.AuditError as e:
        raise RequestError(e.field, e.message) from None
    stored_req = dict(row["request"])
    question = row["question"]
    patient = row["patient"]
    with tempfile.TemporaryDirectory() as tmp:
        if "json" in patient:
            source = patient["json"]
        else:
            source = str(Path(tmp) / "patient.csv")
            Path(source).write_text(patient["csv"], encoding="utf-8")
        data = {k: v for k, v in stored_req.items() if k in {f.name for f in dataclasses.fields(DoseRequest)}}
        data.update({"patient": source, "audit": False})
        info = _model_info_for(stored_req["model"])
        if question == "dose":
            replayed = answer(parse_request(data), info)
        else:
            from . import questions

            replayed = getattr(questions, question)({**stored_req, "patient": source, "audit": False}, info=info)
    ident = audit.model_identity(info)
    diffs = audit.compare(row["output"], replayed)
    return {"audit_id": audit_id, "question": question, "identical": not diffs, "differences": diffs,
            "stored": row["output"], "replayed": to_json_safe(replayed),
            "model_changed": ident["model_sha256"] != row["model_sha256"],
            "pkmix_version": {"stored": row["pkmix_version"], "now": pkmix.__version__},
            "created_utc": row["created_utc"]}


def _model_info_for(name: str) -> ModelInfo:
    """A library model by name, else a model file (through the CLI's one model loader)."""
    if name.endswith(".py") or "/" in name or "\\" in name:
        from ..cli._common import CLIError, load_model_module

        try:
            _, _, module = load_model_module(name)
        except CLIError as e:
            raise RequestError("model", str(e)) from None
        return module_model_info(module)
    return library_model_info(name)


def to_json_safe(x):
    """A copy of ``x`` with numpy scalars and arrays turned into plain Python values
    (NaN and infinity become None: JSON has neither)."""
    if isinstance(x, Mapping):
        return {str(k): to_json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_json_safe(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer, int)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if np.isfinite(v) else None
    if x is None or isinstance(x, str):
        return x
    return str(x)


__all__ = ["DoseRequest", "RequestError", "PatientError", "parse_request", "answer", "answer_objects",
           "library_model_info", "module_model_info", "to_json_safe", "replay"]

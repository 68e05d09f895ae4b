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
from typing import NamedTuple

import numpy as np

from .averaging import DEFAULT_DRAWS, WEIGHT_SCHEMES
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
    continuous: bool = False             # recommend a continuous infusion (amount per 24 h)
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
    for name in ("loading", "curve", "audit", "continuous"):
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
    _resolve_target(info, request.target)
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
                        start_time=request.start, curve=request.curve, continuous=request.continuous)
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


def _resolve_target(info, text):
    """The request's target (or the model's default when none is given) as a ``Target``;
    RequestError (field ``target``) when it does not parse or the model lists no default.
    Resolved before the MAP fit, so a request without a usable target costs no fit."""
    from .targets import Target, default_target

    try:
        return default_target(info) if text is None else Target.parse(text)
    except ValueError as e:
        raise RequestError("target", str(e)) from None


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
    if extra is None:
        req = {k: v for k, v in dataclasses.asdict(request).items() if k not in ("patient", "audit", "audit_db")}
    else:  # another question: its own fields
        req = dict(extra)
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
        if question == "average":
            names = _model_names(stored_req["model"])
            info = [_model_info_for(n) for n in names]
            replayed = average({**stored_req, "patient": source, "audit": False},
                               infos={n: i for n, i in zip(names, info)})
        else:
            info = _model_info_for(stored_req["model"])
        if question == "dose":
            replayed = answer(parse_request(data), info)
        elif question == "average":
            pass
        else:
            replayed = QUESTIONS[question]({**stored_req, "patient": source, "audit": False}, info=info)
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


# ----------------------------------------------------------------- the other questions
# Each question's fields: the one list, read by `_parse_question` (validation and
# defaults) and by the web app (its OpenAPI schemas and the page's forms), so the two
# cannot drift. COMMON_FIELDS are every question's; QUESTION_FIELDS[question] the
# question's own (a name in both: the question's wins, as average's list of models).
# A default of REQUIRED must be given. Kinds: see `_field`.
REQUIRED = object()


class Field(NamedTuple):
    kind: str
    default: object
    help: str

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


COMMON_FIELDS = {
    "model": Field("str", REQUIRED, "a library model name (GET /api/models)"),
    "patient": Field("patient", REQUIRED, "the patient JSON of docs/patient_format.md"),
    "covariate_rule": Field("rule", "nonmem", "covariates between records: nonmem (next observation) or locf"),
    "audit": Field("bool", True, "store the answer in the audit database"),
    "audit_db": Field("str", None, "the audit database's path"),
}
_COMMON = COMMON_FIELDS
_LIMITS = {
    "dose_unit": Field("positive", None, "round doses to multiples of this"),
    "dose_min": Field("nonnegative", None, "smallest dose"),
    "dose_max": Field("positive", None, "largest dose (a hard limit)"),
    "max_daily_dose": Field("positive", None, "largest amount per 24 h (a hard limit)"),
    "max_rate": Field("positive", None, "largest infusion rate, dose units per hour (a hard limit)"),
}
_ROUTE = Field("route", None, "iv or oral")
QUESTION_FIELDS = {
    "next_dose": {
        "at": Field("number", REQUIRED, "when the dose is given: hours on the patient's clock"),
        "target": Field("str", None, "e.g. trough=15 or auc24=400:600 (default: the model's first)"),
        "interval": Field("positive", None, "hours to the following dose (the window of a trough or AUC target)"),
        "infusion": Field("nonnegative", None, "infusion hours"),
        "route": _ROUTE,
        **_LIMITS,
    },
    "exposure": {
        "windows": Field("windows", [], "AUC windows in hours, e.g. 0:24, 24:48"),
        "times": Field("times", [], "hours at which to give the level, e.g. 12, 36"),
        "doses": Field("bool", True, "each dose's peak and trough (default true)"),
        "samples": Field("count0", 200, "posterior draws for the credible intervals (default 200; 0 none)"),
        "level": Field("fraction", 0.95, "credible level (default 0.95)"),
        "seed": Field("count0", 0, "random seed of the draws"),
    },
    "interval_for": {
        "dose": Field("positive", REQUIRED, "the dose"),
        "target": Field("str", None, "trough, peak, conc or auc24 (default: the model's first)"),
        "infusion": Field("nonnegative", None, "infusion hours"),
        "route": _ROUTE,
        "shortest": Field("positive", 1.0, "shortest interval, hours (default 1)"),
        "longest": Field("positive", 168.0, "longest interval, hours (default 168)"),
    },
    "what_if": {
        "dose": Field("positive", REQUIRED, "the dose"),
        "interval": Field("positive", REQUIRED, "hours between doses"),
        "infusion": Field("nonnegative", 0.0, "infusion hours (equal to the interval: a continuous infusion)"),
        "n_doses": Field("count", 4, "doses to report (1 to 15, default 4)"),
        "start": Field("number", None, "hours on the patient's clock (default: when the next dose is due)"),
        "etas": Field("etas", "map", "map (default), prior, or a list of the etas"),
        "route": _ROUTE,
        "times": Field("times", [], "hours at which to give the level"),
        "target": Field("str", None, "a target to compare with"),
    },
    "average": {
        "model": Field("models", REQUIRED, "two or more library models of one drug (a list, or names separated "
                                           "by commas)"),
        "target": Field("str", None, "e.g. auc24=400:600 (default: the first model's first)"),
        "scheme": Field("str", "laplace", f"model weights: {', '.join(WEIGHT_SCHEMES)} (default laplace)"),
        "samples": Field("count", DEFAULT_DRAWS, f"posterior draws per model for the mixture PTA "
                                                 f"(default {DEFAULT_DRAWS})"),
        "seed": Field("count0", 0, "random seed of the draws"),
        "interval": Field("positives", None, "dosing intervals to consider, hours (one or a list)"),
        "infusion": Field("nonnegatives", None, "infusion hours (one or a list)"),
        "route": _ROUTE,
        "continuous": Field("bool", False, "recommend a continuous infusion (amount per 24 h)"),
        **_LIMITS,
    },
}


def _field(name: str, kind: str, value):
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise RequestError(name, f"expected a non-empty string, got {value!r}")
        return value
    if kind == "patient":
        return value
    if kind == "models":
        return _model_names(value)
    if kind in ("positives", "nonnegatives"):
        items = value if isinstance(value, (list, tuple)) else [value]
        if not items:
            raise RequestError(name, "give at least one value")
        return tuple(_field(f"{name}[{i}]", kind[:-1], v) for i, v in enumerate(items))
    if kind == "rule":
        if value not in ("nonmem", "locf"):
            raise RequestError(name, f"must be one of nonmem, locf, got {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise RequestError(name, f"expected true or false, got {value!r}")
        return value
    if kind == "route":
        if value not in ("iv", "oral"):
            raise RequestError(name, f"must be one of iv, oral, got {value!r}")
        return value
    if kind == "positive":
        return _number(name, value, lower=0.0, strict=True)
    if kind == "nonnegative":
        return _number(name, value, lower=0.0, strict=False)
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(float(value)):
            raise RequestError(name, f"expected a finite number, got {value!r}")
        return float(value)
    if kind == "fraction":
        v = _number(name, value, lower=0.0, strict=True)
        if v >= 1:
            raise RequestError(name, f"must be between 0 and 1, got {value!r}")
        return v
    if kind in ("count", "count0"):
        lower = 1 if kind == "count" else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < lower:
            raise RequestError(name, f"must be a whole number of at least {lower}, got {value!r}")
        return value
    if kind == "times":
        items = value if isinstance(value, (list, tuple)) else [value]
        return [_field(f"{name}[{i}]", "number", v) for i, v in enumerate(items)]
    if kind == "windows":
        if not isinstance(value, (list, tuple)):
            raise RequestError(name, f"expected a list of [start, end] pairs, got {value!r}")
        out = []
        for i, w in enumerate(value):
            if isinstance(w, str) and ":" in w:
                w = w.split(":", 1)
                try:
                    w = [float(w[0]), float(w[1])]
                except ValueError:
                    raise RequestError(f"{name}[{i}]", f"expected START:END hours, got {value[i]!r}") from None
            if not isinstance(w, (list, tuple)) or len(w) != 2:
                raise RequestError(f"{name}[{i}]", f"expected [start, end], got {w!r}")
            a, b = _field(f"{name}[{i}]", "number", w[0]), _field(f"{name}[{i}]", "number", w[1])
            if not b > a:
                raise RequestError(f"{name}[{i}]", f"the end {b:g} must be after the start {a:g}")
            out.append([a, b])
        return out
    if kind == "etas":
        if value in ("map", "prior"):
            return value
        if isinstance(value, (list, tuple)):
            return [_field(f"{name}[{i}]", "number", v) for i, v in enumerate(value)]
        raise RequestError(name, f"expected \"map\", \"prior\" or a list of etas, got {value!r}")
    raise AssertionError(kind)


def _parse_question(data, question: str) -> dict:
    if not isinstance(data, Mapping):
        raise RequestError("request", f"expected a JSON object, got {type(data).__name__}")
    spec = {**COMMON_FIELDS, **QUESTION_FIELDS[question]}
    unknown = sorted(set(data) - set(spec))
    if unknown:
        raise RequestError(unknown[0], f"unknown option of {question} (known: {', '.join(sorted(spec))})")
    out = {}
    for name, (kind, default, _) in spec.items():
        value = data.get(name)
        if value is None or (kind == "str" and value == "" and default is REQUIRED):
            if default is REQUIRED:
                raise RequestError(name, "required")
            # A copy: the table's defaults are shared by every request.
            out[name] = list(default) if isinstance(default, list) else default
        else:
            out[name] = _field(name, kind, value)
    if data.get("target") is not None and not isinstance(data["target"], str):
        raise RequestError("target", f"expected a target such as 'trough=15', got {data['target']!r}")
    return out


def _question(question: str, data, info, compute, *, resolve_target: bool = False):
    """Parse, fit, check plausibility, answer, audit: the frame every question shares."""
    from .map import map_estimate
    from .patient import load_patient

    values = _parse_question(data, question)
    t0 = time.perf_counter()
    info = info if info is not None else library_model_info(values["model"])
    patient = load_patient(values["patient"])
    findings = check_dates(patient)
    target = _resolve_target(info, values["target"]) if resolve_target else None
    fit = map_estimate(info, patient, covariate_rule=values["covariate_rule"], curve_points=0)
    findings += _check_fit(fit)
    try:
        result = compute(fit, values if target is None else {**values, "target": target})
    except ValueError as e:
        text = str(e)
        head = text.split(":", 1)[0].split(" ", 1)[0]
        field = head if head in values else "request"
        raise RequestError(field, text) from None
    out = {"question": question, "map": fit.to_dict(), question: result,
           "warnings": [f.to_dict() for f in findings] + _fit_warnings(fit),
           "timing": {"total_s": round(time.perf_counter() - t0, 4)}}
    if isinstance(result, dict) and result.get("reachable") is False:
        out["warnings"].append({"code": "target_not_reachable", "field": "target", "severity": "warning",
                                "message": result["message"]})
    out = to_json_safe(out)
    req = DoseRequest(model=values["model"], patient=values["patient"], covariate_rule=values["covariate_rule"],
                      audit=values["audit"], audit_db=values["audit_db"])
    extra = {k: v for k, v in values.items() if k not in _COMMON}
    out["audit_id"] = _audit(req, info, out, question, extra={**extra, "model": values["model"],
                                                              "covariate_rule": values["covariate_rule"]})
    return out


def next_dose(data: Mapping, info: ModelInfo | None = None) -> dict:
    """The dose to give at a chosen time for a target (`pkmix.dosing.next_dose`).

    Request fields: ``model``, ``patient`` (as for `parse_request`), ``at`` (required:
    hours on the patient's clock), ``target`` (default the model's first), ``interval``
    (hours to the following dose: the window of a trough or AUC target), ``infusion``
    (hours), ``route``, ``dose_unit``, ``dose_min``, ``dose_max``, ``max_daily_dose``,
    ``max_rate``, ``covariate_rule``, ``audit``, ``audit_db``.

    Returns ``{"question": "next_dose", "map", "next_dose": {"time", "datetime",
    "dose", "infusion", "unrounded", "predicted", "reachable", "message", "limits"},
    "warnings", "timing", "audit_id"}``.
    """
    from .questions import next_dose as compute

    return _question("next_dose", data, info, resolve_target=True, compute=lambda fit, v: compute(
        fit, v["target"], v["at"], interval=v["interval"], infusion_duration=v["infusion"],
        route=v["route"], dose_unit=v["dose_unit"], dose_min=v["dose_min"], dose_max=v["dose_max"],
        max_daily_dose=v["max_daily_dose"], max_infusion_rate=v["max_rate"]))


def exposure(data: Mapping, info: ModelInfo | None = None) -> dict:
    """Exposure over the patient's history (`pkmix.dosing.history_exposure`).

    Request fields: ``model``, ``patient``, ``windows`` (a list of ``[start, end]``
    hours or ``"start:end"`` strings: AUC over each), ``times`` (hours: the level at
    each), ``doses`` (true: each dose's peak and trough; default true), ``samples``
    (posterior draws for the credible intervals, default 200; 0 none), ``level``
    (default 0.95), ``seed``, ``covariate_rule``, ``audit``, ``audit_db``.

    Returns ``{"question": "exposure", "map", "exposure": {"auc": [...],
    "concentrations": [...], "doses": [...]}, "warnings", "timing", "audit_id"}``.
    """
    from .questions import history_exposure as compute

    return _question("exposure", data, info, lambda fit, v: compute(
        fit, windows=v["windows"], times=v["times"], doses=v["doses"], n_draws=v["samples"], level=v["level"],
        seed=v["seed"]))


def interval_for(data: Mapping, info: ModelInfo | None = None) -> dict:
    """The dosing interval at which a dose meets a target (`pkmix.dosing.interval_for`).

    Request fields: ``model``, ``patient``, ``dose`` (required), ``target`` (trough,
    peak, conc or auc24; default the model's first), ``infusion`` (hours), ``route``,
    ``shortest``, ``longest`` (the interval's bounds, default 1 and 168 h),
    ``covariate_rule``, ``audit``, ``audit_db``.
    """
    from .questions import interval_for as compute

    return _question("interval_for", data, info, resolve_target=True, compute=lambda fit, v: compute(
        fit, v["dose"], v["target"], infusion_duration=v["infusion"], route=v["route"],
        shortest=v["shortest"], longest=v["longest"]))


def what_if(data: Mapping, info: ModelInfo | None = None) -> dict:
    """Predictions for any regimen (`pkmix.dosing.what_if`): each of its first
    ``n_doses`` doses' peak and the trough before the next, levels at ``times``, and
    steady state; at the MAP, a priori, or at given etas.

    Request fields: ``model``, ``patient``, ``dose`` and ``interval`` (required),
    ``infusion`` (hours; equal to ``interval``: a continuous infusion; default 0),
    ``n_doses`` (1 to 15, default 4), ``start`` (hours; default when the next dose is
    due), ``etas`` ("map", "prior", or a list of the BSV etas), ``route``, ``times``,
    ``target``, ``covariate_rule``, ``audit``, ``audit_db``.
    """
    from .questions import what_if as compute
    from .targets import Target

    return _question("what_if", data, info, lambda fit, v: compute(
        fit, v["dose"], v["interval"], v["infusion"], n_doses=v["n_doses"], start=v["start"], etas=v["etas"],
        route=v["route"], times=v["times"], target=None if v["target"] is None else Target.parse(v["target"])))


def _model_names(value) -> list[str]:
    """``"a,b"`` or ``["a", "b"]``: at least two distinct model names."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(x, str) for x in items):
        raise RequestError("model", f"expected model names (a list, or one string separated by commas), got {value!r}")
    names = [x.strip() for x in items]
    if any(not x for x in names):
        raise RequestError("model", f"an empty model name in {value!r}")
    if len(names) < 2:
        raise RequestError("model", f"model averaging needs at least two models, got {value!r}")
    if len(set(names)) != len(names):
        raise RequestError("model", f"each model once, got {value!r}")
    return names


def average(data: Mapping, infos: Mapping | None = None, *, objects: bool = False):
    """Model averaging across library models of one drug (`pkmix.dosing.average`).

    Request fields: ``model`` (required: two or more model names, a list or one string
    separated by commas), ``patient``, ``target`` (default the first model's first),
    ``scheme`` ("laplace", "ofv" or "aic"; default laplace), ``samples`` (posterior
    draws per model for the mixture PTA, default 1000), ``seed``, ``interval``,
    ``infusion`` (hours, one or a list), ``route``, ``continuous``, ``dose_unit``,
    ``dose_min``, ``dose_max``, ``max_daily_dose``, ``max_rate``, ``covariate_rule``,
    ``audit``, ``audit_db``. ``infos``: ``{name: ModelInfo}`` for models that are not in
    the library (model files), by the name given. ``objects``: return ``(json, the
    AveragedRecommendation)`` (for the command line's text summary).

    Returns ``{"question": "average", "average": AveragedRecommendation.to_dict()
    (``models``, ``weights``, ``scheme``, ``per_model``, ``recommendation``, ...),
    "warnings", "timing", "audit_id"}``.
    """
    from .averaging import AveragingError
    from .averaging import average as compute
    from .patient import load_patient

    values = _parse_question(data, "average")
    if values["scheme"] not in WEIGHT_SCHEMES:
        raise RequestError("scheme", f"must be one of {', '.join(WEIGHT_SCHEMES)}, got {values['scheme']!r}")
    names = values["model"]
    t0 = time.perf_counter()
    infos = dict(infos or {})
    models = [infos[n] if n in infos else library_model_info(n) for n in names]
    patient = load_patient(values["patient"])
    findings = check_dates(patient)
    options = {"intervals": values["interval"], "infusion_duration": values["infusion"], "route": values["route"],
               "continuous": values["continuous"], "dose_unit": values["dose_unit"], "dose_min": values["dose_min"],
               "dose_max": values["dose_max"], "max_daily_dose": values["max_daily_dose"],
               "max_infusion_rate": values["max_rate"], "curve": False}
    try:
        avg = compute([i.module if getattr(i, "module", None) is not None else i.model for i in models], patient,
                      values["target"], scheme=values["scheme"], n_draws=values["samples"],
                      n_samples=values["samples"], seed=values["seed"],
                      covariate_rule=values["covariate_rule"],
                      metadata={i.name: i.metadata for i in models if getattr(i, "module", None) is None},
                      **{k: v for k, v in options.items() if v is not None})
    except AveragingError as e:
        text = str(e)
        head = text.split(":", 1)[0]
        raise RequestError({"models": "model", "n_draws": "samples"}.get(head, head if head in values else "request"),
                           text) from None
    except ValueError as e:
        text = str(e)
        head = text.split(":", 1)[0].split(" ", 1)[0]
        raise RequestError(head if head in values else "request", text) from None
    for name, fit in avg.fits.items():
        for f in _check_fit(fit):
            item = f.to_dict()
            item["message"] = f"{name}: {item['message']}"
            findings.append(item)
    result = avg.to_dict()
    out = {"question": "average", "average": result,
           "warnings": [f if isinstance(f, dict) else f.to_dict() for f in findings],
           "timing": {"total_s": round(time.perf_counter() - t0, 4)}}
    if result.get("reachable") is False:
        out["warnings"].append({"code": "target_not_reachable", "field": "target", "severity": "warning",
                                "message": result.get("message", "")})
    out = to_json_safe(out)
    req = DoseRequest(model=",".join(names), patient=values["patient"], covariate_rule=values["covariate_rule"],
                      audit=values["audit"], audit_db=values["audit_db"])
    extra = {k: v for k, v in values.items() if k not in _COMMON}
    out["audit_id"] = _audit(req, models, out, "average",
                             extra={**extra, "model": ",".join(names), "covariate_rule": values["covariate_rule"]})
    return (out, avg) if objects else out


QUESTIONS = {"next_dose": next_dose, "exposure": exposure, "interval_for": interval_for, "what_if": what_if,
             "average": average}


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
           "library_model_info", "module_model_info", "to_json_safe", "replay", "next_dose", "exposure",
           "interval_for", "what_if", "average", "QUESTIONS", "QUESTION_FIELDS", "COMMON_FIELDS", "Field"]

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

import numpy as np

from .patient import ModelInfo, PatientError


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
    for name in ("loading", "curve"):
        if name in values and not isinstance(values[name], bool):
            raise RequestError(name, f"expected true or false, got {values[name]!r}")
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
    object that ``pkmix dose --json`` prints (``map``, ``recommendation``, ``timing``).

    Returns the answer and, under ``"_result"``, nothing: the Python objects are in
    `answer_objects` for callers that draw plots.
    """
    return answer_objects(request, info)[0]


def answer_objects(request: DoseRequest, info: ModelInfo):
    """``(json_dict, MAPResult, Recommendation)`` for `answer` and callers that plot."""
    from .map import map_estimate
    from .patient import load_patient
    from .regimen import recommend

    t_start = time.perf_counter()
    patient = load_patient(request.patient)
    fit = map_estimate(info, patient, covariate_rule=request.covariate_rule,
                       curve_points=None if request.curve else 0)
    t1 = time.perf_counter()
    rec = recommend(info, fit, request.target, intervals=request.interval, dose_unit=request.dose_unit,
                    dose_min=request.dose_min, dose_max=request.dose_max, infusion_duration=request.infusion,
                    max_infusion_rate=request.max_rate, max_daily_dose=request.max_daily_dose,
                    loading_dose=request.loading, n_samples=request.samples, posterior=request.posterior,
                    seed=request.seed, route=request.route, threshold=request.threshold,
                    start_time=request.start, curve=request.curve)
    t2 = time.perf_counter()
    timing = {"map_s": round(t1 - t_start, 4), "recommendation_s": round(t2 - t1, 4),
              "total_s": round(t2 - t_start, 4)}
    out = {"map": fit.to_dict(), "recommendation": rec.to_dict(), "timing": timing}
    return to_json_safe(out), fit, rec


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
           "library_model_info", "module_model_info", "to_json_safe"]

"""The dose calculator's ASGI app: the JSON API and the page.

Framework: FastAPI on Starlette, served by uvicorn. FastAPI writes the OpenAPI schema
from the routes (``/openapi.json``) and its ``TestClient`` drives the app in-process for
the tests; anyio's worker threads run the CPU-bound JAX work of a request off the event
loop, at most as many at once as there are cores. All three are widely used and
actively released. FastAPI's own ``/docs`` page loads its JavaScript from a CDN, so it
is switched off: nothing here needs the network.

The API is thin (DESIGN.md, "Serving and scaling"): every dose question goes through
`pkmix.dosing.service` (``parse_request`` then ``answer``), so ``POST /api/dose`` answers
with exactly the JSON ``pkmix dose --json`` prints. Bad input is a 4xx whose body is
``{"error": {"field": ..., "message": ...}}``; anything unexpected is a 500 with a plain
message (the traceback goes to the server's log, never to the client), and the server
goes on answering. The compiled programs stay in the process (the dosing module caches
them), so only the first request for a model and patient shape compiles.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..dosing import service
from ..dosing.service import PatientError, RequestError

log = logging.getLogger("pkmix.server")

STATIC = Path(__file__).resolve().parent / "static"
#: The largest request body accepted (a patient's history is a few kB).
MAX_BODY_BYTES = 1_000_000
#: The most posterior draws one web request may ask for: the command line takes any
#: number, but a server shared by a ward must not be held by one request.
MAX_SAMPLES = 20_000

# Questions of `pkmix.dosing.service` beyond the recommendation: each is a function of
# the request's JSON object returning a JSON object, served at POST /api/<name> when
# the service module has it. Their fields beyond model and patient (kind, required,
# help), for the OpenAPI schema and the page's forms; tests/test_server.py checks that
# the service accepts each of them. Kinds: number, text, numbers (a list), windows (a
# list of "start:end"), bool, etas ("map", "prior" or a list), route.
_LIMIT_FIELDS = {
    "dose_unit": ("number", False, "round doses to multiples of this"),
    "dose_min": ("number", False, "smallest dose"),
    "dose_max": ("number", False, "largest dose (a hard limit)"),
    "max_daily_dose": ("number", False, "largest amount per 24 h (a hard limit)"),
    "max_rate": ("number", False, "largest infusion rate, dose units per hour (a hard limit)"),
}
QUESTION_FIELDS = {
    "next_dose": {
        "at": ("number", True, "when the dose is given: hours on the patient's clock"),
        "target": ("text", False, "e.g. trough=15 or auc24=400:600 (default: the model's first)"),
        "interval": ("number", False, "hours to the following dose (the window of a trough or AUC target)"),
        "infusion": ("number", False, "infusion hours"),
        "route": ("route", False, "iv or oral"),
        **_LIMIT_FIELDS,
    },
    "exposure": {
        "windows": ("windows", False, "AUC windows in hours, e.g. 0:24, 24:48"),
        "times": ("numbers", False, "hours at which to give the level, e.g. 12, 36"),
        "doses": ("bool", False, "each dose's peak and trough (default true)"),
        "samples": ("number", False, "posterior draws for the credible intervals (default 200; 0 none)"),
        "level": ("number", False, "credible level (default 0.95)"),
        "seed": ("number", False, "random seed of the draws"),
    },
    "interval_for": {
        "dose": ("number", True, "the dose"),
        "target": ("text", False, "trough, peak, conc or auc24 (default: the model's first)"),
        "infusion": ("number", False, "infusion hours"),
        "route": ("route", False, "iv or oral"),
        "shortest": ("number", False, "shortest interval, hours (default 1)"),
        "longest": ("number", False, "longest interval, hours (default 168)"),
    },
    "what_if": {
        "dose": ("number", True, "the dose"),
        "interval": ("number", True, "hours between doses"),
        "infusion": ("number", False, "infusion hours (equal to the interval: a continuous infusion)"),
        "n_doses": ("number", False, "doses to report (1 to 15, default 4)"),
        "start": ("number", False, "hours on the patient's clock (default: when the next dose is due)"),
        "etas": ("etas", False, "map (default), prior, or a list of the etas"),
        "route": ("route", False, "iv or oral"),
        "times": ("numbers", False, "hours at which to give the level"),
        "target": ("text", False, "a target to compare with"),
    },
}
QUESTIONS = tuple(QUESTION_FIELDS)

_JSON_KIND = {"number": {"type": "number"}, "text": {"type": "string"}, "bool": {"type": "boolean"},
              "numbers": {"type": "array", "items": {"type": "number"}},
              "windows": {"type": "array", "items": {"anyOf": [{"type": "string"}, {
                  "type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}]}},
              "etas": {"anyOf": [{"type": "string", "enum": ["map", "prior"]},
                                 {"type": "array", "items": {"type": "number"}}]},
              "route": {"type": "string", "enum": ["iv", "oral"]}}


def _question_schema(name: str) -> dict:
    fields = QUESTION_FIELDS[name]
    props = {"model": {"type": "string", "description": "a library model name (GET /api/models)"},
             "patient": {"type": "object", "description": "the patient JSON of docs/patient_format.md"},
             "covariate_rule": {"type": "string", "enum": ["nonmem", "locf"]}}
    for k, (kind, _, help_) in fields.items():
        props[k] = {**_JSON_KIND[kind], "description": help_}
    return {"type": "object", "properties": props,
            "required": ["model", "patient"] + [k for k, (_, req, _) in fields.items() if req]}


class BadInput(Exception):
    """A fault in what the client sent: the HTTP status, the field and the rule."""

    def __init__(self, status: int, field: str, message: str):
        self.status, self.field, self.message = status, field, message
        super().__init__(f"{field}: {message}")


def error_response(status: int, field: str | None, message: str) -> JSONResponse:
    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status)


_REQUEST_FIELDS = {f.name for f in dataclasses.fields(service.DoseRequest)}


def classify(exc: BaseException) -> tuple[int, str | None, str]:
    """``(status, field, message)`` for an exception raised while answering.

    Faults of the input (`RequestError`, `PatientError`, a model that is not in the
    library, and the dosing code's ValueErrors, such as a target it cannot parse) are
    422 with the field they concern; everything else is a 500 with a plain message.
    """
    from .. import ModelError

    if isinstance(exc, BadInput):
        return exc.status, exc.field, exc.message
    if isinstance(exc, RequestError):
        return 422, exc.field, exc.message
    if isinstance(exc, PatientError):
        return 422, f"patient.{exc.field}" if exc.field else "patient", exc.message
    if isinstance(exc, ModelError):
        return 422, "model", str(exc)
    if isinstance(exc, ValueError):
        # The dosing code's checks start their message with the option they concern
        # ("target trough: low 20 is above high 10").
        text = str(exc)
        first = text.split(" ", 1)[0].strip(":'\"").lower()
        return 422, first if first in _REQUEST_FIELDS else "request", text
    return 500, None, (f"internal error ({type(exc).__name__}) while answering this request; "
                       "it has been logged. The server goes on answering other requests.")


async def read_object(request: Request) -> dict:
    """The request body as a JSON object, or `BadInput` saying what is wrong with it."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise BadInput(413, "body", f"the request is {len(body)} bytes; at most {MAX_BODY_BYTES} are accepted")
    if not body.strip():
        raise BadInput(400, "body", "empty: send a JSON object (see /openapi.json)")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadInput(400, "body", f"not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise BadInput(422, "body", f"expected a JSON object, got {type(data).__name__}")
    return data


# Options the server sets, never a client: where (and whether) answers are audited.
SERVER_FIELDS = ("audit", "audit_db")


def check_client_fields(data: dict) -> None:
    """What a web client may not send: the patient as a string (it would be read as a
    path on the server) and the audit options (the server's, `pkmix serve --audit-db`)."""
    patient = data.get("patient")
    if patient is not None and not isinstance(patient, dict):
        raise BadInput(422, "patient", "expected the patient as a JSON object (docs/patient_format.md), "
                                       f"got {type(patient).__name__}")
    for name in SERVER_FIELDS:
        if name in data:
            raise BadInput(422, name, "set by the server (pkmix serve --audit-db PATH), not by a request: "
                                      "every answer of the web app is audited")
    samples = data.get("samples")
    if isinstance(samples, int) and not isinstance(samples, bool) and samples > MAX_SAMPLES:
        raise BadInput(422, "samples", f"at most {MAX_SAMPLES} posterior draws per request on the web app, "
                                       f"got {samples}")


@functools.lru_cache(maxsize=None)
def model_summary(name: str) -> dict:
    """What the page shows about a library model (from its METADATA), as plain JSON."""
    import pkmix.models as library

    module = library.load(name)
    md = dict(getattr(module, "METADATA", {}) or {})
    keys = ("drug", "citation", "doi", "population", "structure", "route", "units", "covariate_units",
            "covariate_ranges", "derived_covariate_ranges", "covariate_ranges_source", "targets", "dosing")
    out = {"name": name, **{k: md[k] for k in keys if k in md},
           "covariates": list(getattr(module.model, "covariates", ()) or ())}
    return service.to_json_safe(out)


class Calculator:
    """The work behind the routes, run in worker threads (at most ``limiter`` at once)."""

    def __init__(self, audit_db: str | None = None):
        import os

        import anyio

        self.audit_db = audit_db
        # JAX's CPU programs use every core already: more requests computing at once
        # than there are cores only share them, so the rest wait their turn.
        self.limiter = anyio.CapacityLimiter(max(2, os.cpu_count() or 2))

    def server_options(self) -> dict:
        """The audit options the server passes to every question (where the dosing
        service has them): always audited, in ``audit_db`` (None: the service's default)."""
        out = {}
        if "audit" in _REQUEST_FIELDS:
            out["audit"] = True
        if "audit_db" in _REQUEST_FIELDS and self.audit_db is not None:
            out["audit_db"] = str(self.audit_db)
        return out

    def parse(self, data: dict) -> service.DoseRequest:
        check_client_fields(data)
        return service.parse_request({**data, **self.server_options()})

    def dose(self, data: dict) -> dict:
        req = self.parse(data)
        return service.answer(req, service.library_model_info(req.model))

    def report(self, data: dict) -> dict:
        from .plot import curves, svg

        req = self.parse(data)
        # The plot needs the library's prediction curves, whatever the client asked.
        req = dataclasses.replace(req, curve=True)
        out, fit, rec = service.answer_objects(req, service.library_model_info(req.model))
        c = curves(fit, rec, seed=req.seed)
        title = f"{fit.model_name}: patient {fit.patient_id}"
        return {"answer": out, "curves": c, "svg": svg(c, out["recommendation"].get("units", {}), title=title)}

    def question(self, name: str, data: dict) -> dict:
        check_client_fields(data)
        return service.to_json_safe(getattr(service, name)({**data, **self.server_options()}))


def _dose_schema() -> dict:
    """The OpenAPI schema of a dose request, from `DoseRequest` itself (so it cannot
    drift from what `parse_request` accepts)."""
    from pydantic import TypeAdapter

    try:
        schema = TypeAdapter(service.DoseRequest).json_schema()
    except Exception:  # noqa: BLE001 - a field type pydantic cannot describe: names only
        schema = {"type": "object", "required": ["model", "patient"],
                  "properties": {f.name: {} for f in dataclasses.fields(service.DoseRequest)}}
    props = schema.setdefault("properties", {})
    for name in SERVER_FIELDS:  # the server's to set, not a client's
        props.pop(name, None)
    props.setdefault("patient", {})["description"] = "the patient JSON of docs/patient_format.md (an object)"
    props["patient"]["type"] = "object"
    props.get("target", {})["description"] = "e.g. auc24=400:600, trough=10:20 (default: the model's first target)"
    props.get("model", {})["description"] = "a library model name (GET /api/models)"
    return schema


_ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "object", "properties": {
    "field": {"type": ["string", "null"], "description": "the field at fault (patient.levels[1].value)"},
    "message": {"type": "string", "description": "the rule it breaks"}}}}}


def _post_docs(summary: str, description: str, schema: dict | None = None) -> dict:
    return {
        "summary": summary, "description": description,
        "openapi_extra": {"requestBody": {"required": True, "content": {"application/json": {
            "schema": schema or _dose_schema()}}}},
        "responses": {
            200: {"description": "the answer"},
            400: {"description": "the body is not JSON", "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
            413: {"description": "the body is too large", "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
            422: {"description": "a field breaks a rule", "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
            500: {"description": "an unexpected failure (logged)",
                  "content": {"application/json": {"schema": _ERROR_SCHEMA}}},
        },
    }


def create_app(*, audit_db: str | None = None) -> FastAPI:
    """The dose calculator's app (``audit_db``: where recommendations are recorded, when
    the dosing service supports it)."""
    app = FastAPI(title="pkmix dose calculator", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json",
                  description="Bayesian dose individualisation (TDM) on pkmix's library models. "
                              "Every answer is the JSON of `pkmix dose --json`.")
    calc = Calculator(audit_db)
    app.state.calculator = calc

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        # The routing's own errors (no such path, wrong method) in the API's error shape.
        return error_response(exc.status_code, None, f"{request.method} {request.url.path}: {exc.detail}")

    async def run(fn, request: Request, *args):
        try:
            data = await read_object(request)
            return JSONResponse(await anyio.to_thread.run_sync(functools.partial(fn, *args, data),
                                                               limiter=calc.limiter))
        except Exception as e:  # noqa: BLE001 - a request never takes the server down
            status, field, message = classify(e)
            if status >= 500:
                log.exception("unexpected failure answering %s", request.url.path)
            return error_response(status, field, message)

    @app.get("/health", summary="the server is up")
    def health():
        return {"status": "ok", "version": __version__}

    @app.get("/api/models", summary="the library models with citation, population, covariates, units, targets")
    def models():
        import pkmix.models as library

        return {"models": [model_summary(n) for n in library.available()]}

    @app.get("/api/models/{name}", summary="one library model")
    def one_model(name: str):
        import pkmix.models as library

        if name not in library.available():
            return error_response(404, "model", f"no model '{name}' in the library "
                                                f"(available: {', '.join(library.available())})")
        return model_summary(name)

    @app.post("/api/dose", **_post_docs(
        "MAP estimates, the current regimen's exposure and a recommended regimen",
        "Body: `{\"model\": NAME, \"patient\": {...}, \"target\": \"auc24=400:600\", ...}` with the options of "
        "`pkmix dose`. Answer: exactly the JSON of `pkmix dose --json` (`map`, `recommendation`, `timing`)."))
    async def dose(request: Request):
        return await run(calc.dose, request)

    @app.post("/api/dose/report", **_post_docs(
        "the dose answer with its concentration-time curves and an SVG plot (what the page shows)",
        "Same body as /api/dose. Answer: `{\"answer\": <the /api/dose JSON for this body with curve=true>, "
        "\"curves\": {history, regimen, band, levels, doses, target}, \"svg\": \"<svg ...>\"}`."))
    async def report(request: Request):
        return await run(calc.report, request)

    offered = []
    for name in QUESTIONS:
        fn = getattr(service, name, None)
        if not callable(fn):
            continue
        doc = (fn.__doc__ or name).strip()
        # The docstring's first paragraph, without its reST backticks.
        first = " ".join(doc.split("\n\n")[0].split()).replace("`", "")
        offered.append({"name": name, "title": name.replace("_", " "), "summary": first,
                        "fields": [{"name": k, "kind": kind, "required": req, "help": help_}
                                   for k, (kind, req, help_) in QUESTION_FIELDS[name].items()]})

        async def question(request: Request, _name=name):
            return await run(calc.question, request, _name)

        app.add_api_route(f"/api/{name}", question, methods=["POST"], name=name,
                          **_post_docs(first, doc, _question_schema(name)))

    @app.get("/api/questions", summary="the questions beyond the recommendation, each at POST /api/<name>")
    def questions():
        return {"questions": offered}

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app

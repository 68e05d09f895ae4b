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

# Questions of `pkmix.dosing.service` beyond the recommendation, each served at
# POST /api/<name>. Their fields are the service's one list (`service.QUESTION_FIELDS`,
# with `service.COMMON_FIELDS`): the OpenAPI schemas and the page's forms are written
# from it, so neither can offer a field the service does not take.
QUESTIONS = tuple(service.QUESTION_FIELDS)

# The page's input kinds for the service's field kinds: number, text, numbers (a list),
# windows (a list of "start:end"), bool, etas ("map", "prior" or a list), route.
_PAGE_KIND = {"str": "text", "positive": "number", "nonnegative": "number", "number": "number",
              "fraction": "number", "count": "number", "count0": "number", "times": "numbers",
              "positives": "numbers", "nonnegatives": "numbers", "windows": "windows", "bool": "bool",
              "etas": "etas", "route": "route", "models": "models", "rule": "rule", "patient": "patient"}
_NUMBERS = {"type": "array", "items": {"type": "number"}}
_JSON_KIND = {"str": {"type": "string", "minLength": 1}, "patient": {"type": "object"},
              "models": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 2}]},
              "positive": {"type": "number", "exclusiveMinimum": 0}, "nonnegative": {"type": "number", "minimum": 0},
              "number": {"type": "number"}, "fraction": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
              "count": {"type": "integer", "minimum": 1}, "count0": {"type": "integer", "minimum": 0},
              "times": {"anyOf": [{"type": "number"}, _NUMBERS]},
              "positives": {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, _NUMBERS]},
              "nonnegatives": {"anyOf": [{"type": "number", "minimum": 0}, _NUMBERS]},
              "bool": {"type": "boolean"}, "rule": {"type": "string", "enum": ["nonmem", "locf"]},
              "windows": {"type": "array", "items": {"anyOf": [{"type": "string"}, {
                  "type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}]}},
              "etas": {"anyOf": [{"type": "string", "enum": ["map", "prior"]},
                                 {"type": "array", "items": {"type": "number"}}]},
              "route": {"type": "string", "enum": ["iv", "oral"]}}


def question_fields(name: str) -> dict:
    """Every field a client may send to POST /api/<name> (the service's, less the
    server's own audit options): ``{field: service.Field}``."""
    fields = {**service.COMMON_FIELDS, **service.QUESTION_FIELDS[name]}
    return {k: f for k, f in fields.items() if k not in SERVER_FIELDS}


def _question_schema(name: str) -> dict:
    props = {}
    for k, f in question_fields(name).items():
        props[k] = {**_JSON_KIND[f.kind], "description": f.help}
        if not f.required and f.default is not None:
            props[k]["default"] = service.to_json_safe(f.default)
    return {"type": "object", "properties": props,
            "required": [k for k, f in question_fields(name).items() if f.required]}


def page_fields(name: str) -> list[dict]:
    """The question's own fields for the page's form (model and patient come from the
    page's model and patient panels)."""
    return [{"name": k, "kind": _PAGE_KIND[f.kind], "required": f.required, "help": f.help,
             "default": None if f.required else service.to_json_safe(f.default)}
            for k, f in service.QUESTION_FIELDS[name].items() if k not in service.COMMON_FIELDS]


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
                        "fields": page_fields(name)})

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

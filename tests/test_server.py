"""The dose calculator's web API (`pkmix serve`, `pkmix.server`): the same answers as the
library and `pkmix dose --json`, field-and-rule errors for bad input, no traceback, a
server that survives a failure, concurrent requests that each get their own answer."""

from __future__ import annotations

import copy
import io
import json
import threading
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web app needs the serve extra (fastapi)")
pytest.importorskip("uvicorn", reason="the web app needs the serve extra (uvicorn)")
httpx = pytest.importorskip("httpx", reason="the API tests drive the app with httpx")

import warnings  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's TestClient announces a move to httpx2
    from fastapi.testclient import TestClient  # noqa: E402

from pkmix.dosing import service  # noqa: E402
from pkmix.server import create_app  # noqa: E402
from pkmix.server._thread import running_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PATIENT_FILE = ROOT / "examples" / "vancomycin_tdm" / "patient.json"
MODEL = "vancomycin_goti2018"


def without_timing(answer: dict) -> dict:
    """An answer without what differs between two runs of the same request."""
    return {k: v for k, v in answer.items() if k not in ("timing", "audit_id")}


@pytest.fixture(scope="module")
def patient() -> dict:
    return json.loads(PATIENT_FILE.read_text())


@pytest.fixture(scope="module", autouse=True)
def audit_db(tmp_path_factory):
    """The server's audit database, and the default one (PKMIX_AUDIT_DB) for the library
    and command-line answers compared with it: never the user's."""
    import os

    path = tmp_path_factory.mktemp("audit") / "audit.sqlite3"
    old = os.environ.get("PKMIX_AUDIT_DB")
    os.environ["PKMIX_AUDIT_DB"] = str(path.with_name("default.sqlite3"))
    yield path
    if old is None:
        os.environ.pop("PKMIX_AUDIT_DB", None)
    else:
        os.environ["PKMIX_AUDIT_DB"] = old


@pytest.fixture(scope="module")
def client(audit_db):
    with TestClient(create_app(audit_db=str(audit_db)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def dose_answer(client, patient):
    r = client.post("/api/dose", json={"model": MODEL, "patient": patient, "target": "auc24=400:600"})
    assert r.status_code == 200, r.text
    return r.json()


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_models_list_every_library_model_with_its_metadata(client):
    import pkmix.models as library

    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert set(models) == set(library.available())
    for name, m in models.items():
        md = library.load(name).METADATA
        assert m["citation"] == md["citation"]
        assert m["population"] == md["population"]
        assert m["units"] == md["units"]
        assert m["covariates"] == list(library.load(name).model.covariates)
        for k, (lo, hi) in md.get("covariate_ranges", {}).items():
            assert m["covariate_ranges"][k] == [lo, hi]
    assert client.get(f"/api/models/{MODEL}").json()["name"] == MODEL
    r = client.get("/api/models/no_such_model")
    assert r.status_code == 404 and r.json()["error"]["field"] == "model"


def test_dose_is_the_json_of_the_library_and_of_pkmix_dose(client, patient, dose_answer):
    # The library: the same request through dosing.service.
    req = service.parse_request({"model": MODEL, "patient": patient, "target": "auc24=400:600"})
    assert without_timing(dose_answer) == without_timing(service.answer(req, service.library_model_info(MODEL)))
    # The command line: pkmix dose --json on the same patient file.
    from pkmix.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["dose", "--model", MODEL, "--patient", str(PATIENT_FILE), "--target", "auc24=400:600", "--json"])
    assert code == 0, err.getvalue()
    assert without_timing(json.loads(out.getvalue())) == without_timing(dose_answer)
    rec = dose_answer["recommendation"]
    assert rec["recommendation"]["dose"] > 0 and 0 <= rec["probability_of_target_attainment"] <= 1


def test_every_answer_is_audited_where_the_server_says(client, dose_answer, audit_db, patient):
    audit = pytest.importorskip("pkmix.dosing.audit", reason="the dosing service has no audit database yet")
    row = audit.fetch(dose_answer["audit_id"], str(audit_db))
    assert row["request"]["model"] == MODEL
    assert without_timing(row["output"]) == without_timing(dose_answer)
    # A client cannot choose where (or whether) answers are stored.
    for name, value in (("audit_db", "/tmp/elsewhere.sqlite3"), ("audit", False)):
        r = client.post("/api/dose", json={"model": MODEL, "patient": patient, name: value})
        assert r.status_code == 422 and r.json()["error"]["field"] == name


def test_report_has_the_same_answer_and_a_plot(client, patient):
    body = {"model": MODEL, "patient": patient, "target": "auc24=400:600", "curve": True}
    report = client.post("/api/dose/report", json=body).json()
    plain = client.post("/api/dose", json=body).json()
    assert without_timing(report["answer"]) == without_timing(plain)
    c = report["curves"]
    assert len(c["levels"]) == len(patient["levels"])
    assert [lv["DV"] for lv in c["levels"]] == [o["DV"] for o in plain["map"]["observations"]]
    band = c["band"]
    assert band["draws"] >= 30 and len(band["TIME"]) == len(band["low"]) == len(band["high"]) > 0
    assert all(lo <= hi for lo, hi in zip(band["low"], band["high"]))
    # The band is around the library's own prediction of the proposed regimen.
    import numpy as np

    t, ipred = np.array(c["regimen"]["TIME"]), np.array(c["regimen"]["IPRED"])
    lo = np.interp(t, band["TIME"], band["low"])
    hi = np.interp(t, band["TIME"], band["high"])
    assert np.mean((ipred >= lo * 0.98) & (ipred <= hi * 1.02)) > 0.95
    # The proposed doses are the recommended regimen's.
    proposed = [d for d in c["doses"] if d["proposed"]]
    reg = plain["recommendation"]["recommendation"]
    assert proposed[0]["TIME"] == reg["start_time"] and proposed[1]["TIME"] - proposed[0]["TIME"] == reg["interval"]
    assert all(d["AMT"] == reg["dose"] for d in proposed)
    svg = report["svg"]
    assert svg.startswith("<svg") and svg.count('class="level"') == len(patient["levels"])
    assert "nan" not in svg.lower().replace("nanos", "")


def test_report_a_priori_and_with_a_loading_dose(client, patient):
    """No dose given yet: the plot still shows the proposed regimen (loading dose first)
    with its band."""
    apriori = {k: v for k, v in patient.items() if k not in ("doses", "levels")}
    apriori["covariates"] = dict(apriori["covariates"], SCR={"value": 1.5, "unit": "mg/dL"})
    r = client.post("/api/dose/report", json={"model": MODEL, "patient": apriori, "target": "auc24=400:600",
                                              "loading": True})
    assert r.status_code == 200, r.text
    out = r.json()
    reg = out["answer"]["recommendation"]["recommendation"]
    proposed = [d for d in out["curves"]["doses"] if d["proposed"]]
    assert proposed and not [d for d in out["curves"]["doses"] if not d["proposed"]]
    if reg["loading_dose"]:
        assert proposed[0]["AMT"] == reg["loading_dose"] and proposed[1]["AMT"] == reg["dose"]
    assert out["curves"]["band"]["draws"] >= 30 and out["curves"]["levels"] == []


def _raw(client, body: bytes):
    return client.post("/api/dose", content=body, headers={"content-type": "application/json"})


def _bad_cases(patient):
    def with_patient(**changes):
        p = copy.deepcopy(patient)
        p.update(changes)
        return p

    neg_level = copy.deepcopy(patient)
    neg_level["levels"][1]["value"] = -3
    no_wt = copy.deepcopy(patient)
    del no_wt["covariates"]["WT"]
    ok = {"model": MODEL, "patient": patient}
    return [
        ("not json", b"{", 400, "body"),
        ("empty body", b"", 400, "body"),
        ("a list", b"[1, 2]", 422, "body"),
        ("no model", json.dumps({"patient": patient}).encode(), 422, "model"),
        ("unknown model", json.dumps({**ok, "model": "nope"}).encode(), 422, "model"),
        ("model not a string", json.dumps({**ok, "model": 3}).encode(), 422, "model"),
        ("no patient", json.dumps({"model": MODEL}).encode(), 422, "patient"),
        ("patient as a path", json.dumps({**ok, "patient": str(PATIENT_FILE)}).encode(), 422, "patient"),
        ("unknown option", json.dumps({**ok, "dose_maxx": 100}).encode(), 422, "dose_maxx"),
        ("bad target", json.dumps({**ok, "target": "auc24=600:400"}).encode(), 422, "target"),
        ("target not text", json.dumps({**ok, "target": 5}).encode(), 422, "target"),
        ("negative maximum", json.dumps({**ok, "dose_max": -1}).encode(), 422, "dose_max"),
        ("NaN maximum", b'{"model": "%s", "patient": %s, "dose_max": NaN}'
         % (MODEL.encode(), json.dumps(patient).encode()), 422, "dose_max"),
        ("interval not a number", json.dumps({**ok, "interval": [12, "x"]}).encode(), 422, "interval[1]"),
        ("no samples", json.dumps({**ok, "samples": 0}).encode(), 422, "samples"),
        ("too many samples", json.dumps({**ok, "samples": 10_000_000}).encode(), 422, "samples"),
        ("bad route", json.dumps({**ok, "route": "im"}).encode(), 422, "route"),
        ("negative level", json.dumps({**ok, "patient": neg_level}).encode(), 422, "patient.levels[1].value"),
        ("missing covariate", json.dumps({**ok, "patient": no_wt}).encode(), 422, "patient.covariates"),
        ("misspelt patient field", json.dumps({**ok, "patient": with_patient(levles=[])}).encode(), 422, "patient"),
    ]


def test_bad_input_is_a_4xx_naming_the_field_and_the_rule(client, patient):
    for label, body, status, field in _bad_cases(patient):
        r = _raw(client, body)
        assert r.status_code == status, (label, r.status_code, r.text)
        err = r.json()["error"]
        assert err["field"].startswith(field), (label, err)
        assert err["message"] and "Traceback" not in r.text, (label, r.text)
    r = client.post("/api/dose", content=b"x" * 1_000_001, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["field"] == "body"
    assert client.get("/health").status_code == 200


def test_an_unexpected_failure_is_a_plain_500_and_the_server_goes_on(client, patient, monkeypatch, dose_answer):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug deep inside")

    monkeypatch.setattr(service, "answer", broken)
    r = client.post("/api/dose", json={"model": MODEL, "patient": patient, "target": "auc24=400:600"})
    assert r.status_code == 500
    assert r.json()["error"]["message"].startswith("internal error")
    assert "Traceback" not in r.text and "a bug deep inside" not in r.text
    monkeypatch.undo()
    r = client.post("/api/dose", json={"model": MODEL, "patient": patient, "target": "auc24=400:600"})
    assert r.status_code == 200 and without_timing(r.json()) == without_timing(dose_answer)


def test_openapi_schema_and_no_network(client):
    spec = client.get("/openapi.json").json()
    assert {"/health", "/api/models", "/api/dose", "/api/dose/report"} <= set(spec["paths"])
    body = spec["paths"]["/api/dose"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "patient", "target", "dose_max", "max_daily_dose"} <= set(body["properties"])
    assert not {"audit", "audit_db"} & set(body["properties"])  # the server's, not a client's
    assert "422" in spec["paths"]["/api/dose"]["post"]["responses"]
    # FastAPI's /docs page loads JavaScript from a CDN: not served.
    assert client.get("/docs").status_code == 404
    # The routing's own errors have the API's error shape too.
    r = client.get("/api/dose")
    assert r.status_code == 405 and r.json()["error"]["message"].startswith("GET /api/dose")
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    import re

    static = Path(create_app.__code__.co_filename).parent / "static"
    for f in static.iterdir():
        text = f.read_text()
        # Nothing fetched from elsewhere: no script, style, font or fetch from another host.
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|fetch\(\s*["']https?:""",
                             text), f.name
        assert client.get(f"/static/{f.name}").status_code == 200


def test_concurrent_requests_each_get_their_own_answer(patient, audit_db):
    """20 requests from 4 client threads against a real server, five different patients
    and targets: each answer is the library's for its own request."""
    bodies = []
    for i, (wt, target) in enumerate([(60, "auc24=400:600"), (82, "trough=10:20"), (95, "auc24=450:550"),
                                      (70, "auc24=400:600"), (120, "trough=15:20")]):
        p = copy.deepcopy(patient)
        p["id"] = f"P{i}"
        p["covariates"]["WT"]["value"] = wt
        p["levels"][0]["value"] = 15.0 + 2 * i
        bodies.append({"model": MODEL, "patient": p, "target": target})
    info = service.library_model_info(MODEL)
    expected = [without_timing(service.answer(service.parse_request(b), info)) for b in bodies]
    assert len({json.dumps(e["recommendation"], sort_keys=True) for e in expected}) == len(bodies)

    results, errors = {}, []

    def worker(k: int, base: str):
        with httpx.Client(base_url=base, timeout=120) as http:
            for j in range(5):
                n = 5 * k + j
                try:
                    r = http.post("/api/dose", json=bodies[n % len(bodies)])
                    results[n] = (r.status_code, r.json())
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(repr(e))

    with running_server(create_app(audit_db=str(audit_db))) as base:
        threads = [threading.Thread(target=worker, args=(k, base)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    assert len(results) == 20
    for n, (status, answer) in results.items():
        assert status == 200, answer
        assert answer["map"]["patient"] == f"P{n % len(bodies)}"
        assert without_timing(answer) == expected[n % len(bodies)]


def test_serve_without_the_extra_says_how_to_install(monkeypatch, capsys, audit_db):
    from pkmix.cli import main, serve

    monkeypatch.setattr(serve, "missing_dependencies", lambda: ["fastapi"])
    assert main(["serve", "--port", "8765"]) == 2
    assert 'pip install "pkmix[serve]"' in capsys.readouterr().err
    try:  # argparse's usage error: exit status 2, however main reports it
        code = main(["serve", "--port", "0"])
    except SystemExit as e:
        code = e.code
    assert code == 2 and "--port" in capsys.readouterr().err
    monkeypatch.undo()
    # An audit database that cannot be opened is refused before the server starts.
    assert main(["serve", "--audit-db", str(PATIENT_FILE / "audit.sqlite3")]) == 2
    assert "--audit-db" in capsys.readouterr().err
    # A port that is taken is said plainly, before the server starts.
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--audit-db", str(audit_db)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


QUESTION_CASES = {
    "next_dose": {"at": 48, "target": "trough=15", "interval": 12},
    "exposure": {"windows": ["0:24", "24:48"], "times": [40], "samples": 50},
    "interval_for": {"dose": 1000, "target": "trough=15"},
    "what_if": {"dose": 1000, "interval": 12},
}


def test_each_question_answers_as_the_dosing_service(client, patient):
    offered = {q["name"]: q for q in client.get("/api/questions").json()["questions"]}
    available = {name for name in service.QUESTION_FIELDS if callable(getattr(service, name, None))}
    assert set(offered) == available
    spec = client.get("/openapi.json").json()["paths"]
    for name in available:
        assert f"/api/{name}" in spec
        if name == "average":  # its own test below (two models' fits)
            continue
        body = {"model": MODEL, "patient": patient, **QUESTION_CASES[name]}
        r = client.post(f"/api/{name}", json=body)
        assert r.status_code == 200, (name, r.text)
        assert without_timing(r.json()) == without_timing(getattr(service, name)(body)), name
        assert r.json()["audit_id"] is not None


def test_question_schemas_and_forms_are_the_services_fields(client):
    """The OpenAPI schema of each question lists exactly the service's fields (less the
    server's audit options), with the service's required ones and defaults; the page's
    form offers the question's own fields, as the service has them."""
    from pkmix.server.app import SERVER_FIELDS

    paths = client.get("/openapi.json").json()["paths"]
    offered = {q["name"]: q for q in client.get("/api/questions").json()["questions"]}
    for name, own in service.QUESTION_FIELDS.items():
        fields = {**service.COMMON_FIELDS, **own}
        schema = paths[f"/api/{name}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert set(schema["properties"]) == set(fields) - set(SERVER_FIELDS), name
        assert set(schema["required"]) == {k for k, f in fields.items() if f.default is service.REQUIRED}, name
        for k, f in fields.items():
            if k in schema["properties"] and f.default not in (None, service.REQUIRED):
                assert schema["properties"][k]["default"] == f.default, (name, k)
        form = {f["name"]: f for f in offered[name]["fields"]}
        assert set(form) == set(own) - set(service.COMMON_FIELDS), name
        assert all(form[k]["help"] == own[k].help for k in form), name


def test_question_faults_are_named(client, patient):
    """A missing required field and a wrong value are refused naming the field; the
    audit options are the server's."""
    for name, case in QUESTION_CASES.items():
        required = {k: case[k] for k, f in service.QUESTION_FIELDS[name].items() if f.default is service.REQUIRED}
        for field in required:
            body = {"model": MODEL, "patient": patient, **{k: v for k, v in required.items() if k != field}}
            r = client.post(f"/api/{name}", json=body)
            assert r.status_code == 422 and r.json()["error"]["field"] == field, (name, field, r.text)
        for field in service.QUESTION_FIELDS[name]:
            body = {"model": MODEL, "patient": patient, **required, field: {"not": "valid"}}
            r = client.post(f"/api/{name}", json=body)
            assert r.status_code == 422 and r.json()["error"]["field"].startswith(field), (name, field, r.text)
        r = client.post(f"/api/{name}", json={"model": MODEL, "patient": patient, **required, "audit_db": "/x"})
        assert r.status_code == 422 and r.json()["error"]["field"] == "audit_db"


AVERAGE_MODELS = ["vancomycin_goti2018", "vancomycin_thomson2009"]
# The smallest settings that exercise every part (weights, each model's MAP and
# recommendation, the mixture's PTA): few posterior draws.
AVERAGE_CASE = {"model": AVERAGE_MODELS, "target": "auc24=400:600", "samples": 50}


def test_average_is_the_services_answer_with_weights_summing_to_one(client, patient, audit_db):
    body = {**AVERAGE_CASE, "patient": patient}
    r = client.post("/api/average", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    weights = got["average"]["weights"]
    assert set(weights) == set(AVERAGE_MODELS)
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-9)
    assert set(got["average"]["per_model"]) == set(AVERAGE_MODELS)
    assert without_timing(got) == without_timing(service.average({**body, "audit": False}))
    # Audited where the server says, as question 'average'.
    import sqlite3

    with sqlite3.connect(audit_db) as db:
        row = db.execute("SELECT question FROM recommendations WHERE id = ?", (got["audit_id"],)).fetchone()
    assert row == ("average",)


def test_average_bad_input_is_named(client, patient):
    ok = {**AVERAGE_CASE, "patient": patient}
    cases = [
        ({**ok, "model": [MODEL]}, "model"),                        # one model: nothing to average
        ({**ok, "model": [MODEL, MODEL]}, "model"),                 # the same twice
        ({**ok, "model": [MODEL, "nope"]}, "model"),                # not in the library
        ({**ok, "scheme": "bic"}, "scheme"),
        ({**ok, "samples": 0}, "samples"),
        ({**ok, "samples": 10_000_000}, "samples"),                 # the web app's limit
        ({**ok, "interval": [12, -1]}, "interval[1]"),
        ({**ok, "dose_max": "x"}, "dose_max"),
        ({**ok, "audit": False}, "audit"),                          # the server's to set
        ({**ok, "weights": "equal"}, "weights"),                    # unknown option
    ]
    for body, field in cases:
        r = client.post("/api/average", json=body)
        assert r.status_code == 422, (field, r.text)
        err = r.json()["error"]
        assert err["field"] == field and err["message"], (field, err)


TACROLIMUS_PATIENT = {
    "id": "TAC-1", "covariates": {"CF": 0, "CYP3A5": 0},
    "doses": [{"time": 0, "amount": 5, "unit": "mg", "route": "oral", "interval": 12, "count": 4}],
    "levels": [{"time": 47.5, "value": 8.0, "unit": "ug/L"}],
}


def test_no_target_on_a_model_without_one_names_the_target(client):
    """tacrolimus_monchaud2012 lists no target in its METADATA: a request without one is
    refused naming the field to fill in, target (not the request as a whole)."""
    for path, extra in (("/api/dose", {}), ("/api/next_dose", {"at": 48})):
        r = client.post(path, json={"model": "tacrolimus_monchaud2012", "patient": TACROLIMUS_PATIENT, **extra})
        assert r.status_code == 422, (path, r.text)
        err = r.json()["error"]
        assert err["field"] == "target" and "METADATA['targets']" in err["message"], (path, err)

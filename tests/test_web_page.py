"""The dose calculator's page in a real browser (headless Chromium driven by Playwright):
a vancomycin patient typed into the form gets the API's and the library's numbers, each
safety warning shows next to what it concerns, a bad input is named, the summary prints
on one page.

One server and one browser for the module. Skips, saying why, without Playwright or
Debian's ``chromium``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the web app needs the serve extra (fastapi)")
pytest.importorskip("uvicorn", reason="the web app needs the serve extra (uvicorn)")
httpx = pytest.importorskip("httpx", reason="the page tests ask the API with httpx")
sync_api = pytest.importorskip("playwright.sync_api", reason="the page tests need Playwright for Python")
if shutil.which("chromium") is None:
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium)", allow_module_level=True)

from pkmix.server import create_app  # noqa: E402
from pkmix.server._thread import running_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PATIENT_FILE = ROOT / "examples" / "vancomycin_tdm" / "patient.json"
MODEL = "vancomycin_goti2018"
TARGET = "auc24=400:600"


@pytest.fixture(scope="module")
def patient() -> dict:
    return json.loads(PATIENT_FILE.read_text())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    audit = tmp_path_factory.mktemp("audit") / "audit.sqlite3"
    with running_server(create_app(audit_db=str(audit))) as base:
        yield base


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server, timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def page(server):
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=args)
        except Exception as e:  # noqa: BLE001 - an unusable browser is a skip, with the reason
            pytest.skip(f"chromium does not start under Playwright: {e}")
        pg = browser.new_page(viewport={"width": 1440, "height": 1000})
        pg.set_default_timeout(60_000)
        yield pg
        browser.close()


def open_page(page, server):
    page.goto(server + "/")
    page.wait_for_selector("#covariates tbody tr", state="attached")


def submit(page):
    page.click("#recommend")
    page.wait_for_function("!document.querySelector('#recommend').disabled")
    page.wait_for_selector("#answer:not([hidden]), #error:not([hidden])", state="attached")


def paste_patient(page, patient: dict, **options):
    page.evaluate("document.querySelector('#json-box').open = true")
    page.fill("#patient-json", json.dumps(patient))
    page.click("#json-to-form")
    for key, value in options.items():
        page.fill(f"#{key}", str(value))


def shown_numbers(page) -> dict:
    return page.eval_on_selector_all("[data-key][data-value]",
                                     "els => Object.fromEntries(els.map(e => [e.dataset.key, e.dataset.value]))")


def at(obj, key: str):
    for part in key.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


def fill_covariate(page, name: str, index: int, when: str, value: str, unit: str):
    row = page.locator(f'#covariates tr[data-name="{name}"]').nth(index)
    row.locator("[name=when]").fill(when)
    row.locator("[name=value]").fill(value)
    row.locator("[name=unit]").fill(unit)


def fill_row(page, table: str, index: int, **values):
    row = page.locator(f"#{table} tbody tr").nth(index)
    for name, v in values.items():
        if name == "route":
            row.locator("[name=route]").select_option(v)
        else:
            row.locator(f"[name={name}]").fill(str(v))


def test_a_typed_in_patient_gets_the_api_and_library_numbers(page, server, api, patient, tmp_path):
    open_page(page, server)
    assert page.input_value("#model") == MODEL
    assert "Goti V" in page.inner_text("#model-info")  # the citation
    assert "33 to 255" in page.inner_text("#model-info")  # WT's validated range
    page.fill("#patient-id", patient["id"])
    fill_covariate(page, "WT", 0, "", "82", "kg")
    fill_covariate(page, "AGE", 0, "", "68", "years")
    fill_covariate(page, "SEX", 0, "", "male", "")
    fill_covariate(page, "DIAL", 0, "", "0", "")
    fill_covariate(page, "SCR", 0, "2024-03-04T06:00", "1.3", "mg/dL")
    page.locator('#covariates tr[data-name="SCR"] button', has_text="+").click()
    fill_covariate(page, "SCR", 1, "2024-03-05T06:00", "1.5", "mg/dL")
    for _ in range(2):
        page.click("#add-dose")
        page.click("#add-level")
    fill_row(page, "doses", 0, when="2024-03-04T08:00", amount=2000, unit="mg", route="iv", duration=2)
    fill_row(page, "doses", 1, when="2024-03-04T20:00", amount=1000, unit="mg", route="iv", duration=1,
             interval=12, count=3)
    fill_row(page, "levels", 0, when="2024-03-05T19:30", value=19.6, unit="mg/L", lloq=2)
    fill_row(page, "levels", 1, when="2024-03-05T22:00", value=35.1, unit="mg/L", lloq=2)
    page.fill("#target", TARGET)
    submit(page)
    assert page.is_hidden("#error"), page.inner_text("#error")
    page.screenshot(path=str(tmp_path / "dose_calculator.png"), full_page=True)

    # The API's answer to the same patient (from the example file).
    answer = api.post("/api/dose", json={"model": MODEL, "patient": patient, "target": TARGET, "curve": True}).json()
    shown = shown_numbers(page)
    assert len(shown) > 40
    for key, text in shown.items():
        if key.startswith("map.eta_sd.") or key.startswith("limits"):
            continue
        expected = at(answer, key)
        if expected is None:
            assert text == "", key
        else:
            assert float(text) == pytest.approx(expected, rel=1e-12, abs=1e-12), key
    rec = answer["recommendation"]
    assert page.inner_text(".regimen-text") == rec["recommendation"]["text"]
    assert page.locator("#plot svg circle.level").count() == len(patient["levels"])
    body = page.inner_text("body")
    assert "NaN" not in body and "undefined" not in body

    # The library's own numbers for this patient.
    import pkmix.dosing as dosing

    fit = dosing.map_estimate(MODEL, patient)
    lib = dosing.recommend(MODEL, fit, TARGET, curve=False)
    assert float(shown["recommendation.recommendation.dose"]) == lib.regimen.dose
    assert float(shown["recommendation.recommendation.interval"]) == lib.regimen.interval
    assert float(shown["recommendation.probability_of_target_attainment"]) == pytest.approx(lib.pta, abs=1e-12)
    for k, v in fit.current.items():
        assert float(shown[f"map.parameters.{k}.individual"]) == pytest.approx(v, rel=1e-9), k


def _warning_cases(patient):
    implausible = copy.deepcopy(patient)
    implausible["covariates"]["WT"]["value"] = 300          # outside 33-255 kg
    implausible["levels"][1]["value"] = 150.0               # far outside the predictive interval
    future = json.loads(json.dumps(patient).replace("2024-", "2099-"))
    far_apart = copy.deepcopy(patient)
    far_apart["doses"][0]["datetime"] = "1994-03-04T08:00"
    return [
        # (patient, page options, the warning codes the answer must have)
        (implausible, {"target": TARGET, "opt-dose_max": 250, "opt-interval": 24},
         {"covariate_out_of_range", "level_implausible", "target_not_reachable"}),
        (future, {"target": TARGET}, {"date_in_future"}),
        (far_apart, {"target": TARGET}, {"dates_far_apart"}),
    ]


def where_shown(w: dict) -> str:
    """Where the page puts a warning: a level's in that level's row, a covariate's and the
    fit's beside the estimates, the target's and limits' beside the recommendation, the
    rest (dates of doses) at the top."""
    field = w.get("field") or ""
    level = w.get("level")
    m = re.match(r"levels\[(\d+)\]", field)
    if level is None and m:
        level = int(m.group(1))
    if level is not None:
        return f"#observations tr[data-level='{level}']"
    if field.startswith(("covariates", "levels")):
        return "#warnings-map"
    if field.startswith(("target", "dose_", "max_", "limits", "interval")):
        return "#warnings-recommendation"
    return "#warnings-general"


# WT = 300 is sent on purpose: the service reports the PatientWarning in its answer, which
# this test checks on the page; the Python warning itself is not what it is about.
@pytest.mark.filterwarnings("ignore::pkmix.dosing.PatientWarning")
def test_each_safety_warning_is_shown_beside_what_it_concerns(page, server, api, patient):
    seen_codes = set()
    for case, options, codes in _warning_cases(patient):
        open_page(page, server)
        paste_patient(page, case, **options)
        submit(page)
        assert page.is_hidden("#error"), page.inner_text("#error")
        body = {"model": MODEL, "patient": case, "target": options["target"], "curve": True}
        if "opt-dose_max" in options:
            body.update(dose_max=options["opt-dose_max"], interval=[options["opt-interval"]])
        answer = api.post("/api/dose", json=body).json()
        assert codes <= {w["code"] for w in answer["warnings"]}, answer["warnings"]
        for w in answer["warnings"]:
            seen_codes.add(w["code"])
            box = where_shown(w)
            assert w["message"] in page.inner_text(box), (w, box)
            if (w.get("field") or "").startswith(("doses[", "levels[", "covariates.")):
                # The input it names is marked in the form.
                assert page.locator(".field-warning").count() >= 1
        if "opt-dose_max" in options:
            # A stated maximum is never exceeded, and the page says the target is out of reach.
            dose = float(page.get_attribute("[data-key='recommendation.recommendation.dose']", "data-value"))
            assert dose <= options["opt-dose_max"]
            assert page.locator(".not-reachable").count() == 1
            doses = {k: float(v) for k, v in shown_numbers(page).items()
                     if re.search(r"(^|\.)(dose|loading_dose|dose_unrounded)$", k) and v != ""}
            assert doses and all(v <= options["opt-dose_max"] for v in doses.values()), doses
    assert {"covariate_out_of_range", "level_implausible", "target_not_reachable", "date_in_future",
            "dates_far_apart"} <= seen_codes


def test_a_bad_input_is_named_and_no_stale_answer_stays(page, server, patient):
    open_page(page, server)
    paste_patient(page, patient, target=TARGET)
    submit(page)
    assert page.is_visible("#answer")
    fill_row(page, "levels", 1, value=-3)
    submit(page)
    assert page.is_visible("#error") and page.is_hidden("#answer")
    assert page.get_attribute("#error", "data-field") == "patient.levels[1].value"
    assert "negative" in page.inner_text("#error")
    assert "field-error" in page.locator("#levels tbody tr").nth(1).get_attribute("class")
    page.fill("#target", "auc24=600:400")
    fill_row(page, "levels", 1, value=35.1)
    submit(page)
    assert page.get_attribute("#error", "data-field") == "target"


def test_the_summary_prints_on_one_page(page, server, patient):
    open_page(page, server)
    paste_patient(page, patient, target=TARGET)
    submit(page)
    page.emulate_media(media="print")
    try:
        assert page.is_hidden("#inputs") and page.is_visible(".regimen-text") and page.is_visible("#plot svg")
        assert "Dose recommendation: patient VANC-001" in page.inner_text("#print-head")
        pdf = page.pdf(format="A4")
    finally:
        page.emulate_media(media="screen")
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1


def test_the_further_questions_answer_on_the_page_as_the_api(page, server, api, patient):
    questions = {q["name"]: q for q in api.get("/api/questions").json()["questions"]}
    assert set(questions) >= {"next_dose", "exposure", "interval_for", "what_if"}
    # (main-panel options, the question's own inputs, the same as a request body)
    cases = {
        "next_dose": ({"target": "trough=15"}, {"at": "48", "interval": "12"},
                      {"target": "trough=15", "at": 48, "interval": 12}),
        "exposure": ({}, {"windows": "0:24, 24:48", "times": "40", "samples": "50"},
                     {"windows": ["0:24", "24:48"], "times": [40], "samples": 50, "doses": True}),
        "interval_for": ({"target": "trough=15"}, {"dose": "1000"}, {"target": "trough=15", "dose": 1000}),
        "what_if": ({}, {"dose": "1000", "interval": "12"}, {"dose": 1000, "interval": 12}),
    }
    open_page(page, server)
    paste_patient(page, patient)
    # Averaging has its own panel (test_the_averaging_panel_shows_the_apis_numbers).
    assert set(questions) - {"average"} == set(cases)
    for name in cases:
        options, inputs, body = cases[name]
        page.fill("#target", options.get("target", ""))
        for field, value in inputs.items():
            page.fill(f"#q-{name}-{field}", value)
        page.click(f"#ask-{name}")
        page.wait_for_selector(f"#answer-{name} h3")
        assert page.is_hidden("#error"), page.inner_text("#error")
        answer = api.post(f"/api/{name}", json={"model": MODEL, "patient": patient, **body}).json()
        shown = {k: v for k, v in shown_numbers(page).items() if k.startswith(name + ".")}
        assert len(shown) >= 3, (name, shown)
        for key, text in shown.items():
            expected = at(answer, key)
            assert (text == "") if expected is None else float(text) == pytest.approx(expected, rel=1e-12), key
        for w in answer["warnings"]:
            assert w["message"] in page.inner_text(f"#answer-{name}"), w


@pytest.mark.slow  # two models' MAP fits and posterior draws in the page's server (~20-30 s cold)
def test_the_averaging_panel_shows_the_apis_numbers(page, server, api, patient):
    """The chosen drug has two library models: the page offers to compare and average
    them, and every number the panel shows (each model's weight, MAP fit summary and
    recommendation, the averaged recommendation) is the API's."""
    models = api.get("/api/models").json()["models"]
    drug = next(m["drug"] for m in models if m["name"] == MODEL)
    names = [m["name"] for m in models if m.get("drug") == drug]
    assert len(names) >= 2
    open_page(page, server)
    paste_patient(page, patient)
    page.fill("#target", TARGET)
    page.fill("#q-average-samples", "50")
    page.click("#ask-average")
    page.wait_for_selector("#answer-average h3")
    assert page.is_hidden("#error"), page.inner_text("#error")
    answer = api.post("/api/average", json={"model": names, "patient": patient, "target": TARGET,
                                            "samples": 50, "continuous": False}).json()
    shown = {k: v for k, v in shown_numbers(page).items() if k.startswith("average.")}
    for m in names:  # each model's weight, its fit and its own recommendation
        assert f"average.weights.{m}" in shown
    for i in range(len(names)):
        assert {f"average.side_by_side.{i}.{c}" for c in ("weight", "objective", "pta")} <= set(shown)
    assert "average.probability_of_target_attainment" in shown and "average.recommendation.dose" in shown
    for key, text in shown.items():
        expected = at(answer, key)
        assert (text == "") if expected is None else float(text) == pytest.approx(expected, rel=1e-12), key
    assert page.inner_text('[data-key="average.recommendation.text"]') == answer["average"]["recommendation"]["text"]
    # A drug with one library model has no averaging panel.
    single = next(m["name"] for m in models if sum(x.get("drug") == m.get("drug") for x in models) == 1)
    page.select_option("#model", single)
    assert page.locator("#average-card").count() == 0

"""Safety of dose answers (issue 14 part B): hard maximum doses, plausibility checks, and
the audit database with replay.

The limits are checked against the model itself: every regimen returned is put through
`steady_state_exposure` and compared with a brute-force scan of every practical regimen
within the limits. No test recommends, or expects, a dose above a stated maximum.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sqlite3

import numpy as np
import pytest

import pkmix.models as library
from pkmix.cli import main
from pkmix.dosing import load_patient, map_estimate, recommend, steady_state_exposure
from pkmix.dosing.regimen import Regimen
from pkmix.dosing.safety import (DoseLimits, LimitError, PlausibilityError, check_dates, check_fit,
                                 doses_in_24h)
from pkmix.dosing.service import RequestError, answer, library_model_info, parse_request, replay
from conftest import vanco_patient

MODEL = "vancomycin_goti2018"


@pytest.fixture(scope="module")
def fit():
    return map_estimate(MODEL, vanco_patient())


@pytest.fixture(autouse=True)
def audit_db(tmp_path, monkeypatch):
    path = tmp_path / "audit.sqlite3"
    monkeypatch.setenv("PKMIX_AUDIT_DB", str(path))
    return path


def within(limits: DoseLimits, reg: Regimen) -> bool:
    return not limits.violations(reg.dose, reg.interval, reg.infusion_duration, loading=reg.loading_dose,
                                 loading_infusion=reg.loading_infusion_duration)


# ------------------------------------------------------------------- hard maximum doses
def test_max_daily_dose_is_never_exceeded_and_the_best_regimen_within_it_is_returned(fit):
    # The reported case: --max-daily-dose 600 once recommended 1,250 mg/day silently.
    rec = recommend(MODEL, fit, "auc24=400:600", max_daily_dose=600)
    reg = rec.regimen
    assert reg.dose * doses_in_24h(reg.interval) <= 600
    for row in rec.alternatives.itertuples():
        assert row.dose * doses_in_24h(row.interval) <= 600 + 1e-9
    assert not rec.reachable
    assert "cannot be reached within the limits" in rec.message and "600 mg per 24 h" in rec.message
    assert "best regimen within them" in rec.message
    # Its expected exposure is the model's, and no practical regimen within the limits
    # (multiples of 250 mg at the allowed intervals) comes closer to the aim.
    exact = steady_state_exposure(fit, reg.dose, reg.interval, reg.infusion_duration)
    assert rec.predicted["auc24"] == pytest.approx(exact["auc24"], rel=1e-9)
    best = 0.0
    for tau in (8.0, 12.0, 24.0, 48.0):
        for dose in np.arange(250.0, 600.0 + 1, 250.0):
            if dose * doses_in_24h(tau) <= 600:
                best = max(best, steady_state_exposure(fit, dose, tau, 1.0)["auc24"])
    assert best < 400  # the target is truly out of reach within the limit
    assert rec.predicted["auc24"] == pytest.approx(best, rel=1e-6)
    assert rec.limits["max_daily_dose"] == 600


def test_per_dose_maximum_and_rate_limit(fit):
    rec = recommend(MODEL, fit, "auc24=900:1000", dose_max=750, intervals=(12, 24))
    assert rec.regimen.dose <= 750 and not rec.reachable
    rec = recommend(MODEL, fit, "auc24=400:600", max_infusion_rate=500.0, infusion_duration=(1, 2, 3, 4, 5, 6))
    reg = rec.regimen
    assert reg.dose / reg.infusion_duration <= 500.0
    # A rate that no allowed infusion can respect for the needed dose caps the dose.
    rec = recommend(MODEL, fit, "auc24=400:600", max_infusion_rate=250.0, infusion_duration=(1,),
                    intervals=(12,))
    assert rec.regimen.dose <= 250.0 and not rec.reachable


def test_model_metadata_maximum_and_the_stricter_of_user_and_model(fit):
    module = library.load(MODEL)
    meta = copy.deepcopy(module.METADATA)
    meta["dosing"]["daily_dose_max_mg"] = 1000.0
    info = dataclasses.replace(library_model_info(MODEL), metadata=meta)  # same compiled programs
    fit_meta = map_estimate(info, vanco_patient())
    rec = recommend(info, fit_meta, "auc24=400:600")
    assert rec.regimen.dose * doses_in_24h(rec.regimen.interval) <= 1000.0
    assert rec.limits["max_daily_dose"] == 1000.0
    # A user's looser limit does not lift the model's.
    rec = recommend(info, fit_meta, "auc24=400:600", max_daily_dose=5000.0)
    assert rec.limits["max_daily_dose"] == 1000.0
    assert rec.regimen.dose * doses_in_24h(rec.regimen.interval) <= 1000.0


def test_loading_dose_respects_the_per_dose_and_first_24h_limits(fit):
    limits_daily = 2500.0
    rec = recommend(MODEL, fit, "auc24=400:600", loading_dose=True, intervals=(12,), max_daily_dose=limits_daily,
                    dose_max=1500.0)
    reg = rec.regimen
    limits = DoseLimits(per_dose=1500.0, per_day=limits_daily, rate=1000.0)
    assert within(limits, reg)
    if reg.loading_dose:
        assert reg.loading_dose + reg.dose * (doses_in_24h(12.0) - 1) <= limits_daily


def test_no_regimen_within_the_limits_is_an_error_not_an_answer(fit):
    with pytest.raises(ValueError, match="no regimen is within the limits"):
        recommend(MODEL, fit, "auc24=400:600", dose_min=500, max_daily_dose=400, intervals=(12, 24))


def test_limit_check_refuses_a_regimen_above_a_limit():
    limits = DoseLimits(per_dose=1000.0, per_day=1500.0, rate=500.0)
    assert within(limits, Regimen(dose=750.0, interval=12.0, infusion_duration=1.5, route="iv"))
    for reg in (Regimen(dose=1250.0, interval=24.0, infusion_duration=3.0, route="iv"),   # per dose
                Regimen(dose=1000.0, interval=12.0, infusion_duration=2.0, route="iv"),   # per 24 h
                Regimen(dose=600.0, interval=12.0, infusion_duration=1.0, route="iv"),    # rate
                Regimen(dose=500.0, interval=12.0, infusion_duration=1.0, route="iv", loading_dose=1200.0,
                        loading_infusion_duration=3.0)):                                  # loading
        with pytest.raises(LimitError):
            limits.check(reg)
    # A 10-hourly regimen puts three doses in some 24 h.
    assert doses_in_24h(10.0) == 3 and doses_in_24h(12.0) == 2 and doses_in_24h(48.0) == 1


def test_service_answer_reports_the_limit_as_a_warning_on_the_target():
    out = answer(parse_request({"model": MODEL, "patient": vanco_patient(), "target": "auc24=400:600",
                                "max_daily_dose": 600, "audit": False}), library_model_info(MODEL))
    reg = out["recommendation"]["recommendation"]
    assert reg["dose"] * doses_in_24h(reg["interval"]) <= 600
    codes = {w["code"]: w for w in out["warnings"]}
    assert codes["target_not_reachable"]["field"] == "target"
    assert out["limits"]["max_daily_dose"] == 600
    assert {"map", "recommendation", "timing"} <= set(out)


# ------------------------------------------------------------------------ plausibility
def dated_patient(first="2024-03-04T08:00", level="2024-03-05T19:30"):
    return {"id": "d1", "covariates": {"WT": 80, "SCR": {"value": 1.0, "unit": "mg/dL"}, "AGE": 60, "SEX": "male",
                                       "DIAL": 0},
            "doses": [{"datetime": first, "amount": 1000, "duration": 1, "interval": 12, "count": 3}],
            "levels": [{"datetime": level, "value": 20.0}]}


def test_dates_in_the_future_or_years_apart_are_named():
    assert check_dates(load_patient(dated_patient())) == []
    future = check_dates(load_patient(dated_patient("2999-03-04T08:00", "2999-03-05T19:30")))
    assert {f.code for f in future} == {"date_in_future"}
    assert {f.field for f in future} == {"doses[0]", "levels[0]"}
    apart = check_dates(load_patient(dated_patient("1994-03-04T08:00", "2024-03-05T19:30")))
    assert [f.code for f in apart] == ["dates_far_apart"]
    assert "check the dates" in apart[0].message and apart[0].field == "levels[0]"


def test_implausible_level_is_named_check_this_level(fit):
    assert check_fit(fit) == []  # ordinary levels: nothing to say
    odd = map_estimate(MODEL, vanco_patient(levels=((35.5, 14.0), (37.0, 310.0))))
    findings = check_fit(odd)
    level = [f for f in findings if f.code == "level_implausible"]
    assert [f.level for f in level] == [1] and level[0].field == "levels[1]"
    assert "check this level" in level[0].message


def test_extreme_etas_are_flagged(fit):
    sd = np.sqrt(np.diag(fit.prior_covariance))
    far = dataclasses.replace(fit, eta=np.asarray(fit.eta) + 5.0 * sd * (np.arange(len(sd)) == 0))
    codes = [f for f in check_fit(far) if f.code == "eta_extreme"]
    assert len(codes) == 1 and fit.eta_names[0] in codes[0].message and "check this level" in codes[0].message


def test_non_finite_model_values_are_an_error(fit):
    bad = dataclasses.replace(fit, eta=np.full_like(np.asarray(fit.eta), np.nan))
    with pytest.raises(PlausibilityError, match="non-finite"):
        check_fit(bad)
    bad = dataclasses.replace(fit, current={k: math.inf for k in fit.current})
    with pytest.raises(PlausibilityError):
        check_fit(bad)


def test_service_lists_the_implausible_level_as_a_warning():
    out = answer(parse_request({"model": MODEL, "patient": vanco_patient(levels=((35.5, 14.0), (37.0, 310.0))),
                                "audit": False}), library_model_info(MODEL))
    levels = [w for w in out["warnings"] if w["code"] == "level_implausible"]
    assert levels and levels[0]["level"] == 1 and levels[0]["field"] == "levels[1]"


# ------------------------------------------------------------------------ audit, replay
def test_every_answer_is_audited_and_replays_to_the_same_numbers(audit_db):
    out = answer(parse_request({"model": MODEL, "patient": vanco_patient(), "target": "trough=15",
                                "interval": [12, 24], "samples": 2000, "seed": 3}), library_model_info(MODEL))
    rid = out["audit_id"]
    assert isinstance(rid, int)
    with sqlite3.connect(audit_db) as conn:
        row = conn.execute("SELECT model, pkmix_version, request_json, patient_json, output_json, model_sha256 "
                           "FROM recommendations WHERE id = ?", (rid,)).fetchone()
    assert row[0] == "vancomycin_goti2018" and row[1] and len(row[5]) == 64
    request = json.loads(row[2])
    assert request["target"] == "trough=15" and request["interval"] == [12.0, 24.0] and request["seed"] == 3
    assert json.loads(row[3])["json"]["id"] == "v1"
    stored = json.loads(row[4])
    assert stored["recommendation"]["recommendation"] == out["recommendation"]["recommendation"]
    again = replay(rid)
    assert again["identical"], again["differences"]
    assert again["replayed"]["recommendation"] == out["recommendation"]
    # A stored answer that the engine no longer gives is reported, path by path.
    stored["recommendation"]["recommendation"]["dose"] += 250.0
    with sqlite3.connect(audit_db) as conn:
        conn.execute("UPDATE recommendations SET output_json = ? WHERE id = ?", (json.dumps(stored), rid))
    changed = replay(rid)
    assert not changed["identical"]
    assert any(d.startswith("recommendation.recommendation.dose") for d in changed["differences"])


def test_replay_of_an_unknown_id_names_the_field():
    with pytest.raises(RequestError) as e:
        replay(99)
    assert e.value.field == "replay"
    with pytest.raises(RequestError):
        parse_request({"model": MODEL, "patient": vanco_patient(), "audit": "yes"})


def test_cli_stores_and_replays(capsys, tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(vanco_patient()))
    db = tmp_path / "cli.sqlite3"
    code = main(["dose", "--model", MODEL, "--patient", str(path), "--json", "--audit-db", str(db)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["audit_id"] == 1
    path.write_text("{}")  # the record keeps the patient itself, not the path
    code = main(["dose", "--replay", "1", "--audit-db", str(db)])
    text = capsys.readouterr().out
    assert code == 0 and "identical" in text
    code = main(["dose", "--replay", "2", "--audit-db", str(db)])
    assert code == 2 and "no recommendation 2" in capsys.readouterr().err

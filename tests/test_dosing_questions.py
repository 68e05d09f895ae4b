"""The everyday dosing questions (issue 14 part A), each checked against something
independent of the code that answers it:

* levels and AUCs over the history against `pkmix.predict` (the estimation engine's
  predictions on an ordinary NONMEM dataset) and the trapezoidal rule on a dense grid;
* a continuous infusion at steady state against rate / CL;
* the interval solver against a brute-force scan of intervals;
* the next dose and the first n doses against `pkmix.predict` with those doses added;
* what-if a priori against the fit of the same patient without levels.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import pkmix
from pkmix.dosing import (history_exposure, interval_for, map_estimate, next_dose, recommend,
                          steady_state_exposure, what_if)
from pkmix.dosing.service import QUESTIONS, RequestError, replay
from conftest import vanco_patient

MODEL = "vancomycin_goti2018"
COVS = {"WT": 80.0, "SCR": 88.42, "AGE": 60.0, "SEX": 1.0, "DIAL": 0.0}  # the model's units
HISTORY = [(0.0, 1500.0, 1.5), (12.0, 1000.0, 1.0), (24.0, 1000.0, 1.0), (36.0, 1000.0, 1.0)]


@pytest.fixture(scope="module")
def fit():
    return map_estimate(MODEL, vanco_patient())


@pytest.fixture(autouse=True)
def audit_db(tmp_path, monkeypatch):
    monkeypatch.setenv("PKMIX_AUDIT_DB", str(tmp_path / "audit.sqlite3"))


def predict(fit, doses, times, etas=None):
    """The level at ``times`` after ``doses`` [(t, amount, infusion h)] by `pkmix.predict`."""
    rows = [{"ID": 1, "TIME": t, "AMT": a, "DUR": d, "EVID": 1, "MDV": 1, "DV": np.nan} for t, a, d in doses]
    rows += [{"ID": 1, "TIME": t, "AMT": 0.0, "DUR": 0.0, "EVID": 2, "MDV": 1, "DV": np.nan} for t in times]
    frame = pd.DataFrame(rows).sort_values("TIME", kind="stable")
    for k, v in COVS.items():
        frame[k] = v
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pkmix.read_nonmem(frame)
    eta = np.asarray(fit.eta if etas is None else etas)[None, :]
    out = pkmix.predict(fit.model, ds, etas=eta)
    return out.loc[out["EVID"] == 2, "IPRED"].to_numpy()


# ---------------------------------------------------------------- exposure over the history
def test_history_exposure_matches_the_engine_and_the_trapezoidal_rule(fit):
    ex = history_exposure(fit, windows=[(0, 24), (24, 48), (36, 40.5)], times=[5.0, 47.0], n_draws=100)
    grid = np.linspace(0.0, 48.0, 9601)
    c = predict(fit, HISTORY, grid)
    for w in ex["auc"]:
        sel = (grid >= w["start"] - 1e-9) & (grid <= w["end"] + 1e-9)
        assert w["value"] == pytest.approx(np.trapezoid(c[sel], grid[sel]), rel=2e-4)
        assert w["ci"][0] < w["value"] < w["ci"][1]
    ref = predict(fit, HISTORY, [5.0, 47.0])
    for got, want in zip(ex["concentrations"], ref):
        assert got["value"] == pytest.approx(want, rel=1e-8)
        assert got["ci"][0] < got["value"] < got["ci"][1]
    # Each dose's peak (end of its infusion) and trough (just before the next dose).
    ends = [t + d for t, _, d in HISTORY]
    troughs = [12.0 - 1e-6, 24.0 - 1e-6, 36.0 - 1e-6, 48.0 - 1e-6]
    peaks, lows = predict(fit, HISTORY, ends), predict(fit, HISTORY, troughs)
    assert [d["time"] for d in ex["doses"]] == [0.0, 12.0, 24.0, 36.0]
    for d, p, lo in zip(ex["doses"], peaks, lows):
        assert d["peak"] == pytest.approx(p, rel=1e-6)
        assert d["trough"] == pytest.approx(lo, rel=1e-5)


def test_history_exposure_bad_window_names_it(fit):
    with pytest.raises(ValueError, match=r"windows\[0\]"):
        history_exposure(fit, windows=[(24, 12)])


# --------------------------------------------------------------------- continuous infusion
def test_continuous_infusion_steady_state_is_rate_over_clearance(fit):
    ss = steady_state_exposure(fit, 2000.0, 24.0, 24.0)
    css = 2000.0 / 24.0 / fit.current["cl"]
    assert ss["trough"] == pytest.approx(css, rel=1e-9) and ss["peak"] == pytest.approx(css, rel=1e-9)
    assert ss["auc24"] == pytest.approx(24 * css, rel=1e-9)
    rec = recommend(MODEL, fit, "auc24=400:600", continuous=True, loading_dose=True, max_daily_dose=3000)
    reg = rec.regimen
    assert reg.continuous and reg.interval == 24.0 and reg.infusion_duration == 24.0
    assert rec.predicted["trough"] == pytest.approx(reg.dose / 24.0 / fit.current["cl"], rel=1e-9)
    assert 400 <= rec.predicted["auc24"] <= 600 and "continuous infusion" in reg.describe()
    # The loading dose runs alongside the infusion: both fit in the first 24 h limit.
    assert (reg.loading_dose or 0.0) + reg.dose <= 3000
    assert reg.dose / reg.interval <= 1000.0


# ------------------------------------------------------------------------ interval solver
def test_interval_solver_against_a_brute_force_scan(fit):
    out = interval_for(fit, 1000.0, "trough=15", infusion_duration=1.0)
    assert out["status"] == "found" and out["predicted"] == pytest.approx(15.0, rel=1e-8)
    taus = np.linspace(6.0, 48.0, 169)
    troughs = np.array([steady_state_exposure(fit, 1000.0, t, 1.0)["trough"] for t in taus])
    k = int(np.flatnonzero(troughs < 15.0)[0])  # the trough falls as the interval grows
    assert taus[k - 1] <= out["interval"] <= taus[k]
    # A dose too small for the target even at the shortest interval says so.
    assert interval_for(fit, 10.0, "trough=15", infusion_duration=1.0)["status"] == "above"


# ------------------------------------------------------------------------------ next dose
def test_next_dose_at_a_chosen_time(fit):
    out = next_dose(fit, "trough=15", 54.0, interval=12.0)
    tinf = out["infusion"]
    assert out["unrounded"] > 1000 and tinf == 1.5  # the rate limit (1 g/h) lengthens the infusion
    doses = HISTORY + [(54.0, out["unrounded"], tinf)]
    assert predict(fit, doses, [66.0 - 1e-7])[0] == pytest.approx(15.0, rel=1e-6)
    assert out["predicted"] == pytest.approx(predict(fit, HISTORY + [(54.0, out["dose"], tinf)], [66.0 - 1e-7])[0],
                                             rel=1e-6)
    assert out["dose"] % 250 == 0 and out["reachable"] and out["dose"] / tinf <= 1000.0
    # A 1 h infusion cannot carry that dose under the rate limit: the best within it.
    fixed = next_dose(fit, "trough=15", 54.0, interval=12.0, infusion_duration=1.0)
    assert fixed["dose"] <= 1000.0 and not fixed["reachable"]
    # AUC over the next 24 h under a 24 h limit that counts the dose given at 36 h.
    capped = next_dose(fit, "auc24=800:900", 54.0, infusion_duration=1.0, max_daily_dose=2000.0)
    assert capped["dose"] <= 2000.0 - 1000.0 and not capped["reachable"]
    assert "cannot be reached within the limits" in capped["message"]


# --------------------------------------------------------------------- after n doses, what if
def test_after_n_doses_and_what_if_a_priori(fit):
    out = what_if(fit, 1000.0, 12.0, 1.0, n_doses=4, start=48.0)
    doses = HISTORY + [(48.0 + 12.0 * k, 1000.0, 1.0) for k in range(4)]
    troughs = predict(fit, doses, [48.0 + 12.0 * (k + 1) - 1e-7 for k in range(4)])
    assert [d["trough_before_next"] for d in out["doses"]] == pytest.approx(troughs, rel=1e-6)
    # The trough before the 4th dose is the 3rd row's.
    assert out["doses"][2]["trough_time"] == 84.0
    ss = steady_state_exposure(fit, 1000.0, 12.0, 1.0)
    assert out["steady_state"]["trough"] == pytest.approx(ss["trough"], rel=1e-12)
    # A priori: the same patient without levels is fitted at eta = 0.
    prior_patient = vanco_patient()
    prior_patient.pop("levels")
    prior_fit = map_estimate(MODEL, prior_patient)
    assert np.allclose(prior_fit.eta, 0.0)
    a = what_if(fit, 1000.0, 12.0, 1.0, start=48.0, etas="prior")
    b = what_if(prior_fit, 1000.0, 12.0, 1.0, start=48.0)
    assert [d["peak"] for d in a["doses"]] == pytest.approx([d["peak"] for d in b["doses"]], rel=1e-10)
    # Given etas: an earlier MAP.
    given = what_if(prior_fit, 1000.0, 12.0, 1.0, start=48.0, etas=list(fit.eta[:fit.model.spec.n_eta]))
    assert [d["peak"] for d in given["doses"]] == pytest.approx([d["peak"] for d in out["doses"]], rel=1e-10)
    with pytest.raises(ValueError, match="etas"):
        what_if(fit, 1000.0, 12.0, 1.0, etas=[0.1])


# ------------------------------------------------------------------------ no etas
def _no_eta_model():
    return pkmix.Model(theta={"tcl": 3.0, "tv": 30.0}, omega={}, sigma={"add": 0.4},
                       individual=lambda p: {"cl": p.tcl, "v": p.tv}, structure=pkmix.one_compartment(),
                       observe=lambda a, p: a.central / p.v, error=pkmix.additive("add"), name="noeta")


NO_ETA = _no_eta_model()


def no_eta_model():
    return NO_ETA


def test_a_model_without_etas_gets_a_recommendation():
    m = no_eta_model()
    patient = {"doses": [{"time": 0, "amount": 500, "duration": 1, "interval": 12, "count": 3}],
               "levels": [{"time": 35.9, "value": 5.0}]}
    fit = map_estimate(m, patient, curve_points=0)
    rec = recommend(m, fit, "trough=5:8", intervals=(12,), dose_unit=50, dose_max=2000, n_samples=100, curve=False)
    k = 3.0 / 30.0
    # One compartment, 1 h infusions every 12 h: the closed-form steady-state trough.
    d = rec.regimen.dose
    rate = d / 1.0
    c_end = rate / 3.0 * (1 - np.exp(-k * 1.0)) / (1 - np.exp(-k * 12.0))
    assert rec.predicted["trough"] == pytest.approx(c_end * np.exp(-k * 11.0), rel=1e-8)
    assert 5 <= rec.predicted["trough"] <= 8 and rec.pta in (0.0, 1.0)


# ------------------------------------------------------------------------ service, replay
def test_service_questions_answer_validate_and_replay():
    base = {"model": MODEL, "patient": vanco_patient()}
    out = QUESTIONS["interval_for"]({**base, "dose": 1000, "target": "trough=15", "infusion": 1})
    assert out["interval_for"]["status"] == "found" and isinstance(out["audit_id"], int)
    assert replay(out["audit_id"])["identical"]
    with pytest.raises(RequestError) as e:
        QUESTIONS["next_dose"]({**base, "target": "trough=15"})
    assert e.value.field == "at"
    with pytest.raises(RequestError) as e:
        QUESTIONS["exposure"]({**base, "windows": [[5, 1]]})
    assert e.value.field == "windows[0]"
    with pytest.raises(RequestError) as e:
        QUESTIONS["what_if"]({**base, "dose": 1000, "interval": 12, "n_doses": 0})
    assert e.value.field == "n_doses"
    with pytest.raises(RequestError) as e:
        QUESTIONS["what_if"]({**base, "dose": 1000, "interval": 12, "bogus": 1})
    assert e.value.field == "bogus"
    nd = QUESTIONS["next_dose"]({**base, "at": 54, "target": "auc24=400:600", "max_daily_dose": 1500, "audit": False})
    assert nd["next_dose"]["dose"] <= 500 and nd["audit_id"] is None
    assert any(w["code"] == "target_not_reachable" for w in nd["warnings"]) or nd["next_dose"]["reachable"]


def test_cli_questions(capsys, tmp_path):
    import json

    from pkmix.cli import main

    path = tmp_path / "p.json"
    path.write_text(json.dumps(vanco_patient()))
    common = ["dose", "--model", MODEL, "--patient", str(path), "--no-audit"]
    assert main(common + ["--interval-for", "1000", "--target", "trough=15", "--infusion", "1"]) == 0
    assert "meets trough = 15 at steady state every" in capsys.readouterr().out
    assert main(common + ["--what-if", "1000,12,1", "--etas", "prior", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["what_if"]["etas"]["source"] == "prior" and len(doc["what_if"]["doses"]) == 4
    assert main(common + ["--what-if", "1000,12", "--exposure"]) == 2
    assert "one question at a time" in capsys.readouterr().err


# ------------------------------------------------------------------ molar units, resets
def test_levels_in_molar_units_convert_through_the_molar_mass():
    from pkmix.dosing import PatientError
    from pkmix.dosing.patient import ModelInfo, bind, load_patient

    mtx = 454.44  # methotrexate, g/mol
    patient = {"doses": [{"time": 0, "amount": 500, "duration": 1}],
               "levels": [{"time": 2, "value": 10.0, "unit": "mg/L"}, {"time": 4, "value": 5.0, "unit": "µmol/L"}]}
    molar = ModelInfo(model=no_eta_model(), metadata={"units": {"concentration": "µmol/L"}, "molar_mass": mtx})
    dv = bind(molar, load_patient(patient)).records["DV"]
    assert dv[1] == pytest.approx(10.0 * 1000.0 / mtx, rel=1e-12) and dv[2] == pytest.approx(5.0, rel=1e-12)
    mass = ModelInfo(model=no_eta_model(), metadata={"units": {"concentration": "mg/L"}, "molar_mass": mtx})
    dv = bind(mass, load_patient(patient)).records["DV"]
    assert dv[2] == pytest.approx(5.0 * mtx / 1000.0, rel=1e-12)
    with pytest.raises(PatientError) as e:
        bind(ModelInfo(model=no_eta_model(), metadata={}), load_patient(patient))
    assert e.value.field == "levels[1].unit" and "molar mass" in e.value.message


def test_resets_in_the_patient_file():
    m = no_eta_model()
    base = {"doses": [{"time": 0, "amount": 500, "duration": 1, "interval": 12, "count": 3}],
            "levels": [{"time": 35.9, "value": 5.0}]}
    fit = map_estimate(m, base, curve_points=0)
    before = history_exposure(fit, times=[30.0, 40.0], doses=False, n_draws=0)["concentrations"]
    reset = dict(base, resets=[{"time": 30.0}])
    fit_r = map_estimate(m, reset, curve_points=0)
    after = history_exposure(fit_r, times=[30.5, 40.0], doses=False, n_draws=0)["concentrations"]
    assert before[0]["value"] > 1.0 and after[0]["value"] == 0.0
    # A dose with "reset": the level is that of this dose alone (1 h infusion, one compartment).
    washed = {"doses": [{"time": 0, "amount": 500, "duration": 1}, {"time": 24, "amount": 500, "duration": 1,
                                                                     "reset": True}],
              "levels": [{"time": 35.9, "value": 5.0}]}
    fit_w = map_estimate(m, washed, curve_points=0)
    assert fit_w.bound.records["EVID"].tolist().count(4) == 1
    c = history_exposure(fit_w, times=[30.0], doses=False, n_draws=0)["concentrations"][0]["value"]
    k = 3.0 / 30.0
    assert c == pytest.approx(500.0 / 3.0 * (1 - np.exp(-k)) * np.exp(-k * 5.0), rel=1e-9)

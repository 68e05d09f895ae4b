"""Regimen optimisation: the recommended dose, put back through the model, hits the target.

"Put back through the model" means: the regimen is written as an ordinary NONMEM
dataset (the patient's history, then 1000 h of the new regimen so steady state is
reached) and predicted with `pkmix.predict` at the MAP etas; AUC is then integrated by
the trapezoidal rule on a dense grid of those predictions. Nothing of the optimiser's
own steady-state algebra or quadrature is used for the check.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pkmix
from pkmix.dosing import Target, map_estimate, recommend, steady_state_exposure, time_below
from pkmix.dosing.map import TRACES
from conftest import vanco_patient

MODEL = "vancomycin_goti2018"
COVS = {"WT": 80.0, "SCR": 88.42, "AGE": 60.0, "SEX": 1.0, "DIAL": 0.0}  # SCR in umol/L (the model's unit)


@pytest.fixture(scope="module")
def fit():
    return map_estimate(MODEL, vanco_patient())


def model_prediction(fit, history, regimen_doses, times):
    """IPRED at ``times`` (EVID 2 records) after the doses, by pkmix.predict."""
    rows = []
    for t, amt, dur in list(history) + list(regimen_doses):
        rows.append({"ID": 1, "TIME": t, "AMT": amt, "DUR": dur, "EVID": 1, "MDV": 1, "DV": np.nan})
    for t in times:
        rows.append({"ID": 1, "TIME": t, "AMT": 0.0, "DUR": 0.0, "EVID": 2, "MDV": 1, "DV": np.nan})
    frame = pd.DataFrame(rows).sort_values("TIME", kind="stable")
    for k, v in COVS.items():
        frame[k] = v
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pkmix.read_nonmem(frame)
    out = pkmix.predict(fit.model, ds, etas=np.asarray(fit.eta)[None, :])
    return out.loc[out["EVID"] == 2, "IPRED"].to_numpy()


HISTORY = [(0.0, 1500.0, 1.5), (12.0, 1000.0, 1.0), (24.0, 1000.0, 1.0), (36.0, 1000.0, 1.0)]


def steady_state_by_predict(fit, dose, tau, tinf, start=48.0):
    """(AUC over the last 24 h, trough before the next dose, concentration grid), after
    1000 h of the regimen (steady state to ~1e-10 for half-lives up to a day)."""
    n_doses = int(np.ceil(1000.0 / tau))
    doses = [(start + k * tau, dose, tinf) for k in range(n_doses)]
    end = start + n_doses * tau
    grid = np.linspace(end - 24.0, end, 4801)
    c = model_prediction(fit, HISTORY, doses, grid)
    return np.trapezoid(c, grid), c[-1], grid, c


def test_auc24_target_unrounded_dose_hits_the_target(fit):
    rec = recommend(MODEL, fit, "auc24=400:600")
    reg = rec.regimen
    assert reg.interval in (8.0, 12.0, 24.0, 48.0)
    # The unrounded dose, given for 1000 h, reaches AUC24 = 500 at steady state.
    auc, _, _, _ = steady_state_by_predict(fit, rec.dose_unrounded, reg.interval, reg.infusion_duration)
    assert auc == pytest.approx(rec.target.aim, rel=0.005)
    assert rec.exposure_unrounded == pytest.approx(500.0, rel=1e-8)
    # After rounding, the reported prediction is what the model gives for the rounded dose.
    auc_r, trough_r, _, _ = steady_state_by_predict(fit, reg.dose, reg.interval, reg.infusion_duration)
    assert rec.predicted["auc24"] == pytest.approx(auc_r, rel=0.005)
    assert rec.predicted["trough"] == pytest.approx(trough_r, rel=0.005)
    assert reg.dose % 250 == 0 and reg.dose <= 4000
    assert 0.0 <= rec.pta <= 1.0
    assert rec.reachable


def test_trough_target_unrounded_dose_hits_the_target(fit):
    rec = recommend(MODEL, fit, Target("trough", value=15.0), intervals=(12,))
    reg = rec.regimen
    _, trough, _, _ = steady_state_by_predict(fit, rec.dose_unrounded, 12.0, reg.infusion_duration)
    assert trough == pytest.approx(15.0, rel=0.005)
    assert rec.predicted["target"] == pytest.approx(rec.predicted["trough"])


def test_steady_state_exposure_matches_the_engine(fit):
    # Peak (end of infusion), a concentration at 5 h and %T>MIC against a dense grid of
    # engine predictions at steady state.
    dose, tau, tinf = 1250.0, 12.0, 1.5
    doses = [(48.0 + k * tau, dose, tinf) for k in range(84)]
    last = 48.0 + 83 * tau
    grid = last + np.linspace(0.0, tau, 2401)
    c = model_prediction(fit, HISTORY, doses, grid)
    e = steady_state_exposure(fit, dose, tau, tinf, target=Target("ft_mic", low=50, mic=15.0))
    assert e["peak"] == pytest.approx(np.interp(last + tinf, grid, c), rel=1e-6)
    assert e["trough"] == pytest.approx(c[-1], rel=1e-6)
    assert e["auc_tau"] == pytest.approx(np.trapezoid(c, grid), rel=1e-5)
    assert e["target"] == pytest.approx(100.0 * np.mean(c[:-1] > 15.0), abs=0.2)
    e_conc = steady_state_exposure(fit, dose, tau, tinf, target=Target("conc", value=10.0, time=5.0))
    assert e_conc["target"] == pytest.approx(np.interp(last + 5.0, grid, c), rel=1e-6)
    # Linear model: AUC over an interval at steady state is dose / CL exactly.
    assert e["auc_tau"] == pytest.approx(dose / fit.current["cl"], rel=1e-9)


def oral_model():
    return pkmix.Model(
        theta={"tka": 1.0, "tcl": 5.0, "tv": 60.0}, omega={"eta_cl": 0.1, "eta_v": 0.1}, sigma={"prop": 0.2},
        individual=lambda p: {"ka": p.tka, "cl": p.tcl * jnp.exp(p.eta_cl), "v": p.tv * jnp.exp(p.eta_v)},
        structure=pkmix.one_compartment(depot=True), observe=lambda a, p: a.central / p.v,
        error=pkmix.proportional("prop"), name="oral")


def test_oral_peak_is_the_maximum():
    model = oral_model()
    patient = {"doses": [{"time": 0, "amount": 400, "route": "oral"}], "levels": [{"time": 6, "value": 3.0}]}
    fit = map_estimate(model, patient)
    e = steady_state_exposure(fit, 400.0, 12.0, 0.0)
    cl, v, ka = fit.current["cl"], fit.current["v"], 1.0
    ke = cl / v
    s = np.linspace(0, 12, 200001)
    # Oral steady state (textbook accumulation factors).
    c = 400 * ka / (v * (ka - ke)) * (np.exp(-ke * s) / (1 - np.exp(-ke * 12)) - np.exp(-ka * s) / (1 - np.exp(-ka * 12)))
    assert e["peak"] == pytest.approx(c.max(), rel=1e-9)
    assert e["tmax"] == pytest.approx(s[np.argmax(c)], abs=1e-3)
    assert e["trough"] == pytest.approx(c[0], rel=1e-9)


@pytest.mark.slow  # compiles the whole pipeline for a second model (~30 s on 2 cores)
def test_oral_recommendation():
    model = oral_model()
    patient = {"doses": [{"time": 0, "amount": 400, "route": "oral"}], "levels": [{"time": 6, "value": 3.0}]}
    rec = recommend(model, patient, "peak=8:10", intervals=(12, 24), dose_unit=50, dose_max=2000)
    assert rec.regimen.route == "oral" and rec.regimen.infusion_duration == 0
    assert rec.exposure_unrounded == pytest.approx(9.0, rel=1e-8)
    # After an oral dose the level first rises: the threshold is crossed on the way down.
    nd = time_below(rec.fit, 2.0)
    assert nd["status"] == "found" and nd["hours_after_last_dose"] > 3.0


def test_unreachable_target_says_so_and_respects_the_maximum(fit):
    rec = recommend(MODEL, fit, "auc24=4000:6000", dose_max=3000)
    assert not rec.reachable
    assert "cannot be reached" in rec.message
    assert rec.regimen.dose <= 3000
    assert (rec.alternatives["dose"] <= 3000).all()
    assert "NOT REACHABLE" in rec.summary()
    low = recommend(MODEL, fit, "trough=:0.5", intervals=(8, 12), dose_min=500)
    assert not low.reachable and low.regimen.dose == 500


def test_a_priori_dosing_and_loading_dose():
    patient = vanco_patient()
    patient["doses"], patient["levels"] = [], []
    rec = recommend(MODEL, patient, "auc24=400:600", loading_dose=True, intervals=(12,))
    assert rec.fit.bound.n_observations == 0
    np.testing.assert_allclose(rec.fit.eta, 0.0)
    assert rec.current is None
    ld = rec.loading
    assert ld["dose"] is not None and ld["dose"] > rec.regimen.dose
    # The unrounded loading dose, put back through the model, gives AUC(0-24 h) = 500.
    reg = rec.regimen
    doses = [(0.0, ld["unrounded"], ld["unrounded_infusion"])] + [(12.0 * k, reg.dose, reg.infusion_duration) for k in (1, 2)]
    grid = np.linspace(0.0, 24.0, 9601)
    c = model_prediction(rec.fit, [], doses, grid)
    assert np.trapezoid(c, grid) == pytest.approx(500.0, rel=0.005)


def test_time_below_threshold(fit):
    nd = time_below(fit, 10.0)
    assert nd["status"] == "found"
    c = model_prediction(fit, HISTORY, [], [nd["time"]])
    assert c[0] == pytest.approx(10.0, rel=1e-3)
    assert nd["hours_after_last_dose"] == pytest.approx(nd["time"] - 36.0)
    assert time_below(fit, 1000.0)["status"] == "already below"
    rec = recommend(MODEL, fit, "auc24=400:600", threshold=10.0)
    assert rec.regimen.start_time == pytest.approx(nd["time"])


def test_current_regimen_is_reported(fit):
    rec = recommend(MODEL, fit, "auc24=400:600")
    cur = rec.current
    assert cur["dose"] == 1000 and cur["interval"] == 12 and cur["infusion"] == 1
    e = steady_state_exposure(fit, 1000.0, 12.0, 1.0)
    assert cur["auc24"] == pytest.approx(e["auc24"], rel=1e-9)
    d = rec.to_dict()
    assert d["current_regimen"]["auc24"] == pytest.approx(cur["auc24"])
    assert {"recommendation", "probability_of_target_attainment", "alternatives"} <= set(d)


def test_infusion_rate_limit_and_daily_maximum(fit):
    rec = recommend(MODEL, fit, "auc24=400:600", max_infusion_rate=500.0, infusion_duration=(1, 2, 3, 4, 5, 6))
    reg = rec.regimen
    assert reg.dose / reg.infusion_duration <= 500.0 + 1e-9
    rec2 = recommend(MODEL, fit, "auc24=400:600", max_daily_dose=1600)
    assert rec2.regimen.dose * 24 / rec2.regimen.interval <= 1600 + 1e-9


def test_no_recompile_for_a_second_patient(fit):
    recommend(MODEL, fit, "auc24=400:600")
    before = dict(TRACES)
    other = map_estimate(MODEL, vanco_patient(levels=((35.0, 18.0), (37.5, 35.0))))
    recommend(MODEL, other, "auc24=400:600")
    assert dict(TRACES) == before


@pytest.mark.parametrize("text,kind,low,high", [
    ("auc24=400:600", "auc24", 400, 600), ("trough=10:", "trough", 10, None), ("cmin=:20", "trough", None, 20),
    ("peak=20:40,time=1", "peak", 20, 40), ("ft_mic=50:,mic=2", "ft_mic", 50, None)])
def test_target_parse(text, kind, low, high):
    t = Target.parse(text)
    assert (t.kind, t.low, t.high) == (kind, low, high)


@pytest.mark.parametrize("text,message", [
    ("auc24", "expected KIND"), ("tmax=3", "not known"), ("trough=20:10", "above high"),
    ("ft_mic=50:", "mic"), ("conc=10", "time"), ("ft_mic=50:120,mic=1", "percentage"), ("peak=1:2,when=3", "unknown option")])
def test_target_errors(text, message):
    with pytest.raises(ValueError, match=message):
        Target.parse(text)


def test_point_target_tolerance():
    t = Target("trough", value=15)
    assert t.aim == 15 and t.low == pytest.approx(13.5) and t.high == pytest.approx(16.5)
    assert t.attained(15.5) and not t.attained(17.0)


def test_reachable_only_when_the_rounded_regimen_is_in_range(fit):
    """A linear model whose unrounded dose meets a narrow trough range exactly, but whose
    doses in steps of 250 mg all miss it: the recommendation is not reachable, and the
    reported trough of the final regimen is the one outside the range."""
    rec = recommend(MODEL, fit, "trough=15:15.01", intervals=(12,), dose_unit=250, n_samples=200, curve=False)
    assert rec.exposure_unrounded == pytest.approx(15.005, rel=1e-6)  # the unrounded dose hits it
    assert not rec.target.attained(rec.predicted["target"])
    assert not rec.reachable
    assert "after rounding" in rec.message
    text = rec.summary()
    assert "NOT reached" in text and "beyond the limits" not in text  # rounding stopped it, not a limit


def test_default_target_with_an_open_end():
    """METADATA target ranges with None for an open end work as the parsed text does."""
    import types

    from pkmix.dosing.targets import default_target

    def info(targets):
        return types.SimpleNamespace(name="m", metadata={"targets": targets})

    assert default_target(info({"trough": {"range": [None, 2.5]}})) == Target.parse("trough=:2.5")
    assert default_target(info({"auc24": {"range": (400.0, None)}})) == Target.parse("auc24=400:")
    assert default_target(info({"conc": {"range": [None, 1.0], "time": 48.0}})) == Target.parse("conc=:1,time=48")
    # Not a dose target (an unknown kind): the next one.
    assert default_target(info({"cumulative_auc": {"range": (59, 99)}, "peak": {"range": (6, 10)}})) == \
        Target.parse("peak=6:10")
    with pytest.raises(ValueError, match=r"METADATA\['targets'\]\['trough'\].*two numbers"):
        default_target(info({"trough": {"range": ["low", 2.5]}}))
    with pytest.raises(ValueError, match="lists none"):
        default_target(info({"trough": {"range": [None, None]}}))

"""Model averaging across library models of one drug (pkmix.dosing.average).

The patients here are simulated from one of two vancomycin models (Goti 2018, Thomson
2009): ``pkmix.predict`` at the typical values plus that model's own residual error
(seeded), so which model generated the levels is known; averaging must put most of the
weight on it. (Noise-free levels would not do: the model with the smaller residual error,
Thomson's, fits any smooth profile better than the generating one.) Each model's fit and
recommendation come from the public `map_estimate`/`recommend`, shared through
module-scoped fixtures (one compilation per model). Those fixtures (two full averaged
recommendations with 200 posterior samples and draws each, about 80 s on 2 cores) and
the tests that read them are marked slow; the default suite still averages through the
other tests here (limits, one model, no levels, refused input).
"""

from __future__ import annotations

import json
import math
import types

import numpy as np
import pandas as pd
import pytest

import pkmix
import pkmix.dosing as dosing
import pkmix.models as library

GOTI, THOMSON = "vancomycin_goti2018", "vancomycin_thomson2009"
TARGET = "auc24=400:600"
COV = {"WT": 70.0, "AGE": 40.0, "SEX": 1, "SCR": 80.0, "DIAL": 0}  # SCR in umol/L
DOSES = [(0.0, 1500.0, 1.0), (12.0, 1000.0, 1.0), (24.0, 1000.0, 1.0), (36.0, 1000.0, 1.0)]  # h, mg, h
TIMES = [1.5, 3.0, 6.0, 11.5, 13.5, 16.0, 20.0, 23.5, 25.5, 30.0, 35.5, 47.5]
SEED = 5  # one replicate; test_generating_model_wins_most_replicates covers twelve
N_SAMPLES = 200


def simulated_patient(model_name: str, seed: int = SEED) -> dict:
    """A patient whose levels are ``model_name``'s typical predictions plus its residual error."""
    model = library.load(model_name).model
    rows = [dict(ID=1, TIME=t, AMT=a, DUR=d, EVID=1, MDV=1, DV=0.0, CMT=1) for t, a, d in DOSES]
    rows += [dict(ID=1, TIME=t, AMT=0.0, DUR=0.0, EVID=0, MDV=0, DV=1.0, CMT=1) for t in TIMES]
    frame = pd.DataFrame(rows).sort_values(["TIME", "EVID"]).reset_index(drop=True)
    for k, v in COV.items():
        frame[k] = v
    out = pkmix.predict(model, frame)
    pred = out[out.EVID == 0]["PRED"].to_numpy()
    sd = np.sqrt(np.asarray(model.residual_variance(model.initial_values(), pred)))
    levels = np.maximum(pred + sd * np.random.default_rng(seed).standard_normal(len(pred)), 0.5)
    return {
        "id": f"simulated-from-{model_name}",
        "covariates": {"WT": {"value": COV["WT"], "unit": "kg"}, "AGE": COV["AGE"], "SEX": "male",
                       "SCR": {"value": COV["SCR"], "unit": "umol/L"}, "DIAL": COV["DIAL"]},
        "doses": [{"time": t, "amount": a, "duration": d} for t, a, d in DOSES],
        "levels": [{"time": t, "value": float(round(c, 3)), "unit": "mg/L"} for t, c in zip(TIMES, levels)],
    }


@pytest.fixture(scope="module")
def from_goti():
    return dosing.average([GOTI, THOMSON], simulated_patient(GOTI), TARGET, n_samples=N_SAMPLES, n_draws=200)


@pytest.fixture(scope="module")
def from_thomson():
    return dosing.average([GOTI, THOMSON], simulated_patient(THOMSON), TARGET, n_samples=N_SAMPLES,
                          n_draws=200)


@pytest.mark.slow  # from_goti/from_thomson: two averaged recommendations, ~80 s to build on 2 cores
def test_weights_sum_to_one_and_favour_the_generating_model(from_goti, from_thomson):
    for avg, source, other in ((from_goti, GOTI, THOMSON), (from_thomson, THOMSON, GOTI)):
        w = avg.weights
        assert set(w) == {GOTI, THOMSON}
        assert sum(w.values()) == pytest.approx(1.0, abs=1e-12)
        assert all(0.0 <= v <= 1.0 for v in w.values())
        assert w[source] > 0.8 > w[other], (source, w)
        assert avg.best == source
        # The Laplace score is the objective less log|C| (see average's docstring).
        for m in avg.models:
            fit = avg.fits[m]
            assert avg.scores[m] == pytest.approx(fit.objective - np.linalg.slogdet(fit.covariance)[1], rel=1e-12)
        ratio = math.exp(-0.5 * (avg.scores[source] - avg.scores[other]))
        assert w[source] / w[other] == pytest.approx(ratio, rel=1e-9)


def test_generating_model_wins_most_replicates():
    """Over twelve seeded replicates of the residual noise, the generating model gets the
    larger Laplace weight in most (11 of 12 each way at the time of writing); weights
    that ignored the fit, or preferred the worse one, would not."""
    wins = {GOTI: 0, THOMSON: 0}
    for seed in range(12):
        for source in (GOTI, THOMSON):
            patient = simulated_patient(source, seed)
            fits = [dosing.map_estimate(m, patient, curve_points=0) for m in (GOTI, THOMSON)]
            w = dosing.model_weights(fits)
            assert w.sum() == pytest.approx(1.0, abs=1e-12)
            wins[source] += int(w[(GOTI, THOMSON).index(source)] > 0.5)
    assert wins[GOTI] >= 10 and wins[THOMSON] >= 10, wins


@pytest.mark.slow  # from_goti/from_thomson: two averaged recommendations, ~80 s to build on 2 cores
def test_averaged_exposure_is_the_weighted_mean_and_within_limits(from_goti):
    avg = from_goti
    assert avg.regimen is not None and avg.reachable
    per = avg.per_model
    for k in ("trough", "peak", "auc24", "target"):
        assert avg.predicted[k] == pytest.approx(sum(avg.weights[m] * per[m][k] for m in avg.models), rel=1e-12)
    # each model's own exposure of the averaged regimen, recomputed through the public API
    for m in avg.models:
        r = avg.regimen
        own = dosing.steady_state_exposure(avg.fits[m], r.dose, r.interval, r.infusion_duration, target=avg.target)
        assert own["target"] == pytest.approx(per[m]["target"], rel=1e-12)
    assert avg.target.attained(avg.predicted["target"])
    assert 0.0 <= avg.pta <= 1.0
    # the fitted curves: the averaged IPRED is the weighted mean of the models'
    c = avg.curve
    expected = sum(avg.weights[m] * c[f"IPRED_{m}"] for m in avg.models)
    np.testing.assert_allclose(c["IPRED_averaged"], expected, rtol=1e-12)
    # side by side, JSON-ready, and printable
    table = avg.table()
    assert list(table["model"]) == [GOTI, THOMSON] and "param_cl" in table
    out = json.loads(json.dumps(avg.to_dict()))
    assert out["best"] == GOTI and out["recommendation"]["dose"] == avg.regimen.dose
    assert "Averaged recommendation" in avg.summary()


def test_dose_limits_are_hard_under_averaging():
    # AUC24 400-600 needs about 1,700-2,700 mg a day here (CL ~4.5 L/h): out of reach at
    # 500 mg per dose and 1,000 mg per 24 h.
    patient = simulated_patient(GOTI)
    avg = dosing.average([GOTI, THOMSON], patient, TARGET, n_samples=N_SAMPLES, n_draws=100,
                         dose_max=500.0, max_daily_dose=1000.0)
    r = avg.regimen
    assert r.dose <= 500.0 and r.dose * math.ceil(24.0 / r.interval - 1e-9) <= 1000.0
    assert not avg.reachable and "no regimen within the limits" in avg.message
    assert avg.predicted["auc24"] < 400.0


def test_one_model_alone_gives_its_own_recommendation():
    patient = simulated_patient(GOTI)
    avg = dosing.average([GOTI], patient, TARGET, n_samples=N_SAMPLES)
    rec = dosing.recommend(GOTI, patient, TARGET, n_samples=N_SAMPLES)
    assert avg.weights == {GOTI: 1.0}
    assert avg.regimen == rec.regimen
    assert avg.pta == rec.pta and avg.predicted == pytest.approx(rec.predicted, rel=1e-12)
    assert avg.reachable == rec.reachable


def test_no_levels_gives_equal_laplace_weights():
    """Without levels every fit is its prior: the Laplace weights are the prior's (equal)."""
    patient = simulated_patient(GOTI)
    patient["levels"] = []
    avg = dosing.average([GOTI, THOMSON], patient, TARGET, n_samples=N_SAMPLES, n_draws=100)
    assert avg.weights[GOTI] == pytest.approx(0.5, abs=1e-9)


def test_bad_input_is_refused_with_a_clear_error():
    patient = simulated_patient(GOTI)
    with pytest.raises(dosing.AveragingError, match="one drug.*amikacin"):
        dosing.average([GOTI, "amikacin_burdet2015"], patient, TARGET)
    goti = library.load(GOTI)
    other_unit = types.SimpleNamespace(model=goti.model, METADATA={
        **goti.METADATA, "name": "vancomycin_in_ug_per_l",
        "units": {**goti.METADATA["units"], "concentration": "ug/L"}})
    with pytest.raises(dosing.AveragingError, match="concentration units differ"):
        dosing.average([GOTI, other_unit], patient, TARGET)
    with pytest.raises(dosing.AveragingError, match="scheme"):
        dosing.average([GOTI, THOMSON], patient, TARGET, scheme="bic")
    with pytest.raises(dosing.AveragingError, match="at least one model"):
        dosing.average([], patient, TARGET)
    with pytest.raises(dosing.AveragingError, match="each model once"):
        dosing.average([GOTI, GOTI], patient, TARGET)
    with pytest.raises(dosing.AveragingError, match="no model 'vancomycin_nobody'"):
        dosing.average([GOTI, "vancomycin_nobody"], patient, TARGET)
    with pytest.raises(dosing.AveragingError, match="loading_dose"):
        dosing.average([GOTI, THOMSON], patient, TARGET, loading_dose=True)
    with pytest.raises(dosing.AveragingError, match="needs its METADATA"):
        dosing.average([goti.build(error_form="sd"), THOMSON], patient, TARGET)


@pytest.mark.slow  # from_goti/from_thomson: two averaged recommendations, ~80 s to build on 2 cores
def test_command_line_averages_through_the_service(from_goti, tmp_path, capsys):
    """``pkmix dose --model A,B --json``: exit 0, the service's keys, weights summing to 1
    and equal to the library's `average` for the same options (from_goti), audited as
    the question "average" under both models, and replayed to the same numbers."""
    from pkmix.cli import main
    from pkmix.dosing import audit
    from pkmix.dosing.service import replay

    path = tmp_path / "patient.json"
    path.write_text(json.dumps(simulated_patient(GOTI)))
    db = tmp_path / "audit.sqlite3"
    code = main(["dose", "--model", f"{GOTI},{THOMSON}", "--patient", str(path), "--target", TARGET,
                 "--samples", str(N_SAMPLES), "--json", "--audit-db", str(db)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {"question", "average", "warnings", "timing", "audit_id"} <= set(out)
    avg = out["average"]
    assert {"models", "weights", "scheme", "recommendation", "per_model", "side_by_side"} <= set(avg)
    assert avg["models"] == [GOTI, THOMSON] and avg["scheme"] == "laplace"
    assert sum(avg["weights"].values()) == pytest.approx(1.0, abs=1e-12)
    for name in (GOTI, THOMSON):
        assert avg["weights"][name] == pytest.approx(from_goti.weights[name], rel=1e-9)
    assert avg["recommendation"]["dose"] == from_goti.regimen.dose
    row = audit.fetch(out["audit_id"], str(db))
    assert row["question"] == "average" and row["model"] == f"{GOTI},{THOMSON}"
    again = replay(out["audit_id"], str(db))
    assert again["identical"], again["differences"]
    assert not again["model_changed"]


def test_service_average_refuses_bad_requests_naming_the_field():
    from pkmix.dosing.service import RequestError, average

    patient = simulated_patient(GOTI)
    cases = [({"model": GOTI}, "model", "at least two models"),
             ({"model": [GOTI, GOTI]}, "model", "each model once"),
             ({"model": f"{GOTI},"}, "model", "empty model name"),
             ({"model": [GOTI, THOMSON], "scheme": "bic"}, "scheme", "laplace, ofv, aic"),
             ({"model": [GOTI, THOMSON], "samples": 0}, "samples", "at least 1"),
             ({"model": [GOTI, THOMSON], "interval": [12, -1]}, "interval[1]", "above 0"),
             ({"model": [GOTI, THOMSON], "loading": True}, "loading", "unknown option")]
    for extra, field, text in cases:
        with pytest.raises(RequestError, match=text) as err:
            average({"patient": patient, "audit": False, **extra})
        assert err.value.field == field

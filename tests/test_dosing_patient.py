"""Patient input: the JSON and CSV forms, unit conversion, and a clear error for every fault.

Every fault is a PatientError naming the field, raised before anything reaches JAX.
Conversions are checked against hand-computed values (1 lb = 0.45359237 kg, 1 mg/dL of
creatinine = 88.42 umol/L, 1 ng/mL = 1 ug/L = 0.001 mg/L).
"""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest

from pkmix.dosing import PatientError, PatientWarning, load_patient, map_estimate
from pkmix.dosing.patient import bind, model_info

MODEL = "vancomycin_goti2018"


def base():
    return {"id": "t",
            "covariates": {"WT": {"value": 80, "unit": "kg"}, "SCR": {"value": 1.0, "unit": "mg/dL"},
                           "AGE": 60, "SEX": "male", "DIAL": 0},
            "doses": [{"time": 0, "amount": 1000, "route": "iv", "duration": 1},
                      {"time": 12, "amount": 1000, "route": "iv", "duration": 1}],
            "levels": [{"time": 11.5, "value": 10.0}, {"time": 14.0, "value": 25.0}]}


def bound(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PatientWarning)
        return bind(model_info(MODEL), load_patient(data))


def fails(data, field, match):
    with pytest.raises(PatientError, match=match) as e:
        bound(data)
    assert e.value.field == field
    return e.value


def cov(b, name):
    return b.covariates_now[name]


# ----------------------------------------------------------------------------- happy path
def test_records_in_model_units():
    b = bound(base())
    assert cov(b, "SCR") == pytest.approx(88.42)  # mg/dL -> umol/L, the model's unit
    assert cov(b, "SEX") == 1.0
    rec = b.records
    np.testing.assert_array_equal(rec["EVID"], [1, 0, 1, 0])
    np.testing.assert_array_equal(rec["TIME"], [0, 11.5, 12, 14])
    np.testing.assert_array_equal(rec["CMT"], [1, 0, 1, 0])  # iv into central (CMT 1 of this model)
    assert b.last_dose == {"time": 12.0, "amount": 1000.0, "duration": 1.0, "interval": 12.0, "cmt": 1}


def test_unit_conversions():
    d = base()
    d["covariates"]["WT"] = {"value": 176.37, "unit": "lb"}
    d["covariates"]["AGE"] = {"value": 720, "unit": "months"}
    d["covariates"]["SCR"] = {"value": 88.42, "unit": "µmol/L"}
    d["doses"][0] = {"time": 0, "amount": 1.5, "unit": "g", "duration": 90, "duration_unit": "min"}
    d["levels"][0] = {"time": 11.5, "value": 10000, "unit": "ng/mL"}
    b = bound(d)
    assert cov(b, "WT") == pytest.approx(176.37 * 0.45359237)
    assert cov(b, "AGE") == pytest.approx(60.0)
    assert cov(b, "SCR") == pytest.approx(88.42)
    assert b.records["AMT"][0] == pytest.approx(1500.0)
    assert b.records["DUR"][0] == pytest.approx(1.5)
    assert b.records["DV"][1] == pytest.approx(10.0)


def test_time_unit_and_rate():
    d = base()
    d["time_unit"] = "min"
    d["doses"] = [{"time": 0, "amount": 1000, "rate": 1000 / 60}, {"time": 720, "amount": 1000, "duration": 60}]
    d["levels"] = [{"time": 690, "value": 10.0}]
    b = bound(d)
    np.testing.assert_allclose(b.records["TIME"], [0, 11.5, 12])
    np.testing.assert_allclose(b.records["DUR"], [1.0, 0, 1.0])


def test_datetimes_and_reference():
    d = base()
    d["doses"] = [{"datetime": "2024-03-04T08:00", "amount": 1000, "duration": 1},
                  {"datetime": "2024-03-04T20:00", "amount": 1000, "duration": 1}]
    d["levels"] = [{"datetime": "2024-03-04T19:30", "value": 10.0}, {"datetime": "2024-03-04T22:00", "value": 25.0}]
    p = load_patient(d)
    assert p.reference_time.isoformat() == "2024-03-04T08:00:00"
    b = bound(d)
    np.testing.assert_allclose(b.records["TIME"], [0, 11.5, 12, 14])
    assert p.datetime_of(26).isoformat() == "2024-03-05T10:00:00"


def test_series_steady_state_and_blq_forms():
    d = base()
    d["doses"] = [{"time": 0, "amount": 1000, "duration": 1, "steady_state": True, "interval": 12},
                  {"time": 12, "amount": 1000, "duration": 1, "interval": 12, "count": 3}]
    d["levels"] = [{"time": 35.5, "value": "<5"}, {"time": 37, "value": 1.0, "lloq": 2.0},
                   {"time": 38, "blq": True, "lloq": 2.0}]
    b = bound(d)
    np.testing.assert_array_equal(b.records["TIME"], [0, 12, 24, 35.5, 36, 37, 38])
    np.testing.assert_array_equal(b.records["SS"], [1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(b.records["II"], [12, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(b.records["BLQ"], [False, False, False, True, False, True, True])
    np.testing.assert_array_equal(b.records["LLOQ"][[3, 5, 6]], [5, 2, 2])


def test_time_varying_covariate_records():
    d = base()
    d["covariates"]["SCR"] = {"unit": "mg/dL", "values": [{"time": 0, "value": 1.0}, {"time": 13, "value": 2.0}]}
    b = bound(d)
    # An EVID 2 record at each measurement (first at its time); each record the latest value.
    np.testing.assert_array_equal(b.records["EVID"], [2, 1, 0, 1, 2, 0])
    j = list(model_info(MODEL).model.covariates).index("SCR")
    np.testing.assert_allclose(b.records["COV"][:, j], [88.42, 88.42, 88.42, 88.42, 176.84, 176.84])


def test_categories_and_synonyms():
    for text, code in (("female", 0.0), ("F", 0.0), ("M", 1.0), (1, 1.0)):
        d = base()
        d["covariates"]["SEX"] = text
        assert cov(bound(d), "SEX") == code


def test_a_priori_patient_has_one_record():
    d = base()
    d["doses"], d["levels"] = [], []
    b = bound(d)
    assert b.n_records == 1 and b.records["EVID"][0] == 2
    assert cov(b, "WT") == 80.0


# ----------------------------------------------------------------------------- faults
def test_level_before_any_dose():
    d = base()
    d["levels"][0]["time"] = -1.0
    fails(d, "levels[0].time", "not after the first dose")
    d["levels"][0]["time"] = 0.0
    fails(d, "levels[0].time", "before any dose cannot be interpreted")


def test_level_without_doses():
    d = base()
    d["doses"] = []
    fails(d, "levels[0]", "a level but no dose")


def test_negative_concentration():
    d = base()
    d["levels"][1]["value"] = -3.0
    fails(d, "levels[1].value", "negative concentration")


def test_missing_concentration():
    d = base()
    d["levels"][0]["value"] = None
    fails(d, "levels[0].value", "missing concentration")
    del d["levels"][0]["value"]
    fails(d, "levels[0].value", "missing concentration")


def test_units_that_do_not_match():
    d = base()
    d["covariates"]["WT"] = {"value": 80, "unit": "mg/dL"}
    fails(d, "covariates.WT.unit", "does not match WT")
    d = base()
    d["covariates"]["WT"] = {"value": 12, "unit": "stone"}
    fails(d, "covariates.WT.unit", "does not match")
    d = base()
    d["levels"][0]["unit"] = "mg/kg"
    fails(d, "levels[0].unit", "not a known unit")
    d = base()
    d["levels"][0]["unit"] = "mmol/L"  # molar: needs the model's molar mass
    fails(d, "levels[0].unit", "molar mass")
    d = base()
    d["doses"][0]["unit"] = "mL"
    fails(d, "doses[0].unit", "not a known unit")
    d = base()
    d["covariates"]["SEX"] = {"value": 1, "unit": "kg"}
    fails(d, "covariates.SEX.unit", "category")


def test_creatinine_without_unit_is_refused_when_ambiguous():
    d = base()
    d["covariates"]["SCR"] = 1.1  # mg/dL by the look of it; the model wants umol/L
    fails(d, "covariates.SCR.unit", "give the unit")
    d["covariates"]["SCR"] = 97.0  # plausible in umol/L
    assert cov(bound(d), "SCR") == 97.0


def test_impossible_weight_and_age():
    for name, value, unit in (("WT", 0, "kg"), ("WT", 800, "kg"), ("WT", 2000, "lb"), ("AGE", 150, "years"),
                              ("AGE", -2, "years")):
        d = base()
        d["covariates"][name] = {"value": value, "unit": unit}
        fails(d, f"covariates.{name}", f"impossible {'weight' if name == 'WT' else 'age'}")


def test_missing_covariate():
    d = base()
    del d["covariates"]["SCR"]
    e = fails(d, "covariates.SCR", "missing")
    assert "umol/L" in str(e)


def test_unknown_category():
    d = base()
    d["covariates"]["SEX"] = "unknown"
    fails(d, "covariates.SEX", "not one of SEX's categories")


def test_covariate_outside_validated_range_warns_and_is_reported():
    d = base()
    d["covariates"]["WT"] = {"value": 260, "unit": "kg"}
    with pytest.warns(PatientWarning, match="WT = 260 is outside the range"):
        b = bind(model_info(MODEL), load_patient(d))
    assert any("WT = 260" in w for w in b.warnings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PatientWarning)
        fit = map_estimate(MODEL, d, curve_points=0)
    assert any("WT = 260" in w for w in fit.warnings)
    # A derived covariate (CrCL, from the model file's derived_covariates) outside its range.
    d = base()
    d["covariates"]["SCR"] = {"value": 25.0, "unit": "mg/dL"}  # CrCL 3.6 mL/min, below 4
    with pytest.warns(PatientWarning, match="CRCL"):
        bind(model_info(MODEL), load_patient(d))


def test_route_faults():
    d = base()
    d["doses"][0]["route"] = "intramuscular"
    fails(d, "doses[0].route", "unknown route")
    d = base()
    d["doses"][0] = {"time": 0, "amount": 500, "route": "oral"}
    fails(d, "doses[0].route", "no absorption compartment")


def test_dose_faults():
    d = base()
    d["doses"][0]["amount"] = -5
    fails(d, "doses[0].amount", "positive")
    d = base()
    d["doses"][0] = {"time": 0, "amount": 1000, "duration": 13, "interval": 12, "count": 2}
    fails(d, "doses[0].duration", "not shorter than the dosing interval")
    d = base()
    d["doses"][0] = {"time": 0, "amount": 1000, "count": 3}
    fails(d, "doses[0].interval", "needs a positive dosing interval")
    d = base()
    d["doses"][0] = {"amount": 1000}
    fails(d, "doses[0]", "needs a 'time'")
    d = base()
    d["doses"][0] = {"time": 0, "amount": 1000, "route": "infusion"}
    fails(d, "doses[0].duration", "needs a duration")
    d = base()
    d["doses"][0]["datetime"] = "4th of March"
    fails(d, "doses[0].datetime", "not an ISO date-time")


def test_structure_faults(tmp_path):
    d = base()
    d["weight"] = 80
    fails(d, "weight", "unknown field")
    bad = tmp_path / "p.json"
    bad.write_text("{not json")
    with pytest.raises(PatientError, match="not valid JSON"):
        load_patient(bad)
    with pytest.raises(FileNotFoundError):
        load_patient(tmp_path / "missing.json")
    d = base()
    d["covariates"]["WT"] = {"values": []}
    fails(d, "covariates.WT.values", "non-empty list")


def test_json_file_round_trip(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(base()))
    p = load_patient(path, model=MODEL)
    assert p.source == str(path) and len(p.doses) == 2


# --------------------------------------------------------------------------- NONMEM CSV
CSV = ("ID,TIME,AMT,DUR,DV,EVID,MDV,WT,SCR,AGE,SEX,DIAL\n"
       "1,0,1000,1,.,1,1,80,88.42,60,1,0\n1,11.5,0,0,10,0,0,80,88.42,60,1,0\n"
       "1,12,1000,1,.,1,1,80,88.42,60,1,0\n1,14,0,0,25,0,0,80,88.42,60,1,0\n")


def test_csv_patient_matches_json(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(CSV)
    b_csv = bound(str(path))
    b_json = bound(base())
    for k in ("TIME", "AMT", "DUR", "EVID", "DV", "OBS"):
        np.testing.assert_allclose(b_csv.records[k], b_json.records[k])
    np.testing.assert_allclose(b_csv.records["COV"], b_json.records["COV"])


def test_csv_faults(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(CSV + "2,0,1000,1,.,1,1,80,88.42,60,1,0\n")
    with pytest.raises(PatientError, match="one patient") as e:
        load_patient(path)
    assert e.value.field == "ID"
    path.write_text(CSV.replace("1,11.5,0,0,10,", "1,11.5,0,0,-10,"))
    with pytest.raises(PatientError, match="negative concentration") as e:
        load_patient(path)
    assert e.value.field == "record 2, DV"
    path.write_text(CSV.replace("1,11.5,0,0,10,", "1,11.5,0,0,.,"))
    with pytest.raises(PatientError, match="missing DV") as e:
        load_patient(path)
    assert e.value.field == "record 2, DV"
    text = ("ID,TIME,AMT,DV,EVID,MDV,WT,SCR,AGE,SEX,DIAL\n1,0,0,5,0,0,80,88,60,1,0\n"
            "1,1,1000,.,1,1,80,88,60,1,0\n")
    path.write_text(text)
    with pytest.raises(PatientError, match="before any dose"):
        load_patient(path)
    path.write_text(CSV.replace("WT,", "WEIGHT,"))
    with pytest.raises(PatientError, match="column missing") as e:
        bound(str(path))
    assert e.value.field == "WT"
    path.write_text(CSV.replace(",80,", ",900,"))
    with pytest.raises(PatientError, match="impossible weight"):
        bound(str(path))


def test_no_fault_reaches_jax():
    # Each fault above is raised by map_estimate too, as the same PatientError.
    d = copy.deepcopy(base())
    d["levels"][1]["value"] = -1
    with pytest.raises(PatientError, match="levels\\[1\\].value"):
        map_estimate(MODEL, d)

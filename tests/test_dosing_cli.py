"""``pkmix dose``: text and JSON output, the plot, and exit status 2 with a clear message
for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pkmix.cli import main

ROOT = Path(__file__).resolve().parents[1]
PATIENT = ROOT / "examples" / "vancomycin_tdm" / "patient.json"


@pytest.fixture(autouse=True)
def audit_db(tmp_path, monkeypatch):
    """Every answer is audited: into a temporary database, not the user's."""
    path = tmp_path / "audit.sqlite3"
    monkeypatch.setenv("PKMIX_AUDIT_DB", str(path))
    return path


def run(capsys, *args):
    code = main(["dose", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_text_output(capsys):
    code, out, _ = run(capsys, "--model", "vancomycin_goti2018", "--patient", str(PATIENT),
                       "--target", "auc24=400:600", "--interval", "12,24")
    assert code == 0
    for text in ("MAP estimate", "95% CI", "Current regimen", "Recommendation:", "probability of target attainment"):
        assert text in out


def test_json_output(capsys, tmp_path):
    png = tmp_path / "fit.png"
    code, out, _ = run(capsys, "--model", "vancomycin_goti2018", "--patient", str(PATIENT), "--json",
                       "--threshold", "15", "--plot", str(png))
    assert code == 0
    doc = json.loads(out)
    rec = doc["recommendation"]
    assert rec["recommendation"]["dose"] <= 4000
    assert 0 <= rec["probability_of_target_attainment"] <= 1
    assert rec["next_dose"]["status"] == "found"
    assert set(doc["map"]["parameters"]) >= {"cl", "v1", "v2", "q"}
    assert doc["timing"]["map_s"] > 0
    assert png.exists() and png.stat().st_size > 10_000


def test_bad_patient_exits_2_naming_the_field(capsys, tmp_path):
    bad = json.loads(PATIENT.read_text())
    bad["levels"][0]["value"] = -4
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    code, out, err = run(capsys, "--model", "vancomycin_goti2018", "--patient", str(path))
    assert code == 2
    assert "levels[0].value: negative concentration" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("args,message", [
    (("--model", "no_such_model"), "neither a model file nor a model in the library"),
    (("--model", "vancomycin_goti2018", "--target", "auc24"), "expected KIND"),
    (("--model", "vancomycin_goti2018", "--interval", "8,x"), "comma-separated numbers"),
])
def test_bad_arguments_exit_2(capsys, args, message):
    code, _, err = run(capsys, *args, "--patient", str(PATIENT))
    assert code == 2
    assert message in err


def test_missing_patient_file(capsys, tmp_path):
    code, _, err = run(capsys, "--model", "vancomycin_goti2018", "--patient", str(tmp_path / "nope.json"))
    assert code == 2 and "not found" in err


def test_unreachable_target_is_reported(capsys):
    code, out, _ = run(capsys, "--model", "vancomycin_goti2018", "--patient", str(PATIENT),
                       "--target", "auc24=3000:4000", "--dose-max", "2000")
    assert code == 0
    assert "NOT REACHABLE" in out and "cannot be reached" in out

"""Progress display: quiet for short work and off a terminal, throttled lines otherwise,
for simulations (chunk by chunk) and the diagnostics program (while it runs)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import pkmix
from pkmix import _progress

from conftest import oral_one_compartment

DATA = Path(__file__).parent / "data"


@pytest.fixture
def no_delay(monkeypatch):
    """Lines from the first moment (the real rule waits 2 s)."""
    monkeypatch.setattr(_progress, "AFTER_S", 0.0)


def test_lines_are_throttled_and_quiet_when_not_wanted(capsys, no_delay, monkeypatch):
    monkeypatch.setattr(_progress, "EVERY_S", 60.0)
    line = _progress.ProgressLine(True)
    line.report("first")
    line.report("second")  # within EVERY_S of the first: not due
    line.report("last", force=True)
    out = capsys.readouterr().out.splitlines()
    assert [x.split("   (")[0].strip() for x in out] == ["first", "last"]
    assert out[0].endswith(" s)")
    _progress.ProgressLine(False).report("never", force=True)
    # Default: only on a terminal; pytest's captured output is not one.
    _progress.ProgressLine(None).report("never either", force=True)
    assert capsys.readouterr().out == ""


def test_short_work_prints_nothing(capsys):
    line = _progress.ProgressLine(True)  # the real 2 s rule
    line.report("too soon", force=True)
    with _progress.while_running("quick", True):
        pass
    assert capsys.readouterr().out == ""


def test_while_running_reports_until_the_work_ends(capsys, no_delay, monkeypatch):
    monkeypatch.setattr(_progress, "EVERY_S", 0.02)
    with _progress.while_running("long call", True):
        time.sleep(0.3)
    out = capsys.readouterr().out.splitlines()
    assert len(out) >= 3 and all(x.strip().startswith("long call ...") for x in out[:-1])
    assert out[-1].strip().startswith("long call, finished")


def test_simulation_reports_replicates_done(capsys, no_delay):
    model = oral_one_compartment({"tka": 0.45, "tcl": 1.0, "tv": 3.45}, {"eta_ka": 0.6, "eta_cl": 0.3, "eta_v": 0.1},
                                 {"add_sd": 0.7}, pkmix.additive("add_sd"))
    pkmix.simulate(model, DATA / "theo_sd.csv", n=3, chunk_size=1, progress=True)
    out = capsys.readouterr().out
    assert "simulating: 3 of 3 replicates done, finished" in out
    pkmix.simulate(model, DATA / "theo_sd.csv", n=3, chunk_size=1, progress=False)
    assert capsys.readouterr().out == ""


def test_diagnostics_report_while_they_run(capsys, no_delay):
    model = oral_one_compartment({"tka": 0.45, "tcl": 1.0, "tv": 3.45}, {"eta_ka": 0.6, "eta_cl": 0.3, "eta_v": 0.1},
                                 {"add_sd": 0.7}, pkmix.additive("add_sd"))
    pkmix.evaluate(model, DATA / "theo_sd.csv", npde=True, npde_samples=50, progress=True)
    assert "diagnostics (NPDE from 50 simulations per subject), finished" in capsys.readouterr().out

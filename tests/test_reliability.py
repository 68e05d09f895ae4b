"""No traceback, no silent answer: every command, every bad input (issue 13).

One test per class of fault through the command line (exit status, the message, and
no "Traceback"), property tests over random NONMEM records and model/data mismatches
(host-side validation: nothing is compiled per example), and NONMEM's steady-state
constant infusion against its analytic solution.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pkmix
from pkmix.cli import main

ROOT = Path(__file__).resolve().parents[1]
THEO_MODEL = ROOT / "examples" / "theophylline" / "model.py"
THEO_DATA = ROOT / "tests" / "data" / "theo_sd.csv"


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """``pkmix ARGV`` in this process: (exit status, stdout, stderr); never a traceback."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse refusing an argument
        code = e.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err, captured.out + captured.err
    return code, captured.out, captured.err


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# -- class 1: model files that do not load, in every command that takes a model ------------

BROKEN_MODELS = {
    "syntax": ("x = (1,\n", ["syntax error"], ":1:"),
    "not_a_model": ("model = 42\n", ["'model' is an int, not a pkmix.Model"], None),
    "missing_import": ("import not_a_module_pkmix_test\n", ["ModuleNotFoundError", "not_a_module_pkmix_test"], ":1:"),
}


def _argv_for(command: str, model: Path, tmp_path: Path) -> list:
    data = THEO_DATA
    return {
        "check": ["check", data, "--model", model],
        "fit": ["fit", model, data, "--out", tmp_path / "fit"],
        "evaluate": ["evaluate", model, data],
        "predict": ["predict", model, data],
        "simulate": ["simulate", model, data, "--out", tmp_path / "sim"],
        "dose": ["dose", "--model", model, "--patient", tmp_path / "patient.json"],
    }[command]


@pytest.mark.parametrize("fault", sorted(BROKEN_MODELS))
@pytest.mark.parametrize("command", ["check", "fit", "evaluate", "predict", "simulate", "dose"])
def test_model_that_does_not_load(command, fault, tmp_path, capsys):
    text, wanted, line = BROKEN_MODELS[fault]
    model = write(tmp_path / f"{fault}.py", text)
    code, out, err = run_cli(_argv_for(command, model, tmp_path), capsys)
    assert code == 2
    assert err.startswith("pkmix: error: ") and f"{fault}.py" in err
    for w in wanted:
        assert w in err
    if line:
        assert line in err  # file:line
    assert not (tmp_path / "fit").exists() and not (tmp_path / "sim").exists()


def test_report_names_a_model_that_no_longer_loads(tmp_path, capsys):
    model = write(tmp_path / "broken.py", "x = (1,\n")
    run = fake_run(tmp_path / "run", model_path=str(model))
    code, out, _ = run_cli(["report", run, "--no-vpc"], capsys)
    assert code == 0
    html = (run / "report.html").read_text()
    assert "broken.py:1: syntax error" in html


def test_design_file_that_does_not_load(tmp_path, capsys):
    design = write(tmp_path / "design.py", "import pkmix\ndesign = 'not a design'\n")
    code, _, err = run_cli(["simulate", THEO_MODEL, design, "--out", tmp_path / "sim"], capsys)
    assert code == 2 and "'design' is a str, not a pkmix.TrialDesign" in err
    design = write(tmp_path / "design2.py", "import pkmix\n\nraise RuntimeError('no trial today')\n")
    code, _, err = run_cli(["simulate", THEO_MODEL, design, "--out", tmp_path / "sim"], capsys)
    assert code == 2 and "design2.py:3: RuntimeError: no trial today" in err


# -- class 2: output paths checked before the work ---------------------------------------


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "a_file"
    path.write_text("x\n")
    return path


@pytest.mark.parametrize("argv, wanted", [
    (["fit", THEO_MODEL, THEO_DATA, "--out", "{file}/run"], "{file} is a file, not a folder"),
    (["evaluate", THEO_MODEL, THEO_DATA, "--out", "{file}"], "{file} is a file, not a folder"),
    (["predict", THEO_MODEL, THEO_DATA, "--out", "{dir}"], "{dir} is a folder; give a file name"),
    (["simulate", THEO_MODEL, THEO_DATA, "--out", "{file}/x/y"], "{file} is a file, not a folder"),
    (["report", "{dir}", "--out", "{dir}"], "{dir} is a folder; give a file name"),
    (["dose", "--model", "vancomycin_goti2018", "--patient", "p.json", "--plot", "{dir}"],
     "{dir} is a folder; give a file name"),
])
def test_output_path_refused_before_the_work(argv, wanted, tmp_path, a_file, capsys):
    fill = {"file": str(a_file), "dir": str(tmp_path)}
    code, _, err = run_cli([str(a).format(**fill) for a in argv], capsys)
    assert code == 2
    assert "argument --out" in err or "argument --plot" in err
    assert wanted.format(**fill) in err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_output_in_a_folder_without_permission(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = run_cli(["predict", THEO_MODEL, THEO_DATA, "--out", locked / "t.csv"], capsys)
    assert code == 2 and "no permission to write in" in err


def test_fit_report_needs_out_and_to_json_makes_folders(tmp_path, capsys):
    code, _, err = run_cli(["fit", THEO_MODEL, THEO_DATA, "--report"], capsys)
    assert code == 2 and "--report writes DIR/report.html: give the folder with --out DIR" in err
    # The README's quick start writes into out/theophylline/, which a fresh checkout lacks.
    result = pkmix.report.load_run(fake_run(tmp_path / "run"))
    target = tmp_path / "out" / "theophylline" / "results.json"
    result.to_json(target)
    assert json.loads(target.read_text())["ofv"] == pytest.approx(123.4)


# -- class 3: numeric arguments range-checked at parse time ----------------------------------

DOSE = ["dose", "--model", "vancomycin_goti2018", "--patient", "p.json"]


@pytest.mark.parametrize("argv, option", [
    (["fit", THEO_MODEL, THEO_DATA, "--npde-samples", "0"], "--npde-samples"),
    (["fit", THEO_MODEL, THEO_DATA, "--max-iter", "-1"], "--max-iter"),
    (["evaluate", THEO_MODEL, THEO_DATA, "--seed", "-3"], "--seed"),
    (["simulate", THEO_MODEL, THEO_DATA, "--n", "0"], "--n"),
    (["simulate", THEO_MODEL, THEO_DATA, "--lloq", "-0.5"], "--lloq"),
    (["simulate", THEO_MODEL, THEO_DATA, "--n", "two"], "--n"),
    (["report", ".", "--n-sim", "0"], "--n-sim"),
    (DOSE + ["--samples", "0"], "--samples"),
    (DOSE + ["--samples", "-5"], "--samples"),
    (DOSE + ["--threshold", "-1"], "--threshold"),
    (DOSE + ["--dose-max", "0"], "--dose-max"),
    (DOSE + ["--max-rate", "inf"], "--max-rate"),
    (DOSE + ["--start", "nan"], "--start"),
    (DOSE + ["--interval", "8,-12"], "--interval"),
    (DOSE + ["--infusion", "1,x"], "--infusion"),
])
def test_numeric_option_out_of_range(argv, option, capsys):
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert f"argument {option}" in err
    assert "must be" in err or "expected" in err


# -- class 4: modelled rates and durations the model does not define -------------------------

RATE_DATA = """\
ID,TIME,AMT,RATE,DV,CMT
1,0,100,-1,.,2
1,1,0,0,5,2
1,2,0,0,4,2
2,0,100,-2,.,0
2,1,0,0,5,2
"""


@pytest.mark.parametrize("command", ["check", "predict", "fit"])
def test_modelled_rate_without_r_or_d(command, tmp_path, capsys):
    data = write(tmp_path / "rates.csv", RATE_DATA)
    argv = (["check", data, "--model", THEO_MODEL] if command == "check"
            else [command, THEO_MODEL, data] + (["--out", tmp_path / "run"] if command == "fit" else []))
    code, out, _ = run_cli(argv, capsys)
    assert code == 2
    assert "record 1 (ID 1), column RATE: RATE = -1 (modelled rate) into compartment 2 (central)" in out
    assert "returns no 'r2'" in out
    # CMT 0 is the model's default dose compartment: the depot of an oral model.
    assert "record 4 (ID 2), column RATE: RATE = -2 (modelled duration) into compartment 1 (depot)" in out
    assert "returns no 'd1'" in out
    assert not (tmp_path / "run").exists()


# -- class 5: individual parameters that are not finite at the initial estimates -------------

NAN_MODEL = """\
import jax.numpy as jnp
import pkmix


def individual(p):
    # sqrt of a negative number for every subject lighter than 75 kg
    return {"ka": jnp.exp(p.tka), "cl": jnp.exp(p.tcl + p.eta_cl) * jnp.sqrt(p.WT - 75.0),
            "v": jnp.exp(p.tv)}


model = pkmix.Model(name="nan", theta={"tka": 0.45, "tcl": 1.0, "tv": 3.45}, omega={"eta_cl": 0.3},
                    sigma={"add_sd": 0.7}, individual=individual, structure=pkmix.one_compartment(depot=True),
                    observe=lambda a, p: a.central / p.v, error=pkmix.additive("add_sd"), covariates=["WT"])
"""


def _nan_message(tmp_path) -> tuple[Path, str]:
    """The NaN model's file, and the message that must name its first non-finite piece:
    the first subject of theo_sd.csv under 75 kg, at its first record, with its weight."""
    model = write(tmp_path / "nan_model.py", NAN_MODEL)
    theo = pd.read_csv(THEO_DATA)
    first = theo.index[theo["WT"] < 75][0]
    row = theo.iloc[first]
    n_light = theo.loc[theo["WT"] < 75, "ID"].nunique()
    return model, (f"individual parameter 'cl' = nan at subject ID {int(row['ID'])}, record {first + 1} "
                   f"(TIME {row['TIME']:g}); {n_light - 1} other subject(s) too: check individual() and the "
                   f"covariates there (WT={row['WT']:g})")


def test_nonfinite_prediction_is_named(tmp_path, capsys):
    model, wanted = _nan_message(tmp_path)
    # predict writes the table (NaN as '.'), but fails, naming the piece at fault.
    code, _, err = run_cli(["predict", model, THEO_DATA, "--out", tmp_path / "pred.csv"], capsys)
    assert code == 1
    assert "prediction(s) are not finite" in err and wanted in err


@pytest.mark.slow
def test_nonfinite_objective_at_the_initial_estimates_is_named(tmp_path, capsys):
    model, wanted = _nan_message(tmp_path)
    code, _, err = run_cli(["evaluate", model, THEO_DATA], capsys)
    assert code == 2 and "not finite at the given parameter values" in err and wanted in err
    code, _, err = run_cli(["fit", model, THEO_DATA, "--quiet", "--out", tmp_path / "run"], capsys)
    assert code == 2 and "not finite at the initial estimates" in err and wanted in err
    assert not (tmp_path / "run").exists()


# -- class 6: data without observations ------------------------------------------------------


def test_fit_refuses_data_without_observations(tmp_path, capsys):
    data = write(tmp_path / "doses.csv", "ID,TIME,AMT,DV,CMT\n1,0,100,.,1\n2,0,120,.,1\n")
    code, out, _ = run_cli(["fit", THEO_MODEL, data, "--out", tmp_path / "run"], capsys)
    assert code == 2
    assert "the dataset has no observations (2 records" in out
    assert "converged" not in out and not (tmp_path / "run").exists()


# -- class 7: a row with fewer fields than the header -----------------------------------------


@pytest.mark.parametrize("sep", [",", " "])
def test_short_row_is_reported_as_such(sep, tmp_path, capsys):
    rows = ["ID TIME AMT DV SS WT", "1 0 100 . 0 70", "1 1 0 5 70", "# a comment", "1 2 0 4 0 70"]
    data = write(tmp_path / "short.csv", "\n".join(r.replace(" ", sep) for r in rows) + "\n")
    code, out, _ = run_cli(["check", data], capsys)
    assert code == 2
    assert "record 2 (ID 1): record has 5 field(s), the header 6" in out
    assert "SS" not in out.split("\n", 1)[1]  # no "unknown SS value 70" from shifted values


# -- class 8: pipes ---------------------------------------------------------------------------


def test_closed_pipe_is_quiet_with_the_commands_own_status(tmp_path):
    # 3,000 bad records: a report far longer than a pipe's buffer, so the command is still
    # writing when its reader leaves after one line (like `| head -1`).
    n = 3000
    frame = pd.DataFrame({"ID": np.arange(1, n + 1), "TIME": 0.0, "AMT": -1.0, "DV": "."})
    data = tmp_path / "bad.csv"
    frame.to_csv(data, index=False)
    command = [sys.executable, "-c", "import sys; from pkmix.cli import main; sys.exit(main())"]
    proc = subprocess.Popen(command + ["check", str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, cwd=ROOT)
    first = proc.stdout.readline()
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert first.startswith(f"{n} problems found".encode())
    assert code == 2, err  # check's own status for invalid data, not a BrokenPipeError's 1 or 120
    assert "Traceback" not in err and "BrokenPipe" not in err and err == ""


# -- class 9: reports -------------------------------------------------------------------------


def fake_run(folder: Path, *, converged=True, message="converged: gradient below tolerance",
             model_path: str | None = None) -> Path:
    """A run folder as `pkmix fit --out` writes it, without a fit (results.json only)."""
    folder.mkdir(parents=True, exist_ok=True)
    results = {
        "model": "fake", "method": "focei", "ofv": 123.4, "minus2ll": 140.0, "aic": 131.4, "bic": 135.0,
        "n_subjects": 12, "n_observations": 132, "iterations": 20, "converged": converged, "message": message,
        "theta": {"tcl": 1.0}, "sigma": {"add_sd": 0.7},
        "omega": {"names": ["eta_cl", "eta_v"], "matrix": [[0.1, 0.0999], [0.0999, 0.1]]},
        "covariance_step": {"message": "not requested"}, "timing": {"total_s": 1.0},
    }
    if model_path:
        results["model_path"] = model_path
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def _badge(html: str) -> str:
    start = html.index('<div class="k">status</div>')
    return html[start:html.index("</div></div>", start)]


def test_report_badge_carries_a_boundary_warning(tmp_path, capsys):
    boundary = fake_run(tmp_path / "boundary", message=(
        "converged: gradient below tolerance; estimate near its boundary: the correlation of eta_cl and "
        "eta_v is 0.9990 (OMEGA near singular; the data do not support it)"))
    clean = fake_run(tmp_path / "clean")
    for run in (boundary, clean):
        code, out, _ = run_cli(["report", run, "--no-vpc"], capsys)
        assert code == 0 and "report.html" in out
    badge = _badge((boundary / "report.html").read_text())
    assert 'class="v warn"' in badge and "converged, estimate near its boundary" in badge
    assert 'class="v ok"' in _badge((clean / "report.html").read_text())


@pytest.mark.slow
def test_fit_report_names_report_html(tmp_path, capsys):
    code, out, _ = run_cli(["fit", THEO_MODEL, THEO_DATA, "--out", tmp_path / "run", "--report", "--quiet",
                            "--npde-samples", "50"], capsys)
    assert code in (0, 1)
    assert "report.html" in out.strip().splitlines()[-1]
    assert (tmp_path / "run" / "report.html").is_file()


# -- other inputs of the same classes ----------------------------------------------------------


@pytest.mark.parametrize("name, text, wanted", [
    ("params.json", "{not json", "is not valid JSON"),
    ("params.json", '{"tcl": "fast"}', "'tcl' = 'fast' is not a finite number"),
    ("params.json", "[1, 2]", "expected a JSON object"),
])
def test_broken_parameter_file(name, text, wanted, tmp_path, capsys):
    path = write(tmp_path / name, text)
    code, _, err = run_cli(["predict", THEO_MODEL, THEO_DATA, "--params", path], capsys)
    assert code == 2 and wanted in err


@pytest.mark.parametrize("text, wanted", [
    ("ID,eta_ka,eta_cl,eta_v\n1,0.1,abc,0\n", "row 2, column eta_cl: 'abc' is not a finite number"),
    ("ID,eta_ka\n1,0.1\n", "no column for eta 'eta_cl'"),
    ('a,"b\n', "could not be read as a CSV table"),
])
def test_broken_eta_file(text, wanted, tmp_path, capsys):
    path = write(tmp_path / "etas.csv", text)
    code, _, err = run_cli(["predict", THEO_MODEL, THEO_DATA, "--etas", path], capsys)
    assert code == 2 and wanted in err


def test_report_of_something_that_is_not_a_run(tmp_path, a_file, capsys):
    code, _, err = run_cli(["report", tmp_path / "nowhere"], capsys)
    assert code == 2 and "does not exist: RUN_DIR is the --out folder of `pkmix fit`" in err
    code, _, err = run_cli(["report", a_file], capsys)
    assert code == 2 and "is a file" in err
    (tmp_path / "results.json").write_text('{"theta": [1], "omega": {}, "sigma": {}, "ofv": 1, '
                                           '"method": "fo", "model": "m"}')
    code, _, err = run_cli(["report", tmp_path], capsys)
    assert code == 2 and "'theta' must be an object of numbers" in err


def test_dataset_that_is_a_folder_or_not_text(tmp_path, capsys):
    code, out, _ = run_cli(["check", tmp_path], capsys)
    assert code == 2 and "is a folder, not a data file" in out
    binary = tmp_path / "data.csv"
    binary.write_bytes(b"ID,TIME\n\xff\xfe\x00\x01\n")
    code, out, _ = run_cli(["check", binary], capsys)
    assert code == 2 and "not a text file" in out


# -- property tests: random records and random model/data mismatches -------------------------


def _model(n_cmt_depot: bool, modifiers: tuple[str, ...]):
    """A model whose individual() returns the given dose modifiers (e.g. ("r1", "d2"))."""

    def individual(p):
        out = {"cl": jnp.exp(p.tcl), "v": jnp.exp(p.tv)}
        if n_cmt_depot:
            out["ka"] = jnp.exp(p.tka)
        out.update({m: jnp.exp(p.tcl) for m in modifiers})
        return out

    return pkmix.Model(theta={"tcl": 1.0, "tv": 3.0, "tka": 0.0}, omega={"eta": 0.1}, sigma={"add": 1.0},
                       individual=individual, structure=pkmix.one_compartment(depot=n_cmt_depot),
                       observe=lambda a, p: a.central / p.v, error=pkmix.additive("add"))


MODIFIER_SETS = [(), ("r1",), ("d1",), ("r2", "d1"), ("r1", "r2", "d1", "d2")]


@pytest.fixture(scope="module")
def models():
    models = {}
    for depot in (False, True):
        for mods in MODIFIER_SETS:
            if not depot and any(m.endswith("2") for m in mods):
                continue
            models[(depot, mods)] = _model(depot, mods)
    return models


record = st.fixed_dictionaries({
    "TIME": st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0, float("nan")]),
    "AMT": st.sampled_from([0.0, 100.0, -5.0]),
    "RATE": st.sampled_from([0.0, 10.0, -1.0, -2.0, -3.0]),
    "DV": st.sampled_from([float("nan"), 1.5, 0.0]),
    "EVID": st.sampled_from([0, 1, 2, 3, 4, 7, float("nan")]),
    "CMT": st.sampled_from([0, 1, 2, 3, 1.5, -1]),
    "SS": st.sampled_from([0, 0, 1, 2, 3]),
    "II": st.sampled_from([0.0, 0.0, 12.0, -1.0]),
    "ADDL": st.sampled_from([0, 0, 2, -1, 0.5]),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.integers(1, 3), record), min_size=1, max_size=12),
       key=st.sampled_from([(False, ()), (True, ()), (True, ("r2", "d1")), (False, ("r1",))]))
def test_random_records_end_in_a_dataset_or_a_dataset_error(rows, key, models):
    frame = pd.DataFrame([dict(ID=i, **r) for i, r in sorted(rows, key=lambda x: x[0])])
    try:
        ds = pkmix.read_nonmem(frame, model=models[key])
    except pkmix.DatasetError as e:
        assert e.violations
        for v in e.violations:  # every violation says where and which rule
            assert v.rule and v.message
            assert v.record is None or 1 <= v.record <= len(frame)
        return
    except pkmix.DatasetWarning:  # pragma: no cover - warnings are not errors here
        raise
    f = ds.frame
    assert np.isfinite(f["TIME"]).all() and (f["AMT"] >= 0).all()
    assert f["EVID"].isin([0, 1, 2, 3, 4]).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doses=st.lists(st.tuples(st.sampled_from([-1.0, -2.0, 5.0]), st.sampled_from([0, 1, 2])),
                      min_size=1, max_size=6),
       key=st.sampled_from([(d, m) for d in (False, True) for m in MODIFIER_SETS
                            if d or not any(x.endswith("2") for x in m)]))
def test_modelled_rate_mismatch_names_exactly_the_records_at_fault(doses, key, models):
    depot, mods = key
    n_cmt = 2 if depot else 1
    rows = []
    for k, (rate, cmt) in enumerate(doses):
        rows.append(dict(ID=1, TIME=float(k), AMT=100.0, RATE=rate, DV=float("nan"), CMT=cmt))
        rows.append(dict(ID=1, TIME=k + 0.5, AMT=0.0, RATE=0.0, DV=1.0, CMT=n_cmt))
    frame = pd.DataFrame(rows)
    # What NONMEM would need, worked out here: compartment CMT (0: the dose compartment of
    # the structure, the depot when there is one, else the central), and r<n>/d<n> for it.
    expected_missing, expected_bad_cmt = set(), set()
    for k, (rate, cmt) in enumerate(doses):
        rec = 2 * k + 1
        c = cmt if cmt > 0 else 1
        if c > n_cmt:
            expected_bad_cmt.add(rec)
        elif rate < 0 and f"{'r' if rate == -1 else 'd'}{c}" not in mods:
            expected_missing.add(rec)
    try:
        pkmix.read_nonmem(frame, model=models[key])
    except pkmix.DatasetError as e:
        rate_recs = {v.record for v in e.violations if v.column == "RATE"}
        cmt_recs = {v.record for v in e.violations if v.column == "CMT"}
        assert rate_recs == expected_missing and cmt_recs == expected_bad_cmt
        for v in e.violations:
            if v.column == "RATE":
                assert "returns no '" in v.message and v.id == 1
        return
    assert not expected_missing and not expected_bad_cmt


def _covariate_model(covariates: tuple[str, ...]):
    def individual(p):
        cl = jnp.exp(p.tcl)
        for c in covariates:
            cl = cl * getattr(p, c) / 70.0
        return {"cl": cl, "v": jnp.exp(p.tv)}

    return pkmix.Model(theta={"tcl": 1.0, "tv": 3.0}, omega={"eta": 0.1}, sigma={"add": 1.0},
                       individual=individual, structure=pkmix.one_compartment(),
                       observe=lambda a, p: a.central / p.v, error=pkmix.additive("add"), covariates=covariates)


@pytest.fixture(scope="module")
def covariate_models():
    return {c: _covariate_model(c) for c in [("WT",), ("WT", "AGE"), ("CRCL",)]}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(columns=st.sets(st.sampled_from(["WT", "AGE", "CRCL"])),
       key=st.sampled_from([("WT",), ("WT", "AGE"), ("CRCL",)]), missing=st.lists(st.booleans(), min_size=6, max_size=6), lower=st.booleans())
def test_covariate_mismatch_names_the_column_and_records(columns, key, missing, lower, covariate_models):
    n = 6
    frame = pd.DataFrame({"ID": [1, 1, 1, 2, 2, 2], "TIME": [0.0, 1.0, 2.0] * 2, "AMT": [100.0, 0, 0] * 2,
                          "DV": [np.nan, 1.0, 2.0] * 2})
    for c in sorted(columns):
        values = np.where(missing, np.nan, 70.0) if c == "WT" else np.full(n, 50.0)
        frame[c.lower() if lower else c] = values  # column names are case-insensitive
    absent = {c for c in key if c not in columns}
    holes = {k + 1 for k in range(n) if missing[k]} if "WT" in key and "WT" in columns else set()
    try:
        pkmix.read_nonmem(frame, model=covariate_models[key])
    except pkmix.DatasetError as e:
        assert {v.column for v in e.violations if v.record is None} == absent
        assert {v.record for v in e.violations if v.record is not None} == holes
        assert all(v.column == "WT" for v in e.violations if v.record is not None)
        return
    assert not absent and not holes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(widths=st.lists(st.integers(1, 5), min_size=1, max_size=8), sep=st.sampled_from([",", " "]))
def test_short_rows_are_named_by_record(widths, sep, tmp_path):
    header = ["ID", "TIME", "AMT", "DV", "WT"]
    lines = [sep.join(header)]
    for k, w in enumerate(widths):
        lines.append(sep.join(["1", str(float(k)), "0", "1.0", "70"][:w]))
    path = tmp_path / "rows.csv"
    path.write_text("\n".join(lines) + "\n")
    short = {k + 1 for k, w in enumerate(widths) if w < len(header)}
    try:
        pkmix.read_nonmem(path)
    except pkmix.DatasetError as e:
        assert {v.record for v in e.violations} == short
        assert all(f"the header {len(header)}" in v.message for v in e.violations)
        return
    assert not short


def _engine_model():
    """One compartment with a depot and every NONMEM dose modifier on both compartments."""

    def individual(p):
        return {"ka": jnp.exp(p.tka + p.eta), "cl": jnp.exp(p.tcl), "v": jnp.exp(p.tv), "f1": 0.8,
                "alag1": 0.5, "r1": 50.0, "r2": 50.0, "d1": 2.0, "d2": 2.0}

    return pkmix.Model(theta={"tka": 0.1, "tcl": 0.7, "tv": 3.0}, omega={"eta": 0.1}, sigma={"add": 1.0},
                       individual=individual, structure=pkmix.one_compartment(depot=True),
                       observe=lambda a, p: a.central / p.v, error=pkmix.additive("add"))


ENGINE_RECORDS = 32  # one padded shape for every example: one compiled program


@pytest.fixture(scope="module")
def engine():
    import jax

    from pkmix._predict import parameter_values

    model = _engine_model()
    values = parameter_values(model, None)

    @jax.jit
    def predict(batch):
        return jax.vmap(lambda s: model.subject_predict(values, jnp.zeros(1), s, has_steady_state=True,
                                                        has_infusions=True))(batch)

    return model, predict


dose_record = st.fixed_dictionaries({
    "AMT": st.sampled_from([10.0, 100.0]), "CMT": st.sampled_from([0, 1, 2]),
    "RATE": st.sampled_from([0.0, 10.0, -1.0, -2.0]), "SS": st.sampled_from([0, 0, 1, 2]),
    "II": st.sampled_from([12.0, 24.0]), "ADDL": st.integers(0, 3), "EVID": st.sampled_from([1, 1, 4]),
})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(st.tuples(st.sampled_from(["dose", "obs", "obs", "ss_infusion", "reset"]), dose_record,
                                 st.sampled_from([0.0, 0.5, 1.0, 3.0])), min_size=1, max_size=6))
def test_random_valid_records_predict_finite(events, engine):
    # Every dose is within what the engine supports (at steady state, lag + infusion
    # duration below II), so every prediction must be a finite, non-negative number.
    model, predict = engine
    rows, t = [], 0.0
    for kind, dose, gap in events:
        t += gap
        base = dict(ID=1, TIME=t, AMT=0.0, RATE=0.0, II=0.0, SS=0, ADDL=0, CMT=2, DV=float("nan"), EVID=2, MDV=1)
        if kind == "dose":
            rows.append(dict(base, **dose, MDV=1))
        elif kind == "ss_infusion":
            rows.append(dict(base, RATE=10.0, SS=1, EVID=1))
        elif kind == "reset":
            rows.append(dict(base, EVID=3))
        else:
            rows.append(dict(base, DV=1.0, EVID=0, MDV=0))
    rows.append(dict(ID=1, TIME=t + 5.0, AMT=0.0, RATE=0.0, II=0.0, SS=0, ADDL=0, CMT=2, DV=1.0, EVID=0, MDV=0))
    frame = pd.DataFrame(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pkmix.DatasetWarning)  # a subject without observations is fine here
        ds = pkmix.read_nonmem(frame, model=model)
    batch = ds.batch(n_records=ENGINE_RECORDS)
    f = np.asarray(predict(batch))[np.asarray(batch.record_mask)]
    assert np.all(np.isfinite(f)), (frame, f)
    assert np.all(f >= -1e-9)


# -- class 10: steady-state constant infusion (SS=1, AMT=0, RATE>0, II=0) -----------------------

CL, V, RATE, T_SS = 2.0, 20.0, 10.0, 2.0


def _ss_infusion_frame():
    obs = [T_SS, 2.5, 4.0, 10.0, 30.0]
    rows = [dict(ID=1, TIME=T_SS, AMT=0.0, RATE=RATE, SS=1, II=0.0, EVID=1, MDV=1, DV=0.0)]
    rows += [dict(ID=1, TIME=t, AMT=0.0, RATE=0.0, SS=0, II=0.0, EVID=0, MDV=0, DV=1.0) for t in obs]
    return pd.DataFrame(rows), np.array(obs)


def _analytic(t):
    # NONMEM: the system starts at the infusion's steady state Rate/CL and the infusion
    # ends at the record, so C(t) = Rate/CL exp(-CL/V (t - t_ss)) afterwards.
    return RATE / CL * np.exp(-CL / V * (t - T_SS))


def _iv_model(structure):
    return pkmix.Model(theta={"cl": CL, "v": V}, omega={"eta": 0.1}, sigma={"add": 1.0},
                       individual=lambda p: {"cl": p.cl, "v": p.v}, structure=structure,
                       observe=lambda a, p: a.central / p.v, error=pkmix.additive("add"))


def _observed(model):
    frame, t = _ss_infusion_frame()
    out = pkmix.predict(model, frame)
    return t, out.loc[out["EVID"] == 0, "PRED"].to_numpy()


def test_steady_state_constant_infusion_closed_form():
    t, c = _observed(_iv_model(pkmix.one_compartment()))
    np.testing.assert_allclose(c, _analytic(t), rtol=1e-12, atol=0)
    assert c[-1] < 0.2 * RATE / CL  # it falls: the infusion does not go on


@pytest.mark.slow
def test_steady_state_constant_infusion_ode():
    def rhs(t, a, p):
        return {"central": -p.cl / p.v * a.central}

    t, c = _observed(_iv_model(pkmix.ODE(["central"], rhs, rtol=1e-10, atol=1e-12)))
    np.testing.assert_allclose(c, _analytic(t), rtol=1e-7, atol=1e-10)

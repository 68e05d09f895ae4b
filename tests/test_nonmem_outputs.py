"""NONMEM-style outputs (issue 16 B) and the command-line gaps (D): one theophylline
FOCE-I fit through ``pkmix fit --out`` (module scope) read back as xpose and a NONMEM
user would read it: sdtab/patab/cotab in $TABLE layout, .ext, .lst, the parameter table
with back-transformed thetas and log-scale CIs, the run record."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pkmix
from pkmix.cli import main
from pkmix.nonmem.tables import (EXT_FINAL, EXT_SE, SDTAB, control_stream_tables, format_table, read_table)

ROOT = Path(__file__).parent.parent
THEO_MODEL = ROOT / "examples" / "theophylline" / "model.py"
THEO_DATA = ROOT / "examples" / "theophylline" / "theo_sd.csv"
Z95 = 1.959964


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run folder, printed output, the FitResult rebuilt from the folder)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("theo_run")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["fit", str(THEO_MODEL), str(THEO_DATA), "--out", str(out), "--quiet", "--strict"])
    assert code == 0, buf.getvalue()  # a clean fit passes --strict
    return out, buf.getvalue(), pkmix.load_run(out)


def _results(out):
    return json.loads((out / "results.json").read_text())


def test_fit_writes_the_nonmem_files(run):
    out, printed, _ = run
    for name in ("run.json", "sdtab1", "sdtab1.csv", "patab1", "patab1.csv", "cotab1", "cotab1.csv", "model.ext",
                 "model.lst"):
        assert (out / name).is_file(), name
        assert name in printed
    # theophylline's only covariate, WT, is continuous: no catab.
    assert not (out / "catab1").exists()


def test_sdtab_reads_back_as_xpose_reads_it(run):
    out, _, result = run
    text = (out / "sdtab1").read_text().splitlines()
    assert text[0] == "TABLE NO.  1"
    sdtab = read_table(out / "sdtab1")
    assert list(sdtab.columns) == [c for c in SDTAB if c != "NPDE"]  # NPDE only with --npde
    # Every value in a 12-character E-format field, as NONMEM writes them.
    assert all(len(line) == 12 * len(sdtab.columns) for line in text[2:])
    assert all("E+" in field or "E-" in field for field in text[2].split())
    table = pd.read_csv(out / "table.csv")
    assert len(sdtab) == len(table)
    for col in ("ID", "TIME", "DV", "MDV", "PRED", "IPRED", "RES", "CWRES", "IWRES"):
        expected = np.nan_to_num(table[col].to_numpy(float))  # NONMEM writes 0 where it has no value
        np.testing.assert_allclose(sdtab[col], expected, rtol=1e-4, atol=1e-12, err_msg=col)
    csv = pd.read_csv(out / "sdtab1.csv", na_values=["."])
    np.testing.assert_allclose(csv["CWRES"], table["CWRES"], rtol=1e-9)


def test_patab_individual_parameters_by_hand(run):
    out, _, _ = run
    res = _results(out)
    patab = read_table(out / "patab1")
    assert {"ID", "TIME", "CL", "KA", "V", "ETA1", "ETA2", "ETA3"} <= set(patab.columns)
    table = pd.read_csv(out / "table.csv")
    # CL = exp(tcl + eta_cl) on every record (eta_cl is the second eta: ETA2).
    np.testing.assert_allclose(patab["CL"], np.exp(res["theta"]["tcl"] + table["eta_cl"]), rtol=1e-4)
    np.testing.assert_allclose(patab["ETA2"], table["eta_cl"], rtol=1e-4, atol=1e-12)
    cotab = read_table(out / "cotab1")
    assert list(cotab.columns) == ["ID", "TIME", "WT"]


def test_table_layout_of_negative_and_small_values():
    frame = pd.DataFrame({"ID": [1.0, 2.0], "CWRES": [-0.40104, 1.5e-12], "X": [np.nan, 123456.0]})
    text = format_table(frame, 3)
    assert text.splitlines() == ["TABLE NO.  3", " ID          CWRES       X",
                                 "  1.0000E+00 -4.0104E-01  0.0000E+00",
                                 "  2.0000E+00  1.5000E-12  1.2346E+05"]


def test_parameter_table_back_transformed_and_log_scale_cis(run):
    _, printed, _ = run
    out = run[0]
    res = _results(out)
    params = pd.read_csv(out / "parameters.csv")
    tcl = params.set_index("parameter").loc["tcl"]
    assert tcl["back_transformed"] == "CL"
    assert tcl["bt_estimate"] == pytest.approx(math.exp(res["theta"]["tcl"]), rel=1e-12)
    assert tcl["bt_ci_lower"] == pytest.approx(math.exp(res["theta"]["tcl"] - Z95 * res["se"]["tcl"]), rel=1e-9)
    assert f"CL {math.exp(res['theta']['tcl']):.4g}" in printed
    # Variances: CI on the log scale, est * exp(+-1.96 SE/est), never below zero.
    for name in ("omega(eta_ka,eta_ka)", "omega(eta_cl,eta_cl)", "omega(eta_v,eta_v)", "add_sd"):
        row = params.set_index("parameter").loc[name]
        est, se = row["estimate"], res["se"][name]
        assert row["ci_lower"] == pytest.approx(est * math.exp(-Z95 * se / est), rel=1e-9)
        assert row["ci_upper"] == pytest.approx(est * math.exp(Z95 * se / est), rel=1e-9)
        assert row["ci_lower"] > 0
    # The etas of exp(theta + eta) are log-normal: their CV % is shown.
    summary = run[2].omega_summary()
    assert summary["cv_percent"].notna().all()


def _model(individual, theta=None):
    return pkmix.Model(theta=theta or {"tka": 0.45, "tcl": 1.0, "tv": 3.45},
                       omega={"eta_ka": 0.6, "eta_cl": 0.3, "eta_v": 0.1}, sigma={"add_sd": 0.7},
                       individual=individual, structure=pkmix.one_compartment(depot=True),
                       observe=lambda a, p: a.central / p.v, error=pkmix.additive("add_sd"))


def test_exponential_etas_and_log_scale_thetas_are_told_apart():
    from pkmix._scales import back_transformed, exponential_etas

    m = _model(lambda p: {"ka": jnp.exp(p.tka) + p.eta_ka,  # additive eta
                          "cl": p.tcl * (1 + p.eta_cl),  # proportional eta, theta on its own scale (= 1)
                          "v": jnp.exp(p.tv + p.eta_v)})
    values = m.initial_values()
    assert exponential_etas(m, values, None) == {"eta_v"}
    assert back_transformed(m, values, None) == {"tv": "V"}


def test_ext_reads_back_with_history_final_and_se(run):
    out, _, _ = run
    res = _results(out)
    ext = read_table(out / "model.ext")
    assert list(ext.columns[:4]) == ["ITERATION", "THETA1", "THETA2", "THETA3"]
    assert ext.columns[-1] == "OBJ" and "OMEGA(2,2)" in ext.columns and "SIGMA(1,1)" in ext.columns
    final = ext[ext["ITERATION"] == EXT_FINAL].iloc[0]
    assert final["THETA2"] == pytest.approx(res["theta"]["tcl"], rel=1e-5)
    assert final["OMEGA(2,2)"] == pytest.approx(res["omega"]["matrix"][1][1], rel=1e-5)
    assert final["SIGMA(1,1)"] == pytest.approx(res["sigma"]["add_sd"] ** 2, rel=1e-5)  # a variance, as NONMEM's
    assert final["OBJ"] == pytest.approx(res["ofv"], rel=1e-5)
    se = ext[ext["ITERATION"] == EXT_SE].iloc[0]
    assert se["SIGMA(1,1)"] == pytest.approx(2 * res["sigma"]["add_sd"] * res["se"]["add_sd"], rel=1e-5)
    history = ext[ext["ITERATION"] >= 0]
    assert history["ITERATION"].tolist() == list(range(res["iterations"] + 1))
    assert history["OBJ"].iloc[0] > history["OBJ"].iloc[-1]
    assert history["OBJ"].iloc[-1] == pytest.approx(res["ofv"], rel=1e-5)


def test_lst_prints_the_covariance_step(run):
    out, _, _ = run
    res = _results(out)
    lst = (out / "model.lst").read_text()
    for heading in ("MINIMIZATION SUCCESSFUL", "#OBJV", "STANDARD ERROR OF ESTIMATE", "CORRELATION MATRIX OF ESTIMATE",
                    "EIGENVALUES OF THE CORRELATION MATRIX OF ESTIMATE", "CONDITION NUMBER"):
        assert heading in lst, heading
    corr = np.array(res["covariance_step"]["correlation"]["matrix"])
    eig = np.linalg.eigvalsh(corr)
    shown = float(lst.split("CONDITION NUMBER (largest / smallest eigenvalue):")[1].split()[0])
    assert shown == pytest.approx(eig[-1] / eig[0], rel=1e-3)


def test_control_stream_table_records(run, tmp_path):
    _, _, result = run
    tables = [[("ID", None), ("TIME", None), ("CL", None), ("ETA(2)", None), ("IPRED", None), ("NOPRINT", None),
               ("NOAPPEND", None), ("FILE", "mytab1")],
              [("ID", None), ("CWRES", None), ("NOTACOLUMN", None), ("FILE", "sdtab9")]]
    written, missing = control_stream_tables(result, tables, tmp_path)
    assert written == ["mytab1", "mytab1.csv", "sdtab9", "sdtab9.csv"]
    assert list(read_table(tmp_path / "mytab1").columns) == ["ID", "TIME", "CL", "ETA2", "IPRED"]
    # Without NOAPPEND, NONMEM appends DV PRED RES WRES.
    assert list(read_table(tmp_path / "sdtab9").columns) == ["ID", "CWRES", "DV", "PRED", "RES", "WRES"]
    assert missing == ["NOTACOLUMN (sdtab9)"]


def test_run_record(run):
    out, _, _ = run
    record = json.loads((out / "run.json").read_text())
    import hashlib

    assert record["data"]["sha256"] == hashlib.sha256(THEO_DATA.read_bytes()).hexdigest()
    assert record["model"]["source"] == THEO_MODEL.read_text()
    assert record["method"] == "focei" and record["options"]["max_iter"] == 500
    assert record["versions"]["jax"] and record["versions"]["pkmix"] == pkmix.__version__
    assert record["estimated_parameters"] == list(_results(out)["se"])
    assert record["description"].startswith("Theophylline: one compartment")


def test_evaluate_says_evaluated(run, capsys):
    out, _, _ = run
    assert main(["evaluate", str(THEO_MODEL), str(THEO_DATA), "--params", str(out / "results.json"),
                 "--no-diagnostics"]) == 0
    printed = capsys.readouterr().out
    assert "FOCEI evaluation of theophylline" in printed and "evaluated at the given parameters" in printed
    assert "iterations" not in printed.splitlines()[1]


def test_unused_theta_is_refused_at_fit_time_by_name(theo):
    m = _model(lambda p: {"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl),
                          "v": jnp.exp(p.tv + p.eta_v)},
               theta={"tka": 0.45, "tcl": 1.0, "tv": 3.45, "tunused": 1.0})
    assert m.unused_thetas == ("tunused",)
    with pytest.raises(pkmix.ModelError, match=r"theta \['tunused'\] declared but not used"):
        pkmix.fit(m, theo, progress=False)
    fixed = _model(lambda p: {"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl),
                              "v": jnp.exp(p.tv + p.eta_v)},
                   theta={"tka": 0.45, "tcl": 1.0, "tv": 3.45, "tunused": pkmix.Theta(1.0, fixed=True)})
    fixed.check_estimable()  # a fixed theta is estimated by nobody: accepted


def test_params_take_the_omega_element_names():
    from pkmix._predict import parameter_values

    m = pkmix.Model(theta={"tka": 0.45, "tcl": 1.0, "tv": 3.45},
                    omega=[{"eta_ka": 0.6}, pkmix.Block(["eta_cl", "eta_v"], [0.3, 0.01, 0.1])],
                    sigma={"add_sd": 0.7},
                    individual=lambda p: {"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl),
                                          "v": jnp.exp(p.tv + p.eta_v)},
                    structure=pkmix.one_compartment(depot=True), observe=lambda a, p: a.central / p.v,
                    error=pkmix.additive("add_sd"))
    v = parameter_values(m, {"omega(eta_v,eta_cl)": 0.05, "omega(eta_ka,eta_ka)": 0.4})
    om = np.asarray(v.omega)
    assert om[2, 1] == om[1, 2] == 0.05 and om[0, 0] == 0.4
    with pytest.raises(pkmix.ModelError, match="'omega\\(eta_v,nope\\)' is not a parameter"):
        parameter_values(m, {"omega(eta_v,nope)": 0.05})


def test_drop_reaches_the_data_reader(tmp_path, capsys):
    model_file = tmp_path / "wt_model.py"
    model_file.write_text(THEO_MODEL.read_text().replace(
        '"cl": jnp.exp(p.tcl + p.eta_cl),', '"cl": jnp.exp(p.tcl + p.eta_cl) * (p.WT / 70) ** 0.75,').replace(
        'error=pkmix.additive("add_sd"),', 'error=pkmix.additive("add_sd"),\n    covariates=["WT"],'))
    for command in ("predict", "fit", "evaluate"):
        code = main([command, str(model_file), str(THEO_DATA), "--drop", "WT"])
        captured = capsys.readouterr()
        assert code == 2, command
        assert "WT" in captured.out + captured.err


def test_a_table_record_named_like_an_xpose_table_replaces_it(run, tmp_path):
    from types import SimpleNamespace

    from pkmix.nonmem.tables import write_nonmem_outputs

    _, _, result = run
    stream = SimpleNamespace(tables=[[("ID", None), ("TIME", None), ("CWRES", None), ("NOAPPEND", None),
                                      ("FILE", "sdtab1")]])
    written = write_nonmem_outputs(result, tmp_path, run_name="run1", control_stream=stream)
    assert written.count("sdtab1") == 1 and "patab1" in written and "run1.ext" in written
    assert list(read_table(tmp_path / "sdtab1").columns) == ["ID", "TIME", "CWRES"]


def test_imported_table_record_matches_nonmems_table(tmp_path, capsys):
    """pheno_real.mod evaluated at NONMEM's final estimates (pheno_real.ext) writes its $TABLE
    (FILE=sdtab1) with NONMEM's PRED, IPRED and CWRES (pheno_real.tab) to its printed digits."""
    here = Path(__file__).parent / "data" / "nonmem"
    ext = read_table(here / "pheno_real.ext")
    final = ext[ext["ITERATION"] == EXT_FINAL].iloc[0]
    params = {"tcl": final["THETA1"], "tv": final["THETA2"], "theta3": final["THETA3"], "eps1": final["SIGMA(1,1)"],
              "omega(eta_cl,eta_cl)": final["OMEGA(1,1)"], "omega(eta_v,eta_v)": final["OMEGA(2,2)"]}
    (tmp_path / "params.json").write_text(json.dumps({k: float(v) for k, v in params.items()}))
    assert main(["evaluate", str(here / "pheno_real.mod"), "--params", str(tmp_path / "params.json"),
                 "--out", str(tmp_path / "run")]) == 0
    assert "left out: TAD (sdtab1), NPDE (sdtab1)" in capsys.readouterr().out
    ours = read_table(tmp_path / "run" / "sdtab1")
    nonmem = read_table(here / "pheno_real.tab")
    assert len(ours) == len(nonmem) == 744
    for col in ("ID", "TIME", "AMT", "WGT", "APGR", "PRED", "IPRED", "CWRES"):
        np.testing.assert_allclose(ours[col], nonmem[col], rtol=1e-4, atol=1e-4, err_msg=col)

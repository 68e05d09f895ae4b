"""Imported control streams against NONMEM: the OFV at NONMEM's final estimates (from the
run's .ext file, within 0.01) and a refit to NONMEM's optimum (slow, within 0.1).

Control streams, data and NONMEM's numbers: tests/data/nonmem (README there). One
evaluation per model; the first two run in the default suite.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import pkmix
from pkmix import nonmem
from pkmix.cli import main

HERE = Path(__file__).parent / "data" / "nonmem"
EXAMPLES = Path(__file__).parent.parent / "examples"


def ext_final(path: Path) -> dict:
    """NONMEM's final estimates and OFV: the ITERATION -1000000000 line of a .ext file."""
    header = None
    for line in path.read_text().splitlines():
        if line.strip().startswith("ITERATION"):
            header = line.split()
        elif line.strip().startswith("-1000000000"):
            return dict(zip(header, map(float, line.split())))
    raise AssertionError(f"{path} has no final estimates")


def params_from_ext(model, ext: dict, theta_extra: dict | None = None) -> dict:
    params = {n: ext[f"THETA{i + 1}"] for i, n in enumerate(model.theta_names) if f"THETA{i + 1}" in ext}
    params.update(theta_extra or {})
    k = model.spec.n_eta
    omega = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1):
            omega[i, j] = omega[j, i] = ext[f"OMEGA({i + 1},{j + 1})"]
    params["omega"] = omega
    for i, n in enumerate(model.sigma_names):
        if not model.spec.sigmas[i].fixed:
            params[n] = ext[f"SIGMA({i + 1},{i + 1})"]
    return params


def evaluate(module, params, method=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pkmix.DatasetWarning)
        return pkmix.evaluate(module.model, module.load_data(), method=method or module.ESTIMATION["method"],
                              params=params, diagnostics=False).ofv


slow = pytest.mark.slow
PHARMPY = [
    "pheno_real.mod",  # ADVAN1 TRANS2, WT/APGR covariates with an IF, FOCE-I
    pytest.param("pheno_noifs.mod", marks=slow),  # the same without the IF
    pytest.param("pheno_trans1.mod", marks=slow),  # ADVAN1 TRANS1 (K)
    pytest.param("pheno_advan3_trans1.mod", marks=slow),  # ADVAN3 TRANS1 (K, K12, K21)
    pytest.param("mox2.mod", marks=slow),  # ADVAN2 TRANS2, DROP items, Y from A(2)/VC, FO, SS/II doses
    "pheno_advan1.mod",  # pheno_real's model from $SIGMA 1e-7: NONMEM's numbers are pheno_real's
]
# Streams of the same model and data as a NONMEM run stored under another name (Pharmpy stores no run of them).
SAME_MODEL_AS = {"pheno_advan1.mod": "pheno_real.mod"}


def ext_of(name: str) -> Path:
    return HERE / SAME_MODEL_AS.get(name, name).replace(".mod", ".ext")


@pytest.mark.parametrize("name", PHARMPY)
def test_ofv_at_nonmem_estimates(name):
    module = nonmem.load(HERE / name)
    ext = ext_final(ext_of(name))
    assert evaluate(module, params_from_ext(module.model, ext)) == pytest.approx(ext["OBJ"], abs=0.01)


def test_theta_in_error_gives_nonmem_likelihood():
    """pheno_real with Y = IPRED + THETA(4)*IPRED*EPS(1), $SIGMA 1 FIX (THETA(4) -> prop_sd): at THETA(4) =
    sqrt(SIGMA) of pheno_real the likelihood is NONMEM's pheno_real OFV."""
    module = nonmem.load(HERE / "pheno_theta_error.ctl")
    ext = ext_final(HERE / "pheno_real.ext")
    assert module.model.error.theta_parameters == ("prop_sd",)
    params = params_from_ext(module.model, ext, {"prop_sd": math.sqrt(ext["SIGMA(1,1)"])})
    assert evaluate(module, params) == pytest.approx(586.27605628, abs=0.01)


@pytest.mark.slow
def test_theophylline_import_matches_the_hand_written_model_and_its_ode():
    """theo_mu.ctl (ADVAN2, MU referencing, additive SD as a THETA) and theo_advan13.ctl
    (the same model as $DES) against examples/theophylline/model.py at nlmixr2's FOCE-I
    estimates (tests/data/nonmem/README)."""
    sys.path.insert(0, str(EXAMPLES / "theophylline"))
    try:
        import importlib

        example = importlib.import_module("model").model
    finally:
        sys.path.pop(0)
    est = {"tka": 0.4663, "tcl": 1.012, "tv": 3.460, "omega": np.diag([0.3988, 0.0694, 0.0191])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pkmix.DatasetWarning)
        reference = pkmix.evaluate(example, Path(__file__).parent / "data" / "theo_sd.csv",
                                   params=dict(est, add_sd=0.6947), diagnostics=False).ofv
    assert reference == pytest.approx(116.8, abs=0.1)
    closed = nonmem.load(HERE / "theo_mu.ctl")
    assert evaluate(closed, dict(est, add_sd=0.6947)) == pytest.approx(reference, abs=1e-6)
    ode = nonmem.load(HERE / "theo_advan13.ctl")
    assert evaluate(ode, dict(est, add_sd=0.6947)) == pytest.approx(reference, abs=1e-3)


@pytest.mark.slow
def test_iov_import_matches_the_hand_written_model():
    """theo_iov.ctl (BLOCK(1) SAME picked by OCC, a BLOCK(2), W=SQRT(THETA(4)**2+THETA(5)**2*IPRED**2))
    against test_estimation's hand-written pkmix.IOV model with combined error."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from test_estimation import theo_block_iov_combined
    finally:
        sys.path.pop(0)
    reference, frame = theo_block_iov_combined()
    module = nonmem.load(HERE / "theo_iov.ctl")
    assert module.model.iov_names == ("kappa_cl",)
    for method in ("focei", "fo"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pkmix.DatasetWarning)
            expected = pkmix.evaluate(reference, frame, method=method, diagnostics=False).ofv
        assert evaluate(module, None, method) == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    "pheno_real.mod", "pheno_trans1.mod", "pheno_advan3_trans1.mod",
    "pheno_noifs.mod",  # from $SIGMA 1e-7: OFV 6.8e6 at the initial values
    "mox2.mod",  # FO from CL 10, V 100, MAT 3
    "pheno_advan1.mod",  # pheno_real from $SIGMA 1e-7
])
def test_refit_reaches_nonmem_optimum(name):
    module = nonmem.load(HERE / name)
    ext = ext_final(ext_of(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = pkmix.fit(module.model, module.load_data(), method=module.ESTIMATION["method"],
                           covariance="none", progress=False, diagnostics=False)
    assert result.converged
    if name == "mox2.mod":
        # NONMEM's run ended ("MINIMIZATION SUCCESSFUL", Pharmpy's mox2.lst) at OMEGA(MAT) = 1.3e-4, where
        # pkmix's OFV is NONMEM's (test_ofv_at_nonmem_estimates); pkmix goes on to a lower OFV of the same
        # objective (-1299.71, OMEGA(MAT) 0.32).
        assert result.ofv < ext["OBJ"] - 1.0
        assert result.omega.to_numpy()[2, 2] > 100 * ext["OMEGA(3,3)"]
    else:
        assert result.ofv == pytest.approx(ext["OBJ"], abs=0.1)


@pytest.mark.slow
def test_mox2_nonmem_final_estimates_are_not_a_minimum():
    """From NONMEM's final estimates of mox2 (FO) the fit descends to the optimum its refit from the control
    stream's initial values finds: NONMEM stopped on a flat stretch of the objective, not at a minimum."""
    module = nonmem.load(HERE / "mox2.mod")
    ext = ext_final(HERE / "mox2.ext")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = pkmix.fit(module.model, module.load_data(), method="fo", params=params_from_ext(module.model, ext),
                           covariance="none", progress=False, diagnostics=False)
    assert result.converged
    assert result.ofv < ext["OBJ"] - 1.0
    assert result.omega.to_numpy()[2, 2] > 100 * ext["OMEGA(3,3)"]


@pytest.mark.slow
def test_refit_theta_in_error():
    module = nonmem.load(HERE / "pheno_theta_error.ctl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = pkmix.fit(module.model, module.load_data(), method="focei", covariance="none", progress=False,
                           npde_samples=10)
    assert result.ofv == pytest.approx(586.27605628, abs=0.1)
    prop_sd = result.values.theta[module.model.theta_names.index("prop_sd")]
    assert float(prop_sd) == pytest.approx(math.sqrt(0.013241), rel=0.02)


def test_unused_theta_is_refused_by_fit_and_fit_batch(tmp_path):
    """A $THETA that no code reads (as in Pharmpy's pheno_block.mod): its estimate is undetermined, so both
    fit and fit_batch refuse the model and name the theta, before anything is compiled."""
    from pkmix.batch import fit_batch

    stream = tmp_path / "unused.mod"
    stream.write_text((HERE / "pheno_real.mod").read_text().replace("$THETA (-.99,.1)", "$THETA (-.99,.1)\n$THETA 0.5")
                      .replace("'pheno.dta'", repr(str(HERE / "pheno.dta"))))
    module = nonmem.load(stream)
    assert module.model.unused_thetas == ("theta4",)
    data = module.load_data()
    with pytest.raises(pkmix.ModelError, match=r"theta \['theta4'\] declared but not used"):
        pkmix.fit(module.model, data)
    with pytest.raises(pkmix.ModelError, match=r"theta \['theta4'\] declared but not used"):
        fit_batch(module.model, [data, data])


def test_cli_import_writes_a_model_file_that_loads(tmp_path):
    out = tmp_path / "pheno.py"
    assert main(["import", str(HERE / "pheno_real.mod"), "--out", str(out)]) == 0
    source = out.read_text()
    assert "THETA(1) -> tcl" in source and "def individual(p):" in source
    from pkmix.cli._common import load_model_module

    model, _, module = load_model_module(str(out))
    assert model.theta_names == ("tcl", "tv", "theta3")
    assert len(module.load_data()) == 744  # pheno.dta's records, its header left out by IGNORE=@


@pytest.mark.slow
def test_cli_fit_runs_a_control_stream(tmp_path, capsys):
    """pkmix fit RUN.mod: $DATA relative to the stream, the method of $ESTIMATION."""
    import json

    assert main(["fit", str(HERE / "pheno_real.mod"), "--out", str(tmp_path), "--quiet"]) == 0
    assert "FOCEI fit of pheno_real" in capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["ofv"] == pytest.approx(586.27605628, abs=0.1)
    assert Path(results["data_path"]) == (HERE / "pheno.dta").resolve()
    assert json.loads((tmp_path / "run.json").read_text())["options"]["covariance"] == "sandwich"
    assert results["se"]


@pytest.mark.slow
def test_cli_fit_acts_on_covariance_matrix(tmp_path):
    """$COVARIANCE MATRIX=R: the R-only covariance step; no $COVARIANCE: none (as NONMEM)."""
    import json

    text = (HERE / "pheno_real.mod").read_text().replace("'pheno.dta'", repr(str(HERE / "pheno.dta")))
    for cov, expected in (("$COVARIANCE MATRIX=R", "r"), ("", "none")):
        stream = tmp_path / f"pheno_{expected}.mod"
        stream.write_text(text.replace("$COVARIANCE UNCONDITIONAL", cov))
        out = tmp_path / expected
        assert main(["fit", str(stream), "--out", str(out), "--quiet", "--no-diagnostics"]) == 0
        assert json.loads((out / "run.json").read_text())["options"]["covariance"] == expected
        assert bool(json.loads((out / "results.json").read_text())["se"]) == (expected != "none")


def test_cli_fit_acts_on_maxeval_0(tmp_path, capsys):
    """$ESTIMATION ... MAXEVAL=0: pkmix fit evaluates at the initial values (NONMEM's iteration 0 of
    pheno_real.ext, whose $SIGMA was 0.0130865) and exits 0."""
    import json

    stream = tmp_path / "pheno0.mod"
    text = (HERE / "pheno_real.mod").read_text().replace("$SIGMA 0.013241", "$SIGMA 0.0130865")
    stream.write_text(text.replace("METHOD=1 INTERACTION", "METHOD=1 INTERACTION MAXEVAL=0")
                      .replace("'pheno.dta'", repr(str(HERE / "pheno.dta"))))
    assert main(["fit", str(stream), "--out", str(tmp_path / "out"), "--quiet", "--no-diagnostics"]) == 0
    assert "evaluated at the given parameters" in capsys.readouterr().out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["ofv"] == pytest.approx(587.36644134661617, abs=0.01)
    assert results["iterations"] == 0


def test_cli_refuses_unsupported_streams(tmp_path, capsys):
    bad = tmp_path / "bad.mod"
    bad.write_text((HERE / "pheno_real.mod").read_text().replace("$ESTIMATION", "$MIX\n$ESTIMATION"))
    assert main(["import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "$MIX (line 31)" in err and "not supported" in err and "Traceback" not in err
    assert main(["evaluate", str(bad)]) == 2
    assert "$MIX (line 31)" in capsys.readouterr().err


def test_pharmpy_advan5_stream_is_refused_with_its_record_and_line():
    """Pharmpy's pheno_advan5_depot.mod (ADVAN5, the general linear model, with $MODEL and K12/K20/K23/K32): pkmix
    has no ADVAN5 and refuses the stream, naming the record and its line, rather than import another model."""
    with pytest.raises(nonmem.ControlStreamError, match=r"\$SUBROUTINE \(line 4\): ADVAN5 is not supported"):
        nonmem.load(HERE / "pheno_advan5_depot.mod")

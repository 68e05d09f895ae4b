"""Run records and comparison (issue 16 C): ``pkmix runs`` and ``pkmix compare``.

The default tests read run folders written here by hand (results.json and run.json as
``pkmix fit --out`` writes them), so they need no fit; the slow test fits theophylline
three ways (FO, FOCE-I, FOCE-I with a CL-V block) and runs both commands on them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy.stats import chi2

from pkmix.cli import main
from pkmix.runs import compare, likelihood_ratio, load_runs, nesting, run_table

ROOT = Path(__file__).parent.parent
THEO_MODEL = ROOT / "examples" / "theophylline" / "model.py"
THEO_DATA = ROOT / "examples" / "theophylline" / "theo_sd.csv"
BLOCK_MODEL = Path(__file__).parent / "data" / "runs" / "theophylline_clv_block.py"


def _write_run(folder: Path, *, ofv, method="focei", block=False, data_sha="abc", n_obs=132, converged=True):
    names = ["eta_ka", "eta_cl", "eta_v"]
    matrix = [[0.4, 0, 0], [0, 0.07, 0.03 if block else 0], [0, 0.03 if block else 0, 0.02]]
    se = {"tka": 0.2, "tcl": 0.07, "tv": 0.04, "omega(eta_ka,eta_ka)": 0.2, "omega(eta_cl,eta_cl)": 0.03,
          "omega(eta_v,eta_v)": 0.008, "add_sd": 0.09}
    if block:
        se["omega(eta_v,eta_cl)"] = 0.01
    n_est = len(se)
    minus2ll = ofv + n_obs * math.log(2 * math.pi)
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({
        "pkmix_version": "test", "model": folder.name, "method": method, "n_subjects": 12,
        "n_observations": n_obs, "ofv": ofv, "minus2ll": minus2ll, "aic": minus2ll + 2 * n_est,
        "bic": minus2ll + n_est * math.log(n_obs), "converged": converged, "message": "converged",
        "iterations": 20, "theta": {"tka": 0.46, "tcl": 1.01, "tv": 3.46},
        "omega": {"names": names, "matrix": matrix}, "iov": {}, "sigma": {"add_sd": 0.69}, "se": se,
        "rse_percent": {k: 10.0 for k in se}, "shrinkage_percent": {n: 5.0 for n in names},
        "epsilon_shrinkage_percent": 10.0,
        "covariance_step": {"message": "covariance step completed", "condition_number": 90.0, "correlation": None},
        "timing": {"total_s": 7.0}, "device": "cpu:cpu"}))
    (folder / "run.json").write_text(json.dumps({
        "description": f"theophylline {folder.name}", "data": {"sha256": data_sha}, "method": method,
        "estimated_parameters": list(se)}))
    return folder


@pytest.fixture()
def runs(tmp_path):
    return {
        "fo": _write_run(tmp_path / "fo", ofv=103.869, method="fo"),
        "focei": _write_run(tmp_path / "focei", ofv=116.803),
        "block": _write_run(tmp_path / "block", ofv=106.549, block=True),
        "other_data": _write_run(tmp_path / "other_data", ofv=50.0, data_sha="def"),
    }


def test_run_table_dofv_against_the_reference(runs):
    table = run_table(load_runs([runs["fo"], runs["focei"], runs["block"], runs["other_data"]]), "focei")
    rows = table.set_index("run")
    assert rows.loc["block", "dOFV"] == pytest.approx(106.549 - 116.803)
    assert rows.loc["focei", "dOFV"] == 0.0
    assert math.isnan(rows.loc["other_data", "dOFV"])  # other data: no dOFV
    assert rows.loc["block", "n_par"] == 8 and rows.loc["focei", "n_par"] == 7
    assert rows.loc["block", "AIC"] == pytest.approx(106.549 + 132 * math.log(2 * math.pi) + 16)
    assert rows.loc["fo", "description"] == "theophylline fo"
    with pytest.raises(ValueError, match="reference run 'nope' is not among the runs"):
        run_table(load_runs([runs["fo"]]), "nope")


def test_pkmix_runs_prints_the_table(runs, capsys):
    assert main(["runs", str(runs["fo"]), str(runs["focei"]), str(runs["block"])]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header == ["run", "description", "method", "OFV", "dOFV", "n_par", "AIC", "BIC", "cond", "conv", "cov",
                      "time_s"]
    assert "*fo" in out and "reference run for dOFV: fo" in out
    assert main(["runs", str(runs["fo"].parent / "missing")]) == 2


def test_nesting_rule(runs):
    fo, focei, block, other = load_runs([runs["fo"], runs["focei"], runs["block"], runs["other_data"]])
    reduced, full = nesting(block, focei)
    assert (reduced.name, full.name) == ("focei", "block")
    assert "methods differ" in nesting(fo, focei)
    assert "different data" in nesting(focei, other)
    assert "same parameters" in nesting(focei, focei)


def test_lrt_p_value_against_scipy(runs):
    focei, block = load_runs([runs["focei"], runs["block"]])
    c = compare(focei, block)
    assert c.lrt["df"] == 1 and c.lrt["extra_parameters"] == ["omega(eta_v,eta_cl)"]
    assert c.lrt["dofv"] == pytest.approx(116.803 - 106.549)
    assert c.lrt["p_value"] == pytest.approx(chi2.sf(116.803 - 106.549, 1), rel=1e-12)
    assert likelihood_ratio(10.0, 4.0, 2)["p_value"] == pytest.approx(math.exp(-3.0), rel=1e-12)  # chi2(2): e^-x/2
    assert likelihood_ratio(10.0, 4.0, 2)["critical_0.05"] == pytest.approx(chi2.ppf(0.95, 2))


def test_pkmix_compare_prints_estimates_and_lrt(runs, capsys):
    assert main(["compare", str(runs["focei"]), str(runs["block"])]) == 0
    out = capsys.readouterr().out
    assert "omega(eta_v,eta_cl)" in out
    assert f"p = {chi2.sf(116.803 - 106.549, 1):.4g}" in out
    assert main(["compare", str(runs["fo"]), str(runs["focei"])]) == 0
    assert "no likelihood-ratio test: the methods differ" in capsys.readouterr().out


@pytest.mark.slow
def test_three_theophylline_fits(tmp_path, capsys):
    """The issue's done-when: FO, FOCE-I and FOCE-I with a CL-V block fitted by ``pkmix fit
    --out``, then ``pkmix runs`` and ``pkmix compare``."""
    fo, focei, block = tmp_path / "fo", tmp_path / "focei", tmp_path / "focei_block"
    assert main(["fit", str(THEO_MODEL), str(THEO_DATA), "--method", "fo", "--out", str(fo), "--quiet"]) == 0
    assert main(["fit", str(THEO_MODEL), str(THEO_DATA), "--out", str(focei), "--quiet"]) == 0
    # The CL-V correlation runs to its boundary on these data: --strict turns that warning into exit 1.
    assert main(["fit", str(BLOCK_MODEL), str(THEO_DATA), "--out", str(block), "--quiet", "--strict"]) == 1
    capsys.readouterr()
    # FO's EBEs come from the POSTHOC step: shrinkage well below 100 %.
    fo_results = json.loads((fo / "results.json").read_text())
    assert all(s < 50 for s in fo_results["shrinkage_percent"].values())

    assert main(["runs", str(fo), str(focei), str(block), "--reference", "focei"]) == 0
    table = capsys.readouterr().out
    assert "FO" in table and "FOCEI" in table and "*focei" in table
    assert main(["compare", str(focei), str(block)]) == 0
    out = capsys.readouterr().out
    a = json.loads((focei / "results.json").read_text())["ofv"]
    b = json.loads((block / "results.json").read_text())["ofv"]
    assert f"p = {chi2.sf(a - b, 1):.4g}" in out and "on 1 df" in out

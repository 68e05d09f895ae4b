"""The HTML report (numbers equal results.json, self-contained, renders in headless
Chromium), ``pkmix report``, and the arviz export.

The run directory is what ``pkmix fit/evaluate --out`` writes, for theophylline
evaluated at nlmixr2's published estimates. An evaluation has no covariance step, so
standard errors are written into its results.json to exercise the SE, RSE and CI
columns; the test computes the CIs and CVs itself from the JSON.
"""

from __future__ import annotations

import base64
import json
import math
import runpy
import shutil
import subprocess
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import pkmix
from pkmix.cli import main as cli_main
from pkmix.report import load_run, write_report

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "examples" / "theophylline" / "model.py"
DATA = ROOT / "examples" / "theophylline" / "theo_sd.csv"
PARAMS = {"tka": 0.4663, "tcl": 1.012, "tv": 3.460, "add_sd": 0.6947,
          "eta_ka": 0.3988, "eta_cl": 0.0694, "eta_v": 0.0191}
# nlmixr2's standard errors for theophylline (tka, tcl, tv, add_sd); any positive values would do.
SE = {"tka": 0.1860, "tcl": 0.0815, "tv": 0.0443, "add_sd": 0.0454, "omega(eta_ka,eta_ka)": 0.1743,
      "omega(eta_cl,eta_cl)": 0.0291, "omega(eta_v,eta_v)": 0.0099}


def _write_outputs(result, out: Path):
    try:
        from pkmix.cli.fit import write_outputs
    except ImportError:  # the fit command's writer, reproduced when it is absent
        out.mkdir(parents=True, exist_ok=True)
        payload = result.to_dict() | {"model_path": str(MODEL), "data_path": str(DATA)}
        (out / "results.json").write_text(json.dumps(payload, indent=2))
        result.parameters().to_csv(out / "parameters.csv", index=False)
        result.table().to_csv(out / "table.csv", index=False)
        return
    write_outputs(result, out, model_path=str(MODEL), data_path=str(DATA))


@pytest.fixture(scope="session")
def theo_result():
    model = runpy.run_path(str(MODEL))["model"]
    return pkmix.evaluate(model, str(DATA), "focei", PARAMS, npde_samples=200)


@pytest.fixture(scope="session")
def run_dir(theo_result, tmp_path_factory):
    out = tmp_path_factory.mktemp("run_theo")
    _write_outputs(theo_result, out)
    payload = json.loads((out / "results.json").read_text())
    estimates = payload["theta"] | payload["sigma"] | {
        f"omega({n},{n})": payload["omega"]["matrix"][i][i] for i, n in enumerate(payload["omega"]["names"])}
    payload["se"] = dict(SE)
    payload["rse_percent"] = {k: 100 * v / abs(estimates[k]) for k, v in SE.items()}
    payload["covariance_step"]["message"] = "sandwich (test values)"
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    return out


@pytest.fixture(scope="session")
def report(run_dir):
    path = write_report(run_dir, n_sim=60)
    return path, path.read_text(encoding="utf-8")


class _Cells(HTMLParser):
    """Every element with a data-key: {key: (data-value, text)}; every img src; every link."""

    def __init__(self):
        super().__init__()
        self.cells, self.images, self.links, self.figures = {}, [], [], []
        self._open = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "data-key" in a:
            self._open = [a["data-key"], float(a["data-value"]), ""]
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "figure":
            self.figures.append(a.get("id"))
        for attr in ("href", "src"):
            if attr in a:
                self.links.append(a[attr])

    def handle_data(self, data):
        if self._open is not None:
            self._open[2] += data

    def handle_endtag(self, tag):
        if self._open is not None and tag in ("td", "div"):
            key, value, text = self._open
            self.cells[key] = (value, text.strip())
            self._open = None


def _parse(text) -> _Cells:
    p = _Cells()
    p.feed(text)
    return p


def test_report_numbers_equal_results_json(run_dir, report):
    _, text = report
    cells = _parse(text).cells
    res = json.loads((run_dir / "results.json").read_text())

    def check(key, expected, shown):
        assert key in cells, f"the report has no cell {key}"
        value, txt = cells[key]
        assert value == pytest.approx(expected, rel=1e-12, abs=1e-12), key
        assert txt == shown, f"{key}: shows {txt!r}, expected {shown!r}"

    for k in ("ofv", "minus2ll", "aic", "bic"):
        check(k, res[k], f"{res[k]:.4f}")
    for k in ("n_subjects", "n_observations"):
        check(k, res[k], str(res[k]))
    estimates = dict(res["theta"]) | dict(res["sigma"])
    names = res["omega"]["names"]
    for i, n in enumerate(names):
        var = res["omega"]["matrix"][i][i]
        estimates[f"omega({n},{n})"] = var
        cv = 100 * math.sqrt(math.exp(var) - 1)
        check(f"cv_percent.omega({n},{n})", cv, f"{cv:.1f}")
        s = res["shrinkage_percent"][n]
        check(f"shrinkage_percent.omega({n},{n})", s, f"{s:.1f}")
        for j, m in enumerate(names[: i + 1]):
            check(f"omega.{n}.{m}", res["omega"]["matrix"][i][j], f"{res['omega']['matrix'][i][j]:.6g}")
    assert len(estimates) == 7
    for name, est in estimates.items():
        check(f"estimate.{name}", est, f"{est:.6g}")
        se = res["se"][name]
        check(f"se.{name}", se, f"{se:.6g}")
        check(f"rse_percent.{name}", res["rse_percent"][name], f"{res['rse_percent'][name]:.1f}")
        # FitResult.parameters(): variances and sigmas (positive) on the log scale, thetas symmetric.
        if name in res["theta"]:
            lo, hi = est - 1.959964 * se, est + 1.959964 * se
        else:
            lo, hi = est * math.exp(-1.959964 * se / est), est * math.exp(1.959964 * se / est)
        check(f"ci_lower.{name}", lo, f"{lo:.6g}")
        check(f"ci_upper.{name}", hi, f"{hi:.6g}")
    for k, v in res["timing"].items():
        check(f"timing.{k}", v, f"{v:.2f}")
    check("epsilon_shrinkage_percent", res["epsilon_shrinkage_percent"], f"{res['epsilon_shrinkage_percent']:.1f}")
    assert res["message"] in text and "sandwich (test values)" in text


def test_report_is_self_contained_with_every_plot(report):
    _, text = report
    parsed = _parse(text)
    # No network: every image is inline, nothing else is fetched.
    assert parsed.links and all(s.startswith("data:image/png;base64,") or s.startswith("#") for s in parsed.links)
    for src in parsed.images:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" not in text and "@import" not in text and "url(" not in text
    # Additive error: the lower simulated bands go below 0, so no log-scale VPC.
    assert parsed.figures == ["gof", "individual", "eta-hist", "eta-cov", "vpc"]
    assert "def individual(p):" in text  # the model file is shown
    assert "subjects      12" in text  # the dataset summary
    assert "id='notes'" not in text


def test_report_without_the_model_keeps_tables_and_gof(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    payload = json.loads((copy / "results.json").read_text())
    payload["model_path"] = str(tmp_path / "gone" / "model.py")
    (copy / "results.json").write_text(json.dumps(payload))
    path = write_report(copy)
    text = path.read_text()
    parsed = _parse(text)
    assert path == copy / "report.html"
    assert parsed.figures == ["gof", "eta-hist"]
    assert "could not be loaded" in text and "individual fits" in text
    assert parsed.cells["estimate.tka"][0] == payload["theta"]["tka"]


def test_load_run_rebuilds_the_result(run_dir, theo_result):
    r = load_run(run_dir)
    assert r.ofv == theo_result.ofv and r.theta == theo_result.theta
    assert r.aic == pytest.approx(theo_result.aic, rel=1e-12)
    np.testing.assert_allclose(r.etas[["eta_ka", "eta_cl", "eta_v"]], theo_result.etas[["eta_ka", "eta_cl", "eta_v"]],
                               rtol=1e-12)
    assert r.model is not None and r.dataset.n_subjects == 12
    np.testing.assert_allclose(np.asarray(r.values.theta), np.asarray(theo_result.values.theta))
    with pytest.raises(FileNotFoundError, match="results.json"):
        load_run(run_dir / "nothing")


def test_write_report_from_a_result_in_process(theo_result, tmp_path):
    path = write_report(theo_result, tmp_path / "sub" / "r.html", vpc=False)
    parsed = _parse(path.read_text())
    assert parsed.cells["ofv"][0] == theo_result.ofv
    assert parsed.cells["estimate.tcl"][0] == theo_result.theta["tcl"]
    assert parsed.figures == ["gof", "individual", "eta-hist", "eta-cov"]
    assert "def individual(p):" in path.read_text()
    with pytest.raises(TypeError, match="path"):
        write_report(theo_result)


def test_cli_report(run_dir, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert cli_main(["report", str(run_dir), "--no-vpc", "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000 and str(out) in capsys.readouterr().out
    assert cli_main(["report", str(tmp_path / "missing")]) == 2
    assert "results.json" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Debian's chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    path, _ = report
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", *flags, f"--screenshot={shot}", "--window-size=1200,3000", path.as_uri()],
                   check=True, capture_output=True, timeout=120)
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[:2] == (3000, 1200)
    # Not a blank page: text, tables and plots give many distinct pixel values.
    assert img[..., :3].std() > 0.05 and len(np.unique(img[::10, ::10, 0])) > 20
    dom = subprocess.run(["chromium", *flags, "--dump-dom", path.as_uri()], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    assert "id=\"parameters\"" in dom and "omega(eta_ka,eta_ka)" in dom


def test_to_inference_data(theo_result):
    import arviz as az

    from pkmix._arviz import to_inference_data

    idata = to_inference_data(theo_result)
    eta = idata.posterior["eta"]
    assert eta.dims == ("chain", "draw", "subject", "eta_name") and eta.shape == (1, 1, 12, 3)
    np.testing.assert_array_equal(eta.values[0, 0], theo_result.etas[["eta_ka", "eta_cl", "eta_v"]].to_numpy())
    assert list(idata.posterior["subject"].values) == list(theo_result.etas["ID"])
    table = theo_result.table()
    obs = table[(table["EVID"] == 0) & (table["MDV"] == 0)]
    np.testing.assert_array_equal(idata.observed_data["DV"].values, obs["DV"].to_numpy())
    np.testing.assert_array_equal(idata.posterior["ipred"].values[0, 0], obs["IPRED"].to_numpy())
    assert list(idata.constant_data["theta"].values) == list(theo_result.theta.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one draw: sd and R-hat are undefined
        summary = az.summary(idata, var_names=["eta"], kind="stats")
    np.testing.assert_allclose(summary["mean"].to_numpy(),
                               np.round(theo_result.etas[["eta_ka", "eta_cl", "eta_v"]].to_numpy().ravel(), 3))
    assert to_inference_data(idata) is idata
    with pytest.raises(TypeError):
        to_inference_data(42)

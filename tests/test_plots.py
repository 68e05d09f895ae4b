"""Plots: the smoother and the VPC statistics against known answers, and every plot made
for the theophylline and phenobarbital examples (image written, axes, subjects).

The example results are ``pkmix.evaluate`` at published estimates (nlmixr2 for
theophylline, NONMEM 7.5 for phenobarbital; shared/refdata/REFERENCE.md), computed once
per session.
"""

from __future__ import annotations

import math
import runpy
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

import pkmix
import pkmix.plots as pp

matplotlib = pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

THEO_PARAMS = {"tka": 0.4663, "tcl": 1.012, "tv": 3.460, "add_sd": 0.6947,
               "eta_ka": 0.3988, "eta_cl": 0.0694, "eta_v": 0.0191}
PHENO_PARAMS = {"THETA1": 4.69555e-3, "THETA2": 0.984258, "THETA3": 0.158920,
                "ETA1": 0.0293508, "ETA2": 0.0279060, "SIGMA1": 0.0132410}
CASES = {
    "theophylline": (EXAMPLES / "theophylline" / "model.py", EXAMPLES / "theophylline" / "theo_sd.csv", THEO_PARAMS),
    "phenobarbital": (EXAMPLES / "phenobarbital" / "model.py", EXAMPLES / "phenobarbital" / "pheno.csv", PHENO_PARAMS),
}
# The examples' covariate columns and subject counts, read off the CSV files.
EXPECTED = {"theophylline": {"n_subjects": 12, "covariates": ["WT"], "etas": ["eta_ka", "eta_cl", "eta_v"]},
            "phenobarbital": {"n_subjects": 59, "covariates": ["WT", "APGR"], "etas": ["ETA1", "ETA2"]}}


def _evaluate(name):
    model_path, data_path, params = CASES[name]
    model = runpy.run_path(str(model_path))["model"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pkmix.DatasetWarning)
        return pkmix.evaluate(model, str(data_path), "focei", params, npde_samples=200)


# Phenobarbital (59 subjects, repeated doses) compiles longer: its cases are marked slow.
@pytest.fixture(scope="session", params=["theophylline", pytest.param("phenobarbital", marks=pytest.mark.slow)])
def example(request):
    return request.param, _evaluate(request.param)


def _saved(fig, path: Path) -> Path:
    fig.savefig(path)
    assert path.stat().st_size > 1000, f"{path} is (nearly) empty"
    return path


def _labels(ax):
    return ax.get_xlabel(), ax.get_ylabel()


# --------------------------------------------------------------------------- the smoother
def test_smooth_reproduces_a_straight_line_exactly():
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 7, 60)
    gx, gy = pp.smooth(x, 2.5 - 0.7 * x, frac=0.3)
    np.testing.assert_allclose(gy, 2.5 - 0.7 * gx, rtol=0, atol=1e-10)
    assert gx.min() == x.min() and gx.max() == x.max()


def test_smooth_follows_a_noisy_curve():
    rng = np.random.default_rng(2)
    x = np.sort(rng.uniform(0, 2 * np.pi, 800))
    y = np.sin(x) + rng.normal(0, 0.3, x.size)
    gx, gy = pp.smooth(x, y, frac=0.15)
    # Noise SD of a local mean over ~120 points is ~0.03; the smoothing bias ~0.02.
    inner = (gx > 0.3) & (gx < 2 * np.pi - 0.3)
    assert np.max(np.abs(gy[inner] - np.sin(gx[inner]))) < 0.12
    assert pp.smooth([1.0, 1.0, 2.0], [1.0, 2.0, 3.0])[0].size == 0  # too few distinct x
    with pytest.raises(ValueError, match="frac"):
        pp.smooth(x, y, frac=0.0)


# --------------------------------------------------------------------------- VPC statistics
def test_time_bins_separate_the_clusters_of_a_sampling_design():
    rng = np.random.default_rng(3)
    nominal = np.array([0.25, 0.5, 1, 2, 4, 8, 12, 24])
    t = np.repeat(nominal, 12) * rng.uniform(0.93, 1.07, 96)
    edges = pp.time_bins(t, n_bins=8)
    assert len(edges) == 9
    counts = np.histogram(t, edges)[0]
    assert list(counts) == [12] * 8
    # A lone late sample is merged into its neighbour rather than being a bin of one.
    edges = pp.time_bins(np.r_[t, 100.0], n_bins=9)
    assert edges[-1] == 100.0 and np.histogram(np.r_[t, 100.0], edges)[0].min() >= 5


def test_vpc_summary_matches_normal_quantiles_and_blq_fraction():
    rng = np.random.default_rng(4)
    n_obs, n_sim, mu = 400, 300, 10.0
    time = np.repeat([1.0, 2.0], n_obs // 2)
    dv = rng.normal(mu, 1.0, n_obs)
    sim = rng.normal(mu, 1.0, (n_sim, n_obs))
    lloq = 9.0
    out = pp.vpc_summary(time, dv, sim, bins=2, lloq=lloq)
    bins = out["bins"]
    assert list(bins["time"]) == [1.0, 2.0] and list(bins["n_obs"]) == [200, 200]
    # Medians across replicates of simulated percentiles ~ the normal quantiles.
    for q in (50, 95):
        np.testing.assert_allclose(bins[f"sim_p{q}_med"], mu + norm.ppf(q / 100), atol=0.08)
        assert np.all(bins[f"sim_p{q}_lo"] < bins[f"sim_p{q}_med"])
        assert np.all(bins[f"sim_p{q}_med"] < bins[f"sim_p{q}_hi"])
    # The 5th percentile (8.36) lies below the LLOQ: censored, not drawn.
    assert bins["sim_p5_med"].isna().all() or (bins["sim_p5_med"] >= lloq).all()
    np.testing.assert_allclose(bins["sim_blq_med"], norm.cdf(lloq - mu), atol=0.01)
    assert (bins["sim_blq_lo"] < norm.cdf(lloq - mu)).all() and (bins["sim_blq_hi"] > norm.cdf(lloq - mu)).all()
    fig = pp.vpc_plot(out)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "fraction BLQ"
    with pytest.raises(ValueError, match=r"\[n_sim, n_obs\]"):
        pp.vpc_summary(time, dv, sim[:, :10])


def test_vpc_plot_names_a_missing_column():
    bins = pd.DataFrame({"time": [1.0, 2.0], "obs_p50": [1.0, 2.0], "sim_p50_lo": [0.5, 1.5]})
    with pytest.raises(ValueError, match="sim_p50_hi"):
        pp.vpc_plot(bins)
    with pytest.raises(ValueError, match="'time'"):
        pp.vpc_plot(pd.DataFrame({"t": [1.0]}))


def test_gof_needs_diagnostics():
    table = pd.DataFrame({"ID": [1, 1], "TIME": [0.0, 1.0], "DV": [1.0, 2.0], "EVID": [0, 0], "MDV": [0, 0],
                          "PRED": [1.0, 2.0], "CWRES": [np.nan, np.nan]})
    with pytest.raises(ValueError, match="CWRES"):
        pp.cwres_vs_time(table)
    with pytest.raises(ValueError, match="IPRED"):
        pp.dv_vs_ipred(table)


# --------------------------------------------------------------------------- the examples
GOF = [
    (pp.dv_vs_pred, ("PRED", "DV")),
    (pp.dv_vs_ipred, ("IPRED", "DV")),
    (pp.cwres_vs_time, ("TIME", "CWRES")),
    (pp.cwres_vs_pred, ("PRED", "CWRES")),
    (pp.abs_iwres_vs_ipred, ("IPRED", "|IWRES|")),
    (pp.qq_cwres, ("theoretical N(0,1) quantile", "CWRES quantile")),
]


def test_gof_plots(example, tmp_path):
    name, result = example
    n_obs = result.n_observations
    for fn, labels in GOF:
        fig = fn(result)
        (ax,) = fig.axes
        assert _labels(ax) == labels
        # Every observation is a point (neither data set has BLQ records).
        assert ax.collections[0].get_offsets().shape[0] == n_obs
        _saved(fig, tmp_path / f"{fn.__name__}.png")
    fig = pp.gof_panel(result)
    assert [_labels(ax) for ax in fig.axes] == [
        ("PRED", "DV"), ("IPRED", "DV"), ("theoretical N(0,1) quantile", "CWRES quantile"),
        ("TIME", "CWRES"), ("PRED", "CWRES"), ("IPRED", "|IWRES|")]
    _saved(fig, tmp_path / "gof.png")
    svg = _saved(fig, tmp_path / "gof.svg")
    assert svg.read_text().lstrip().startswith("<?xml")
    log = pp.dv_vs_pred(result, log=True)
    assert log.axes[0].get_xscale() == "log" and log.axes[0].get_yscale() == "log"


def test_individual_fits(example, tmp_path):
    name, result = example
    n = EXPECTED[name]["n_subjects"]
    assert result.n_subjects == n
    pages = pp.individual_fits(result, per_page=16)
    assert len(pages) == math.ceil(n / 16)
    titles = [ax.get_title() for fig in pages for ax in fig.axes]
    assert titles == [f"ID {int(i)}" for i in result.dataset.ids]
    for k, fig in enumerate(pages):
        _saved(fig, tmp_path / f"individual_{k}.png")
        for ax in fig.axes:
            labels = [line.get_label() for line in ax.get_lines()]
            assert labels[:2] == ["IPRED", "PRED"] and "dose" in labels
        assert any(ax.get_xlabel() == "TIME" for ax in fig.axes)
        assert any(ax.get_ylabel() == "DV" for ax in fig.axes)
    assert len(pp.individual_fits(result, per_page=5, ids=list(result.dataset.ids)[:7])) == 2


def test_individual_curves_pass_through_the_fit_predictions(example):
    # The fine-grid curves are predictions at added EVID 2 records; at the observation
    # times they must equal the fit's own PRED and IPRED.
    name, result = example
    curves = pp.individual_predictions(result)
    table = result.table()
    obs = table[(table["EVID"] == 0) & (table["MDV"] == 0)]
    for sid, sub in obs.groupby("ID"):
        c = curves[curves["ID"] == sid]
        for _, row in sub.iterrows():
            at = c[c["TIME"] == row["TIME"]]
            assert len(at), f"ID {sid}: no curve point at TIME {row['TIME']}"
            np.testing.assert_allclose(at["IPRED"].to_numpy(), row["IPRED"], rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(at["PRED"].to_numpy(), row["PRED"], rtol=1e-9, atol=1e-9)
    assert curves.groupby("ID").size().min() >= 200


def test_eta_plots(example, tmp_path):
    name, result = example
    etas, covs = EXPECTED[name]["etas"], EXPECTED[name]["covariates"]
    fig = pp.eta_histograms(result)
    assert [ax.get_xlabel() for ax in fig.axes] == etas
    _saved(fig, tmp_path / "eta_hist.png")
    fig = pp.eta_vs_covariates(result)
    assert len(fig.axes) == len(etas) * len(covs)
    assert [_labels(ax) for ax in fig.axes] == [(c, e) for e in etas for c in covs]
    _saved(fig, tmp_path / "eta_cov.png")
    # A categorical covariate gets boxplots, one per level.
    fig = pp.eta_vs_covariates(result, covariates=[covs[-1]], categorical=[covs[-1]])
    levels = result.dataset.frame.groupby("ID")[covs[-1]].first().nunique()
    assert len(fig.axes[0].get_xticklabels()) == levels


def test_vpc_of_the_example(example, tmp_path):
    name, result = example
    data = pp.vpc_from_result(result, n_sim=60, seed=1)
    bins = data["bins"]
    assert bins["n_obs"].sum() == result.n_observations
    assert len(data["observed"]) == result.n_observations
    # The observed median lies inside the simulated 95 % interval in most bins for a
    # model at its estimates.
    inside = (bins["obs_p50"] >= bins["sim_p50_lo"]) & (bins["obs_p50"] <= bins["sim_p50_hi"])
    assert inside.mean() >= 0.6
    fig = pp.vpc_plot(data)
    (ax,) = fig.axes
    assert _labels(ax) == ("TIME", "DV")
    _saved(fig, tmp_path / "vpc.png")
    fig = pp.vpc_plot(data, log_y=True)
    assert fig.axes[0].get_yscale() == "log"
    _saved(fig, tmp_path / "vpc_log.svg")


@pytest.mark.slow  # compiles the simulation program
def test_vpc_of_a_fit_agrees_with_vpc_summary_of_simulated_replicates(example):
    # pkmix.vpc (what vpc_from_result draws) and vpc_summary of replicates simulated
    # by pkmix.simulate (the arrays route, another seed): on the same bins the observed
    # percentiles must be identical and the simulated medians statistically alike.
    name, result = example
    a = pp.vpc_from_result(result, n_sim=100, seed=3)["bins"]
    frame = result.dataset.frame
    obs = ((frame["EVID"] == 0) & (frame["MDV"] == 0)).to_numpy()
    times = frame["TIME"].to_numpy(dtype=float)[obs]
    reps = pkmix.simulate(result.model, result.dataset, n=100, seed=4, params=result.values, output="arrays")
    simulated = reps.template.rows(reps.dv, leading=1)[:, obs]
    b = pp.vpc_summary(times, frame["DV"].to_numpy(dtype=float)[obs], simulated, bins=pp.time_bins(times, 10))["bins"]
    assert list(a["n_obs"]) == list(b["n_obs"])
    for q in (5, 50, 95):
        np.testing.assert_allclose(a[f"obs_p{q}"], b[f"obs_p{q}"], rtol=1e-12)
    width = (a["sim_p50_hi"] - a["sim_p50_lo"]).to_numpy()
    assert np.all(np.abs(a["sim_p50_med"] - b["sim_p50_med"]).to_numpy() < 0.5 * width + 1e-9)


@pytest.mark.slow  # compiles the simulation program for another dataset
def test_vpc_plot_of_a_stratified_vpc_result():
    simulate = pytest.importorskip("pkmix._simulate")
    model = runpy.run_path(str(CASES["theophylline"][0]))["model"]
    frame = pd.read_csv(CASES["theophylline"][1])
    frame["GROUP"] = frame["ID"] % 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pkmix.DatasetWarning)
        ds = pkmix.read_nonmem(frame)
    v = simulate.vpc(model, ds, THEO_PARAMS, n=20, bins=pp.time_bins(frame.loc[frame["EVID"] == 0, "TIME"], 8),
                     stratify="GROUP")
    fig = pp.vpc_plot(v)
    assert len(fig.axes) == 2
    assert [ax.get_title().rsplit(": ", 1)[-1] for ax in fig.axes] == ["GROUP = 0", "GROUP = 1"]
    layouts = pp.vpc_layouts(v)
    assert [st for st, _ in layouts] == [0, 1]
    assert sum(d["bins"]["n_obs"].sum() for _, d in layouts) == (frame["EVID"] == 0).sum()


def test_vpc_blq_panel_from_a_censored_design(tmp_path):
    # Theophylline with an LLOQ of 2 mg/L: the VPC gets a BLQ panel whose observed
    # fraction is the fraction of observations under 2 in each bin.
    model = runpy.run_path(str(CASES["theophylline"][0]))["model"]
    frame = pd.read_csv(CASES["theophylline"][1])
    frame["LLOQ"] = 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pkmix.DatasetWarning)
        ds = pkmix.read_nonmem(frame)
    values = pkmix._predict.parameter_values(model, THEO_PARAMS)
    result = SimpleNamespace(model=model, dataset=ds, values=values)
    data = pp.vpc_from_result(result, n_sim=50, seed=2)
    bins = data["bins"]
    obs = frame[(frame["EVID"] == 0)]
    assert data["lloq"] == 2.0
    assert bins["obs_blq"].max() > 0
    expected = [(obs["DV"][(obs["TIME"] >= lo) & (obs["TIME"] <= hi)] < 2.0).mean()
                for lo, hi in zip(bins["time_lo"], bins["time_hi"])]
    np.testing.assert_allclose(bins["obs_blq"], expected)
    fig = pp.vpc_plot(data, log_y=True)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "fraction BLQ"
    _saved(fig, tmp_path / "vpc_blq.png")


def test_plots_do_not_import_matplotlib_with_pkmix():
    import subprocess
    import sys

    code = "import sys, pkmix, pkmix.plots, pkmix.report; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

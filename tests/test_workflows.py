"""Replicate workflows (pkmix.workflows): the interval arithmetic against hand
computations, SIR's weights against a known posterior, and small bootstrap / SIR / SSE
runs; larger runs and the two-process run are marked slow."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

import pkmix
from pkmix.workflows import _common
from pkmix.workflows.bootstrap import replicate_frame, resample_subjects
from pkmix.workflows.sir import log_importance_ratio, proposal_logpdf, resample_without_replacement

from conftest import DATA

ROOT = Path(__file__).resolve().parents[1]


def theo_model():
    return pkmix.Model(
        name="theophylline",
        theta={"tka": 0.45, "tcl": 1.0, "tv": 3.45},
        omega={"eta_ka": 0.6, "eta_cl": 0.3, "eta_v": 0.1},
        sigma={"add_sd": 0.7},
        individual=lambda p: {"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl),
                              "v": jnp.exp(p.tv + p.eta_v)},
        structure=pkmix.one_compartment(depot=True),
        observe=lambda a, p: a.central / p.v,
        error=pkmix.additive("add_sd"),
    )


@pytest.fixture(scope="module")
def theo_fit(theo):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pkmix.fit(theo_model(), theo, progress=False, diagnostics=False)


@pytest.fixture(scope="module")
def theo_boot(theo_fit):
    return pkmix.bootstrap(theo_fit, n=16, seed=3, acceleration="regression")


# ------------------------------------------------------------------ arithmetic
def test_percentile_interval_is_the_linear_quantile():
    s = np.arange(1.0, 11.0)  # 1..10: the 2.5 % quantile at position 0.225 -> 1.225
    lo, hi = _common.percentile_interval(s, 0.95)
    assert lo == pytest.approx(1.225) and hi == pytest.approx(9.775)


def test_bca_by_hand():
    s = np.arange(1.0, 11.0)
    # estimate 4: 3 samples below, 1 tie -> p = 3.5 / 10; z0 = Phi^-1(0.35).
    z0 = norm.ppf(0.35)
    a = 0.1
    want = []
    for alpha in (0.025, 0.975):
        z = z0 + norm.ppf(alpha)
        want.append(np.quantile(s, norm.cdf(z0 + z / (1 - a * z))))
    got = _common.bca_interval(s, 4.0, a, 0.95)
    assert got == pytest.approx(tuple(want), rel=1e-12)
    # z0 = 0 and a = 0: BCa is the percentile interval.
    assert _common.bca_interval(s, 5.5, 0.0) == pytest.approx(_common.percentile_interval(s))


def test_jackknife_acceleration_by_hand():
    t = np.array([1.0, 2.0, 4.0, 9.0])
    d = t.mean() - t  # 3, 2, 0, -5
    want = np.sum(d ** 3) / (6 * np.sum(d ** 2) ** 1.5)  # (27 + 8 - 125) / (6 * 38^1.5)
    assert _common.jackknife_acceleration(t) == pytest.approx(want)
    assert want == pytest.approx(-90 / (6 * 38 ** 1.5))


def test_regression_influence_recovers_a_linear_statistic():
    # The mean of subject values is linear: its influence values are x - mean(x).
    rng = np.random.default_rng(0)
    x = rng.normal(size=6)
    F = np.stack([np.bincount(rng.integers(0, 6, 6), minlength=6) for _ in range(40)])
    t = F @ x / 6
    assert _common.regression_influence(F, t) == pytest.approx(x - x.mean(), abs=1e-10)


# ------------------------------------------------------------------ SIR weights
def test_sir_weights_on_a_known_posterior():
    # 1 parameter, OFV = ((theta - mu) / s)^2: the target is N(mu, s^2). Proposal N(mu, (2 s)^2).
    mu, s = 2.0, 0.5
    rng = np.random.default_rng(1)
    theta = rng.normal(mu, 2 * s, size=20000)
    dofv = ((theta - mu) / s) ** 2
    log_ir = log_importance_ratio(dofv, proposal_logpdf(theta[:, None], [mu], [[4 * s * s]]))
    direct = norm.logpdf(theta, mu, s) - norm.logpdf(theta, mu, 2 * s)  # up to a constant
    assert np.ptp(log_ir - direct) < 1e-9
    pick = resample_without_replacement(log_ir, 2000, rng)
    assert len(set(pick)) == 2000
    drawn = theta[pick]
    assert abs(drawn.mean() - mu) < 4 * s / math.sqrt(2000)
    assert drawn.std() == pytest.approx(s, rel=0.06)


def test_sir_weights_ignore_invalid_proposals():
    log_ir = log_importance_ratio(np.array([1.0, np.nan, 2.0]), np.zeros(3))
    assert log_ir[1] == -np.inf
    pick = resample_without_replacement(log_ir, 2, np.random.default_rng(0))
    assert sorted(pick) == [0, 2]
    with pytest.raises(ValueError, match="finite importance ratio"):
        resample_without_replacement(log_ir, 3, np.random.default_rng(0))


# ------------------------------------------------------------------ resampling
def test_resampled_subjects_get_new_ids(theo):
    draws = resample_subjects(theo, 3, seed=1)
    assert draws.shape == (3, 12)
    frame = replicate_frame(theo, draws)
    for r in range(3):
        rows = frame[frame["REP"] == r + 1]
        assert list(np.unique(rows["ID"])) == list(range(1, 13))
        # Each new subject carries the records of the subject it was drawn from.
        orig = theo.to_frame()
        src = pd_ids(theo)[draws[r, 4]]
        assert np.allclose(rows[rows["ID"] == 5]["DV"].to_numpy(), orig[orig["ID"] == src]["DV"].to_numpy())


def pd_ids(ds):
    import pandas as pd

    return pd.unique(ds.frame["ID"])


def test_stratified_resampling_keeps_strata(theo):
    frame = theo.to_frame()
    heavy = frame.groupby("ID")["WT"].first() > 70
    strat = frame.assign(HEAVY=frame["ID"].map(heavy).astype(int))
    ds = pkmix.read_nonmem(strat)
    draws = resample_subjects(ds, 5, seed=2, stratify="HEAVY")
    ids = pd_ids(ds)
    for row in draws:
        assert sum(heavy[ids[i]] for i in row) == int(heavy.sum())
    with pytest.raises(ValueError, match="stratify"):
        resample_subjects(ds, 2, stratify="NOPE")


# ------------------------------------------------------------------ bootstrap
def test_bootstrap_of_theophylline(theo_fit, theo_boot, tmp_path):
    b = theo_boot
    assert len(b.estimates) == 16
    assert b.shares["successful"] >= 0.75
    s = b.summary
    assert list(s.index) == b.names
    for name in b.names:
        row = s.loc[name]
        assert row["pct_lower"] < row["estimate"] < row["pct_upper"], name
        assert row["bias"] == pytest.approx(row["mean"] - row["estimate"])
    # The replicates start at the original estimates and differ from them (different data).
    assert np.all(b.estimates["tcl"].to_numpy() != theo_fit.theta["tcl"])
    b.write(tmp_path)
    saved = json.loads((tmp_path / "bootstrap.json").read_text())
    assert saved["summary"][0]["parameter"] == b.names[0]
    assert (tmp_path / "bootstrap_distributions.png").stat().st_size > 1000


def test_bootstrap_rejects_bad_options(theo_fit):
    with pytest.raises(ValueError, match="n must be at least 2"):
        pkmix.bootstrap(theo_fit, n=1)
    with pytest.raises(ValueError, match="needs more replicates than subjects"):
        pkmix.bootstrap(theo_fit, n=5, acceleration="regression")


def test_parameter_sets_from_bootstrap_and_covariance(theo_fit, theo_boot, theo):
    from pkmix.workflows import parameter_sets

    sets = parameter_sets(theo_fit, theo_boot, n=5, seed=0)
    tcl = {float(np.asarray(v.theta)[1]) for v in sets}
    assert tcl <= set(theo_boot.samples()["tcl"])
    cov_sets = parameter_sets(theo_fit, "covariance", n=50, seed=0)
    draws = np.asarray([np.asarray(v.theta)[1] for v in cov_sets])
    assert abs(draws.mean() - theo_fit.theta["tcl"]) < 4 * theo_fit.se["tcl"] / math.sqrt(50)
    # Usable by pkmix.simulate.
    sim = pkmix.simulate(theo_fit.model, theo, n=1, params=cov_sets[0])
    assert len(sim) == theo.n_records


# ------------------------------------------------------------------ command line
def test_cli_bootstrap_and_sir_refuse_a_folder_without_a_run(tmp_path, capsys):
    from pkmix.cli import main

    assert main(["bootstrap", str(tmp_path / "missing")]) == 2
    assert "RUN_DIR" in capsys.readouterr().err
    assert main(["sir", str(tmp_path)]) == 2
    assert "results.json" in capsys.readouterr().err
    assert main(["bootstrap", str(tmp_path), "--n", "0"]) == 2
    assert main(["sse", "m.py", "d.csv", "--n-subjects", "10,x"]) == 2


# ------------------------------------------------------------------ SSE
def tiny_model(tcl=1.0):
    return pkmix.Model(
        name="iv1",
        theta={"tcl": tcl, "tv": 3.0},
        omega={"eta_cl": 0.09},
        sigma={"prop": 0.1},
        individual=lambda p: {"cl": jnp.exp(p.tcl + p.eta_cl), "v": jnp.exp(p.tv)},
        structure=pkmix.one_compartment(),
        observe=lambda a, p: a.central / p.v,
        error=pkmix.proportional("prop"),
    )


def test_sse_bias_is_zero_within_monte_carlo_error():
    design = pkmix.TrialDesign(n_subjects=12, doses=[pkmix.Dose(100, cmt=1)], times=[0.5, 2, 6, 12, 24])
    res = pkmix.sse(tiny_model(), design, n=24, seed=5, method="foce", covariance="none")
    s = res.summary.loc[12]
    assert s.loc["tcl", "n"] >= 20
    for name in ("tcl", "tv"):
        assert abs(s.loc[name, "bias"]) < 4 * s.loc[name, "bias_mcse"], name
        assert s.loc[name, "rmse"] > 0


# ------------------------------------------------------------------ slow
@pytest.mark.slow
def test_sir_of_theophylline(theo_fit, tmp_path):
    res = pkmix.sir(theo_fit, samples=300, resamples=60, inflation=1.5, seed=0, out=tmp_path)
    assert len(res.resamples) == 60 and res.resamples.index.is_unique
    assert res.proposals["dofv"].min() > -1e-6 - 0.5  # the estimate is (close to) the optimum
    # The batched evaluation (fit_batch, max_iter 0) at the estimate is pkmix.fit's OFV there.
    assert res.ofv == pytest.approx(theo_fit.ofv, abs=1e-6)
    for name in res.names:
        row = res.summary.loc[name]
        assert row["pct_lower"] < row["estimate"] < row["pct_upper"], name
    assert (tmp_path / "sir_dofv.png").is_file()


@pytest.mark.slow
def test_sse_power_curve_with_an_alternative(tmp_path):
    full = tiny_model()
    design = pkmix.TrialDesign(arms=[pkmix.Arm(6, [pkmix.Dose(100, cmt=1)], times=[0.5, 2, 6, 24],
                                               covariates={"TRT": 0}),
                                     pkmix.Arm(6, [pkmix.Dose(100, cmt=1)], times=[0.5, 2, 6, 24],
                                               covariates={"TRT": 1})])
    trt = pkmix.Model(
        name="iv1_trt", theta={"tcl": 1.0, "tv": 3.0, "beta": 0.0}, omega={"eta_cl": 0.09}, sigma={"prop": 0.1},
        covariates=["TRT"],
        individual=lambda p: {"cl": jnp.exp(p.tcl + p.beta * p.TRT + p.eta_cl), "v": jnp.exp(p.tv)},
        structure=pkmix.one_compartment(), observe=lambda a, p: a.central / p.v, error=pkmix.proportional("prop"))
    res = pkmix.sse(full, design, n=40, alt=trt, n_subjects=[8, 16], method="foce", covariance="none",
                    out=tmp_path)
    assert res.test == "type I error"
    assert list(res.power_table["n_subjects"]) == [8, 16]
    assert (res.power_table["rate"] < 0.25).all()
    assert (tmp_path / "sse_power.png").is_file()


@pytest.mark.slow
def test_cli_bootstrap_and_sir_of_a_run(tmp_path):
    from pkmix.cli import main

    run = tmp_path / "run"
    model = ROOT / "examples" / "theophylline" / "model.py"
    assert main(["fit", str(model), str(DATA / "theo_sd.csv"), "--out", str(run)]) == 0
    assert main(["bootstrap", str(run), "--n", "14", "--acceleration", "regression"]) == 0
    saved = json.loads((run / "bootstrap" / "bootstrap.json").read_text())
    assert saved["settings"]["n"] == 14
    # SIR from the run folder: the covariance rebuilt from results.json's SEs and correlations.
    assert main(["sir", str(run), "--samples", "40", "--resamples", "8"]) == 0
    sir_saved = json.loads((run / "sir" / "sir.json").read_text())
    assert sir_saved["settings"]["resamples"] == 8
    # The run's report shows both, number for number.
    from pkmix.report import read_report_numbers, write_report

    numbers = read_report_numbers(write_report(run, vpc=False).read_text())
    for row in saved["summary"]:
        assert numbers[f"bootstrap.pct_lower.{row['parameter']}"] == row["pct_lower"]
    for row in sir_saved["summary"]:
        assert numbers[f"sir.median.{row['parameter']}"] == row["median"]


_WORKER = textwrap.dedent("""
    import json, sys, warnings
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if nproc > 1:
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
    warnings.simplefilter("ignore")
    sys.path.insert(0, sys.argv[5])
    import pkmix
    from model import model
    fit = pkmix.fit(model, sys.argv[6], progress=False, diagnostics=False)
    b = pkmix.bootstrap(fit, n=6, seed=1, acceleration=None, covariance="none")
    if pid == 0:
        b.estimates[b.names + ["ofv"]].to_csv(out, index=False)
""")


@pytest.mark.slow
def test_two_processes_give_the_one_process_bootstrap(tmp_path):
    import pandas as pd

    worker = tmp_path / "worker.py"
    worker.write_text(_WORKER)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    args = [str(ROOT / "examples" / "theophylline"), str(DATA / "theo_sd.csv")]
    one = tmp_path / "one.csv"
    subprocess.run([sys.executable, str(worker), "0", "1", "0", str(one), *args], check=True, env=env, timeout=600)
    two = tmp_path / "two.csv"
    port = str(20000 + os.getpid() % 20000)
    procs = [subprocess.Popen([sys.executable, str(worker), str(i), "2", port, str(two), *args], env=env)
             for i in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    a, b = pd.read_csv(one), pd.read_csv(two)
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-8)


def test_report_shows_bootstrap_and_sir_of_the_run(theo_fit, theo_boot, tmp_path):
    from pkmix.report import read_report_numbers, render_report

    run = tmp_path / "run"
    theo_boot.write(run / "bootstrap")
    # A sir.json as pkmix.sir writes it (SIRResult.to_dict), one parameter.
    sir = {"kind": "sir", "level": 0.9, "effective_samples": 812.5, "settings": {"samples": 1000, "resamples": 200,
                                                                                 "inflation": 1.5},
           "summary": [{"parameter": "tcl", "estimate": 1.01, "se_covariance": 0.08, "sir_se": 0.09, "median": 1.02,
                        "pct_lower": 0.87, "pct_upper": 1.16}]}
    (run / "sir").mkdir()
    (run / "sir" / "sir.json").write_text(json.dumps(sir))
    theo_fit.run_dir = run
    try:
        text = render_report(theo_fit, theo_fit.to_dict(), vpc=False)
    finally:
        del theo_fit.run_dir
    got = read_report_numbers(text)
    for name in theo_boot.names:
        for col in ("estimate", "pct_lower", "pct_upper", "bca_lower", "bca_upper", "bias"):
            want = theo_boot.summary.loc[name, col]
            if np.isfinite(want):
                assert got[f"bootstrap.{col}.{name}"] == pytest.approx(want, rel=1e-12), (name, col)
    assert got["sir.pct_upper.tcl"] == 1.16 and got["sir.median.tcl"] == 1.02
    assert "90.0 % intervals" in text and "effective sample size 812.5" in text
    assert "id='bootstrap_distributions'" in text and "data:image/png;base64," in text
    # Without bootstrap/SIR output there is no such section; IMP's MC SE only when present.
    plain = render_report(theo_fit, dict(theo_fit.to_dict(), ofv_mc_se=0.037), vpc=False)
    assert "Bootstrap and SIR" not in plain
    assert read_report_numbers(plain)["ofv_mc_se"] == 0.037


def test_ofv_mc_se_in_results_json_and_summary(theo_fit):
    # FOCE-I has none (null in results.json); IMP's is printed beside the OFV.
    assert theo_fit.to_dict()["ofv_mc_se"] is None
    assert "Monte Carlo SE" not in str(theo_fit)
    import copy

    imp_like = copy.copy(theo_fit)
    imp_like.ofv_mc_se = 0.0371
    assert json.loads(imp_like.to_json())["ofv_mc_se"] == 0.0371
    assert f"OFV {theo_fit.ofv:.4f} (Monte Carlo SE 0.0371)" in str(imp_like)


@pytest.mark.slow
def test_fit_batch_subject_indices_groups_and_starts(theo_fit, theo):
    import jax

    from pkmix.batch import fit_batch

    model, one = theo_fit.model, jax.devices()[:1]
    draws = resample_subjects(theo, 4, seed=3)
    kw = dict(params=theo_fit.values, covariance="none", devices=one, chunk_size=4)
    by_index = fit_batch(model, theo, subjects=draws, **kw)
    by_frame = fit_batch(model, replicate_frame(theo, draws), **kw)
    cols = by_index.names + ["ofv", "iterations"]
    # The same replicates, bound once and gathered or built as frames: the same fits.
    np.testing.assert_allclose(by_index.estimates[cols].to_numpy(float), by_frame.estimates[cols].to_numpy(float),
                               rtol=1e-9, atol=1e-12)
    # Groups of 2 on a device whose share is 4 (theophylline's unused WT column): the
    # configuration that raised ZeroDivisionError; the same fits, differently vectorised.
    grouped = fit_batch(model, theo, subjects=draws, vmap_width=2, **kw)
    assert grouped.timing["vmap_width"] == 2
    np.testing.assert_allclose(grouped.estimates[cols].to_numpy(float), by_index.estimates[cols].to_numpy(float),
                               rtol=1e-6)
    # Per-replicate starts (each replicate's own estimates moved 10 %) and the original
    # modes of the drawn subjects: every replicate reaches the optimum it reached before.
    starts = [_common.values_from_vector(model, theo_fit.values, by_index.names,
                                         by_index.estimates.loc[r, by_index.names].to_numpy(float) * 1.1)
              for r in range(4)]
    modes = theo_fit.etas.drop(columns="ID").to_numpy()[draws]
    again = fit_batch(model, theo, subjects=draws, etas=modes, **dict(kw, params=starts))
    assert again.timing["compile_s"] == 0.0  # starts and modes are run-time inputs
    assert again.converged.all() and by_index.converged.all()
    np.testing.assert_allclose(again.ofv, by_index.ofv, atol=1e-3)
    np.testing.assert_allclose(again.estimates[by_index.names].to_numpy(float),
                               by_index.estimates[by_index.names].to_numpy(float), rtol=2e-2)
    assert not again.estimates["boundary"].any()


@pytest.mark.slow
def test_sse_with_agq_and_imp_fits():
    # fit_batch runs AGQ and IMP through the same loop as FOCE-I (pkmix sse --method agq|imp);
    # with one eta AGQ's 5 nodes and IMP's draws agree with FOCE-I's estimates closely.
    design = pkmix.TrialDesign(n_subjects=12, doses=[pkmix.Dose(100, cmt=1)], times=[0.5, 2, 6, 12, 24])
    kw = dict(n=4, seed=5, covariance="none")
    foce = pkmix.sse(tiny_model(), design, method="focei", **kw).fits[12][0].estimates
    for method in ("agq", "imp"):
        est = pkmix.sse(tiny_model(), design, method=method, **kw).fits[12][0].estimates
        assert est["converged"].all(), method
        np.testing.assert_allclose(est["tcl"], foce["tcl"], rtol=0.02, err_msg=method)

"""pkmix.simulate and pkmix.vpc.

Simulated data are checked against moments derived by hand (not from the code), the
PRNG discipline against re-simulation in other chunkings, and the VPC by its coverage
on data simulated from the model itself (and its lack of coverage under a wrong model).
Each model's simulation program is compiled once per session (module fixtures).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pkmix
from pkmix._simulate import Arm, Categorical, Dose, LogNormal, Normal, Replicates, TrialDesign, Uniform, simulate, vpc

from conftest import oral_one_compartment

TIMES = (0.5, 1.0, 2.0, 4.0, 8.0)


def _iv_model(error):
    """1-cmt IV bolus, eta on CL only (so log C(t) has hand-derivable moments)."""
    sigma = {"sd": 0.1} if error != "combined" else {"add": 0.2, "prop": 0.1}
    err = {"log": pkmix.log_additive("sd"), "prop": pkmix.proportional("sd"),
           "combined": pkmix.combined("add", "prop")}[error]
    return pkmix.Model(
        name=f"iv-{error}", theta={"tcl": math.log(2.0), "tv": math.log(10.0)}, omega={"eta_cl": 0.09},
        sigma=sigma, individual=lambda p: {"cl": jnp.exp(p.tcl + p.eta_cl), "v": jnp.exp(p.tv)},
        structure=pkmix.one_compartment(), observe=lambda a, p: a.central / p.v, error=err)


@pytest.fixture(scope="module")
def log_model():
    return _iv_model("log")


@pytest.fixture(scope="module")
def iv_design():
    return TrialDesign(n_subjects=40, doses=[Dose(100.0)], times=TIMES)


@pytest.fixture(scope="module")
def log_reps(log_model, iv_design):
    return simulate(log_model, iv_design, n=100, seed=11, output="arrays")


def test_log_scale_moments_match_hand_derivation(log_reps):
    # log y(t) = log(D/V) - k t + eps, k = exp(tcl - tv + eta): k is log-normal, so
    # E[log y] = log(D/V) - t exp(mu + w/2), Var = t^2 exp(2 mu + w)(exp(w) - 1) + s^2.
    mu, w, s = math.log(2.0) - math.log(10.0), 0.09, 0.1
    obs = np.asarray(log_reps.template.obs_mask)
    y = np.log(log_reps.dv[:, obs].reshape(log_reps.n_replicates, log_reps.n_subjects, -1))
    n = y.shape[0] * y.shape[1]
    for j, t in enumerate(TIMES):
        v = y[:, :, j].ravel()
        mean = math.log(10.0) - t * math.exp(mu + w / 2)
        var = t**2 * math.exp(2 * mu + w) * (math.exp(w) - 1) + s**2
        assert abs(v.mean() - mean) < 5 * math.sqrt(var / n), (t, v.mean(), mean)
        # Var of a sample variance ~ 2 var^2/n (close to Gaussian here).
        assert abs(v.var(ddof=1) - var) < 5 * var * math.sqrt(2.0 / n), (t, v.var(), var)


def test_etas_and_residuals_are_what_was_drawn(log_reps, log_model):
    etas = log_reps.etas
    assert etas.shape == (100, 40, 1)
    assert abs(etas.var() - 0.09) < 5 * 0.09 * math.sqrt(2.0 / etas.size)
    # Residuals given the drawn etas: log y - log f(eta) ~ N(0, 0.1^2).
    obs = np.asarray(log_reps.template.obs_mask)
    t = np.asarray(log_reps.template.time)[obs].reshape(40, -1)
    k = np.exp(math.log(2.0) - math.log(10.0) + etas[:, :, 0])[:, :, None]
    f = 10.0 * np.exp(-k * t[None])
    eps = (np.log(log_reps.dv[:, obs].reshape(100, 40, -1)) - np.log(f)).ravel()
    assert abs(eps.mean()) < 5 * 0.1 / math.sqrt(eps.size)
    assert abs(eps.std() - 0.1) < 0.005
    # Independent draws: no correlation between a subject's residuals at two times.
    e = eps.reshape(100 * 40, -1)
    assert abs(np.corrcoef(e[:, 0], e[:, 1])[0, 1]) < 0.1


def test_replicates_do_not_depend_on_n_or_chunking(log_model, iv_design, log_reps):
    few = simulate(log_model, iv_design, n=7, seed=11, output="arrays", chunk_size=3)
    np.testing.assert_array_equal(few.dv, log_reps.dv[:7])
    other = simulate(log_model, iv_design, n=7, seed=12, output="arrays", chunk_size=3)
    assert not np.allclose(other.dv, few.dv)
    # Different replicates and subjects get different draws (keys never reused).
    assert len(np.unique(log_reps.etas[:, :, 0])) == log_reps.etas[:, :, 0].size


def test_frame_output_is_nonmem_layout_and_reads_back(log_model, iv_design, log_reps):
    frame = log_reps.to_frame([0, 1])
    assert list(frame.columns[:4]) == ["REP", "ID", "TIME", "DV"]
    assert set(frame["REP"]) == {1, 2}
    per_rep = frame[frame["REP"] == 1]
    assert len(per_rep) == 40 * (1 + len(TIMES))
    assert per_rep.loc[per_rep["EVID"] == 1, "DV"].isna().all()
    obs = per_rep[per_rep["EVID"] == 0]
    assert (obs["DV"] > 0).all() and obs["TIME"].tolist()[:5] == list(TIMES)
    ds = log_reps.dataset_of(1)
    assert ds.n_subjects == 40 and ds.n_observations == 40 * len(TIMES)
    np.testing.assert_allclose(ds.frame.loc[ds.frame["EVID"] == 0, "DV"].to_numpy(),
                               log_reps.dv[1][np.asarray(log_reps.template.obs_mask)])


def test_simulate_from_a_dataset_keeps_its_records(theo):
    model = oral_one_compartment({"tka": 0.45, "tcl": 1.0, "tv": 3.45},
                                 {"eta_ka": 0.6, "eta_cl": 0.3, "eta_v": 0.1}, {"add_sd": 0.7},
                                 pkmix.additive("add_sd"))
    frame = simulate(model, theo, n=2, seed=3)
    base = theo.to_frame()
    rep1 = frame[frame["REP"] == 1].drop(columns="REP").reset_index(drop=True)
    for c in ("ID", "TIME", "AMT", "EVID", "CMT", "WT"):
        np.testing.assert_array_equal(rep1[c].to_numpy(), base[c].to_numpy())
    assert not np.allclose(rep1.loc[rep1["EVID"] == 0, "DV"], base.loc[base["EVID"] == 0, "DV"])


@pytest.fixture(scope="module")
def covariate_model():
    return pkmix.Model(
        name="cov", theta={"tcl": 1.0, "tv": 3.0, "beta": 0.75},
        omega=pkmix.Block(["eta_cl", "eta_v"], [0.1, 0.05, 0.2]), iov=pkmix.IOV(occasion="OCC", kappa_cl=0.04),
        sigma={"add": 0.5, "prop": 0.1},
        individual=lambda p: {"cl": jnp.exp(p.tcl + p.eta_cl + p.kappa_cl) * (p.WT / 70.0) ** p.beta,
                              "v": jnp.exp(p.tv + p.eta_v)},
        structure=pkmix.one_compartment(), observe=lambda a, p: a.central / p.v,
        error=pkmix.combined("add", "prop"), covariates=["WT"])


@pytest.fixture(scope="module")
def covariate_reps(covariate_model):
    design = TrialDesign(
        arms=[Arm(30, [Dose(100.0, ii=24.0, addl=2)], times=(1, 12, 25, 36, 49, 60), covariates={"TRT": 0}),
              Arm(30, [Dose(200.0, ii=24.0, addl=2)], times=(1, 12, 25, 36, 49, 60), covariates={"TRT": 1})],
        covariates={"WT": LogNormal(70.0, 0.2, lower=30.0), "SEX": Categorical([0, 1], [0.3, 0.7])},
        occasion_starts=(0, 24, 48), lloq=1.0)
    return simulate(covariate_model, design, n=60, seed=5, output="arrays", censor_blq=True)


def test_block_omega_and_iov_draws(covariate_reps):
    e = covariate_reps.etas.reshape(-1, covariate_reps.etas.shape[-1])
    assert e.shape[1] == 2 + 3  # BSV (cl, v), then one kappa per occasion
    cov = np.cov(e.T)
    n = e.shape[0]
    np.testing.assert_allclose([cov[0, 0], cov[0, 1], cov[1, 1]], [0.1, 0.05, 0.2], atol=5 * 0.2 * math.sqrt(2 / n))
    np.testing.assert_allclose(np.diag(cov)[2:], 0.04, atol=5 * 0.04 * math.sqrt(2 / n))
    assert np.all(np.abs(cov[2:, :2]) < 0.01)


def test_covariate_draws_and_arms(covariate_reps):
    names = [n.upper() for n in covariate_reps.template.covariate_names]
    assert names[0] == "WT" and {"TRT", "SEX", "ARM"} <= set(names)
    cov = covariate_reps.covariates[:, :, 0, :]  # first record of each subject
    wt = cov[..., names.index("WT")]
    assert abs(np.log(wt).mean() - math.log(70.0)) < 5 * 0.2 / math.sqrt(wt.size)
    assert abs(np.log(wt).std() - 0.2) < 0.01
    sex = cov[..., names.index("SEX")]
    assert set(np.unique(sex)) == {0.0, 1.0} and abs(sex.mean() - 0.7) < 5 * math.sqrt(0.21 / sex.size)
    trt = cov[..., names.index("TRT")]
    np.testing.assert_array_equal(trt[:, :30], 0.0)
    np.testing.assert_array_equal(trt[:, 30:], 1.0)
    # Constant within a subject, different between replicates.
    full = covariate_reps.covariates[..., names.index("WT")]
    assert np.all(full == full[:, :, :1])
    assert not np.allclose(wt[0], wt[1])


def test_blq_censoring(covariate_reps):
    obs = np.asarray(covariate_reps.template.obs_mask)
    blq = covariate_reps.blq
    assert blq[:, obs].mean() > 0.01  # the design has BLQ troughs
    assert np.all(covariate_reps.dv[blq] == 1.0)
    assert np.all(covariate_reps.dv[:, obs][~blq[:, obs]] >= 1.0)
    frame = covariate_reps.to_frame([0])
    ds = pkmix.read_nonmem(frame.drop(columns="REP"))
    assert ds.n_blq == int(blq[0].sum())


def test_resampled_covariates_come_from_the_table(theo):
    model = pkmix.Model(
        theta={"tcl": 1.0, "tv": 3.0}, omega={"eta_cl": 0.1}, sigma={"sd": 0.1},
        individual=lambda p: {"cl": jnp.exp(p.tcl + p.eta_cl) * p.WT / 70.0, "v": jnp.exp(p.tv)},
        structure=pkmix.one_compartment(), observe=lambda a, p: a.central / p.v,
        error=pkmix.proportional("sd"), covariates=["WT"])
    design = TrialDesign(n_subjects=50, doses=[100.0], times=(1.0, 4.0), resample=theo, resample_columns=["WT"])
    reps = simulate(model, design, n=4, seed=0, output="arrays")
    wt = reps.covariates[:, :, 0, 0]
    table = theo.frame.groupby("ID").first()["WT"].to_numpy()
    assert np.all(np.isin(wt, table))
    assert len(np.unique(wt)) > 6


def test_design_and_argument_errors(log_model, iv_design):
    with pytest.raises(ValueError, match="censor_blq"):
        simulate(log_model, iv_design, n=1, censor_blq=True)
    with pytest.raises(ValueError, match="output"):
        simulate(log_model, iv_design, output="parquet")
    with pytest.raises(ValueError, match="no observation times"):
        simulate(log_model, TrialDesign(n_subjects=2, doses=[100.0]))
    with pytest.raises(ValueError, match="more than once"):
        TrialDesign(arms=[Arm(2, [100.0], (1.0,), covariates={"WT": 70})],
                    covariates={"WT": Normal(70, 10)}).frame()
    with pytest.raises(pkmix.ModelError, match="not a parameter"):
        simulate(log_model, iv_design, params={"nope": 1.0})
    with pytest.raises(ValueError, match="probs"):
        Categorical([0, 1], [0.5, 0.6])
    assert 0 <= Uniform(0, 1).typical() <= 1


def test_cli_writes_csvs(tmp_path):
    from pkmix.cli import main

    model_file = tmp_path / "m.py"
    model_file.write_text(
        "import jax.numpy as jnp, pkmix\n"
        "model = pkmix.Model(theta={'tcl': 0.7, 'tv': 2.3}, omega={'eta_cl': 0.09}, sigma={'sd': 0.1},\n"
        "    individual=lambda p: {'cl': jnp.exp(p.tcl + p.eta_cl), 'v': jnp.exp(p.tv)},\n"
        "    structure=pkmix.one_compartment(), observe=lambda a, p: a.central / p.v,\n"
        "    error=pkmix.log_additive('sd'))\n")
    design_file = tmp_path / "d.py"
    design_file.write_text("import pkmix._simulate as s\n"
                           "design = s.TrialDesign(n_subjects=3, doses=[s.Dose(100.0)], times=(1.0, 2.0, 4.0))\n")
    out = tmp_path / "out"
    assert main(["simulate", str(model_file), str(design_file), "--n", "2", "--seed", "4", "--out", str(out)]) == 0
    frame = pd.read_csv(out / "simulated.csv", na_values=".")
    assert frame["REP"].nunique() == 2 and len(frame) == 2 * 3 * 4
    assert main(["simulate", str(model_file), str(design_file), "--n", "2", "--out", str(out),
                 "--per-replicate"]) == 0
    one = pkmix.read_nonmem(out / "rep_0001.csv")
    assert one.n_subjects == 3 and one.n_observations == 9
    assert main(["simulate", str(model_file), str(tmp_path / "missing.csv"), "--out", str(out)]) == 2


# ----------------------------------------------------------------------------- VPC
def test_vpc_covers_data_simulated_from_the_model(log_model, iv_design, log_reps):
    coverage, wrong = [], []
    for r in range(8):
        data = log_reps.dataset_of(r)
        v = vpc(log_model, data, n=200, bins=5, seed=100 + r)
        coverage.append(v.coverage())
        w = vpc(log_model, data, params={"tcl": math.log(3.0)}, n=200, bins=5, seed=100 + r)
        wrong.append(w.coverage())
    # 8 datasets x 5 bins x 3 percentiles, each covered with probability 0.95.
    assert 0.87 <= np.mean(coverage) <= 1.0, coverage
    assert np.mean(wrong) < 0.6, wrong
    assert set(v.percentiles.columns) >= {"stratum", "bin", "time", "pi", "observed", "sim_lower", "sim_median",
                                          "sim_upper"}
    assert len(v.percentiles) == 5 * 3 and v.blq is None
    b = v.bins
    assert b["n_observed"].sum() == data.n_observations
    # Bins at observed-time quantiles: the sampling times each fall in one bin.
    assert np.all(b["lower"].to_numpy() <= b["time"].to_numpy())


def test_vpc_pred_corrected_stratified_and_blq(covariate_model, covariate_reps):
    data = covariate_reps.dataset_of(0)
    v = vpc(covariate_model, data, n=100, bins=[0, 6, 20, 30, 45, 72], pred_corrected=True, stratify="TRT",
            seed=1)
    assert set(v.percentiles["stratum"]) == {0.0, 1.0}
    assert v.blq is not None and set(v.blq.columns) >= {"observed", "sim_lower", "sim_median", "sim_upper"}
    # BLQ troughs: the observed fraction of some bin is positive and inside its band.
    assert (v.blq["observed"] > 0).any()
    inside = (v.blq["observed"] >= v.blq["sim_lower"]) & (v.blq["observed"] <= v.blq["sim_upper"])
    assert inside.mean() >= 0.7
    # Censored percentiles are NaN where the BLQ fraction reaches the percentile.
    p5 = v.percentiles[v.percentiles["pi"] == 0.05].merge(v.blq, on=["stratum", "bin"], suffixes=("", "_blq"))
    assert p5.loc[p5["observed_blq"] >= 0.05, "observed"].isna().all()
    # Prediction correction: corrected DV = DV * median(PRED in bin) / PRED.
    obs = v.observations
    sel = (obs["stratum"] == 1.0) & (obs["bin"] == 3) & (obs["BLQ"] == 0)
    raw = data.frame.loc[(data.frame["EVID"] == 0), "DV"].to_numpy()[sel.to_numpy()]
    med = np.median(obs.loc[(obs["stratum"] == 1.0) & (obs["bin"] == 3), "PRED"])
    np.testing.assert_allclose(obs.loc[sel, "DV"], raw * med / obs.loc[sel, "PRED"], rtol=1e-12)
    assert 0.8 <= v.coverage() <= 1.0


def test_replicates_object(log_reps):
    assert isinstance(log_reps, Replicates) and len(log_reps) == 100 and log_reps.n_subjects == 40
    b = log_reps.batch(3)
    np.testing.assert_array_equal(np.asarray(b.dv), log_reps.dv[3])
    assert "100 replicates" in repr(log_reps)

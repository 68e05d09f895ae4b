"""pkmix.fit_batch: replicate fits in one program.

Compiled fit programs are shared by the slow tests: one replicate shape (20 subjects x
8 records), one chunk size and the default settings, so the batch fits compile once,
plus once for the LRT's full model and once for ``pkmix.fit``. Fast tests check the
data handling and the summary/power arithmetic without compiling a fit.
Multi-device sharding is checked in tests/test_sharding.py (a subprocess).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pkmix
from pkmix.batch import BatchFitResult, _grouped, _stack, boundary_flags, fit_batch, likelihood_ratio_test
from pkmix._simulate import Arm, Dose, TrialDesign, simulate

TIMES = (0.5, 2.0, 6.0, 12.0, 24.0)
CHUNK = 8
START = {"tcl": 1.2, "tv": 2.8}


def _model(effect: bool, fixed_effect: bool = False):
    theta = {"tcl": 1.0, "tv": 3.0}
    covariates = []
    if effect:
        theta["beta"] = pkmix.Theta(0.0, fixed=True) if fixed_effect else 0.3
        covariates = ["TRT"]

    def individual(p):
        v = jnp.exp(p.tv + p.eta_v)
        if effect:
            v = v * jnp.exp(p.beta * p.TRT)
        return {"cl": jnp.exp(p.tcl + p.eta_cl), "v": v}

    return pkmix.Model(name="1cmt-iv" + ("-trt" if effect else ""), theta=theta,
                       omega={"eta_cl": 0.1, "eta_v": 0.1}, sigma={"prop_sd": 0.1}, individual=individual,
                       structure=pkmix.one_compartment(), observe=lambda a, p: a.central / p.v,
                       error=pkmix.proportional("prop_sd"), covariates=covariates)


@pytest.fixture(scope="module")
def model():
    return _model(False)


@pytest.fixture(scope="module")
def design():
    return TrialDesign(arms=[Arm(10, [Dose(100.0)], TIMES, covariates={"TRT": 0}),
                             Arm(10, [Dose(100.0)], TIMES, covariates={"TRT": 1})])


@pytest.fixture(scope="module")
def reps(model, design):
    return simulate(model, design, n=24, seed=1, output="arrays")


@pytest.fixture(scope="module")
def batch_result(model, reps):
    return fit_batch(model, reps, params=START, chunk_size=CHUNK)


# ------------------------------------------------------------------ fast tests
def test_frame_and_list_inputs_stack_like_arrays(model, reps):
    arrays = _stack(model, reps)
    frame = _stack(model, reps.to_frame([0, 1, 2]))
    listed = _stack(model, [reps.dataset_of(r) for r in range(3)])
    assert frame.n == listed.n == 3 and arrays.n == 24
    for r in range(3):
        want = dict(vars(arrays.shared), **{k: v[r] for k, v in arrays.varying.items()})
        for stack in (frame, listed):
            got = dict(vars(stack.shared), **{k: v[r] for k, v in stack.varying.items()})
            obs = np.asarray(want["obs_mask"])
            for f in ("time", "amt", "evid", "obs_mask", "record_mask"):
                np.testing.assert_array_equal(np.asarray(got[f]), np.asarray(want[f]), err_msg=f)
            np.testing.assert_allclose(np.asarray(got["dv"])[obs], np.asarray(want["dv"])[obs], rtol=1e-15)


def test_input_errors(model, reps):
    with pytest.raises(ValueError, match="REP"):
        fit_batch(model, reps.to_frame([0]).drop(columns="REP"))
    with pytest.raises(TypeError, match="Replicates"):
        fit_batch(model, 3)
    with pytest.raises(ValueError, match="same number of subjects"):
        a = reps.dataset_of(0)
        b = pkmix.read_nonmem(a.to_frame().query("ID <= 5"))
        fit_batch(model, [a, b])
    with pytest.raises(ValueError, match="covariance"):
        fit_batch(model, reps, covariance="r")
    with pytest.raises(ValueError, match="fit_batch does not run it"):
        fit_batch(model, reps, method="saem")
    with pytest.raises(pkmix.ModelError, match="covariate"):
        needs_wt = pkmix.Model(theta={"tcl": 1.0, "tv": 3.0}, omega={"eta_cl": 0.1}, sigma={"s": 0.1},
                               individual=lambda p: {"cl": jnp.exp(p.tcl + p.eta_cl) * p.WT, "v": jnp.exp(p.tv)},
                               structure=pkmix.one_compartment(), observe=lambda a, p: a.central / p.v,
                               error=pkmix.proportional("s"), covariates=["WT"])
        fit_batch(needs_wt, reps)


def test_subject_index_input_errors(model, reps):
    data = reps.dataset_of(0)
    with pytest.raises(ValueError, match=r"subjects\[1, 2\] = 20: .* indexed 0..19"):
        fit_batch(model, data, subjects=np.array([[0, 1, 2], [3, 4, 20]]))
    with pytest.raises(ValueError, match=r"\[R, N\] array of integer"):
        fit_batch(model, data, subjects=np.arange(5))
    with pytest.raises(ValueError, match=r"\[R, N\] array of integer"):
        fit_batch(model, data, subjects=np.zeros((2, 3)))
    with pytest.raises(TypeError, match="one dataset"):
        fit_batch(model, reps, subjects=np.zeros((2, 3), int))
    with pytest.raises(ValueError, match=r"etas: expected shape \(2, 3, 2\)"):
        fit_batch(model, data, subjects=np.zeros((2, 3), int), etas=np.zeros((2, 3, 1)))
    with pytest.raises(ValueError, match="3 parameter sets for 2 replicates"):
        fit_batch(model, data, subjects=np.zeros((2, 3), int), params=[START] * 3)
    fixed = _model(True, fixed_effect=True)
    with pytest.raises(ValueError, match=r"params\[1\]: the fixed parameter beta"):
        fit_batch(fixed, data, subjects=np.zeros((2, 3), int), params=[{}, {"beta": 0.5}])


def test_grouped_map_with_empty_outputs():
    # fit_batch's groups of vmap_width replicates (vmap_width below a device's share):
    # lax.map(batch_size=w) reshaped every output with -1, which divides by zero on an
    # output without elements (the fit program's empty iteration history in batch fits:
    # the ZeroDivisionError of theophylline at vmap_width 16). _grouped must equal a
    # plain vmap, empty outputs included.
    def f(args):
        x, y = args
        return {"sum": x @ y, "none": jnp.zeros((0, x.shape[0])), "scaled": 2.0 * y}

    xs = (jnp.arange(24.0).reshape(8, 3), jnp.linspace(0.0, 1.0, 24).reshape(8, 3))
    got = _grouped(f, xs, 8, 2)
    want = jax.vmap(f)(xs)
    assert got["none"].shape == (8, 0, 3)
    np.testing.assert_array_equal(got["sum"], want["sum"])
    np.testing.assert_array_equal(got["scaled"], want["scaled"])


def test_boundary_flags_by_rule():
    m = pkmix.Model(theta={"tcl": pkmix.Theta(1.0, lower=0.0, upper=10.0), "tv": 3.0},
                    omega={"eta_cl": 0.1, "eta_v": 0.1}, sigma={"s": 0.1},
                    individual=lambda p: {"cl": p.tcl * jnp.exp(p.eta_cl), "v": jnp.exp(p.tv + p.eta_v)},
                    structure=pkmix.one_compartment(), observe=lambda a, p: a.central / p.v,
                    error=pkmix.proportional("s"))
    names = ["tcl", "tv", "omega(eta_cl,eta_cl)", "omega(eta_v,eta_v)", "s"]
    ref = np.array([[1.0, 3.0, 0.1, 0.1, 0.1]])
    table = pd.DataFrame({
        "tcl": [1.0, 0.005, 9.995, 1.0, 1.0],  # bounded (0, 10): within 1e-3 of the range = 0.01
        "tv": [3.0, 3.0, 3.0, 3.0, 3.0],
        "omega(eta_cl,eta_cl)": [0.1, 0.1, 0.1, 5e-5, 0.1],  # below 1e-3 of the start's 0.1
        "omega(eta_v,eta_v)": [0.1, 0.1, 0.1, 0.1, 0.1], "s": [0.1] * 5})
    assert boundary_flags(m, table, names, ref).tolist() == [False, True, True, True, False]
    # An OMEGA correlation beyond pkmix.fit's 0.99.
    block = pkmix.Model(theta={"tcl": 1.0, "tv": 3.0}, omega=pkmix.Block(["eta_cl", "eta_v"], [0.1, 0.0, 0.1]),
                        sigma={"s": 0.1}, individual=m.individual, structure=pkmix.one_compartment(),
                        observe=lambda a, p: a.central / p.v, error=pkmix.proportional("s"))
    corr = pd.DataFrame({"omega(eta_cl,eta_cl)": [0.1, 0.1], "omega(eta_cl,eta_v)": [0.0995, 0.05],
                         "omega(eta_v,eta_v)": [0.1, 0.1]})
    assert boundary_flags(block, corr, list(corr.columns), np.full((1, 3), 0.1)).tolist() == [True, False]


def _fake(ofv, converged, n_est, estimates=None):
    est = pd.DataFrame({"REP": np.arange(1, len(ofv) + 1), "ofv": ofv, "converged": converged})
    if estimates is not None:
        for k, v in estimates.items():
            est[k] = v
    names = [k for k in (estimates or {}) if not k.startswith("se(")]
    return BatchFitResult(est, names, None, {}, "focei", "m", 10, n_est)


def test_likelihood_ratio_power_arithmetic():
    full = _fake(np.array([100.0, 100.0, 100.0, 100.0, 100.0]), np.array([True] * 4 + [False]), 5)
    reduced = _fake(np.array([105.0, 103.0, 110.0, 100.5, 200.0]), np.array([True] * 5), 4)
    p = likelihood_ratio_test(full, reduced)
    assert p.df == 1 and p.critical == pytest.approx(3.841458820694124)
    assert p.n == 4 and p.power == pytest.approx(0.5)  # 5 and 10 exceed 3.84; 3 and 0.5 do not
    assert p.power_ci[0] < 0.5 < p.power_ci[1]
    with pytest.raises(ValueError, match="df"):
        likelihood_ratio_test(reduced, full)


def test_summary_arithmetic():
    est = np.array([1.0, 1.2, 0.8, 1.1])
    se = np.array([0.1, 0.1, 0.1, 0.05])
    r = _fake(np.zeros(4), np.array([True, True, True, True]), 1, {"a": est, "se(a)": se})
    s = r.summary({"a": 1.0}).loc["a"]
    assert s["mean"] == pytest.approx(1.025)
    assert s["bias"] == pytest.approx(0.025)
    assert s["rmse"] == pytest.approx(math.sqrt(np.mean((est - 1.0) ** 2)))
    assert s["relative_rmse_percent"] == pytest.approx(100 * s["rmse"])
    assert s["bias_mcse"] == pytest.approx(np.std(est, ddof=1) / 2)
    # |est - 1| <= 1.96 SE: 0 yes, 0.2 no (0.196), 0.2 no, 0.1 no (0.098).
    assert s["coverage"] == pytest.approx(0.25)


# ------------------------------------------------------------------ fits (slow: compile)
@pytest.mark.slow
def test_recovers_simulation_parameters(batch_result, reps):
    res = batch_result
    assert res.success_rate >= 0.9, res.estimates[["status", "message"]]
    summary = res.summary()
    truth = {"tcl": 1.0, "tv": 3.0, "omega(eta_cl,eta_cl)": 0.1, "omega(eta_v,eta_v)": 0.1, "prop_sd": 0.1}
    assert res.truth == pytest.approx(truth)
    for name, row in summary.iterrows():
        # No bias beyond Monte-Carlo error (3.5 MC standard errors; ML variances are
        # biased low by about 1/20 with 20 subjects, well inside that here).
        assert abs(row["bias"]) <= 3.5 * row["bias_mcse"], (name, row)
        # The sandwich SE describes the spread across replicates (within a factor 2).
        assert 0.5 <= row["mean_se"] / row["sd"] <= 2.0, (name, row)
    assert summary.loc[["tcl", "tv"], "coverage"].min() >= 0.7


@pytest.mark.slow
def test_batch_equals_separate_fits(batch_result, reps, model):
    # pkmix.fit runs the same program (engine.fit_program),
    # unvectorised: the steps are the same, so are the estimates (measured: 1e-15).
    res = batch_result
    for r in range(3):
        fit = pkmix.fit(model, reps.dataset_of(r), params=START, diagnostics=False)
        row = res.estimates.iloc[r]
        single = {"tcl": fit.theta["tcl"], "tv": fit.theta["tv"], "omega(eta_cl,eta_cl)": fit.omega.iloc[0, 0],
                  "omega(eta_v,eta_v)": fit.omega.iloc[1, 1], "prop_sd": fit.sigma["prop_sd"]}
        for name, v in single.items():
            assert row[name] == pytest.approx(v, rel=1e-6), (r, name)
            assert row[f"se({name})"] == pytest.approx(fit.se[name], rel=1e-4), (r, name)
        assert row["ofv"] == pytest.approx(fit.ofv, rel=1e-9, abs=1e-6)
        assert row["iterations"] == fit.iterations
        assert bool(row["converged"]) == fit.converged


@pytest.mark.slow
def test_no_recompile_and_chunking(batch_result, reps, model):
    again = fit_batch(model, reps, params=START, chunk_size=CHUNK)
    assert again.timing["compile_s"] == 0.0
    # XLA's memory plan of the (same) chunk program, reported for sizing chunks.
    assert again.timing["planned_bytes"] == batch_result.timing["planned_bytes"] > 0
    np.testing.assert_array_equal(again.estimates[again.names].to_numpy(),
                                  batch_result.estimates[batch_result.names].to_numpy())
    # A partial last chunk (padded) gives the same replicates' results.
    part = fit_batch(model, reps.subset([0, 1, 2]), params=START, chunk_size=CHUNK)
    assert part.timing["compile_s"] == 0.0
    np.testing.assert_allclose(part.estimates[part.names].to_numpy(),
                               batch_result.estimates[batch_result.names].to_numpy()[:3], rtol=1e-12)


@pytest.mark.slow
def test_power_by_likelihood_ratio(design, model, batch_result):
    # Truth: V twice as large in the treated arm (beta = log 2): with 10 subjects an arm
    # and omega_V 0.1 the Wald z is about 0.69 / sqrt(2 * 0.1 / 10) = 4.9, power ~1.
    # (An effect on CL makes some fast-eliminating subjects whose eta modes the inner
    # Gauss-Newton solver does not reach from eta = 0 in its 100 iterations under
    # proportional error; pkmix.fit fails on those replicates the same way.)
    full = _model(True)
    truth = {"tcl": 1.0, "tv": 3.0, "beta": math.log(2.0)}
    reps = simulate(full, design, n=8, seed=2, params=truth, output="arrays")
    f = fit_batch(full, reps, params={"beta": 0.0}, chunk_size=CHUNK)
    r = fit_batch(model, reps, params=START, chunk_size=CHUNK)
    assert r.timing["compile_s"] == 0.0  # the reduced model's program is batch_result's
    p = likelihood_ratio_test(f, r)
    assert p.df == 1
    assert np.all(p.table["dofv"] > -1e-3)  # nested models: the full fit is never worse
    assert p.power >= 0.75, p.table
    beta = f.summary().loc["beta"]
    assert beta["true"] == pytest.approx(math.log(2.0))
    assert abs(beta["bias"]) <= 3.5 * beta["bias_mcse"]

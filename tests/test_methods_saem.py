"""SAEM (issue 18, part A): the program's structure (OMEGA blocks and fixed elements kept,
annealing, reproducibility with a seed), mu-referencing found numerically, the fit's
result (posthoc modes, IMP OFV with its Monte Carlo SE, history), and bad input.

Fast tests share one compiled SAEM program (a 1-cmt oral model with a block, a fixed
eta and a covariate theta without eta, 24 simulated subjects, few iterations) through
module fixtures. Slow tests: recovery of known parameters (2-cmt oral, 5 etas, 200
simulated subjects) and agreement with FOCE-I within 2 standard errors on theophylline
and phenobarbital, with the IMP OFV reported.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pkmix
from pkmix import _compile
from pkmix._estimation.engine import transform_for
from pkmix._estimation.fit import likelihood_options
from pkmix._estimation.methods import SAEM, get_method
from pkmix._estimation.methods.saem import generic_vector, history_frame, layout_for, mu_references, saem_program
from pkmix._model.errors import ModelError
from pkmix._predict import bind, parameter_values

ROOT = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"

TRUE = {"tka": math.log(1.2), "tcl": math.log(3.0), "tv": math.log(30.0), "beta_wt": 0.75}
TRUE_OMEGA = np.array([[0.09, 0.03, 0.0], [0.03, 0.06, 0.0], [0.0, 0.0, 0.1]])  # eta_cl, eta_v block; eta_ka


def small_model(theta=None, omega_block=(0.09, 0.03, 0.06), ka_variance=0.1, add_sd=0.05, prop_sd=0.1):
    """1-cmt oral: a block (eta_cl, eta_v), eta_ka with its variance fixed, and a
    covariate theta (beta_wt) without an eta of its own."""
    theta = dict(TRUE if theta is None else theta)
    return pkmix.Model(
        name="saem_small",
        theta=theta,
        omega=[pkmix.Block(["eta_cl", "eta_v"], list(omega_block)), {"eta_ka": pkmix.Eta(ka_variance, fixed=True)}],
        sigma={"add_sd": pkmix.SD(add_sd), "prop_sd": pkmix.SD(prop_sd)},
        covariates=["WT"],
        individual=lambda p: {"ka": jnp.exp(p.tka + p.eta_ka),
                              "cl": jnp.exp(p.tcl + p.beta_wt * jnp.log(p.WT / 70.0) + p.eta_cl),
                              "v": jnp.exp(p.tv + p.eta_v)},
        structure=pkmix.one_compartment(depot=True),
        observe=lambda a, p: a.central / p.v,
        error=pkmix.combined("add_sd", "prop_sd"),
    )


@pytest.fixture(scope="module")
def small_data():
    """24 subjects from ``small_model``'s true values, written out in numpy (the 1-cmt
    oral closed form; pkmix.simulate would compile a program of its own)."""
    rng = np.random.default_rng(3)
    times = np.array([0.5, 1, 2, 4, 8, 12, 24])
    dose = 100.0
    rows = []
    for i in range(1, 25):
        wt = 70.0 * math.exp(0.25 * rng.normal())
        e_cl, e_v = rng.multivariate_normal(np.zeros(2), TRUE_OMEGA[:2, :2])
        e_ka = rng.normal() * math.sqrt(TRUE_OMEGA[2, 2])
        ka = math.exp(TRUE["tka"] + e_ka)
        cl = math.exp(TRUE["tcl"] + TRUE["beta_wt"] * math.log(wt / 70.0) + e_cl)
        v = math.exp(TRUE["tv"] + e_v)
        k = cl / v
        conc = dose * ka / (v * (ka - k)) * (np.exp(-k * times) - np.exp(-ka * times))
        sd = np.sqrt(0.05**2 + (0.1 * conc) ** 2)
        dv = conc + sd * rng.normal(size=times.size)
        rows.append((i, 0.0, 0.0, dose, 1, 1, 1, wt))
        rows += [(i, t, y, 0.0, 0, 0, 2, wt) for t, y in zip(times, dv)]
    return pd.DataFrame(rows, columns=["ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "WT"])


# Few iterations: the tests check the program, not the estimates (the slow tests do).
FAST = SAEM(exploratory=12, smoothing=8, kernel_steps=(1, 1, 1), newton_steps=2, annealing=0.8)
START = {"tka": 0.0, "tcl": 1.5, "tv": 3.0, "beta_wt": 0.3}


@pytest.fixture(scope="module")
def start_model():
    """The model from a start away from the truth with a large OMEGA block (so annealing
    binds); one object, so the fit test reuses the fixture's compiled program."""
    return small_model(theta=START, omega_block=(1.0, 0.1, 1.0))


@pytest.fixture(scope="module")
def problem(small_data, start_model):
    """What fit_saem hands the program."""
    model = start_model
    dataset, batch = bind(model, small_data)
    values0 = parameter_values(model)
    opts = likelihood_options(FAST, batch, "nonmem")
    transform = transform_for(model)
    mu = mu_references(model, opts, values0, batch)
    layout = layout_for(model, transform, mu, chains=2)
    z0 = generic_vector(transform, layout, values0)
    static = (model, opts, FAST.compiled(), layout, transform)

    def run(seed):
        out, _, _ = _compile.run(saem_program, static, values0, z0, batch, jax.random.PRNGKey(seed))
        return jax.tree_util.tree_map(np.asarray, out)

    return model, mu, layout, run


def test_mu_references_found_numerically(problem):
    model, mu, layout, _ = problem
    names = {model.spec.eta_names[k]: (model.spec.theta_names[j], kind) for k, j, kind in mu}
    # exp(t + eta): additive on the theta's own scale; beta_wt multiplies log(WT) and has no eta.
    assert names == {"eta_cl": ("tcl", "add"), "eta_v": ("tv", "add"), "eta_ka": ("tka", "add")}
    assert [model.spec.theta_names[i] for i in layout.generic_theta] == ["beta_wt"]


def test_mu_references_log_scale_phenobarbital():
    model = load_example("phenobarbital")
    dataset, batch = bind(model, DATA / "pheno.csv")
    opts = likelihood_options(get_method("saem"), batch, "nonmem")
    mu = mu_references(model, opts, parameter_values(model), batch)
    names = {model.spec.eta_names[k]: (model.spec.theta_names[j], kind) for k, j, kind in mu}
    # THETA1 * WT * exp(ETA1): log THETA1 + ETA1; THETA3 (Apgar on V) is a theta without eta.
    assert names == {"ETA1": ("THETA1", "log"), "ETA2": ("THETA2", "log")}


def test_omega_structure_fixed_elements_and_annealing(problem):
    model, _, _, run = problem
    out = run(0)
    ofv, gamma, theta, omega, sigma, acc = out.history
    # The block's covariance is estimated; eta_ka's covariances with it stay 0; its
    # variance is fixed at the declared 0.1 in every iteration.
    assert np.all(omega[:, 0, 2] == 0.0) and np.all(omega[:, 1, 2] == 0.0)
    assert np.all(omega[:, 2, 2] == 0.1)
    assert np.any(omega[5:, 0, 1] != 0.1)
    assert np.all(np.linalg.eigvalsh(out.omega) > 0)
    # Annealing: no variance falls faster than the factor per iteration while it lasts,
    # and from OMEGA = 1 (truth 0.06-0.09) the bound is what sets the first steps.
    diag = np.stack([omega[:, 0, 0], omega[:, 1, 1]], axis=1)
    annealed = slice(1, 5 + FAST.annealing_iterations)
    ratio = diag[annealed] / diag[annealed.start - 1:annealed.stop - 1]
    assert np.all(ratio >= FAST.annealing * (1 - 1e-12))
    assert np.sum(np.isclose(ratio, FAST.annealing, rtol=1e-12)) >= 2
    # The step: 0 during burn-in, 1 while exploring, then 1/k.
    assert list(gamma[:5]) == [0.0] * 5
    assert np.all(gamma[5:5 + FAST.exploratory] == 1.0)
    np.testing.assert_allclose(gamma[5 + FAST.exploratory:], 1.0 / np.arange(1, FAST.smoothing + 1))
    assert np.all((acc >= 0) & (acc <= 1))


def test_reproducible_with_a_seed(problem):
    _, _, _, run = problem
    a = run(0)
    compiles = _compile.STATS["compiles"]
    b, c = run(0), run(1)
    assert _compile.STATS["compiles"] == compiles  # a new seed is a run-time key: nothing compiles
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.theta, c.theta)


def test_history_frame_columns(problem):
    model, _, _, run = problem
    frame = history_frame(model, FAST, run(0).history)
    assert len(frame) == FAST.iterations
    assert list(frame["phase"].unique()) == ["burn-in", "exploratory", "smoothing"]
    for name in ["tka", "tcl", "tv", "beta_wt", "omega(eta_v,eta_cl)", "omega(eta_ka,eta_ka)", "add_sd", "prop_sd"]:
        assert name in frame.columns
    assert frame["iteration"].iloc[-1] == FAST.exploratory + FAST.smoothing


@pytest.mark.slow  # compiles the posthoc program (modes, IMP): about 30 s on the loaded 2-core machine
def test_fit_saem_result(small_data, start_model):
    """Through pkmix.fit (the program of the fixture: same model, settings and chains):
    the posthoc modes, the IMP OFV with its Monte Carlo SE, the history."""
    method = SAEM(exploratory=12, smoothing=8, kernel_steps=(1, 1, 1), newton_steps=2, annealing=0.8, chains=2,
                  seed=5, imp=pkmix.IMP(samples=64))
    r = pkmix.fit(start_model, small_data, method=method, covariance="none", diagnostics=False, progress=False)
    assert r.method == "saem" and r.iterations == 20
    assert r.ofv_mc_se is not None and 0 < r.ofv_mc_se < 5
    assert np.isfinite(r.ofv) and r.etas.shape == (24, 4)
    assert bool(np.all(r.inner_converged))
    assert r.history["tcl"].iloc[-1] == pytest.approx(r.theta["tcl"])
    assert r.omega.loc["eta_ka", "eta_ka"] == 0.1 and r.omega.loc["eta_ka", "eta_cl"] == 0.0
    assert "64 draws" in r.message and r.mu_referenced == {"eta_cl": "tcl", "eta_v": "tv", "eta_ka": "tka"}


def test_convergence_plot(problem, tmp_path):
    pytest.importorskip("matplotlib")
    from types import SimpleNamespace

    import pkmix.plots as pp

    model, _, _, run = problem
    history = history_frame(model, FAST, run(0).history)
    result = SimpleNamespace(history=history, model_name=model.name, method="saem")
    fig = pp.convergence_plot(result)
    titles = [ax.get_title() for ax in fig.axes]
    # The objective, 4 thetas, the block's 3 elements (eta_ka's fixed variance and the
    # zero covariances are constant: no panel), 2 sigmas.
    assert titles == ["-2LL (complete data)", "tka", "tcl", "tv", "beta_wt", "omega(eta_cl,eta_cl)",
                      "omega(eta_v,eta_cl)", "omega(eta_v,eta_v)", "add_sd", "prop_sd"]
    first_smoothing = FAST.exploratory + 1
    assert all(any(np.allclose(line.get_xdata(), first_smoothing) for line in ax.get_lines()) for ax in fig.axes)
    fig.savefig(tmp_path / "convergence.png")
    assert (tmp_path / "convergence.png").stat().st_size > 0
    with pytest.raises(ValueError, match="no iteration history"):
        pp.convergence_plot(SimpleNamespace(history=None))


def test_bad_input():
    with pytest.raises(ValueError, match="exploratory must be an integer >= 1"):
        SAEM(exploratory=0)
    with pytest.raises(ValueError, match="annealing must be in"):
        SAEM(annealing=1.5)
    with pytest.raises(ValueError, match="kernel_steps are all 0"):
        SAEM(kernel_steps=(0, 0, 0))
    with pytest.raises(ValueError, match="information must be a method"):
        SAEM(information="saem")


def test_evaluate_refuses_saem(small_data, start_model):
    with pytest.raises(ValueError, match="method 'saem' is an estimation algorithm"):
        pkmix.evaluate(start_model, small_data, method="saem", diagnostics=False)


def test_iov_refused(small_data):
    model = pkmix.Model(
        name="saem_iov", theta={"tcl": 1.0, "tv": 3.4, "tka": 0.2}, omega={"eta_cl": 0.1},
        iov=pkmix.IOV(kappa_cl=0.05, occasion="OCC"), sigma={"add_sd": pkmix.SD(0.1)},
        individual=lambda p: {"ka": jnp.exp(p.tka), "cl": jnp.exp(p.tcl + p.eta_cl + p.kappa_cl),
                              "v": jnp.exp(p.tv)},
        structure=pkmix.one_compartment(depot=True), observe=lambda a, p: a.central / p.v,
        error=pkmix.additive("add_sd"))
    data = small_data.assign(OCC=1)
    with pytest.raises(ModelError, match="method 'saem' does not take inter-occasion variability"):
        pkmix.fit(model, data, method="saem", covariance="none", diagnostics=False, progress=False)


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / name / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.model


# ---------------------------------------------------------------------------- slow


def two_cmt_model(theta, omega, prop_sd):
    return pkmix.Model(
        name="saem_two_cmt_oral", theta=dict(theta), omega=dict(omega), sigma={"prop_sd": pkmix.SD(prop_sd)},
        individual=lambda p: {"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl),
                              "v1": jnp.exp(p.tv1 + p.eta_v1), "q": jnp.exp(p.tq + p.eta_q),
                              "v2": jnp.exp(p.tv2 + p.eta_v2)},
        structure=pkmix.two_compartment(depot=True), observe=lambda a, p: a.central / p.v1,
        error=pkmix.proportional("prop_sd"))


TWO_CMT_TRUE = {"tka": math.log(1.5), "tcl": math.log(5.0), "tv1": math.log(40.0), "tq": math.log(8.0),
                "tv2": math.log(80.0)}
TWO_CMT_OMEGA = {"eta_ka": 0.16, "eta_cl": 0.09, "eta_v1": 0.06, "eta_q": 0.12, "eta_v2": 0.08}
TWO_CMT_DESIGN = dict(n_subjects=200, doses=[pkmix.Dose(500)],
                      times=[0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 36, 48])


@pytest.mark.slow
def test_recovers_two_cmt_oral_five_etas():
    """200 subjects simulated from known values; SAEM from values 20-50 % off and OMEGA
    at 0.3 recovers them: thetas (log scale) within 0.1 (about 3-5 SE at this design),
    variances within 40 %, the residual SD within 10 %."""
    truth = two_cmt_model(TWO_CMT_TRUE, TWO_CMT_OMEGA, 0.15)
    data = pkmix.simulate(truth, pkmix.TrialDesign(**TWO_CMT_DESIGN), n=1, seed=11, progress=False)
    start = two_cmt_model({k: v + (0.3 if i % 2 else -0.3) for i, (k, v) in enumerate(TWO_CMT_TRUE.items())},
                          {k: 0.3 for k in TWO_CMT_OMEGA}, 0.3)
    r = pkmix.fit(start, data.drop(columns=["REP"]), method=SAEM(seed=2), covariance="none", diagnostics=False,
                  progress=False)
    for name, value in TWO_CMT_TRUE.items():
        assert r.theta[name] == pytest.approx(value, abs=0.1), name
    for name, value in TWO_CMT_OMEGA.items():
        assert r.omega.loc[name, name] == pytest.approx(value, rel=0.4), name
    assert r.sigma["prop_sd"] == pytest.approx(0.15, rel=0.1)
    assert np.isfinite(r.ofv) and r.ofv_mc_se < 1.0


def _against_focei(model, data):
    """SAEM (default settings, IMP's sandwich SEs) against a FOCE-I fit: every estimate
    within 2 FOCE-I standard errors, and SAEM's IMP OFV not above IMP's at the FOCE-I
    estimates (same draws) by more than 3 Monte Carlo SEs: SAEM maximises the marginal
    likelihood, which FOCE-I approximates."""
    focei = pkmix.fit(model, data, method="focei", diagnostics=False, progress=False)
    saem = pkmix.fit(model, data, method="saem", diagnostics=False, progress=False)
    assert focei.converged
    for name, se in focei.se.items():
        estimate = saem_estimate(saem, name)
        assert abs(estimate - saem_estimate(focei, name)) < 2.0 * se, (name, estimate, saem_estimate(focei, name), se)
    at_focei = pkmix.evaluate(model, data, method="imp", params=focei.values, diagnostics=False, progress=False)
    assert saem.ofv < at_focei.ofv + 3.0 * max(saem.ofv_mc_se, at_focei.ofv_mc_se)
    assert saem.se and all(np.isfinite(v) and v > 0 for v in saem.se.values())
    # The reported OFV is evaluate's IMP OFV at the SAEM estimates (the same modes and draws).
    again = pkmix.evaluate(model, data, method="imp", params=saem.values, diagnostics=False, progress=False)
    assert again.ofv == pytest.approx(saem.ofv, abs=1e-6)
    return focei, saem, at_focei


def saem_estimate(result, name):
    if name in result.theta:
        return result.theta[name]
    if name in result.sigma:
        return result.sigma[name]
    a, b = name[len("omega("):-1].split(",")
    return float(result.omega.loc[a, b])


@pytest.mark.slow
def test_theophylline_within_two_se_of_focei():
    _against_focei(load_example("theophylline"), DATA / "theo_sd.csv")


@pytest.mark.slow
def test_phenobarbital_within_two_se_of_focei():
    _against_focei(load_example("phenobarbital"), DATA / "pheno.csv")


@pytest.mark.slow
def test_binary_glmm_against_lme4():
    """A logit random-intercept GLMM (tests/data/glmm/binary.csv, 100 subjects x 8):
    SAEM samples the etas with nothing but ``m2ll``, so a Bernoulli likelihood takes the
    Gaussian models' path. Against lme4's glmer with 20 adaptive Gauss-Hermite nodes (R,
    tests/data/glmm/reference.csv): the fixed effects within 1 lme4 SE, the random
    intercept's SD within 10 %, and the IMP OFV within 3 Monte Carlo SEs (+0.1) of
    -2 logLik (for 0/1 data lme4's nAGQ logLik is the full one)."""
    import pandas as pd

    ref = pd.read_csv(DATA / "glmm" / "reference.csv")
    ref = ref[(ref.dataset == "binary") & (ref.method == "agq20")].set_index("quantity")["value"]
    model = pkmix.Model(
        name="binary_glmm", theta={"b0": 0.0, "b1": 0.5}, omega={"eta": 0.5}, sigma={},
        individual=lambda p: {"cl": 1.0, "v": 1.0, "lp": p.b0 + p.b1 * p.X + p.eta},
        structure=pkmix.one_compartment(), observe=lambda a, p: p.lp, error=pkmix.bernoulli(), covariates=["X"])
    r = pkmix.fit(model, DATA / "glmm" / "binary.csv", method="saem", covariance="none", diagnostics=False,
                  progress=False)
    assert r.mu_referenced == {"eta": "b0"}
    assert abs(r.theta["b0"] - ref["intercept"]) < ref["se_intercept"]
    assert abs(r.theta["b1"] - ref["x"]) < ref["se_x"]
    assert math.sqrt(r.omega.loc["eta", "eta"]) == pytest.approx(ref["sd_id"], rel=0.1)
    assert abs(r.ofv - (-2.0 * ref["logLik"])) < 3.0 * r.ofv_mc_se + 0.1

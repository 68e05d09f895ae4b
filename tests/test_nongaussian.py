"""Non-Gaussian observation models (per-record likelihoods): each density against
scipy.stats, the data rules, the methods that refuse them, and fits of simulated GLMMs
against R's lme4, glmmTMB and ordinal (tests/data/glmm: the numbers and the script that
produced them; R is not needed here).

Constants: a likelihood record's term is the full -2 log p(y | f), so a model made only of
such records has OFV = -2 logLik exactly (the etas' 2 pi factors cancel), which is what R
reports, except lme4 with nAGQ > 1, whose logLik leaves out the saturated model's
sum_j log p(y_j | mu_j = y_j) (0 for 0/1 data): the tests add it back (README there).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
from scipy.special import expit

import pkmix
from pkmix._estimation.fit import likelihood_options
from pkmix._estimation.likelihood import Options, m2ll
from pkmix._estimation.methods import get_method
from pkmix._estimation.objective import solve_modes, subject_ofvs
from pkmix._predict import parameter_values

from conftest import DATA

GLMM = DATA / "glmm"
REFERENCE = pd.read_csv(GLMM / "reference.csv", comment="#")
OPTS = Options(interaction=True, has_steady_state=False, covariate_rule="nonmem", has_infusions=False)


def r_value(dataset, method, quantity):
    row = REFERENCE.query("dataset == @dataset and method == @method and quantity == @quantity")
    assert len(row) == 1, (dataset, method, quantity)
    return float(row.value.iloc[0])


def glmm(error, theta, *, intercept=True):
    """A random-intercept GLMM: f = (b0 +) b1 X + eta (no structure: there are no doses)."""

    def individual(p):
        lp = p.b1 * p.X + p.eta
        return {"lp": lp + p.b0 if intercept else lp}

    return pkmix.Model(theta=theta, omega={"eta": 0.5}, sigma={}, individual=individual,
                       observe=lambda a, p: p.lp, error=error,
                       covariates=["X"])


def frame(dv, x, ids, **extra):
    ids = np.asarray(ids)
    return pd.DataFrame({"ID": ids, "TIME": np.arange(len(ids), dtype=float), "DV": dv, "X": x, **extra})


# ---------------------------------------------------------------- densities vs scipy
X = np.array([-1.2, 0.3, 0.8, 1.5, -0.4, 0.0])
IDS = [1, 1, 1, 2, 2, 2]
ETA = 0.37
OMEGA = 0.5


def logit_p(lp):
    return expit(lp)


CASES = {
    # name: (error, thetas, DV, extra columns, scipy log-pmf of DV given the linear predictor)
    "bernoulli-logit": (pkmix.bernoulli(), {"b0": -0.2, "b1": 0.9}, [0, 1, 1, 0, 1, 0], {},
                        lambda y, lp, th: st.bernoulli.logpmf(y, expit(lp))),
    "bernoulli-probit": (pkmix.bernoulli(link="probit"), {"b0": -0.2, "b1": 0.9}, [0, 1, 1, 0, 1, 0], {},
                         lambda y, lp, th: st.bernoulli.logpmf(y, st.norm.cdf(lp))),
    "bernoulli-identity": (pkmix.bernoulli(link="identity"), {"b0": 0.45, "b1": 0.2}, [0, 1, 1, 0, 1, 0], {},
                           lambda y, lp, th: st.bernoulli.logpmf(y, lp)),
    "binomial": (pkmix.binomial("N"), {"b0": -0.2, "b1": 0.9}, [0, 3, 5, 2, 1, 0], {"N": [4, 5, 5, 6, 3, 1]},
                 lambda y, lp, th: st.binom.logpmf(y, [4, 5, 5], expit(lp))),
    "poisson-log": (pkmix.poisson(), {"b0": 0.4, "b1": 0.5}, [0, 2, 3, 7, 1, 0], {},
                    lambda y, lp, th: st.poisson.logpmf(y, np.exp(lp))),
    "poisson-identity": (pkmix.poisson(link="identity"), {"b0": 3.0, "b1": 0.5}, [0, 2, 3, 7, 1, 0], {},
                         lambda y, lp, th: st.poisson.logpmf(y, lp)),
    "negative-binomial": (pkmix.negative_binomial("alpha"), {"b0": 0.4, "b1": 0.5, "alpha": 0.7},
                          [0, 2, 3, 17, 1, 0], {},
                          lambda y, lp, th: st.nbinom.logpmf(y, 1 / th["alpha"],
                                                             (1 / th["alpha"]) / (1 / th["alpha"] + np.exp(lp)))),
    "ordinal-logit": (pkmix.ordinal(["c0", "c1", "c2"]), {"b0": 0.0, "b1": 0.9, "c0": -1.0, "c1": 0.3, "c2": 1.1},
                      [0, 1, 3, 2, 2, 0], {},
                      lambda y, lp, th: np.log(np.diff(np.c_[np.zeros(len(lp)), st.logistic.cdf(
                          np.array([th["c0"], th["c1"], th["c2"]])[None, :] - lp[:, None]), np.ones(len(lp))],
                          axis=1)[np.arange(len(lp)), y])),
    "ordinal-probit": (pkmix.ordinal(["c0", "c1"], link="probit"), {"b0": 0.0, "b1": 0.9, "c0": -0.5, "c1": 0.8},
                       [0, 1, 2, 2, 1, 0], {},
                       lambda y, lp, th: np.log(np.diff(np.c_[np.zeros(len(lp)), st.norm.cdf(
                           np.array([th["c0"], th["c1"]])[None, :] - lp[:, None]), np.ones(len(lp))],
                           axis=1)[np.arange(len(lp)), y])),
    "user-beta": (pkmix.loglik(lambda f, y, p: jax.scipy.stats.beta.logpdf(y, jax.nn.sigmoid(f) * p.phi,
                                                                            (1 - jax.nn.sigmoid(f)) * p.phi),
                               theta=["phi"], safe=(0.0, 0.5)),
                  {"b0": 0.1, "b1": 0.6, "phi": 7.0}, [0.1, 0.45, 0.9, 0.7, 0.33, 0.5], {},
                  lambda y, lp, th: st.beta.logpdf(y, expit(lp) * th["phi"], (1 - expit(lp)) * th["phi"])),
}


@pytest.mark.parametrize("case", list(CASES))
def test_conditional_density_matches_scipy(case):
    """l(eta) of the first subject at a given eta: -2 sum log p(y_j | f_j) (scipy) plus the
    eta prior eta^2/omega + log omega."""
    error, theta, dv, extra, logpmf = CASES[case]
    cols = list(extra)
    model = pkmix.Model(theta=theta, omega={"eta": OMEGA}, sigma={},
                        individual=lambda p: {"lp": p.b0 + p.b1 * p.X + p.eta},
                        observe=lambda a, p: p.lp, error=error,
                        covariates=["X"] + cols)
    data = pkmix.read_nonmem(frame(np.asarray(dv, dtype=float), X, IDS, **extra), model=model)
    subject = data.batch(model.covariates).subject(0)
    values = model.initial_values()
    got = jax.jit(lambda e: m2ll(model, values, e, subject, OPTS, jnp.array([[1 / OMEGA]]), jnp.log(OMEGA)))(
        jnp.array([ETA]))
    lp = theta["b0"] + theta["b1"] * X[:3] + ETA
    want = -2 * np.sum(logpmf(np.asarray(dv[:3]), lp, theta)) + ETA**2 / OMEGA + np.log(OMEGA)
    np.testing.assert_allclose(float(got), want, rtol=1e-12, atol=1e-10)


def test_endpoints_add_gaussian_and_likelihood_records():
    """PK concentrations (additive error, NONMEM's log R + e^2/R) and a 0/1 response by
    DVID in one subject; dose records carry no DVID."""
    model = pkmix.Model(
        theta={"tcl": 1.0, "tv": 3.0, "e0": -1.0, "slope": 0.2}, omega={"eta": OMEGA}, sigma={"add": 0.5},
        individual=lambda p: {"cl": jnp.exp(p.tcl + p.eta), "v": jnp.exp(p.tv)},
        structure=pkmix.one_compartment(),
        observe=lambda a, p: jnp.where(p.DVID == 1, a.central / p.v, p.e0 + p.slope * a.central / p.v),
        error=pkmix.endpoints({1: pkmix.additive("add"), 2: pkmix.bernoulli()}))
    data = pkmix.read_nonmem(pd.DataFrame({
        "ID": [1] * 6, "TIME": [0, 1, 1, 4, 4, 8.0], "AMT": [100, 0, 0, 0, 0, 0], "EVID": [1, 0, 0, 0, 0, 0],
        "DV": [".", 3.1, 1, 1.9, 0, 1.2], "DVID": [".", 1, 2, 1, 2, 1]}), model=model)
    subject = data.batch(model.covariates).subject(0)
    values = model.initial_values()
    l = float(jax.jit(lambda e: m2ll(model, values, e, subject, OPTS, jnp.array([[1 / OMEGA]]), jnp.log(OMEGA)))(
        jnp.array([ETA])))
    t = np.array([1, 1, 4, 4, 8.0])
    conc = 100 / np.exp(3.0) * np.exp(-np.exp(1.0 + ETA) / np.exp(3.0) * t)
    dvid = np.array([1, 2, 1, 2, 1])
    dv = np.array([3.1, 1, 1.9, 0, 1.2])
    pk = np.log(0.25) + (dv - conc) ** 2 / 0.25
    binary = -2 * st.bernoulli.logpmf(dv, expit(-1.0 + 0.2 * conc))
    want = np.sum(np.where(dvid == 1, pk, binary)) + ETA**2 / OMEGA + np.log(OMEGA)
    np.testing.assert_allclose(l, want, rtol=1e-12)


def test_ordinal_cutpoints_out_of_order_give_a_huge_finite_objective():
    error = pkmix.ordinal(["c0", "c1", "c2"])
    y, f = jnp.array([0.0, 1, 2, 3]), jnp.array([0.2, -0.1, 0.4, 1.0])
    subject = None  # the built-in densities read only f, y and the thetas
    terms = jax.jit(lambda c: error.m2ll_records(f, y, c, jnp.zeros(0), subject))
    ordered, swapped = terms(jnp.array([-1.0, 0.5, 2.0])), terms(jnp.array([0.5, -1.0, 2.0]))
    grad = jax.jit(jax.grad(lambda c: jnp.sum(terms(c))))(jnp.array([0.5, -1.0, 2.0]))
    assert np.all(np.isfinite(ordered)) and np.all(np.isfinite(grad))
    # Category 1 lies between the swapped cut-points (c0 > c1); the top one does not read them.
    assert float(swapped[1]) == 1e10
    assert float(swapped[3]) == pytest.approx(float(ordered[3]))


def test_endpoints_gradient_is_finite_for_a_subject_without_one_endpoint():
    """A subject with concentrations only: the Poisson endpoint (log link) is evaluated
    at safe values, so exp of a large concentration cannot spoil the gradient."""
    model = pkmix.Model(
        theta={"tv": 0.0}, omega={"eta": OMEGA}, sigma={"add": 0.5},
        individual=lambda p: {"cl": 1.0, "v": jnp.exp(p.tv + p.eta)}, structure=pkmix.one_compartment(),
        observe=lambda a, p: a.central / p.v, error=pkmix.endpoints({1: pkmix.additive("add"), 2: pkmix.poisson()}))
    data = pkmix.read_nonmem(pd.DataFrame({"ID": [1] * 3, "TIME": [0, 1, 2.0], "AMT": [5000, 0, 0],
                                           "EVID": [1, 0, 0], "DV": [".", 3000, 1800], "DVID": [".", 1, 1]}),
                             model=model)
    subject = data.batch(model.covariates).subject(0)
    values = model.initial_values()
    g = jax.jit(jax.grad(lambda e: m2ll(model, values, e, subject, OPTS, jnp.array([[1 / OMEGA]]),
                                         jnp.log(OMEGA))))(jnp.array([ETA]))
    assert np.all(np.isfinite(np.asarray(g)))


# ---------------------------------------------------------------- data rules, refusals
@pytest.mark.parametrize("error, dv, extra, column, words", [
    (pkmix.bernoulli(), [0, 2, 1], {}, "DV", "DV in {0, 1}"),
    (pkmix.poisson(), [0, -1, 3], {}, "DV", "integer >= 0"),
    (pkmix.negative_binomial("alpha"), [0, 1.5, 3], {}, "DV", "integer >= 0"),
    (pkmix.ordinal(["c0", "c1"]), [0, 3, 1], {}, "DV", "category 0..2"),
    (pkmix.binomial("N"), [0, 4, 1], {"N": [2, 3, 3]}, "DV", "integer in 0..N"),
    (pkmix.binomial("N"), [0, 0, 1], {"N": [2, 0, 3]}, "N", "integer >= 1"),
])
def test_invalid_observations_are_named(error, dv, extra, column, words):
    theta = {"b0": 0.0, "b1": 0.5, **{n: 1.0 for n in error.theta_parameters}}
    model = pkmix.Model(theta=theta, omega={"eta": OMEGA}, sigma={},
                        individual=lambda p: {"lp": p.b0 + p.b1 * p.X + p.eta},
                        observe=lambda a, p: p.lp, error=error,
                        covariates=["X"])
    with pytest.raises(pkmix.DatasetError) as err:
        pkmix.read_nonmem(frame(dv, [0.1, 0.2, 0.3], [1, 1, 1], **extra), model=model)
    (v,) = err.value.violations
    assert (v.record, v.column) == (2, column) and words in v.rule


def test_unknown_endpoint_and_censored_binary_record_are_named():
    model = pkmix.Model(theta={"b0": 0.0}, omega={"eta": OMEGA}, sigma={"add": 0.5},
                        individual=lambda p: {"lp": p.b0 + p.eta},
                        observe=lambda a, p: p.lp,
                        error=pkmix.endpoints({1: pkmix.additive("add"), 2: pkmix.bernoulli()}))
    data = pd.DataFrame({"ID": [1, 1, 1], "TIME": [0, 1, 2.0], "DV": [1.2, 1, 0], "DVID": [1, 3, 2],
                         "BLQ": [0, 0, 1]})
    with pytest.raises(pkmix.DatasetError) as err:
        pkmix.read_nonmem(data, model=model)
    found = {(v.record, v.column): v for v in err.value.violations}
    assert set(found) == {(2, "DVID"), (3, "BLQ")}
    assert "unknown endpoint DVID 3" in found[2, "DVID"].message
    with pytest.raises(pkmix.DatasetError, match="observation without an endpoint"):
        pkmix.read_nonmem(data.assign(DVID=[1, ".", 2], BLQ=0), model=model)


@pytest.mark.parametrize("method", ["fo", "foce", "focei"])
def test_linearising_methods_refuse_likelihood_models(method):
    model = glmm(pkmix.bernoulli(), {"b0": 0.0, "b1": 0.5})
    data = frame([0, 1, 1, 0], [0.1, 0.2, 0.3, 0.4], [1, 1, 2, 2])
    with pytest.raises(pkmix.ModelError, match=f"method '{method}' needs a Gaussian.*'laplace', 'agq' or 'imp'"):
        pkmix.fit(model, data, method=method)


def test_fit_batch_refuses_a_likelihood_model_under_focei():
    model = glmm(pkmix.bernoulli(), {"b0": 0.0, "b1": 0.5})
    data = pkmix.read_nonmem(frame([0, 1, 1, 0], [0.1, 0.2, 0.3, 0.4], [1, 1, 2, 2]))
    with pytest.raises(pkmix.ModelError, match="method 'focei' needs a Gaussian"):
        pkmix.fit_batch(model, [data, data], method="focei")


def test_likelihood_parameters_are_checked():
    with pytest.raises(ValueError, match="binomial link"):
        pkmix.bernoulli(link="cloglog")
    with pytest.raises(pkmix.ModelError, match="theta 'alpha'.*not declared"):
        glmm(pkmix.negative_binomial("alpha"), {"b0": 0.0, "b1": 0.5})
    with pytest.raises(ValueError, match="DVID values are integers"):
        pkmix.endpoints({1.5: pkmix.bernoulli()})


# ---------------------------------------------------------------- against R
@pytest.fixture(scope="module")
def binary():
    return pkmix.read_nonmem(GLMM / "binary.csv")


@pytest.fixture(scope="module")
def binary_model():
    return glmm(pkmix.bernoulli(), {"b0": 0.0, "b1": 0.5})


def test_laplace_objective_at_lme4_estimates(binary, binary_model):
    """pkmix's Laplace OFV at lme4's Laplace estimates (the modes by the inner solver, the
    OFV as the fit computes it) is -2 x lme4's logLik, within 0.01 on the log-likelihood:
    lme4's modes are converged only to its PIRLS tolerance (0.002 seen)."""
    batch = binary.batch(binary_model.covariates)
    method = get_method("laplace")
    opts = likelihood_options(method, batch, "nonmem")
    values = parameter_values(binary_model, {"b0": r_value("binary", "laplace", "intercept"),
                                             "b1": r_value("binary", "laplace", "x"),
                                             "eta": r_value("binary", "laplace", "sd_id") ** 2})

    @jax.jit
    def ofv(values, batch):
        modes = solve_modes(binary_model, method, opts, values, jnp.zeros((batch.n_subjects, 1)), batch)
        return jnp.sum(subject_ofvs(binary_model, method, opts, values, modes.eta, batch)), jnp.all(modes.converged)

    total, converged = ofv(values, batch)
    assert bool(converged)
    assert abs(-float(total) / 2 - r_value("binary", "laplace", "logLik")) < 0.01


def check_against_r(result, dataset, method, names, *, se_rtol, saturated=0.0):
    """logLik within 0.01; estimates within 2% of their standard error (R's optimiser
    tolerances, and for lme4's Laplace its modes' PIRLS tolerance, move them by less);
    standard errors (pkmix's R matrix, like R's Hessian-based vcov) within ``se_rtol``."""
    assert result.converged, result.message
    assert abs(-result.ofv / 2 - (r_value(dataset, method, "logLik") + saturated)) < 0.01
    sd = float(np.sqrt(result.omega.values[0, 0]))
    for name, quantity in names.items():
        if name == "sd":
            got, se = sd, result.se["omega(eta,eta)"] / (2 * sd)  # the delta method
        else:
            got, se = result.theta[name], result.se[name]
        assert abs(got - r_value(dataset, method, quantity)) < 0.02 * se, (name, got)
        has_se = (REFERENCE.dataset == dataset) & (REFERENCE.method == method) & (REFERENCE.quantity == f"se_{quantity}")
        if has_se.any():
            assert se == pytest.approx(r_value(dataset, method, f"se_{quantity}"), rel=se_rtol), name


@pytest.mark.slow
def test_binary_agq_fit_matches_lme4(binary, binary_model):
    result = pkmix.fit(binary_model, binary, method=pkmix.AGQ(nodes=20), covariance="r", diagnostics=False)
    check_against_r(result, "binary", "agq20", {"b0": "intercept", "b1": "x", "sd": "sd_id"}, se_rtol=1e-3)


@pytest.mark.slow
def test_binary_laplace_fit_matches_lme4(binary, binary_model):
    result = pkmix.fit(binary_model, binary, method="laplace", covariance="r", diagnostics=False)
    # lme4's Laplace standard errors differ from pkmix's by 0.5% (its own Laplace
    # approximation, see test_laplace_objective_at_lme4_estimates); at nAGQ 20 they agree to 1e-5.
    check_against_r(result, "binary", "laplace", {"b0": "intercept", "b1": "x", "sd": "sd_id"}, se_rtol=0.02)
    assert result.minus2ll == pytest.approx(result.ofv, abs=1e-9)  # no Gaussian record: nothing added


@pytest.mark.slow
@pytest.mark.parametrize("method", ["laplace", "agq20"])
def test_poisson_fit_matches_lme4(method):
    data = pkmix.read_nonmem(GLMM / "count.csv")
    model = glmm(pkmix.poisson(), {"b0": 0.0, "b1": 0.5})
    result = pkmix.fit(model, data, method="laplace" if method == "laplace" else pkmix.AGQ(nodes=20),
                       covariance="r", diagnostics=False)
    y = data.frame.DV.to_numpy()
    saturated = 0.0 if method == "laplace" else float(np.sum(st.poisson.logpmf(y, y)))
    check_against_r(result, "count", method, {"b0": "intercept", "b1": "x", "sd": "sd_id"},
                    se_rtol=0.02 if method == "laplace" else 1e-3, saturated=saturated)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["laplace", "agq20"])
def test_binomial_fit_matches_lme4(method):
    """Successes of N trials (data column N): lme4's cbind(DV, N - DV)."""
    data = pkmix.read_nonmem(GLMM / "binomial.csv")
    model = glmm(pkmix.binomial("N"), {"b0": 0.0, "b1": 0.5})
    result = pkmix.fit(model, data, method="laplace" if method == "laplace" else pkmix.AGQ(nodes=20),
                       covariance="r", diagnostics=False)
    y, n = data.frame.DV.to_numpy(), data.frame.N.to_numpy()
    saturated = 0.0 if method == "laplace" else float(np.sum(st.binom.logpmf(y, n, y / n)))
    check_against_r(result, "binomial", method, {"b0": "intercept", "b1": "x", "sd": "sd_id"},
                    se_rtol=0.02 if method == "laplace" else 1e-3, saturated=saturated)


@pytest.mark.slow
def test_negative_binomial_fit_matches_glmmtmb():
    data = pkmix.read_nonmem(GLMM / "negbin.csv")
    model = glmm(pkmix.negative_binomial("alpha"), {"b0": 0.0, "b1": 0.5, "alpha": pkmix.Theta(1.0, lower=0.0)})
    result = pkmix.fit(model, data, method="laplace", covariance="r", diagnostics=False)
    check_against_r(result, "negbin", "laplace", {"b0": "intercept", "b1": "x", "sd": "sd_id"}, se_rtol=1e-3)
    assert result.theta["alpha"] == pytest.approx(1 / r_value("negbin", "laplace", "size"), rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["laplace", "agq20"])
def test_ordinal_fit_matches_clmm(method):
    data = pkmix.read_nonmem(GLMM / "ordinal.csv")
    model = glmm(pkmix.ordinal(["c0", "c1", "c2"]), {"c0": -1.0, "c1": 0.0, "c2": 1.0, "b1": 0.5},
                 intercept=False)
    result = pkmix.fit(model, data, method="laplace" if method == "laplace" else pkmix.AGQ(nodes=20),
                       covariance="r", diagnostics=False)
    check_against_r(result, "ordinal", method,
                    {"c0": "cut0", "c1": "cut1", "c2": "cut2", "b1": "x", "sd": "sd_id"}, se_rtol=0.005)


@pytest.mark.slow
def test_imp_agrees_with_agq_within_monte_carlo_error(binary, binary_model):
    """At lme4's nAGQ=20 estimates, IMP's OFV is AGQ's (= lme4's) within 3 of its Monte
    Carlo standard errors."""
    params = {"b0": r_value("binary", "agq20", "intercept"), "b1": r_value("binary", "agq20", "x"),
              "eta": r_value("binary", "agq20", "sd_id") ** 2}
    imp = pkmix.evaluate(binary_model, binary, method="imp", params=params, diagnostics=False)
    agq = -2 * r_value("binary", "agq20", "logLik")
    assert imp.ofv_mc_se > 0
    assert abs(imp.ofv - agq) < 3 * imp.ofv_mc_se


@pytest.mark.slow
def test_pk_and_binary_endpoints_fit_recovers_simulation():
    """Concentrations (proportional error) and a 0/1 response driven by them, by DVID, in
    one fit with the default sandwich covariance and the diagnostics table: estimates
    within 3 standard errors of the simulation's values, weighted residuals NaN (no
    residual variance for a likelihood model)."""
    rng = np.random.default_rng(7)
    n, times = 60, np.array([0.5, 1, 2, 4, 6, 8, 12.0])
    truth = {"tcl": np.log(2.0), "tv": np.log(20.0), "e0": -2.0, "slope": 0.8, "eta_cl": 0.09, "prop": 0.15}
    rows = []
    for i in range(1, n + 1):
        cl = np.exp(truth["tcl"] + rng.normal(0, np.sqrt(truth["eta_cl"])))
        conc = 500 / np.exp(truth["tv"]) * np.exp(-cl / np.exp(truth["tv"]) * times)
        rows.append({"ID": i, "TIME": 0.0, "AMT": 500, "EVID": 1, "DV": np.nan, "DVID": np.nan})
        for t, c in zip(times, conc):
            rows.append({"ID": i, "TIME": t, "AMT": 0, "EVID": 0, "DV": c * (1 + truth["prop"] * rng.normal()),
                         "DVID": 1})
            p = expit(truth["e0"] + truth["slope"] * c)
            rows.append({"ID": i, "TIME": t, "AMT": 0, "EVID": 0, "DV": float(rng.uniform() < p), "DVID": 2})
    model = pkmix.Model(
        theta={"tcl": 0.5, "tv": 3.2, "e0": -1.0, "slope": 0.5}, omega={"eta_cl": 0.2}, sigma={"prop": 0.2},
        individual=lambda p: {"cl": jnp.exp(p.tcl + p.eta_cl), "v": jnp.exp(p.tv)},
        structure=pkmix.one_compartment(),
        observe=lambda a, p: jnp.where(p.DVID == 1, a.central / p.v, p.e0 + p.slope * a.central / p.v),
        error=pkmix.endpoints({1: pkmix.proportional("prop"), 2: pkmix.bernoulli()}))
    result = pkmix.fit(model, pd.DataFrame(rows), method="laplace")
    assert result.converged, result.message
    for name in ("tcl", "tv", "e0", "slope"):
        assert abs(result.theta[name] - truth[name]) < 3 * result.se[name], name
    assert abs(result.omega.values[0, 0] - truth["eta_cl"]) < 3 * result.se["omega(eta_cl,eta_cl)"]
    assert abs(result.sigma["prop"] - truth["prop"]) < 3 * result.se["prop"]
    table = result.table()
    assert table.loc[table.DV.notna(), "CWRES"].isna().all()
    # -2LL adds log 2 pi for the concentrations only.
    assert result.minus2ll - result.ofv == pytest.approx(n * len(times) * np.log(2 * np.pi))

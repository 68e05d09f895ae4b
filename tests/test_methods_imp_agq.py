"""AGQ and IMP (issue 18, first slice): the marginal likelihood by adaptive Gauss-Hermite
quadrature and by importance sampling, checked against what they were not written from:
the closed-form marginal likelihood of a model linear in eta, a brute-force numerical
integral (scipy) of a hand-written theophylline likelihood, and each other.

The cheap checks run each subject's OFV through a small program (modes, then
``objective.subject_ofvs``); ``pkmix.evaluate`` (the fit's whole program, seconds to
compile) runs on the one-eta linear model only. The brute-force integral and the
IMP-AGQ agreement on nonlinear models are slow.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import pkmix
from pkmix import _compile
from pkmix._estimation.fit import likelihood_options
from pkmix._estimation.methods import AGQ, IMP, get_method
from pkmix._estimation.methods.agq import hermite_grid
from pkmix._estimation.methods.imp import mc_standard_errors, sobol_draws
from pkmix._estimation.objective import solve_modes, subject_ofvs
from pkmix._predict import bind, parameter_values

DATA = Path(__file__).parent / "data"

# Theophylline's fixed structural parameters (log scale) for the linear and 2-eta models.
TKA, TCL, TV = 0.45, 1.0, 3.45
ADD_SD = 0.7


def linear_model():
    """Theophylline's concentrations (fixed ka, cl, v) plus a shift ts + eta_s, additive
    error: the prediction is linear in eta and the variance free of it, so l is quadratic
    in eta and the marginal likelihood is Gaussian in closed form."""
    return pkmix.Model(
        name="linear_shift", theta={"ts": 0.3}, omega={"eta_s": 0.5}, sigma={"add_sd": pkmix.SD(ADD_SD)},
        individual=lambda p: {"ka": jnp.exp(TKA) + 0.0 * p.ts, "cl": jnp.exp(TCL) + 0.0 * p.ts,
                              "v": jnp.exp(TV) + 0.0 * p.ts, "shift": p.ts + p.eta_s},
        structure=pkmix.one_compartment(depot=True), observe=lambda a, p: a.central / p.v + p.shift,
        error=pkmix.additive("add_sd"))


def theo_two_eta():
    """Theophylline with etas on ka and cl (V fixed at exp(TV)): nonlinear in both."""
    return pkmix.Model(
        name="theo_two_eta", theta={"tka": TKA, "tcl": TCL}, omega={"eta_ka": 0.4, "eta_cl": 0.07},
        sigma={"add_sd": pkmix.SD(ADD_SD)},
        individual=lambda p: {"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl),
                              "v": jnp.exp(TV) + 0.0 * p.tka},
        structure=pkmix.one_compartment(depot=True), observe=lambda a, p: a.central / p.v,
        error=pkmix.additive("add_sd"))


def oral_concentration(dose, ka, cl, v, t):
    """One compartment, first-order absorption, one dose at time 0 (Bateman), by hand."""
    k = cl / v
    return dose * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))


def theo_subjects():
    """Per subject (dose, observation times, DV) from the CSV, read with pandas alone."""
    import pandas as pd

    frame = pd.read_csv(DATA / "theo_sd.csv")
    out = []
    for _, g in frame.groupby("ID", sort=False):
        dose = float(g.loc[g.EVID == 1, "AMT"].iloc[0])
        obs = g[g.EVID == 0]
        out.append((dose, obs.TIME.to_numpy(float), obs.DV.to_numpy(float)))
    return out


def _ofvs_program(model, method, opts, values, etas0, batch):
    modes = solve_modes(model, method, opts, values, etas0, batch, tol=1e-14)
    return subject_ofvs(model, method, opts, values, modes.eta, batch), modes.eta


def subject_ofvs_at(model, data, method):
    """Each subject's OFV under ``method`` at the model's initial values, and the modes."""
    method = get_method(method)
    dataset, batch = bind(model, data)
    values = parameter_values(model)
    opts = likelihood_options(method, batch, "nonmem")
    etas0 = np.zeros((dataset.n_subjects, model.n_eta_total(batch.n_occasions)))
    (ofvs, modes), _, _ = _compile.run(_ofvs_program, (model, method, opts), values, etas0, batch)
    return np.asarray(ofvs), np.asarray(modes), (model, method, opts, values, batch)


@pytest.fixture(scope="module")
def theo():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pkmix.DatasetWarning)
        return pkmix.read_nonmem(DATA / "theo_sd.csv")


@pytest.fixture(scope="module")
def exact_linear():
    """Each subject's exact OFV under ``linear_model``: log|S| + r'S^-1 r with
    S = omega 11' + sigma^2 I, r = y - c(t) - ts (the Gaussian -2 log density without
    n log 2 pi)."""
    omega, ts = 0.5, 0.3
    out = []
    for dose, t, y in theo_subjects():
        r = y - oral_concentration(dose, math.exp(TKA), math.exp(TCL), math.exp(TV), t) - ts
        S = omega * np.ones((len(t), len(t))) + ADD_SD**2 * np.eye(len(t))
        out.append(np.linalg.slogdet(S)[1] + r @ np.linalg.solve(S, r))
    return np.array(out)


@pytest.fixture(scope="module")
def linear():
    return linear_model()


@pytest.fixture(scope="module")
def linear_agq(theo, linear):
    return pkmix.evaluate(linear, theo, method="agq", diagnostics=False, progress=False)


def test_agq_and_laplace_equal_the_closed_form_marginal_likelihood(theo, exact_linear, linear_agq, linear):
    np.testing.assert_allclose(linear_agq.subject_ofv["OFV"].to_numpy(), exact_linear, rtol=0, atol=1e-8)
    laplace, _, _ = subject_ofvs_at(linear, theo, "laplace")
    np.testing.assert_allclose(laplace, exact_linear, rtol=0, atol=1e-8)
    assert linear_agq.ofv_mc_se is None


def test_imp_equals_the_closed_form_within_its_monte_carlo_error(theo, exact_linear, linear):
    # A t proposal around a Gaussian posterior: the weights vary, so the estimate has a
    # Monte Carlo error to be judged by (a normal proposal would be exact here).
    r = pkmix.evaluate(linear, theo, method=IMP(samples=512, seed=3, proposal="t", df=4),
                       diagnostics=False, progress=False)
    assert 0 < r.ofv_mc_se < 1.0
    assert abs(r.ofv - exact_linear.sum()) < 3 * r.ofv_mc_se
    assert "Monte Carlo SE" in r.message


def test_a_second_same_shaped_evaluation_compiles_nothing(theo, linear_agq, linear):
    again = pkmix.evaluate(linear, theo, method="agq", params={"ts": 0.1}, diagnostics=False,
                           progress=False)
    assert again.timing["compile_s"] == 0.0
    assert again.ofv != pytest.approx(linear_agq.ofv)


def test_agq_with_one_node_is_laplace_on_a_nonlinear_model(theo):
    laplace, _, _ = subject_ofvs_at(theo_two_eta(), theo, "laplace")
    one, _, _ = subject_ofvs_at(theo_two_eta(), theo, AGQ(nodes=1))
    np.testing.assert_allclose(one, laplace, rtol=1e-12, atol=1e-10)
    five, _, _ = subject_ofvs_at(theo_two_eta(), theo, "agq")
    assert np.max(np.abs(five - laplace)) > 1e-3  # the model is nonlinear enough to tell them apart


def test_agq_refuses_more_than_three_etas(theo):
    model = pkmix.Model(
        name="four_etas", theta={"tka": TKA, "tcl": TCL, "tv": TV}, sigma={"add_sd": 0.7},
        omega={"eta_ka": 0.4, "eta_cl": 0.07, "eta_v": 0.02, "eta_x": 0.01},
        individual=lambda p: {"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl + p.eta_x),
                              "v": jnp.exp(p.tv + p.eta_v)},
        structure=pkmix.one_compartment(depot=True), observe=lambda a, p: a.central / p.v,
        error=pkmix.additive("add_sd"))
    with pytest.raises(ValueError, match=r"'agq'.*at most 3.*has 4"):
        pkmix.evaluate(model, theo, method="agq", diagnostics=False, progress=False)


def test_method_settings_are_checked_and_named():
    with pytest.raises(ValueError, match="'agq'.*at least 1 node"):
        AGQ(nodes=0)
    with pytest.raises(ValueError, match="'imp'.*proposal"):
        IMP(proposal="cauchy")
    assert get_method("AGQ") == AGQ(nodes=5) and hash(get_method("imp")) == hash(IMP())
    assert AGQ(nodes=7) != AGQ(nodes=5) and repr(AGQ(nodes=7)) == "AGQ(nodes=7)"


def test_draws_are_seed_reproducible_and_the_grid_integrates_polynomials():
    a, la = sobol_draws(256, 2, 11, "t", 4.0)
    b, lb = sobol_draws(256, 2, 11, "t", 4.0)
    c, _ = sobol_draws(256, 2, 12, "t", 4.0)
    assert np.array_equal(a, b) and np.array_equal(la, lb) and not np.array_equal(a, c)
    # The t density's log (plus q/2 log 2 pi) against scipy's multivariate t.
    from scipy.stats import multivariate_t

    ref = multivariate_t(loc=np.zeros(2), shape=np.eye(2), df=4.0).logpdf(a) + math.log(2 * math.pi)
    np.testing.assert_allclose(la, ref, rtol=1e-12)
    # 3 nodes per dimension integrate E[x^4 y^2] = 3 under the standard normal exactly.
    pts, logw = hermite_grid(3, 2)
    assert np.sum(np.exp(logw) * pts[:, 0] ** 4 * pts[:, 1] ** 2) == pytest.approx(3.0, rel=1e-13)


def theo_two_eta_m2ll(dose, t, y, eta):
    """l(eta) of ``theo_two_eta`` written by hand (additive error, diagonal OMEGA)."""
    f = oral_concentration(dose, math.exp(TKA + eta[0]), math.exp(TCL + eta[1]), math.exp(TV), t)
    omega = np.array([0.4, 0.07])
    return (np.sum(np.log(ADD_SD**2) + (y - f) ** 2 / ADD_SD**2) + np.sum(eta**2 / omega)
            + np.sum(np.log(omega)))


@pytest.mark.slow
def test_agq_matches_a_brute_force_integral_on_a_nonlinear_subject(theo):
    from scipy import integrate

    agq, modes, _ = subject_ofvs_at(theo_two_eta(), theo, AGQ(nodes=15))
    laplace, _, _ = subject_ofvs_at(theo_two_eta(), theo, "laplace")
    for i in (0, 4):
        dose, t, y = theo_subjects()[i]
        l0 = theo_two_eta_m2ll(dose, t, y, modes[i])
        sd = np.sqrt([0.4, 0.07])

        def integrand(b, a):
            return math.exp(-0.5 * (theo_two_eta_m2ll(dose, t, y, np.array([a, b])) - l0)) / (2 * math.pi)

        value, _ = integrate.dblquad(integrand, modes[i][0] - 6 * sd[0], modes[i][0] + 6 * sd[0],
                                     modes[i][1] - 6 * sd[1], modes[i][1] + 6 * sd[1], epsabs=1e-13, epsrel=1e-11)
        exact = l0 - 2 * math.log(value)
        assert agq[i] == pytest.approx(exact, abs=1e-6), i
        assert abs(laplace[i] - exact) > 1e-4  # Laplace's error shows: the test can tell


@pytest.mark.slow
@pytest.mark.parametrize("which", ["one_eta", "two_eta"])
def test_imp_and_agq_agree_within_imp_monte_carlo_error(theo, which):
    if which == "one_eta":
        model = pkmix.Model(
            name="theo_one_eta", theta={"tka": TKA, "tcl": TCL}, omega={"eta_cl": 0.3},
            sigma={"add_sd": pkmix.SD(ADD_SD)},
            individual=lambda p: {"ka": jnp.exp(p.tka), "cl": jnp.exp(p.tcl + p.eta_cl), "v": jnp.exp(TV) + 0 * p.tka},
            structure=pkmix.one_compartment(depot=True), observe=lambda a, p: a.central / p.v,
            error=pkmix.additive("add_sd"))
    else:
        model = theo_two_eta()
    agq, _, _ = subject_ofvs_at(model, theo, AGQ(nodes=9))
    imp = IMP(samples=2048, seed=1, proposal="t", df=5)
    ofvs, modes, (m, method, opts, values, batch) = subject_ofvs_at(model, theo, imp)
    se, _, _ = _compile.run(mc_standard_errors, (m, method, opts), values, jnp.asarray(modes), batch)
    se = np.asarray(se)
    assert np.all(se > 0)
    assert abs(ofvs.sum() - agq.sum()) < 3 * math.sqrt(np.sum(se**2))
    assert np.all(np.abs(ofvs - agq) < 4 * se + 1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["agq", "imp"])
def test_gradient_matches_central_differences(method):
    """The fit's exact gradient (autodiff through the quadrature or importance sum, the
    mode through the implicit-function theorem) against central differences of the OFV
    with re-solved modes, on Wang (2007)'s one-eta proportional-error model."""
    from test_estimation import assert_gradient_matches_central_differences, wang_free

    assert_gradient_matches_central_differences(wang_free(), pkmix.read_nonmem(DATA / "wang2007.csv"), method)


@pytest.mark.slow
def test_agq_fit_reaches_the_closed_form_maximum_likelihood(theo, linear):
    """``fit(method="agq")`` of the linear model against scipy's minimum of the exact
    marginal -2 log-likelihood (closed form, independent of pkmix)."""
    from scipy.optimize import minimize

    subjects = [(y - oral_concentration(dose, math.exp(TKA), math.exp(TCL), math.exp(TV), t))
                for dose, t, y in theo_subjects()]

    def exact(z):
        ts, omega, sigma2 = z[0], math.exp(z[1]), math.exp(z[2])
        total = 0.0
        for c in subjects:
            S = omega * np.ones((len(c), len(c))) + sigma2 * np.eye(len(c))
            r = c - ts
            total += np.linalg.slogdet(S)[1] + r @ np.linalg.solve(S, r)
        return total

    best = minimize(exact, [0.3, math.log(0.5), math.log(ADD_SD**2)], method="Nelder-Mead",
                    options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 4000})
    r = pkmix.fit(linear, theo, method="agq", covariance="none", diagnostics=False, progress=False)
    assert r.converged, r.message
    assert r.ofv == pytest.approx(best.fun, abs=1e-4)
    assert r.theta["ts"] == pytest.approx(best.x[0], abs=1e-3)
    assert r.omega.loc["eta_s", "eta_s"] == pytest.approx(math.exp(best.x[1]), rel=1e-3)

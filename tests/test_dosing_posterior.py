"""Posterior sampling: NUTS and SIR agree with the Hessian covariance on a near-normal case.

The case: a one-compartment IV bolus with additive error and eight levels generated
without noise from a known eta, so at the mode the residuals are small, the observed
and the expected information nearly coincide, and the posterior is close to normal.
The sample covariance must then match inv(H~) within Monte Carlo error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pkmix
from pkmix.dosing import map_estimate, sample_posterior
from pkmix.dosing.posterior import log_density, sir_draws

OMEGA = np.array([[0.09, 0.02], [0.02, 0.16]])
TRUE_ETA = np.array([0.25, -0.2])
TIMES = np.array([0.5, 1, 2, 4, 6, 8, 12, 16.0])


def bolus_model():
    return pkmix.Model(
        theta={"tcl": 3.0, "tv": 30.0},
        omega=pkmix.Block(["eta_cl", "eta_v"], OMEGA),
        sigma={"add": 0.4},
        individual=lambda p: {"cl": p.tcl * jnp.exp(p.eta_cl), "v": p.tv * jnp.exp(p.eta_v)},
        structure=pkmix.one_compartment(),
        observe=lambda a, p: a.central / p.v,
        error=pkmix.additive("add"),
        name="bolus",
    )


def patient():
    cl, v = 3.0 * np.exp(TRUE_ETA[0]), 30.0 * np.exp(TRUE_ETA[1])
    conc = 500 / v * np.exp(-cl / v * TIMES)
    return {"doses": [{"time": 0, "amount": 500, "route": "iv"}],
            "levels": [{"time": float(t), "value": float(c)} for t, c in zip(TIMES, conc)]}


@pytest.fixture(scope="module")
def fit():
    return map_estimate(bolus_model(), patient(), curve_points=0)


def covariance_z(samples, cov, ess):
    """|sample cov - cov| in units of the Monte Carlo SE of a sample covariance."""
    s = np.cov(samples.T)
    d = np.sqrt(np.diag(cov))
    se = np.sqrt((np.outer(d, d) ** 2 + cov**2) / ess)
    return np.abs(s - cov) / se


def test_sir_matches_hessian_covariance(fit):
    draws = sir_draws(fit, n_samples=4000, n_proposals=20000, seed=1)
    x = draws.flat_eta
    assert draws.stats["ess"] > 10000  # the t proposal fits a near-normal posterior
    z = covariance_z(x, fit.covariance, ess=4000)
    assert np.all(z < 4.0), z
    # The posterior mean of a near-normal posterior is the mode.
    se_mean = np.sqrt(np.diag(fit.covariance) / 4000)
    assert np.all(np.abs(x.mean(axis=0) - fit.eta) < 4 * se_mean + 0.01 * np.sqrt(np.diag(fit.covariance)))


def test_sir_inference_data(fit):
    idata = sample_posterior(bolus_model(), fit, method="sir", n_samples=500)
    post = idata.posterior
    assert post["eta"].shape == (1, 500, 2)
    assert list(post["eta"].coords["eta_dim_0"].values) == ["eta_cl", "eta_v"]
    assert set(post.data_vars) >= {"eta", "cl", "v"}
    np.testing.assert_allclose(post["cl"].values, 3.0 * np.exp(post["eta"].values[..., 0]), rtol=1e-12)
    assert post.attrs["sampler"] == "sir" and post.attrs["ess"] > 100
    assert "log_weight" in idata.sample_stats


def test_gradient_is_forward_mode_behind_a_vjp(fit):
    logp = log_density(fit.model, fit.opts, fit.values, fit.subject())
    eta = jnp.asarray([0.1, -0.3])
    g = jax.grad(logp)(eta)
    h = 1e-6
    fd = np.array([(logp(eta.at[i].add(h)) - logp(eta.at[i].add(-h))) / (2 * h) for i in range(2)])
    np.testing.assert_allclose(g, fd, rtol=1e-6)


@pytest.mark.slow  # compiles an ODE model's MAP and gradient (~20 s)
def test_reverse_mode_gradient_of_an_ode_model():
    # diffrax solves in pkmix use ForwardMode and cannot be reverse-differentiated; the
    # custom VJP makes jax.grad (what NUTS calls) work anyway.
    def rhs(t, a, p):
        return {"central": -p.cl / p.v * a.central}

    model = pkmix.Model(
        theta={"tcl": 3.0, "tv": 30.0}, omega=pkmix.Block(["eta_cl", "eta_v"], OMEGA), sigma={"add": 0.4},
        individual=lambda p: {"cl": p.tcl * jnp.exp(p.eta_cl), "v": p.tv * jnp.exp(p.eta_v)},
        structure=pkmix.ODE(["central"], rhs, rtol=1e-8, atol=1e-10),
        observe=lambda a, p: a.central / p.v, error=pkmix.additive("add"), name="bolus_ode")
    p = patient()
    p["levels"] = p["levels"][:3]
    fit_ode = map_estimate(model, p, curve_points=0)
    fit_cf = map_estimate(bolus_model(), p, curve_points=0)
    np.testing.assert_allclose(fit_ode.eta, fit_cf.eta, atol=1e-6)
    logp = log_density(model, fit_ode.opts, fit_ode.values, fit_ode.subject())
    eta = jnp.asarray([0.1, -0.3])
    g = jax.grad(logp)(eta)
    g_cf = jax.grad(log_density(fit_cf.model, fit_cf.opts, fit_cf.values, fit_cf.subject()))(eta)
    np.testing.assert_allclose(g, g_cf, rtol=1e-5)


@pytest.mark.slow  # compiles NUTS with window adaptation (~20-30 s on 2 cores)
def test_nuts_matches_hessian_covariance_and_reports_diagnostics(fit):
    idata = sample_posterior(bolus_model(), fit, method="nuts", n_samples=1000, chains=4, warmup=500, seed=3)
    post = idata.posterior
    assert post["eta"].shape == (4, 1000, 2)
    assert post.attrs["rhat_max"] < 1.01
    assert post.attrs["ess_bulk_min"] > 400
    assert post.attrs["divergences"] == 0
    assert "diverging" in idata.sample_stats
    x = post["eta"].values.reshape(-1, 2)
    z = covariance_z(x, fit.covariance, ess=post.attrs["ess_bulk_min"])
    assert np.all(z < 4.0), z

"""Longer estimation checks (marked slow): phenobarbital against NONMEM, every method on
every example and on block-OMEGA / IOV / combined-error variants, and recovery of
known parameters from simulated data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pkmix

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / name / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.model


@pytest.fixture(scope="module")
def pheno_fit():
    return pkmix.fit(load_example("phenobarbital"), DATA / "pheno.csv", progress=False, npde_samples=100)


def test_pheno_real_matches_nonmem(pheno_fit):
    r = pheno_fit
    assert r.converged, r.message
    assert r.ofv == pytest.approx(586.27605628, abs=0.01)
    nonmem = {"THETA1": 4.69555e-3, "THETA2": 0.984258, "THETA3": 0.158920, "SIGMA1": 0.0132410,
              "omega(ETA1,ETA1)": 0.0293508, "omega(ETA2,ETA2)": 0.0279060}
    nonmem_se = {"THETA1": 2.10036e-4, "THETA2": 0.0268952, "THETA3": 0.0837623, "SIGMA1": 0.00227940,
                 "omega(ETA1,ETA1)": 0.0134153, "omega(ETA2,ETA2)": 0.00747651}
    estimates = dict(r.theta)
    estimates.update(r.sigma)
    estimates["omega(ETA1,ETA1)"] = r.omega.loc["ETA1", "ETA1"]
    estimates["omega(ETA2,ETA2)"] = r.omega.loc["ETA2", "ETA2"]
    for name, ref in nonmem.items():
        assert estimates[name] == pytest.approx(ref, rel=0.005), name
        assert r.se[name] == pytest.approx(nonmem_se[name], rel=0.05), name


def test_pheno_without_covariates_matches_nonmem():
    model = pkmix.Model(
        name="pheno_nocov",
        theta={"THETA1": pkmix.Theta(0.0047, lower=0), "THETA2": pkmix.Theta(1.0, lower=0)},
        omega={"ETA1": 0.03, "ETA2": 0.03},
        sigma={"SIGMA1": pkmix.Variance(0.013)},
        individual=lambda p: {"cl": p.THETA1 * jnp.exp(p.ETA1), "v": p.THETA2 * jnp.exp(p.ETA2)},
        structure=pkmix.one_compartment(),
        observe=lambda a, p: a.central / p.v,
        error=pkmix.proportional("SIGMA1"),
    )
    r = pkmix.fit(model, DATA / "pheno.csv", progress=False, covariance="none", diagnostics=False)
    assert r.converged, r.message
    assert r.ofv == pytest.approx(730.89472681, abs=0.01)
    assert r.theta["THETA1"] == pytest.approx(5.81756e-3, rel=0.005)
    assert r.theta["THETA2"] == pytest.approx(1.44555, rel=0.005)


def theo_variant(kind):
    """Theophylline with a block OMEGA, IOV (two occasions), or combined error.

    The block correlates KA and CL (estimated correlation about 0.19 under FOCE-I). A
    CL-V block would not do: these data pull that correlation to 1 (see
    ``test_correlation_at_its_boundary_is_reported``), where no fit can settle."""
    omega = {"eta_ka": 0.6, "eta_cl": 0.3, "eta_v": 0.1}
    iov = None
    sigma = {"add_sd": 0.7}
    error = pkmix.additive("add_sd")

    def individual(p):
        kappa = p.kappa_cl if kind == "iov" else 0.0
        return {"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl + kappa),
                "v": jnp.exp(p.tv + p.eta_v)}

    if kind == "block":
        omega = [{"eta_v": 0.1}, pkmix.Block(["eta_ka", "eta_cl"], [0.6, 0.1, 0.3])]
    elif kind == "block-cl-v":
        omega = [{"eta_ka": 0.6}, pkmix.Block(["eta_cl", "eta_v"], [0.1, 0.01, 0.05])]
    elif kind == "iov":
        iov = pkmix.IOV(occasion="OCC", kappa_cl=0.02)
    elif kind == "combined":
        sigma = {"add_sd": 0.5, "prop_sd": 0.05}
        error = pkmix.combined("add_sd", "prop_sd")
    return pkmix.Model(name=f"theo_{kind}", theta={"tka": 0.45, "tcl": 1.0, "tv": 3.45}, omega=omega,
                       sigma=sigma, iov=iov, individual=individual, structure=pkmix.one_compartment(depot=True),
                       observe=lambda a, p: a.central / p.v, error=error)


def theo_with_occasions():
    frame = pd.read_csv(DATA / "theo_sd.csv")
    frame["OCC"] = np.where(frame["TIME"] <= 5.0, 1, 2)
    return frame


@pytest.mark.parametrize("kind", ["block", "iov", "combined"])
@pytest.mark.parametrize("method", ["fo", "foce", "focei", "laplace"])
def test_every_method_runs_on_variants(kind, method):
    data = theo_with_occasions() if kind == "iov" else DATA / "theo_sd.csv"
    r = pkmix.fit(theo_variant(kind), data, method=method, progress=False, covariance="none",
                  diagnostics=False, max_iter=200)
    assert np.isfinite(r.ofv)
    assert all(np.isfinite(v) for v in r.theta.values())
    assert r.converged, r.message


@pytest.mark.filterwarnings("ignore:inner eta optimisation did not converge")
def test_correlation_at_its_boundary_is_reported():
    """With CL and V in one OMEGA block the theophylline data drive their correlation
    to 1 (FOCE-I fits end at 0.9999+, with OFVs that differ in the third decimal as
    rounding sends them along the ridge): the fit must say so, as NONMEM's boundary
    test does, whatever its convergence status."""
    with pytest.warns(UserWarning, match="near its boundary"):
        r = pkmix.fit(theo_variant("block-cl-v"), DATA / "theo_sd.csv", method="focei", progress=False,
                      covariance="none", diagnostics=False, max_iter=200)
    assert "estimate near its boundary: the correlation of eta_cl and eta_v is" in r.message
    omega = np.asarray(r.values.omega)
    assert omega[1, 2] / np.sqrt(omega[1, 1] * omega[2, 2]) > 0.99


@pytest.mark.parametrize("method", ["fo", "foce", "laplace"])
def test_every_method_runs_on_examples(method):
    for name, data in (("theophylline", "theo_sd.csv"), ("phenobarbital", "pheno.csv")):
        r = pkmix.fit(load_example(name), DATA / data, method=method, progress=False, covariance="none",
                      diagnostics=False)
        assert np.isfinite(r.ofv) and r.converged, (name, method, r.message)


def bateman_dataset(n_subjects, times, truth, omega, prop, seed):
    """1-cmt oral data (100 mg at 0) simulated with numpy from the Bateman function,
    log-normal KA, CL, V and proportional error."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n_subjects + 1):
        ka, cl, v = (np.exp(truth[t] + rng.normal(0, np.sqrt(omega[e])))
                     for t, e in (("tka", "eta_ka"), ("tcl", "eta_cl"), ("tv", "eta_v")))
        k = cl / v
        conc = 100 * ka / (v * (ka - k)) * (np.exp(-k * times) - np.exp(-ka * times))
        dv = conc * (1 + prop * rng.normal(size=times.size))
        rows.append(dict(ID=i, TIME=0.0, DV=0.0, AMT=100.0, EVID=1, MDV=1, CMT=1))
        rows += [dict(ID=i, TIME=t, DV=y, AMT=0.0, EVID=0, MDV=0, CMT=2) for t, y in zip(times, dv)]
    return pd.DataFrame(rows)


def recovery_model(theta=(0.0, 1.0, 3.0), omega=0.2):
    return pkmix.Model(
        name="recovery", theta=dict(zip(("tka", "tcl", "tv"), theta)),
        omega={"eta_ka": omega, "eta_cl": omega, "eta_v": omega}, sigma={"prop_sd": 0.2},
        individual=lambda p: {"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl),
                              "v": jnp.exp(p.tv + p.eta_v)},
        structure=pkmix.one_compartment(depot=True), observe=lambda a, p: a.central / p.v,
        error=pkmix.proportional("prop_sd"))


def test_recovers_known_parameters_from_simulated_data():
    """200 subjects, 1-cmt oral, simulated here with numpy from the Bateman function."""
    truth = {"tka": np.log(1.2), "tcl": np.log(3.0), "tv": np.log(30.0)}
    omega = {"eta_ka": 0.09, "eta_cl": 0.06, "eta_v": 0.04}
    prop = 0.1
    times = np.array([0.25, 0.5, 1, 2, 3, 4, 6, 8, 12, 24.0])
    data = bateman_dataset(200, times, truth, omega, prop, seed=20261124)
    r = pkmix.fit(recovery_model(), data, progress=False, covariance="none", diagnostics=False)
    assert r.converged, r.message
    for name, value in truth.items():
        assert np.exp(r.theta[name]) == pytest.approx(np.exp(value), rel=0.10), name
    for name, value in omega.items():
        assert r.omega.loc[name, name] == pytest.approx(value, rel=0.25), name
    assert r.sigma["prop_sd"] == pytest.approx(prop, rel=0.10)


def test_converged_fit_is_at_a_minimum():
    """1,000 simulated subjects: a fit that says it converged is at a minimum, so a new
    fit started from its estimates finds no lower OFV. (Before the modes were polished
    and predicted, this fit stopped 350 OFV units above the minimum, its line search
    lost in the OFV's mode noise, and reported convergence.)"""
    truth = {"tka": np.log(1.2), "tcl": np.log(3.0), "tv": np.log(30.0)}
    omega = {"eta_ka": 0.0625, "eta_cl": 0.0625, "eta_v": 0.0625}
    data = bateman_dataset(1000, np.geomspace(0.25, 24.0, 10), truth, omega, 0.1, seed=1)
    model = recovery_model(theta=(0.1, 1.0, 3.3), omega=0.1)  # benchmarks/bench_fit.py's case
    first = pkmix.fit(model, data, progress=False, covariance="none", diagnostics=False)
    assert first.converged, first.message
    params = {**first.theta, **{n: first.omega.loc[n, n] for n in omega}, **first.sigma}
    again = pkmix.fit(model, data, params=params, progress=False, covariance="none", diagnostics=False)
    assert again.ofv > first.ofv - 1e-3

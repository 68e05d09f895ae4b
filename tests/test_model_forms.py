"""Model forms beyond a dosed compartment model: a model without compartments (NONMEM's
$PRED) against closed forms and against its import from a control stream."""

from __future__ import annotations

import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pkmix
from pkmix import nonmem

HERE = Path(__file__).parent / "data" / "nonmem"


def _evaluate(model, data, method, params=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pkmix.DatasetWarning)
        return pkmix.evaluate(model, data, method=method, params=params, diagnostics=False)


def test_linear_model_without_structure_is_the_gaussian_marginal_likelihood():
    """y_ij = b0 + b1 TIME_ij + eta_i + e_ij is linear in eta, so FO's OFV is the exact
    -2 log-likelihood (without the 2 pi constants): sum_i log|V_i| + r_i' V_i^-1 r_i with
    V_i = sigma^2 I + omega 1 1'."""
    times = np.array([0.0, 1.0, 2.5, 4.0])
    ids = np.repeat([1, 2, 3], len(times))
    t = np.tile(times, 3)
    dv = np.array([1.1, 1.9, 3.6, 4.4, 0.2, 1.5, 2.4, 3.9, 1.8, 2.2, 4.1, 5.6])
    model = pkmix.Model(theta={"b0": 0.8, "b1": 1.1}, omega={"eta": 0.4}, sigma={"sd": 0.3},
                        individual=lambda p: {"mu": p.b0 + p.b1 * p.TIME + p.eta},
                        observe=lambda a, p: p.mu, error=pkmix.additive("sd"))
    assert model.compartment_names == ()
    frame = pd.DataFrame({"ID": ids, "TIME": t, "DV": dv})
    want = 0.0
    for i in (1, 2, 3):
        r = dv[ids == i] - (0.8 + 1.1 * times)
        v = 0.3**2 * np.eye(len(times)) + 0.4
        want += np.linalg.slogdet(v)[1] + r @ np.linalg.solve(v, r)
    assert _evaluate(model, frame, "fo").ofv == pytest.approx(want, abs=1e-8)
    # FOCE-I's Laplace approximation is exact too for a model linear in eta with constant variance.
    assert _evaluate(model, frame, "focei").ofv == pytest.approx(want, abs=1e-6)


def test_time_is_not_a_covariate_name():
    with pytest.raises(pkmix.ModelError, match="p.TIME"):
        pkmix.Model(theta={"b0": 1.0}, omega={"eta": 0.1}, sigma={"sd": 0.3}, covariates=["TIME"],
                    individual=lambda p: {"mu": p.b0 + p.eta}, observe=lambda a, p: p.mu,
                    error=pkmix.additive("sd"))


def emax_by_hand():
    """emax_pred.ctl written in pkmix by hand."""

    def individual(p):
        e0 = p.e0 * jnp.exp(p.eta_e0)
        emax = p.emax * jnp.exp(p.eta_emax)
        return {"ipred": e0 + emax * p.CONC / (p.ec50 + p.CONC) + p.slope * p.TIME}

    return pkmix.Model(
        theta={"e0": 10.0, "emax": 50.0, "ec50": 5.0, "slope": -0.1, "add": 0.5, "prop": 0.1},
        omega={"eta_e0": 0.09, "eta_emax": 0.04}, sigma={"eps": pkmix.Variance(1.0, fixed=True)},
        covariates=["CONC"], individual=individual, observe=lambda a, p: p.ipred,
        error=pkmix.eps_error(lambda f, p, eps: f + jnp.sqrt(p.add**2 + p.prop**2 * f**2) * eps.eps,
                              eps=["eps"], theta=["add", "prop"]))


@pytest.fixture(scope="module")
def emax_pred():
    return nonmem.load(HERE / "emax_pred.ctl")


@pytest.mark.parametrize("method", ["focei", "fo"])
def test_pred_import_matches_the_hand_written_model(emax_pred, method):
    data = emax_pred.load_data()
    assert emax_pred.model.compartment_names == ()
    want = _evaluate(emax_by_hand(), pd.read_csv(HERE / "emax_pred.csv"), method).ofv
    assert np.isfinite(want)
    assert _evaluate(emax_pred.model, data, method).ofv == pytest.approx(want, abs=1e-8)


@pytest.mark.slow
def test_pred_import_fits(emax_pred):
    result = pkmix.fit(emax_pred.model, emax_pred.load_data(), covariance="none", diagnostics=False)
    assert result.converged, result.message
    by_hand = pkmix.fit(emax_by_hand(), pd.read_csv(HERE / "emax_pred.csv"), covariance="none",
                        diagnostics=False)
    assert result.ofv == pytest.approx(by_hand.ofv, abs=1e-3)

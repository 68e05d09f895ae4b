"""A model that cannot work fails when it is defined, with a `pkmix.ModelError` that
names the parameter at fault; data that do not fit a model fail when predicting, with
a `pkmix.DatasetError` that names the column."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pkmix


def definition(**overrides):
    """A valid one-compartment oral model's arguments, with some replaced."""
    args = dict(
        theta={"tka": 0.45, "tcl": pkmix.Theta(1.0, lower=0.0), "tv": 3.45},
        omega={"eta_ka": 0.6, "eta_cl": 0.3, "eta_v": 0.1},
        sigma={"add_sd": 0.7},
        individual=lambda p: {"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl),
                              "v": jnp.exp(p.tv + p.eta_v)},
        structure=pkmix.one_compartment(depot=True),
        observe=lambda a, p: a.central / p.v,
        error=pkmix.additive("add_sd"),
    )
    args.update(overrides)
    return args


def test_the_reference_definition_is_valid():
    model = pkmix.Model(**definition())
    assert model.theta_names == ("tka", "tcl", "tv")
    assert model.eta_names == ("eta_ka", "eta_cl", "eta_v")


@pytest.mark.parametrize("name, individual", [
    ("eta_q", lambda p: {"ka": p.tka, "cl": p.tcl * jnp.exp(p.eta_q), "v": p.tv}),
    ("tq", lambda p: {"ka": p.tka, "cl": p.tq, "v": p.tv}),
    ("WT", lambda p: {"ka": p.tka, "cl": p.tcl * p.WT, "v": p.tv}),
])
def test_unknown_name_in_individual(name, individual):
    with pytest.raises(pkmix.ModelError, match=f"individual\\(\\).*'{name}'"):
        pkmix.Model(**definition(individual=individual))


def test_unknown_name_in_observe():
    with pytest.raises(pkmix.ModelError, match="observe\\(\\).*'vc'"):
        pkmix.Model(**definition(observe=lambda a, p: a.central / p.vc))
    with pytest.raises(pkmix.ModelError, match="observe\\(\\).*'peripheral'"):
        pkmix.Model(**definition(observe=lambda a, p: a.peripheral / p.v))


@pytest.mark.parametrize("omega, names", [
    (pkmix.Block(["eta_cl", "eta_v"], [0.1, 0.2, 0.1]), "eta_cl, eta_v"),  # |correlation| > 1
    ({"eta_cl": -0.1}, "eta_cl"),
    ({"eta_cl": 0.0}, "eta_cl"),
])
def test_omega_not_positive_definite(omega, names):
    omega = [omega, {"eta_ka": 0.6}] + ([{"eta_v": 0.1}] if "eta_v" not in names else [])
    with pytest.raises(pkmix.ModelError, match=f"omega.*{names}.*not positive definite"):
        pkmix.Model(**definition(omega=omega))


@pytest.mark.parametrize("theta", [
    pkmix.Theta(1.0, lower=2.0),
    pkmix.Theta(1.0, upper=0.5),
    pkmix.Theta(0.0, lower=0.0),  # on the bound: the transform to unconstrained scale is infinite
    pkmix.Theta(1.0, lower=3.0, upper=2.0),
])
def test_bound_excluding_the_initial_value(theta):
    with pytest.raises(pkmix.ModelError, match="theta 'tcl'"):
        pkmix.Model(**definition(theta={"tka": 0.45, "tcl": theta, "tv": 3.45}))


def test_a_fixed_theta_may_sit_anywhere():
    pkmix.Model(**definition(theta={"tka": 0.45, "tcl": pkmix.Theta(0.0, lower=0.0, fixed=True), "tv": 3.45}))


def test_structure_parameter_not_produced():
    with pytest.raises(pkmix.ModelError, match="'v'"):
        pkmix.Model(**definition(individual=lambda p: {"ka": p.tka, "cl": p.tcl, "vc": p.tv}))
    with pytest.raises(pkmix.ModelError, match="'q'"):
        pkmix.Model(**definition(individual=lambda p: {"ka": p.tka, "cl": p.tcl, "v1": p.tv, "v2": p.tv},
                                 structure=pkmix.two_compartment(depot=True),
                                 observe=lambda a, p: a.central / p.v1))


def test_sigma_not_declared():
    with pytest.raises(pkmix.ModelError, match="'prop_sd'"):
        pkmix.Model(**definition(error=pkmix.combined("add_sd", "prop_sd")))


def test_sigma_declared_but_unused():
    with pytest.raises(pkmix.ModelError, match="prop_sd"):
        pkmix.Model(**definition(sigma={"add_sd": 0.7, "prop_sd": 0.1}))


@pytest.mark.parametrize("name", ["alag5", "f3", "r4", "d9"])
def test_dose_modifier_for_a_compartment_that_does_not_exist(name):
    def individual(p):
        return {"ka": p.tka, "cl": p.tcl, "v": p.tv, name: 1.0}

    with pytest.raises(pkmix.ModelError, match=f"'{name}'.*compartment"):
        pkmix.Model(**definition(individual=individual))


def test_dose_modifier_for_an_existing_compartment_is_accepted():
    pkmix.Model(**definition(individual=lambda p: {"ka": p.tka, "cl": p.tcl, "v": p.tv, "alag1": 0.5,
                                                   "f2": 1.0}))


def test_parameter_declared_twice():
    with pytest.raises(pkmix.ModelError, match="'tcl'"):
        pkmix.Model(**definition(sigma={"tcl": 0.7}, error=pkmix.additive("tcl")))


def test_covariate_named_like_a_parameter():
    with pytest.raises(pkmix.ModelError, match="'tv'"):
        pkmix.Model(**definition(covariates=["tv"]))


def test_individual_must_return_named_scalars():
    with pytest.raises(pkmix.ModelError, match="dict"):
        pkmix.Model(**definition(individual=lambda p: [p.tka, p.tcl, p.tv]))
    with pytest.raises(pkmix.ModelError, match="'cl'.*shape"):
        pkmix.Model(**definition(individual=lambda p: {"ka": p.tka, "cl": jnp.ones(2), "v": p.tv}))


def test_structure_and_error_types():
    with pytest.raises(pkmix.ModelError, match="structure"):
        pkmix.Model(**definition(structure="one_compartment"))
    with pytest.raises(pkmix.ModelError, match="error"):
        pkmix.Model(**definition(error="additive"))


def test_ode_declaration_errors():
    with pytest.raises(ValueError, match="repeat"):
        pkmix.ODE(["central", "central"], lambda t, a, p: {})
    with pytest.raises(ValueError, match="'gut'"):
        pkmix.ODE(["depot", "central"], lambda t, a, p: {}, default_dose="gut")


# ----------------------------------------------------------- data against a model
def test_covariate_missing_from_the_data_names_the_column():
    model = pkmix.Model(**definition(
        individual=lambda p: {"ka": p.tka, "cl": p.tcl * p.WT / 70.0, "v": p.tv, "f1": p.FORM},
        covariates=["WT", "FORM"],
    ))
    frame = pd.DataFrame({"ID": 1, "TIME": [0.0, 1.0], "AMT": [100.0, 0.0], "EVID": [1, 0], "DV": [0.0, 1.0],
                          "CMT": [1, 2], "WT": 70.0})
    with pytest.raises(pkmix.DatasetError, match="column FORM") as info:
        pkmix.predict(model, frame)
    # Only the missing column is reported.
    assert [v.column for v in info.value.violations] == ["FORM"]


def test_covariate_with_missing_values_names_the_column_and_record():
    model = pkmix.Model(**definition(
        individual=lambda p: {"ka": p.tka, "cl": p.tcl * p.WT / 70.0, "v": p.tv}, covariates=["WT"]))
    frame = pd.DataFrame({"ID": 1, "TIME": [0.0, 1.0], "AMT": [100.0, 0.0], "EVID": [1, 0], "DV": [0.0, 1.0],
                          "CMT": [1, 2], "WT": [70.0, np.nan]})
    with pytest.raises(pkmix.DatasetError, match="WT"):
        pkmix.predict(model, frame)


def test_dose_into_a_compartment_the_model_lacks():
    model = pkmix.Model(**definition())
    frame = pd.DataFrame({"ID": 1, "TIME": [0.0, 1.0], "AMT": [100.0, 0.0], "EVID": [1, 0], "DV": [0.0, 1.0],
                          "CMT": [3, 2]})
    with pytest.raises(pkmix.DatasetError, match="CMT"):
        pkmix.predict(model, frame)


def test_error_model_with_a_theta():
    """NONMEM's Y = F + F*THETA*EPS(1) with SIGMA 1 FIX: R = (theta f)^2; an undeclared
    theta is named."""
    from pkmix.nonmem import eps_error

    error = eps_error(lambda f, p, eps: f + f * p.tprop * eps.eps1, eps=["eps1"], theta=["tprop"])
    model = pkmix.Model(**definition(theta={"tka": 0.45, "tcl": 1.0, "tv": 3.45, "tprop": 0.2},
                                     sigma={"eps1": pkmix.Variance(1.0, fixed=True)}, error=error))
    f = jnp.array([0.5, 2.0])
    np.testing.assert_allclose(model.residual_variance(model.initial_values(), f), (0.2 * f) ** 2)
    with pytest.raises(pkmix.ModelError, match="error model uses theta 'tprop', which is not declared"):
        pkmix.Model(**definition(sigma={"eps1": pkmix.Variance(1.0, fixed=True)}, error=error))


def test_sigma_bounds():
    from pkmix._model.transforms import ParameterTransform

    model = pkmix.Model(**definition(sigma={"add_sd": pkmix.SD(0.7, lower=0.1, upper=2.0)}))
    t = ParameterTransform(model.spec)
    base = model.initial_values()
    x = t.to_vector(base, base)
    assert float(t.from_vector(x, base).sigma[0]) == pytest.approx(0.7)
    for far in (-50.0, 50.0):
        v = float(t.from_vector(x.at[-1].set(far), base).sigma[0])
        assert 0.1 <= v <= 2.0
    lower_only = ParameterTransform(pkmix.Model(**definition(sigma={"add_sd": pkmix.SD(0.7, lower=0.5)})).spec)
    assert float(lower_only.from_vector(x.at[-1].set(-50.0), base).sigma[0]) == pytest.approx(0.5)
    with pytest.raises(pkmix.ModelError, match="sigma 'add_sd': initial value 0.7 is outside its bounds"):
        pkmix.Model(**definition(sigma={"add_sd": pkmix.SD(0.7, upper=0.5)}))
    with pytest.raises(pkmix.ModelError, match="must satisfy 0 <= lower < upper"):
        pkmix.Model(**definition(sigma={"add_sd": pkmix.Variance(0.7, lower=1.0, upper=0.5)}))

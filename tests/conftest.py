"""Shared test fixtures and helpers.

Importing pkmix turns on 64-bit floats before any array exists. Parsed reference
datasets are session-scoped: they are read once for the whole run.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

import pkmix

DATA = Path(__file__).parent / "data"

assert jax.config.read("jax_enable_x64"), "importing pkmix must turn on 64-bit floats"


def _read_quietly(path):
    # The reference files are valid; any DatasetWarning (e.g. a subject without
    # observations) is not what these fixtures are about.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pkmix.DatasetWarning)
        return pkmix.read_nonmem(path)


@pytest.fixture(scope="session")
def theo() -> pkmix.Dataset:
    """Theophylline, single oral dose, 12 subjects (tests/data/theo_sd.csv)."""
    return _read_quietly(DATA / "theo_sd.csv")


@pytest.fixture(scope="session")
def pheno() -> pkmix.Dataset:
    """Phenobarbital in neonates, repeated IV bolus doses, 59 subjects (tests/data/pheno.csv)."""
    return _read_quietly(DATA / "pheno.csv")


def assert_close(actual, expected, *, rtol: float = 1e-6, atol: float = 1e-9, what: str = "values"):
    """``np.testing.assert_allclose`` with a message that shows the worst element."""
    actual = np.asarray(actual, dtype=float)
    expected = np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def oral_one_compartment(theta, omega, sigma, error) -> pkmix.Model:
    """One compartment with first-order absorption, KA, CL and V log-normal:
    ``exp(tka + eta_ka)`` etc. (thetas ``tka``, ``tcl``, ``tv``; etas ``eta_ka``,
    ``eta_cl``, ``eta_v``), observed as central amount / V."""
    import jax.numpy as jnp

    return pkmix.Model(
        theta=theta, omega=omega, sigma=sigma,
        individual=lambda p: {"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl),
                              "v": jnp.exp(p.tv + p.eta_v)},
        structure=pkmix.one_compartment(depot=True), observe=lambda a, p: a.central / p.v, error=error)

"""Shared test fixtures and helpers.

Importing pkmix turns on 64-bit floats before any array exists. Parsed reference
datasets are session-scoped: they are read once for the whole run.
"""

from __future__ import annotations

import atexit
import gc
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

# A compilation cache private to this test run (JAX's persistent cache and pkmix's
# exported programs beneath it), chosen before pkmix is imported (importing pkmix turns
# the cache on): tests never read or write the user's ~/.cache/pkmix, and every run
# compiles from scratch, as CI does. The controlling process of a run in xdist workers
# chooses it (its atexit removes it after the workers end), and the workers and the CLI
# tests' subprocesses inherit it. A run given PKMIX_CACHE_DIR (e.g. to reuse a warm cache
# while developing) keeps that one.
if not os.environ.get("PKMIX_CACHE_DIR"):
    _RUN_CACHE = tempfile.mkdtemp(prefix="pkmix-test-cache-")
    os.environ["PKMIX_CACHE_DIR"] = _RUN_CACHE
    atexit.register(shutil.rmtree, _RUN_CACHE, ignore_errors=True)
# Each worker uses a folder of its own beneath it: JAX writes an entry of its persistent
# cache in place (no lock unless the cache has a size limit), so a worker could read
# another's entry half written, and its warning is an error here.
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ["PKMIX_CACHE_DIR"] != "off":
    os.environ["PKMIX_CACHE_DIR"] = os.path.join(os.environ["PKMIX_CACHE_DIR"], os.environ["PYTEST_XDIST_WORKER"])

import pytest  # noqa: E402

if TYPE_CHECKING:
    import pkmix

DATA = Path(__file__).parent / "data"


def pytest_configure(config):
    """JAX's settings for the processes that run tests. pyproject's addopts run the suite
    in two pytest-xdist workers (each test file in one worker, so that its module fixtures
    are built once); the controlling process only hands out files and reports, so it
    imports neither JAX nor pkmix (a quarter of a GB it would hold for the whole run). A
    run without workers (``-n 0``) runs its tests in this process."""
    if getattr(config, "workerinput", None) is None and getattr(config.option, "numprocesses", None):
        return
    import jax

    import pkmix  # noqa: F401  (importing pkmix turns on 64-bit floats)

    assert jax.config.read("jax_enable_x64"), "importing pkmix must turn on 64-bit floats"
    # As in JAX's own test suites: an implicit broadcast between arrays of different ranks
    # is an error, so a shape mistake in pkmix cannot hide behind broadcasting.
    jax.config.update("jax_numpy_rank_promotion", "raise")


def _read_quietly(path):
    import pkmix

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
    import numpy as np

    actual = np.asarray(actual, dtype=float)
    expected = np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def oral_one_compartment(theta, omega, sigma, error) -> pkmix.Model:
    """One compartment with first-order absorption, KA, CL and V log-normal:
    ``exp(tka + eta_ka)`` etc. (thetas ``tka``, ``tcl``, ``tv``; etas ``eta_ka``,
    ``eta_cl``, ``eta_v``), observed as central amount / V."""
    import jax.numpy as jnp

    import pkmix

    return pkmix.Model(
        theta=theta, omega=omega, sigma=sigma,
        individual=lambda p: {"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl),
                              "v": jnp.exp(p.tv + p.eta_v)},
        structure=pkmix.one_compartment(depot=True), observe=lambda a, p: a.central / p.v, error=error)


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """After each test module, drop the compiled programs pkmix and JAX keep in memory.

    A module's tests share them (the same model object compiles once per module); the
    next module's models are others. Kept for the whole run they added up to 5.2 GB of
    peak memory on the default suite (2.4 GB with this); the private compilation cache on disk still
    spares a later module XLA's compile of a program it needs again. The C heap then
    hands what was freed back to the system (``_trim_heap``): without that a worker's
    resident memory only grows, module after module, to the most it ever held.
    """
    yield
    import jax

    from pkmix import _compile, batch

    _compile._CACHE.clear()
    _compile._PROGRAMS.clear()
    batch._PROGRAMS.clear()
    jax.clear_caches()
    gc.collect()
    _trim_heap()


def _trim_heap():
    """glibc's ``malloc_trim(0)``: give the free pages of the C heap back to the system
    (nothing where the C library is another)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        trim = None
    if trim is not None:
        trim(0)


def vanco_patient(levels=((35.5, 14.0), (37.0, 31.0))):
    """A vancomycin patient (JSON form, docs/patient_format.md) for the Goti 2018 model: a
    1,500 mg loading dose then 1,000 mg every 12 h, and two levels (time h, mg/L)."""
    return {"id": "v1",
            "covariates": {"WT": {"value": 80, "unit": "kg"}, "SCR": {"value": 1.0, "unit": "mg/dL"},
                           "AGE": 60, "SEX": "male", "DIAL": 0},
            "doses": [{"time": 0, "amount": 1500, "duration": 1.5},
                      {"time": 12, "amount": 1000, "duration": 1, "interval": 12, "count": 3}],
            "levels": [{"time": t, "value": v} for t, v in levels]}

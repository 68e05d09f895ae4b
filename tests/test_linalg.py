"""pkmix._linalg against NumPy/LAPACK, its derivatives, and the rule it exists for: no
batched LAPACK call in the estimation and diagnostics programs.

jaxlib 0.10's batched LAPACK kernels block XLA:CPU's intra-op thread pool while the
pieces of the batch run on that same pool; two of them side by side on a 2-core machine
hang the process (seen: a phenobarbital fit with NPDE, about one run in five).
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pkmix import _linalg as linalg

ROOT = Path(__file__).resolve().parents[1]


def _spd(rng, batch, n):
    X = rng.normal(size=(batch, n, n))
    return X @ np.swapaxes(X, -1, -2) + n * np.eye(n), X


@pytest.mark.parametrize("n", [1, 3, linalg.UNROLL_MAX, linalg.UNROLL_MAX + 1, 40])
def test_matches_numpy(n):
    rng = np.random.default_rng(n)
    A, X = _spd(rng, 4, n)
    b, B = rng.normal(size=(4, n)), rng.normal(size=(4, n, 3))
    L = np.linalg.cholesky(A)
    np.testing.assert_allclose(linalg.cholesky(A), L, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(linalg.spd_solve(A, b), np.linalg.solve(A, b[..., None])[..., 0], rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(linalg.spd_solve(A, B), np.linalg.solve(A, B), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(linalg.spd_inv(A), np.linalg.inv(A), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(linalg.spd_logdet(A), np.linalg.slogdet(A)[1], rtol=1e-12)
    np.testing.assert_allclose(linalg.solve_triangular(L, B, transpose=True),
                               np.linalg.solve(np.swapaxes(L, -1, -2), B), rtol=1e-10, atol=1e-13)
    # A general (non-symmetric) system, which needs pivoting.
    np.testing.assert_allclose(linalg.solve(X, b), np.linalg.solve(X, b[..., None])[..., 0], rtol=1e-8, atol=1e-10)
    w, V = jax.vmap(linalg.eigh)(jnp.asarray(A))
    np.testing.assert_allclose(w, np.linalg.eigh(A)[0], rtol=1e-10)
    np.testing.assert_allclose(np.abs(np.einsum("bij,bij->bj", V, np.linalg.eigh(A)[1])), 1.0, rtol=1e-8)


def test_not_positive_definite_gives_nan():
    assert np.isnan(float(linalg.spd_logdet(jnp.array([[1.0, 2.0], [2.0, 1.0]]))))


@pytest.mark.parametrize("n", [3, 20])
def test_derivatives(n):
    rng = np.random.default_rng(7)
    A = jnp.asarray(_spd(rng, 1, n)[0][0])
    b = jnp.asarray(rng.normal(size=n))
    # d log|A| / dA = A^-1 (the closed form), in reverse mode.
    np.testing.assert_allclose(jax.grad(linalg.spd_logdet)(A), np.linalg.inv(np.asarray(A)), rtol=1e-9, atol=1e-12)
    # Forward and reverse mode agree, and match central differences.
    f = lambda a: linalg.spd_solve(a, b)  # noqa: E731
    fwd, rev = jax.jacfwd(f)(A), jax.jacrev(f)(A)
    np.testing.assert_allclose(fwd, rev, rtol=1e-9, atol=1e-12)
    E = jnp.zeros_like(A).at[1, 0].set(1e-6)
    fd = (f(A + E) - f(A - E)) / 2e-6
    np.testing.assert_allclose(fwd[:, 1, 0], fd, rtol=1e-5, atol=1e-9)


def _batched_lapack_calls(text):
    """LAPACK custom calls in a lowered program that factor a batch of matrices at once."""
    calls = [line for line in text.splitlines() if "custom_call @lapack" in line]
    return [c for c in calls if re.search(r'num_batch_dims = "([1-9]\d*)"', c)]


def test_fit_and_diagnostics_programs_never_block_and_can_be_cached(theo):
    """No batched LAPACK call (see the module docstring), and no host callback: JAX
    never writes a program with one to its persistent compilation cache, so a second
    process would compile the fit again."""
    from pkmix._estimation import fit as fit_module
    from pkmix._estimation.engine import fit_program as engine_program
    from pkmix._estimation.methods import get_method
    from pkmix._estimation.settings import FitSettings
    from pkmix._predict import bind, parameter_values

    model = runpy.run_path(str(ROOT / "examples/theophylline/model.py"))["model"]
    method = get_method("focei")
    _, batch = bind(model, theo)
    values = parameter_values(model, None)
    opts = fit_module.likelihood_options(method, batch, "nonmem")
    transform = fit_module.transform_for(model)
    x0 = transform.to_vector(values, values)
    etas = jnp.zeros((batch.time.shape[0], model.n_eta_total(batch.n_occasions)))
    static = (model, method, opts, FitSettings(gtol=1e-3))
    fit_text = jax.jit(lambda *a: engine_program(*static, *a)).lower(
        x0, values, etas, batch, jnp.asarray(5, jnp.int32), jnp.asarray(True)).as_text()
    diag_text = jax.jit(lambda *a: fit_module._program_diagnostics(model, opts, 50, *a)).lower(
        values, etas, batch, jax.random.PRNGKey(0)).as_text()
    assert "stablehlo" in fit_text and "stablehlo" in diag_text
    assert _batched_lapack_calls(fit_text) == []
    assert _batched_lapack_calls(diag_text) == []
    assert "callback" not in fit_text and "callback" not in diag_text
    # The checks themselves find what they are looking for.
    assert "callback" in jax.jit(lambda x: jax.debug.callback(print, x)).lower(jnp.ones(2)).as_text()
    assert _batched_lapack_calls(jax.jit(jax.vmap(jnp.linalg.cholesky)).lower(jnp.ones((4, 3, 3))).as_text())


def test_stiff_ode_prediction_has_no_batched_lapack_call():
    """The implicit solver's Newton systems go through ``_linalg.solve`` too (lineax's
    default would be a batched LU), for PRED and IPRED of several subjects side by side."""
    import pandas as pd

    import pkmix
    from pkmix._predict import _predict_batch, bind, parameter_values

    def rhs(t, a, p):
        return {"central": -(p.cl + p.q) / p.v1 * a.central + p.q / p.v2 * a.peripheral,
                "peripheral": p.q / p.v1 * a.central - p.q / p.v2 * a.peripheral}

    model = pkmix.Model(
        theta={"cl": 2.0, "v1": 20.0, "q": 2e4, "v2": 40.0}, omega={"eta": 0.1}, sigma={"add": 1.0},
        individual=lambda p: {"cl": p.cl * jnp.exp(p.eta), "v1": p.v1, "q": p.q, "v2": p.v2},
        structure=pkmix.ODE(["central", "peripheral"], rhs, stiff=True), observe=lambda a, p: a.central / p.v1,
        error=pkmix.additive("add"))
    rows = []
    for i in (1, 2, 3):
        rows.append(dict(ID=i, TIME=0.0, DV=0.0, AMT=100.0, EVID=1, MDV=1))
        rows += [dict(ID=i, TIME=t, DV=1.0, AMT=0.0, EVID=0, MDV=0) for t in (0.1, 1.0, 12.0)]
    _, batch = bind(model, pd.DataFrame(rows))
    values = parameter_values(model, None)
    text = jax.jit(lambda v, e, b: _predict_batch(model, v, e, b, False, "nonmem")).lower(
        values, jnp.zeros((3, 1)), batch).as_text()
    assert "stablehlo" in text
    assert _batched_lapack_calls(text) == []

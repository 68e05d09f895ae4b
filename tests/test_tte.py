"""Time-to-event likelihoods: the hazards' closed forms against quadrature (scipy's and
the Gauss-Legendre path), the record terms against survival functions written out by
hand, and a frailty model's marginal likelihood against scipy.integrate.quad over the
frailty."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from pkmix._model.tte import Hazard, previous_times, record_terms

THETAS = {"exponential": [], "weibull": [1.7], "gompertz": [0.3]}


def _numpy_hazard(kind, t, f, th):
    if kind == "exponential":
        return f
    if kind == "weibull":
        return f * th[0] * t ** (th[0] - 1.0)
    return f * np.exp(th[0] * t)


def _as_user(kind):
    """The built-in hazard written as a user function (the quadrature path)."""
    if kind == "exponential":
        return lambda t, f, p: f * jnp.ones_like(t)
    if kind == "weibull":
        return lambda t, f, p: f * p.k * t ** (p.k - 1.0)
    return lambda t, f, p: f * jnp.exp(p.g * t)


@pytest.mark.parametrize("kind", ["exponential", "weibull", "gompertz"])
def test_cumulative_hazard_closed_forms_against_scipy_quad(kind):
    hz = Hazard(kind=kind, theta=("k",) if kind == "weibull" else ("g",) if kind == "gompertz" else ())
    th = jnp.asarray(THETAS[kind], dtype=jnp.float64)
    for a, b, f in [(0.0, 2.0, 0.4), (0.5, 3.25, 1.3), (1.0, 1.0, 0.7)]:
        ref, _ = integrate.quad(lambda t: _numpy_hazard(kind, t, f, THETAS[kind]), a, b, epsabs=1e-13, epsrel=1e-13)
        got = float(hz.cumulative(jnp.float64(a), jnp.float64(b), jnp.float64(f), th))
        assert got == pytest.approx(ref, rel=1e-11, abs=1e-13)


@pytest.mark.parametrize("kind,nodes,tol", [("exponential", 2, 1e-14), ("gompertz", 16, 1e-12),
                                             ("weibull", 16, 1e-3), ("weibull", 64, 1e-4)])
def test_quadrature_path_against_closed_forms(kind, nodes, tol):
    """The user-hazard path (Gauss-Legendre) reproduces the closed forms: to rounding for
    smooth hazards; for a Weibull from t = 0 (t^0.7 is not smooth there) algebraically
    in the node count, the accuracy the module docstring states."""
    name = {"weibull": ("k",), "gompertz": ("g",)}.get(kind, ())
    closed = Hazard(kind=kind, theta=name)
    user = Hazard(kind="user", function=_as_user(kind), theta=name, nodes=nodes)
    th = jnp.asarray(THETAS[kind], dtype=jnp.float64)
    a = jnp.asarray([0.0, 0.5, 2.0])
    b = jnp.asarray([1.5, 4.0, 2.5])
    f = jnp.asarray([0.3, 1.2, 2.0])
    np.testing.assert_allclose(user.cumulative(a, b, f, th), closed.cumulative(a, b, f, th), rtol=tol, atol=1e-14)


@pytest.mark.parametrize("kind", ["exponential", "weibull", "gompertz", "user"])
def test_inverse_solves_the_cumulative_hazard(kind):
    name = {"weibull": ("k",), "gompertz": ("g",), "user": ("g",)}.get(kind, ())
    hz = (Hazard(kind="user", function=_as_user("gompertz"), theta=name) if kind == "user"
          else Hazard(kind=kind, theta=name))
    th = jnp.asarray(THETAS.get(kind, [0.3]) or [], dtype=jnp.float64)
    a, b, f = jnp.float64(0.5), jnp.float64(6.0), jnp.float64(0.4)
    total = float(hz.cumulative(a, b, f, th))
    for r in (0.01, 0.5 * total, 0.999 * total):
        t = hz.inverse(a, jnp.float64(r), f, th, b)
        assert 0.5 < float(t) <= 6.0
        assert float(hz.cumulative(a, t, f, th)) == pytest.approx(r, rel=1e-10)
    assert np.isinf(float(hz.inverse(a, jnp.float64(1.01 * total), f, th, b)))


def test_gompertz_with_zero_rate_is_exponential():
    g = Hazard(kind="gompertz", theta=("g",))
    e = Hazard(kind="exponential")
    zero = jnp.zeros(1)
    assert float(g.cumulative(1.0, 3.0, 0.5, zero)) == pytest.approx(float(e.cumulative(1.0, 3.0, 0.5, zero)))
    assert float(g.inverse(1.0, 0.4, 0.5, zero, 9.0)) == pytest.approx(1.8)
    # Derivative in g at g = 0 is finite (a fit may pass through it).
    d = jax.grad(lambda gg: g.cumulative(1.0, 3.0, 0.5, gg[None]))(0.0)
    assert np.isfinite(float(d))


def test_record_terms_against_survival_written_out():
    """Weibull: right-censored, exact and interval-censored records against -2 log of
    S, f S and S(L) - S(t) with S(t) = exp(-f t^k)."""
    k, f = 1.4, 0.2
    hz = Hazard(kind="weibull", theta=("k",))
    S = lambda t: np.exp(-f * t ** k)  # noqa: E731
    h = lambda t: f * k * t ** (k - 1.0)  # noqa: E731
    time = jnp.asarray([0.0, 2.0, 5.0, 7.0, 9.0])
    start = previous_times(time, jnp.asarray([True, True, True, True, True]))
    lower = jnp.asarray([0.0, 2.0, 5.0, 6.0, 9.0])
    dv = jnp.asarray([0.0, 0.0, 1.0, 1.0, 0.0])
    terms = np.asarray(record_terms(hz, time, start, lower, dv, jnp.full(5, f), jnp.asarray([k])))
    expected = [0.0,
                -2 * np.log(S(2.0)),
                -2 * np.log(h(5.0) * S(5.0) / S(2.0)),
                -2 * np.log((S(6.0) - S(7.0)) / S(5.0)),
                -2 * np.log(S(9.0) / S(7.0))]
    np.testing.assert_allclose(terms, expected, rtol=1e-12, atol=1e-14)


def test_previous_times_skip_other_records():
    time = jnp.asarray([0.0, 1.0, 2.0, 3.0, 4.0, 4.0])
    mask = jnp.asarray([False, True, False, True, True, False])
    np.testing.assert_array_equal(previous_times(time, mask), [0.0, 0.0, 1.0, 1.0, 3.0, 4.0])

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


# --------------------------------------------------------------- a frailty model
THETA_LAM, SHAPE, OMEGA_FRAIL = -2.0, 1.4, 0.5


def _frailty_data():
    """12 subjects: records at 0, sometimes one in between (DV = 0), and a last record
    that is an exact event, an interval-censored event (TLO < TIME) or a censoring."""
    rng = np.random.default_rng(7)
    rows = []
    for i in range(1, 13):
        end = float(np.round(rng.uniform(2.0, 10.0), 3))
        kind = ("exact", "interval", "censored")[i % 3]
        rows.append(dict(ID=i, TIME=0.0, DV=0, EVID=0, MDV=0, TLO=0.0))
        if i % 2:
            rows.append(dict(ID=i, TIME=round(end / 3, 3), DV=0, EVID=0, MDV=0, TLO=round(end / 3, 3)))
        low = round(0.6 * end, 3) if kind == "interval" else end
        rows.append(dict(ID=i, TIME=end, DV=int(kind != "censored"), EVID=0, MDV=0, TLO=low))
    import pandas as pd

    return pd.DataFrame(rows)


def _frailty_model(hazard="weibull", theta=("k",)):
    import pkmix

    return pkmix.Model(
        theta={"tlam": THETA_LAM, "k": SHAPE}, omega={"eta_frail": OMEGA_FRAIL}, sigma={},
        individual=lambda p: {"lam": jnp.exp(p.tlam + p.eta_frail), "cl": 1.0, "v": 1.0},
        structure=__import__("pkmix").one_compartment(), observe=lambda a, p: p.lam,
        error=__import__("pkmix").time_to_event(hazard, theta=list(theta), interval_start="TLO"))


def _subject_log_lik(g, e):
    """log p(records | frailty e), from S(t) = exp(-H(t)), H(t) = lam t^k written out."""
    lam = np.exp(THETA_LAM + e)
    H = lambda t: lam * t ** SHAPE  # noqa: E731
    total, prev = 0.0, g["TIME"].iloc[0]
    for t, dv, low in zip(g["TIME"], g["DV"], g["TLO"]):
        if dv == 0:  # S(t) / S(prev)
            total += -(H(t) - H(prev))
        elif low < t:  # (S(L) - S(t)) / S(prev)
            total += -(H(low) - H(prev)) + np.log(-np.expm1(-(H(t) - H(low))))
        else:  # h(t) S(t) / S(prev)
            total += np.log(lam * SHAPE * t ** (SHAPE - 1.0)) - (H(t) - H(prev))
        prev = t
    return total


def _reference_ofvs(data):
    """Per subject: -2 log of the marginal likelihood by scipy.integrate.quad over the
    frailty, and Laplace's approximation l(e^) + log(l''(e^)/2) from scipy's mode."""
    from scipy import optimize

    marginal, laplace = [], []
    for _, g in data.groupby("ID"):
        def integrand(e):
            return np.exp(_subject_log_lik(g, e) - e * e / (2 * OMEGA_FRAIL)) / np.sqrt(2 * np.pi * OMEGA_FRAIL)

        v, _ = integrate.quad(integrand, -15, 15, epsabs=1e-15, epsrel=1e-13, limit=200)
        marginal.append(-2.0 * np.log(v))

        def l_fn(e):
            return -2.0 * _subject_log_lik(g, e) + e * e / OMEGA_FRAIL + np.log(OMEGA_FRAIL)

        e_hat = optimize.minimize_scalar(l_fn, bracket=(-1.0, 1.0), tol=1e-12).x
        step = 1e-4
        second = (l_fn(e_hat + step) - 2 * l_fn(e_hat) + l_fn(e_hat - step)) / step**2
        laplace.append(l_fn(e_hat) + np.log(0.5 * second))
    return np.array(marginal), np.array(laplace)


@pytest.fixture(scope="module")
def frailty():
    data = _frailty_data()
    return data, _frailty_model(), _reference_ofvs(data)


def test_frailty_marginal_likelihood_agq_against_scipy_quad(frailty):
    """AGQ with many nodes is the marginal likelihood over the log-normal frailty (by
    scipy's adaptive quadrature); Laplace is its known approximation, computed here
    from scipy's mode and a finite-difference curvature."""
    import pkmix

    data, model, (marginal, laplace) = frailty
    agq = pkmix.evaluate(model, data, pkmix.AGQ(nodes=25))
    assert agq.ofv == pytest.approx(marginal.sum(), abs=1e-6)
    lap = pkmix.evaluate(model, data, "laplace")
    assert lap.ofv == pytest.approx(laplace.sum(), abs=1e-5)
    # Laplace is an approximation here (the frailty is not Gaussian in the likelihood).
    assert abs(lap.ofv - agq.ofv) > 1e-3


def test_time_to_event_data_rules_name_record_and_column():
    import pkmix

    data = _frailty_data()
    data.loc[2, "DV"] = 2  # not 0/1
    last = data.index[data["ID"] == 3][-1]  # an exact event
    data.loc[last, "TLO"] = data.loc[last, "TIME"] + 1.0  # interval starting after the event
    with pytest.raises(pkmix.DatasetError) as err:
        pkmix.evaluate(_frailty_model(), data, "laplace")
    text = str(err.value)
    assert "DV" in text and "0, 1" in text
    assert "TLO" in text and "after the event record's TIME" in text
    assert f"{last + 1}" in text  # the record number (1-based)


def test_time_to_event_argument_errors():
    import pkmix

    with pytest.raises(ValueError, match="weibull hazard reads 1 theta"):
        pkmix.time_to_event("weibull")
    with pytest.raises(ValueError, match="hazard must be one of"):
        pkmix.time_to_event("lognormal")


@pytest.mark.slow
def test_a_time_to_event_endpoint_beside_concentrations():
    """PK records (additive error) between time-to-event records, one eta shared: each
    time-to-event record's interval starts at the previous record of its kind, not at
    the concentrations in between (AGQ(25) against quad over the eta)."""
    import pandas as pd

    import pkmix

    tlam, w, sd = -1.5, 0.4, 0.3
    rows = []
    rng = np.random.default_rng(3)
    for i in range(1, 7):
        end = float(np.round(rng.uniform(3, 6), 2))
        rows += [dict(ID=i, TIME=0.0, DV=0, DVID=2),
                 dict(ID=i, TIME=1.0, DV=round(2.0 + rng.normal(0, 0.5), 3), DVID=1),
                 dict(ID=i, TIME=2.0, DV=round(2.0 + rng.normal(0, 0.5), 3), DVID=1),
                 dict(ID=i, TIME=end, DV=int(i % 2), DVID=2)]
    data = pd.DataFrame(rows).assign(EVID=0, MDV=0)
    model = pkmix.Model(
        theta={"tlam": tlam, "base": 2.0}, omega={"eta": w}, sigma={"add": sd},
        individual=lambda p: {"lam": jnp.exp(p.tlam + p.eta), "conc": p.base + p.eta, "cl": 1.0, "v": 1.0},
        structure=pkmix.one_compartment(), observe=lambda a, p: jnp.where(p.DVID == 1, p.conc, p.lam),
        error=pkmix.endpoints({1: pkmix.additive("add"), 2: pkmix.time_to_event()}))

    def l_fn(g, e):
        pk = g[g["DVID"] == 1]
        tte = g[g["DVID"] == 2]
        lam = np.exp(tlam + e)
        total = np.sum(np.log(sd**2) + (pk["DV"] - (2.0 + e)) ** 2 / sd**2)
        t_end, ev = tte["TIME"].iloc[-1], tte["DV"].iloc[-1]
        total += 2 * lam * t_end - 2 * ev * np.log(lam)
        return total + e * e / w + np.log(w)

    ref = 0.0
    for _, g in data.groupby("ID"):
        v, _ = integrate.quad(lambda e: np.exp(-0.5 * l_fn(g, e)) / np.sqrt(2 * np.pi), -10, 10, epsabs=1e-15,
                              epsrel=1e-12)
        ref += -2 * np.log(v)
    agq = pkmix.evaluate(model, data, pkmix.AGQ(nodes=25))
    assert agq.ofv == pytest.approx(ref, abs=1e-6)


@pytest.mark.slow
def test_weibull_frailty_parameters_recovered_from_numpy_simulated_data():
    """400 subjects with repeated events (a Weibull hazard in calendar time with a
    log-normal frailty: events of a Poisson process with cumulative hazard lam t^k),
    followed to 10 and simulated with numpy; Laplace and AGQ estimates within 3.5
    standard errors of the truth. Repeated events identify the frailty variance: with
    one event a subject it trades off against the Weibull shape (a fit of such data
    found k 2.8 and omega 4 at a higher marginal likelihood than near the truth)."""
    import pandas as pd

    import pkmix

    rng = np.random.default_rng(2024)
    true = {"tlam": -3.0, "k": 1.5, "eta_frail": 0.4}
    follow_up = 10.0
    rows = []
    for i in range(1, 401):
        lam = np.exp(true["tlam"] + rng.normal(0, np.sqrt(true["eta_frail"])))
        rows.append(dict(ID=i, TIME=0.0, DV=0))
        t = 0.0
        while True:  # H(t_next) = H(t) + Exp(1), H(t) = lam t^k
            t = (t ** true["k"] + rng.exponential() / lam) ** (1 / true["k"])
            if t > follow_up:
                rows.append(dict(ID=i, TIME=follow_up, DV=0))
                break
            rows.append(dict(ID=i, TIME=round(t, 6), DV=1))
    data = pd.DataFrame(rows).assign(EVID=0, MDV=0)
    model = pkmix.Model(
        theta={"tlam": -2.0, "k": pkmix.Theta(1.0, lower=0.1, upper=5.0)}, omega={"eta_frail": 0.2}, sigma={},
        individual=lambda p: {"lam": jnp.exp(p.tlam + p.eta_frail), "cl": 1.0, "v": 1.0},
        structure=pkmix.one_compartment(), observe=lambda a, p: p.lam,
        error=pkmix.time_to_event("weibull", theta=["k"]))
    for method in ("laplace", pkmix.AGQ(nodes=7)):
        fit = pkmix.fit(model, data, method=method)
        assert fit.converged
        for name, value in true.items():
            est = fit.theta[name] if name in fit.theta else fit.omega.loc[name, name]
            se = fit.se[name if name in fit.theta else f"omega({name},{name})"]
            assert abs(est - value) < 3.5 * se, f"{method}: {name} {est:.4f} (SE {se:.4f}), truth {value}"
            assert se < 0.25 * abs(value), f"{method}: {name} SE {se:.4f} (the data should pin it down)"

"""Simulation from the likelihood models and their VPCs.

Simulated frequencies and moments are compared with the model's probabilities
computed independently (scipy's distributions, quadrature over the eta), with
tolerances of 4.5 standard errors of the simulated statistic: for records that share a
subject's eta, the standard error comes from the spread of the subject means. Each
model's simulation program is compiled once (module fixtures); the samplers whose
programs compile longest (gamma draws) and the further checks are marked slow.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special, stats

import pkmix
from pkmix._simulate import kaplan_meier

N_SUBJECTS, N_TIMES, N_REPS = 300, 4, 4
TIMES = (1.0, 2.0, 4.0, 8.0)


def _design(times=TIMES, n=N_SUBJECTS, **extra):
    rows = [dict(ID=i, TIME=t, DV=0, EVID=0, MDV=0, **extra) for i in range(1, n + 1) for t in times]
    return pd.DataFrame(rows)


def _model(error, theta, omega, predictor, **kw):
    """A model without PK: the prediction is ``predictor(p)``."""
    return pkmix.Model(theta=theta, omega=omega, sigma=kw.pop("sigma", {}),
                       individual=lambda p: {"cl": 1.0, "v": 1.0, "lp": predictor(p)},
                       structure=pkmix.one_compartment(), observe=lambda a, p: p.lp, error=error, **kw)


def _within(simulated, expected, se, what):
    assert abs(simulated - expected) < 4.5 * se, \
        f"{what}: simulated {simulated:.5f}, expected {expected:.5f} (SE {se:.5f})"


def _cluster_se(values):
    """SE of the mean of [replicate, subject, record] values, subjects independent."""
    subject_means = values.mean(axis=-1).reshape(-1)
    return subject_means.std(ddof=1) / np.sqrt(subject_means.size)


def _dv(frame):
    """DV as [replicate, subject, record]."""
    return frame["DV"].to_numpy(dtype=float).reshape(N_REPS, N_SUBJECTS, -1)


# ------------------------------------------------------------------ discrete data
def test_bernoulli_with_a_random_effect_matches_the_integrated_probability():
    theta, omega = 0.4, 0.8
    model = _model(pkmix.bernoulli(), {"a": theta}, {"eta": omega}, lambda p: p.a + p.eta)
    y = _dv(pkmix.simulate(model, _design(), n=N_REPS, seed=3))
    assert set(np.unique(y)) <= {0.0, 1.0}
    expected, _ = integrate.quad(lambda e: special.expit(theta + e) * stats.norm.pdf(e, 0, np.sqrt(omega)), -12, 12)
    _within(y.mean(), expected, _cluster_se(y), "P(y = 1)")
    # The random effect correlates a subject's records: P(y1 = y2 = 1) = E[p^2] > P(y = 1)^2.
    both, _ = integrate.quad(lambda e: special.expit(theta + e) ** 2 * stats.norm.pdf(e, 0, np.sqrt(omega)), -12, 12)
    pairs = y[..., 0] * y[..., 1]
    _within(pairs.mean(), both, pairs.std() / np.sqrt(pairs.size), "P(y1 = y2 = 1)")


@pytest.mark.slow
def test_binomial_probit_frequencies():
    theta = -0.3
    model = _model(pkmix.binomial("N", link="probit"), {"a": theta}, {}, lambda p: p.a)
    y = _dv(pkmix.simulate(model, _design(N=5), n=N_REPS, seed=4))
    p = stats.norm.cdf(theta)
    for k in range(6):
        freq = np.mean(y == k)
        expected = stats.binom.pmf(k, 5, p)
        _within(freq, expected, np.sqrt(expected * (1 - expected) / y.size), f"P(y = {k})")


def test_poisson_mean_and_variance_with_a_random_effect():
    theta, omega = 1.2, 0.1
    model = _model(pkmix.poisson(), {"a": theta}, {"eta": omega}, lambda p: p.a + p.eta)
    y = _dv(pkmix.simulate(model, _design(), n=N_REPS, seed=5))
    mean = np.exp(theta + omega / 2)
    _within(y.mean(), mean, _cluster_se(y), "E[y]")
    # Var y = E[mu] + Var[mu] (Poisson given the eta, log-normal mu).
    var = mean + mean**2 * (np.exp(omega) - 1.0)
    centred = (y - mean) ** 2
    _within(centred.mean(), var, _cluster_se(centred), "Var[y]")


@pytest.mark.slow
def test_negative_binomial_frequencies():
    theta, alpha = 1.0, 0.5
    model = _model(pkmix.negative_binomial("alpha"), {"a": theta, "alpha": alpha}, {}, lambda p: p.a)
    y = _dv(pkmix.simulate(model, _design(), n=N_REPS, seed=6))
    mu = np.exp(theta)
    size = 1.0 / alpha
    for k in range(8):
        freq = np.mean(y == k)
        expected = stats.nbinom.pmf(k, size, size / (size + mu))
        _within(freq, expected, np.sqrt(expected * (1 - expected) / y.size), f"P(y = {k})")


def test_ordinal_frequencies():
    cuts = (-1.0, 0.5, 2.0)
    model = _model(pkmix.ordinal(["c1", "c2", "c3"]), {"c1": cuts[0], "c2": cuts[1], "c3": cuts[2], "b": 0.3}, {},
                   lambda p: p.b)
    y = _dv(pkmix.simulate(model, _design(), n=N_REPS, seed=7))
    cdf = np.r_[special.expit(np.asarray(cuts) - 0.3), 1.0]
    probs = np.diff(np.r_[0.0, cdf])
    for k, expected in enumerate(probs):
        freq = np.mean(y == k)
        _within(freq, expected, np.sqrt(expected * (1 - expected) / y.size), f"P(y = {k})")


def test_endpoints_draw_each_record_from_its_own_model_and_censor_only_gaussian_ones():
    """Concentrations (additive error, mean 1, SD 0.5) and a binary response by DVID;
    with an LLOQ of 1, about half the concentrations are censored, no response is."""
    model = pkmix.Model(
        theta={"c": 1.0, "a": 0.3}, omega={}, sigma={"sd": 0.5},
        individual=lambda p: {"cl": 1.0, "v": 1.0, "conc": p.c, "lp": p.a},
        structure=pkmix.one_compartment(), observe=lambda a, p: jnp.where(p.DVID == 1, p.conc, p.lp),
        error=pkmix.endpoints({1: pkmix.additive("sd"), 2: pkmix.bernoulli()}))
    design = _design(n=200)
    design["DVID"] = np.tile([1, 2, 1, 2], 200)
    sim = pkmix.simulate(model, design, n=2, seed=9, censor_blq=True, lloq=1.0)
    conc, resp = sim[sim["DVID"] == 1], sim[sim["DVID"] == 2]
    assert set(resp["DV"]) == {0.0, 1.0} and resp["BLQ"].eq(0).all()
    p = special.expit(0.3)
    _within(resp["DV"].mean(), p, np.sqrt(p * (1 - p) / len(resp)), "P(response)")
    _within(conc["BLQ"].mean(), 0.5, np.sqrt(0.25 / len(conc)), "fraction censored")
    above = conc.loc[conc["BLQ"] == 0, "DV"]
    assert above.min() >= 1.0
    # Above the mean of a normal, E[y | y > mu] = mu + sd sqrt(2 / pi).
    _within(above.mean(), 1.0 + 0.5 * np.sqrt(2 / np.pi), above.std() / np.sqrt(len(above)), "E[y | y > LLOQ]")


def test_a_user_density_cannot_be_simulated():
    model = _model(pkmix.loglik(lambda f, y, p: -0.5 * (y - f) ** 2), {"a": 0.0}, {}, lambda p: p.a)
    with pytest.raises(pkmix.ModelError, match="no sampler"):
        pkmix.simulate(model, _design(n=2), n=1)


# ------------------------------------------------------------------ time to event
SHAPE, TLAM, OMEGA_FRAIL, FOLLOW_UP = 1.3, -2.5, 0.3, 10.0


@pytest.fixture(scope="module")
def tte_model():
    return _model(pkmix.time_to_event("weibull", theta=["k"]), {"tlam": TLAM, "k": SHAPE},
                  {"eta_frail": OMEGA_FRAIL}, lambda p: jnp.exp(p.tlam + p.eta_frail))


@pytest.fixture(scope="module")
def tte_design():
    # Follow-up from 0 to 10 with a DV = 0 record at 5 (it splits the interval).
    return _design(times=(0.0, 5.0, FOLLOW_UP), n=400)


@pytest.fixture(scope="module")
def tte_sim(tte_model, tte_design):
    return pkmix.simulate(tte_model, tte_design, n=3, seed=11)


def _marginal_survival(t):
    """S(t) = E[exp(-exp(tlam + eta) t^k)] over the log-normal frailty."""
    f = lambda e: np.exp(-np.exp(TLAM + e) * t**SHAPE) * stats.norm.pdf(e, 0, np.sqrt(OMEGA_FRAIL))  # noqa: E731
    return integrate.quad(f, -10, 10)[0]


def _first_events(frame):
    last = frame.groupby(["REP", "ID"]).tail(1)
    return last["TIME"].to_numpy(), last["DV"].to_numpy() == 1


def test_simulated_event_times_follow_the_marginal_survival(tte_sim):
    time, event = _first_events(tte_sim)
    assert np.all(time <= FOLLOW_UP) and np.all(time[~event] == FOLLOW_UP)
    # Every subject: records in time order, the event (if any) last.
    for _, g in tte_sim.groupby(["REP", "ID"]):
        assert np.all(np.diff(g["TIME"].to_numpy()) >= 0) and g["DV"].iloc[:-1].eq(0).all()
    for t in (2.0, 5.0, 8.0, FOLLOW_UP):
        expected = _marginal_survival(t)
        surviving = np.mean(time > t) if t < FOLLOW_UP else np.mean(~event)
        _within(surviving, expected, np.sqrt(expected * (1 - expected) / time.size), f"S({t})")


@pytest.mark.slow
def test_simulated_time_to_event_data_read_back_and_evaluate(tte_model, tte_sim):
    one = tte_sim[tte_sim["REP"] == 1].drop(columns="REP")
    result = pkmix.evaluate(tte_model, one, "laplace")
    assert np.isfinite(result.ofv)


def test_a_user_hazard_is_simulated_by_bisection_on_its_quadrature():
    """h(t) = f exp(g t) written as a function: event times against the Gompertz S."""
    f, g = 0.05, 0.25
    model = _model(pkmix.time_to_event(lambda t, f, p: f * jnp.exp(p.g * t), theta=["g"]), {"f": f, "g": g}, {},
                   lambda p: p.f)
    sim = pkmix.simulate(model, _design(times=(0.0, 4.0, 8.0), n=500), n=2, seed=13)
    time, event = _first_events(sim)
    for t in (2.0, 4.0, 6.0, 8.0):
        expected = np.exp(-f * np.expm1(g * t) / g)
        surviving = np.mean(time > t) if t < 8.0 else np.mean(~event)
        _within(surviving, expected, np.sqrt(expected * (1 - expected) / time.size), f"S({t})")


def test_time_to_event_replicates_are_frames_only(tte_model, tte_design):
    with pytest.raises(ValueError, match="output='frame'"):
        pkmix.simulate(tte_model, tte_design, output="arrays")


def test_kaplan_meier_against_scipy():
    rng = np.random.default_rng(12)
    time = np.round(rng.exponential(3.0, 60), 1)  # rounded: tied times
    event = rng.uniform(size=60) < 0.7
    grid = np.linspace(0, time.max() + 1, 57)
    ref = stats.ecdf(stats.CensoredData(uncensored=time[event], right=time[~event])).sf.evaluate(grid)
    np.testing.assert_allclose(kaplan_meier(time, event, grid), ref, rtol=1e-12, atol=1e-15)
    # Replicates along a leading axis are independent estimates.
    both = kaplan_meier(np.stack([time, time[::-1]]), np.stack([event, event[::-1]]), grid)
    np.testing.assert_allclose(both[1], ref, rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------- VPCs
@pytest.fixture(scope="module")
def km_result(tte_model, tte_sim):
    observed = tte_sim[tte_sim["REP"] == 2].drop(columns="REP")
    return pkmix.km_vpc(tte_model, observed, n=100, seed=5)


def test_km_vpc_covers_data_simulated_from_the_model(km_result):
    v = km_result
    c = v.curves
    assert list(c.columns[:3]) == ["stratum", "time", "n_subjects"] and c["n_subjects"].iloc[0] == 400
    assert np.all(np.diff(c["observed"].to_numpy()) <= 0) and c["observed"].iloc[0] == 1.0
    assert np.all(c["sim_lower"] <= c["sim_median"]) and np.all(c["sim_median"] <= c["sim_upper"])
    # The simulated median curve is the marginal survival (400 subjects: SE <= 0.025).
    for t in (2.0, 5.0, 8.0):
        row = c.iloc[int(np.argmin(np.abs(c["time"] - t)))]
        assert abs(row["sim_median"] - _marginal_survival(row["time"])) < 0.03
    assert v.coverage() > 0.8
    assert len(v.subjects) == 400 and set(v.subjects["EVENT"]) <= {0, 1}


SLOPE_THETA = (-1.0, 0.5)


@pytest.fixture(scope="module")
def binary_result():
    theta, slope = SLOPE_THETA
    # The probability rises with a covariate that changes over time (X = TIME here).
    model = _model(pkmix.bernoulli(), {"a": theta, "b": slope}, {"eta": 0.5}, lambda p: p.a + p.b * p.X + p.eta,
                   covariates=["X"])
    design = _design(n=200)
    design["X"] = design["TIME"]
    observed = pkmix.simulate(model, design, n=1, seed=21).drop(columns="REP")
    return observed, pkmix.vpc_proportions(model, observed, n=100, bins=len(TIMES), seed=2)


def test_vpc_of_proportions_covers_data_simulated_from_the_model(binary_result):
    theta, slope = SLOPE_THETA
    observed, v = binary_result
    p = v.proportions
    assert v.categories == (1,) and set(p["category"]) == {1.0}
    assert list(p["time"]) == list(TIMES)
    for t, row in zip(TIMES, p.itertuples()):
        expected, _ = integrate.quad(
            lambda e: special.expit(theta + slope * t + e) * stats.norm.pdf(e, 0, np.sqrt(0.5)), -12, 12)
        assert row.sim_lower < expected < row.sim_upper
        assert abs(row.observed - np.mean(observed.loc[observed["TIME"] == t, "DV"])) < 1e-12
    assert v.coverage() >= 0.75


@pytest.mark.slow
def test_vpc_of_proportions_of_ordinal_data():
    model = _model(pkmix.ordinal(["c1", "c2"]), {"c1": -0.5, "c2": 1.0, "b": 0.2}, {"eta": 0.3}, lambda p: p.b + p.eta)
    observed = pkmix.simulate(model, _design(n=100), n=1, seed=8).drop(columns="REP")
    v = pkmix.vpc_proportions(model, observed, n=50, bins=2, seed=1)
    assert v.categories == (0, 1, 2)
    # The categories' observed and median simulated fractions each sum to one per bin.
    sums = v.proportions.groupby("bin")[["observed"]].sum()
    np.testing.assert_allclose(sums["observed"], 1.0)


def test_vpcs_refuse_data_of_another_kind(tte_model, tte_sim):
    with pytest.raises(ValueError, match="km_vpc"):
        pkmix.vpc(tte_model, tte_sim[tte_sim["REP"] == 1].drop(columns="REP"), n=2)
    with pytest.raises(ValueError, match="not Binomial or Ordinal"):
        pkmix.vpc_proportions(tte_model, tte_sim[tte_sim["REP"] == 1].drop(columns="REP"), n=2)
    binary = _model(pkmix.bernoulli(), {"a": 0.0}, {}, lambda p: p.a)
    with pytest.raises(ValueError, match="not TimeToEvent"):
        pkmix.km_vpc(binary, _design(n=2), n=2)
    counts = _model(pkmix.poisson(), {"a": 0.0}, {}, lambda p: p.a)
    with pytest.raises(ValueError, match="give categories="):
        pkmix.vpc_proportions(counts, _design(n=2), n=2)


# ---------------------------------------------------------------------- plots
def test_km_and_proportion_vpc_plots(km_result, binary_result, tmp_path):
    pytest.importorskip("matplotlib")
    import pkmix.plots as pp

    fig = pp.km_vpc_plot(km_result)
    ax = fig.axes[0]
    assert ax.get_title().startswith("Kaplan-Meier VPC (100 simulations)")
    assert ax.get_ylim() == (0.0, 1.02)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "observed (Kaplan-Meier)" in labels and "censored" in labels
    fig.savefig(tmp_path / "km.png")
    assert (tmp_path / "km.png").stat().st_size > 1000

    fig = pp.proportion_vpc_plot(binary_result[1])
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "DV = 1"
    line = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "observed")
    np.testing.assert_allclose(line.get_ydata(), binary_result[1].proportions["observed"])
    fig.savefig(tmp_path / "proportions.svg")
    assert (tmp_path / "proportions.svg").stat().st_size > 1000
    with pytest.raises(TypeError, match="km_vpc"):
        pp.km_vpc_plot(binary_result[1])

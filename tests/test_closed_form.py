"""Closed-form compartment models: against the same systems solved as ODEs, against
textbook formulas worked out here by hand, and their derivatives against finite
differences.

The closed forms (``pkmix.one/two/three_compartment``) go through the superposition
engine for linear structures (a scan over records); ``pkmix.ODE`` goes through the
sorted event list and one adaptive solve per subject. The two share only the dose
bookkeeping (F, ALAG, RATE/DUR) and the steady-state fixed point, so agreement on
randomised dose histories checks each engine against the other.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import assert_close
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pkmix
from pkmix._pk.closed_form import _eigen_2
from pkmix._pk.events import infusion_records
from pkmix._predict import parameter_values

ODE_TOL = dict(rtol=1e-10, atol=1e-12)
AGREE = dict(rtol=1e-6, atol=1e-9)


# --------------------------------------------------------------------------- models
DISPOSITION = {
    1: ("cl", "v"),
    2: ("cl", "v1", "q", "v2"),
    3: ("cl", "v1", "q2", "v2", "q3", "v3"),
}
TYPICAL = {"cl": 2.0, "v": 20.0, "v1": 20.0, "q": 3.0, "v2": 40.0, "q2": 3.0, "q3": 0.6, "v3": 80.0, "ka": 1.1,
           "kp2": 0.0, "kp3": 0.0}
MODIFIERS = ("F1", "F2", "LAG1", "LAG2", "R1", "R2", "D1", "D2")


def volume(p, n_cmt):
    return p.v if n_cmt == 1 else p.v1


def linear_rhs(n_cmt, depot):
    """The mammillary system as an ODE right-hand side (compartment names as the
    closed forms name them)."""

    def rhs(t, a, p):
        if n_cmt == 1:
            k10 = p.cl / p.v
            d_central = -k10 * a.central
            out = {}
        elif n_cmt == 2:
            k10, k12, k21 = p.cl / p.v1, p.q / p.v1, p.q / p.v2
            d_central = -(k10 + k12) * a.central + k21 * a.peripheral
            out = {"peripheral": k12 * a.central - k21 * a.peripheral}
        else:
            k10, k12, k21, k13, k31 = p.cl / p.v1, p.q2 / p.v1, p.q2 / p.v2, p.q3 / p.v1, p.q3 / p.v3
            d_central = -(k10 + k12 + k13) * a.central + k21 * a.peripheral1 + k31 * a.peripheral2
            out = {"peripheral1": k12 * a.central - k21 * a.peripheral1,
                   "peripheral2": k13 * a.central - k31 * a.peripheral2}
        if depot:
            out["depot"] = -p.ka * a.depot
            d_central = d_central + p.ka * a.depot
        out["central"] = d_central
        return out

    return rhs


def compartments(n_cmt, depot):
    names = {1: ["central"], 2: ["central", "peripheral"], 3: ["central", "peripheral1", "peripheral2"]}[n_cmt]
    return (["depot"] if depot else []) + names


@functools.lru_cache(maxsize=None)  # one model object per definition: its jitted predictions are reused
def make_model(n_cmt, *, depot=True, modifiers=True):
    """A closed-form model with log-scale thetas for every parameter and etas on CL,
    V(1) and KA; with ``modifiers`` the dose modifiers f/alag/r/d of compartments 1 and
    2 come from subject covariates (so one model covers subjects with and without
    each)."""
    names = DISPOSITION[n_cmt] + (("ka",) if depot else ())
    structure = {1: pkmix.one_compartment, 2: pkmix.two_compartment, 3: pkmix.three_compartment}[n_cmt]
    return _model(names, structure(depot=depot), lambda p: volume(p, n_cmt), depot, modifiers)


@functools.lru_cache(maxsize=None)
def make_ode_model(*, modifiers=True):
    """The three-compartment system with a depot as an ODE. Its intercompartmental
    clearances are thetas on the natural scale, so ``q2 = q3 = 0`` makes it the one-
    and ``q3 = 0`` the two-compartment system: one compiled ODE serves all three.

    A disconnected peripheral compartment would hold whatever it had forever, so the
    steady state would not be unique; ``kp2``/``kp3`` (0 unless disconnected) let it
    decay on its own, which changes nothing else: it is always empty.
    """
    names = ("cl", "v1", "q2", "v2", "q3", "v3", "ka", "kp2", "kp3")
    base = linear_rhs(3, True)

    def rhs(t, a, p):
        out = base(t, a, p)
        out["peripheral1"] = out["peripheral1"] - p.kp2 * a.peripheral1
        out["peripheral2"] = out["peripheral2"] - p.kp3 * a.peripheral2
        return out

    ode = pkmix.ODE(compartments(3, True), rhs, **ODE_TOL)
    return _model(names, ode, lambda p: p.v1, True, modifiers, linear=("q2", "q3", "kp2", "kp3"))


def ode_params(n_cmt, **extra):
    """Parameters that make `make_ode_model` the n-compartment system of `make_model`."""
    params = {"q2": TYPICAL["q"]} if n_cmt == 2 else {}
    if n_cmt == 1:
        params.update(q2=0.0, kp2=1.0)
    if n_cmt < 3:
        params.update(q3=0.0, kp3=1.0)
    params.update(extra)
    return params


def _model(names, structure, v_of, depot, modifiers, linear=()):
    vname = "v1" if "v1" in names else "v"

    def individual(p):
        out = {}
        etas = {"cl": "eta_cl", vname: "eta_v", "ka": "eta_ka"}
        for n in names:
            eta = p[etas[n]] if n in etas else 0.0
            out[n] = p[n] if n in linear else jnp.exp(p[f"l{n}"] + eta)
        if modifiers:
            out.update(f1=p.F1, alag1=p.LAG1, r1=p.R1, d1=p.D1)
            if structure.n_compartments > 1:
                out.update(f2=p.F2, alag2=p.LAG2, r2=p.R2, d2=p.D2)
        return out

    return pkmix.Model(
        theta={(n if n in linear else f"l{n}"): (pkmix.Theta(TYPICAL[n], lower=-1.0) if n in linear
                                                else math.log(TYPICAL[n])) for n in names},
        omega={"eta_cl": 0.1, "eta_v": 0.1} | ({"eta_ka": 0.1} if depot else {}),
        sigma={"prop": 0.1},
        individual=individual,
        structure=structure,
        observe=lambda a, p: a.central / v_of(p),
        error=pkmix.proportional("prop"),
        covariates=list(MODIFIERS) if modifiers else [],
    )


def predict(model, frame, etas=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pkmix.DatasetWarning)
        return pkmix.predict(model, frame, etas=etas)


# ------------------------------------------------------------- random dose histories
def random_subject(rng, sid, *, depot, lags=True, steady_state=True, resets=True, modelled=True, infusions=True):
    """One subject's records: 1-4 doses by a random route each (bolus, infusion by
    RATE, by DUR, modelled rate RATE=-1 and duration RATE=-2, into the depot or the
    central compartment), infusions that overlap later doses, SS=1/SS=2 doses, constant
    SS infusions, EVID 2/3/4 records, observations at random times and at the times of
    doses, lagged doses and infusion ends (ties both before and after in data order)."""
    cov = {
        "F1": rng.uniform(0.4, 1.0), "F2": rng.choice([1.0, rng.uniform(0.6, 1.0)]),
        "LAG1": rng.choice([0.0, rng.uniform(0.2, 1.5)]) if lags else 0.0,
        "LAG2": rng.choice([0.0, rng.uniform(0.1, 0.5)]) if lags else 0.0,
        "R1": rng.uniform(20.0, 60.0), "R2": rng.uniform(20.0, 60.0),
        "D1": rng.uniform(0.5, 4.0), "D2": rng.uniform(0.5, 4.0),
    }
    central = 2 if depot else 1
    routes = ["bolus"] + (["rate", "dur"] if infusions else []) + (["rate_model", "dur_model"] if modelled else [])
    if depot:
        routes += ["oral", "oral"] + (["oral_infusion"] if infusions else [])
    records = []  # (time, order, dict)

    def rec(time, **kw):
        row = dict(ID=sid, TIME=float(time), DV=0.0, AMT=0.0, EVID=0, MDV=0, CMT=central, RATE=0.0, II=0.0, SS=0)
        row.update(kw)
        records.append(row)

    t = 0.0
    n_doses = int(rng.integers(1, 5))
    for k in range(n_doses):
        route = routes[int(rng.integers(len(routes)))]
        cmt = 1 if route.startswith("oral") else central
        amt = float(rng.uniform(50.0, 200.0))
        f = cov["F1"] if cmt == 1 else cov["F2"]
        lag = cov["LAG1"] if cmt == 1 else cov["LAG2"]
        dose = dict(AMT=amt, EVID=1, MDV=1, CMT=cmt)
        duration = 0.0
        if route in ("rate", "oral_infusion"):
            dose["RATE"] = amt / rng.uniform(0.5, 6.0)
            duration = f * amt / dose["RATE"]
        elif route == "dur":
            dose["DUR"] = duration = float(rng.uniform(0.5, 6.0))
        elif route == "rate_model":
            dose["RATE"] = -1.0
            duration = f * amt / cov["R1" if cmt == 1 else "R2"]
        elif route == "dur_model":
            dose["RATE"] = -2.0
            duration = cov["D1" if cmt == 1 else "D2"]
        if steady_state and rng.uniform() < (0.35 if k == 0 else 0.15):
            dose["SS"] = 1 if k == 0 else int(rng.choice([1, 2]))
            dose["II"] = float(rng.choice([12.0, 24.0]))
        if resets and k > 0 and rng.uniform() < 0.15:
            dose["EVID"] = 4
        # Observations before the dose in data order at the dose time, then the dose.
        if rng.uniform() < 0.3:
            rec(t)
        rec(t, **dose)
        # Ties after the dose: at the dose time, its lagged administration, its end.
        for tie in (t, t + lag, t + lag + duration):
            if rng.uniform() < 0.4:
                rec(tie)
        t_next = t + float(rng.uniform(0.5, 14.0))
        for _ in range(int(rng.integers(1, 5))):
            rec(rng.uniform(t, t_next + 6.0))
        if rng.uniform() < 0.15:
            rec(rng.uniform(t, t_next), EVID=2, MDV=1)
        t = t_next
    if infusions and steady_state and rng.uniform() < 0.2:
        # A constant infusion at steady state (SS=1, RATE > 0, II = 0, AMT = 0).
        rec(t, AMT=0.0, EVID=1, MDV=1, CMT=central, RATE=float(rng.uniform(5.0, 20.0)), SS=1)
        rec(t + rng.uniform(0.0, 5.0))
        t += 5.0
    if resets and rng.uniform() < 0.3:
        # EVID 3 then a fresh start; TIME may go back at a reset.
        t_reset = float(rng.choice([t, rng.uniform(0.0, t)]))
        rec(t_reset, EVID=3, MDV=1)
        rec(t_reset, AMT=100.0, EVID=1, MDV=1, CMT=central)
        for x in np.sort(rng.uniform(t_reset, t_reset + 10.0, 3)):
            rec(x)
    frame = pd.DataFrame(records)
    # Order by time within reset segments (a reset may go back in time; the records
    # generated before it stay before it), keeping data order at ties.
    frame["_seg"] = np.cumsum(frame["EVID"].isin([3, 4]).to_numpy())
    frame = frame.sort_values(["_seg", "TIME"], kind="stable").drop(columns="_seg")
    for c, v in cov.items():
        frame[c] = v
    return frame


N_SUBJECTS, N_RECORDS = 24, 56


def random_histories(seed, **kw):
    """`N_SUBJECTS` random subjects, each padded with EVID 2 records to `N_RECORDS`, so
    that every such dataset has one batch shape and shares compiled predictions."""
    rng = np.random.default_rng(seed)
    subjects = []
    for i in range(N_SUBJECTS):
        f = random_subject(rng, i + 1, **kw)
        assert len(f) <= N_RECORDS
        pad = f.iloc[[-1] * (N_RECORDS - len(f))].assign(EVID=2, MDV=1, AMT=0.0, RATE=0.0, SS=0, II=0.0)
        subjects += [f, pad.assign(**{"DUR": 0.0} if "DUR" in f else {})]
    frame = pd.concat(subjects, ignore_index=True)
    if "DUR" not in frame:
        frame["DUR"] = 0.0
    return frame.fillna({"DUR": 0.0})


def random_etas(seed, n_subjects, n_eta):
    return np.random.default_rng(seed).normal(0.0, 0.3, (n_subjects, n_eta))


# ------------------------------------------------------------ closed form vs ODE
@pytest.fixture(scope="module")
def histories():
    """24 subjects of random dose histories, and random etas for them."""
    frame = random_histories(102, depot=True)
    ds = pkmix.read_nonmem(frame)
    f = ds.frame
    # The histories do exercise what they claim to.
    assert (f["SS"] == 1).any() and (f["SS"] == 2).any() and (f["EVID"] == 3).any() and (f["EVID"] == 4).any()
    assert (f["RATE"] == -1).any() and (f["RATE"] == -2).any() and (f["DUR"] > 0).any() and (f["RATE"] > 0).any()
    assert ((f["SS"] == 1) & (f["RATE"] > 0) & (f["II"] == 0)).any()  # a constant infusion
    assert (f["CMT"] == 1).any() and (f["CMT"] == 2).any()
    return ds, random_etas(3, N_SUBJECTS, 3)


@pytest.mark.parametrize("n_cmt", [1, 2, 3])
def test_closed_form_matches_ode_on_random_dose_histories(n_cmt, histories):
    ds, etas = histories
    a = predict(make_model(n_cmt), ds, etas)
    b = pkmix.predict(make_ode_model(), ds, ode_params(n_cmt), etas)
    assert np.isfinite(a[["PRED", "IPRED"]].to_numpy()).all()
    assert_close(a["PRED"], b["PRED"], **AGREE, what=f"{n_cmt}-cmt PRED")
    assert_close(a["IPRED"], b["IPRED"], **AGREE, what=f"{n_cmt}-cmt IPRED")


@pytest.mark.parametrize("n_cmt", [1, 2])
def test_ka_equal_to_a_disposition_eigenvalue(n_cmt, histories):
    # At ka = k (1-cmt) or ka = the slow eigenvalue (2-cmt) the textbook formula is 0/0;
    # the closed form must stay finite and agree with the ODE (PRED: etas 0, so ka is
    # exactly the eigenvalue).
    if n_cmt == 1:
        ka = TYPICAL["cl"] / TYPICAL["v"]
    else:
        k10, k12, k21 = TYPICAL["cl"] / TYPICAL["v1"], TYPICAL["q"] / TYPICAL["v1"], TYPICAL["q"] / TYPICAL["v2"]
        ka = -float(_eigen_2(k10, k12, k21)[1])
    ds, _ = histories
    a = pkmix.predict(make_model(n_cmt), ds, {"lka": math.log(ka)})
    b = pkmix.predict(make_ode_model(), ds, ode_params(n_cmt, lka=math.log(ka)))
    assert np.isfinite(a["PRED"]).all()
    assert_close(a["PRED"], b["PRED"], **AGREE, what="ka at an eigenvalue")


def test_no_lag_path_matches_the_lagged_path():
    # Without alagN in the model a record and its administration are one event: a
    # separate code path (in both engines) from the model with lag times, here all 0.
    frame = random_histories(7, depot=True, lags=False, modelled=False)
    plain = frame.drop(columns=list(MODIFIERS))
    etas = random_etas(1, N_SUBJECTS, 3)
    a = predict(make_model(2, modifiers=False), plain, etas)
    b = predict(make_model(2), frame.assign(F1=1.0, F2=1.0), etas)
    assert_close(a["IPRED"], b["IPRED"], rtol=1e-12, atol=1e-12, what="no lag vs zero lags")


@pytest.mark.slow  # compiles an ODE model of its own (~20 s on 2 cores); the closed forms
# meet the ODE once per structure in the default suite (test_iv_closed_forms_match_ode)
def test_no_lag_path_matches_the_ode():
    frame = random_histories(7, depot=True, lags=False, modelled=False)
    plain = frame.drop(columns=list(MODIFIERS))
    etas = random_etas(1, N_SUBJECTS, 3)
    a = predict(make_model(2, modifiers=False), plain, etas)
    c = pkmix.predict(make_ode_model(modifiers=False), pkmix.read_nonmem(plain), ode_params(2), etas)
    assert_close(a["IPRED"], c["IPRED"], **AGREE, what="2-cmt without lag vs ODE")


@pytest.mark.parametrize("engine", ["closed form", "closed form without modifiers",
                                    pytest.param("ODE", marks=pytest.mark.slow)])
def test_bolus_only_data_need_no_infusion_ends(histories, engine):
    # Data without infusions (known before tracing: infusion_records) are predicted
    # with has_infusions=False, which leaves the infusion ends out of both engines; the
    # predictions are the same as the general path's, with lags, SS doses and resets.
    # (The ODE case, two ODE compilations, is slow: the default suite's time.)
    frame = random_histories(11, depot=True, modelled=False, infusions=False)
    assert not infusion_records(pkmix.read_nonmem(frame).batch(MODIFIERS)).any()
    assert infusion_records(histories[0].batch(MODIFIERS)).any()
    assert (frame["SS"] > 0).any() and (frame["EVID"] == 4).any() and (frame["LAG1"] > 0).any()
    etas = jnp.asarray(random_etas(5, N_SUBJECTS, 3))
    model, params = {"closed form": (make_model(2), None),
                     "closed form without modifiers": (make_model(2, modifiers=False), None),
                     "ODE": (make_ode_model(), ode_params(2))}[engine]
    batch = pkmix.read_nonmem(frame).batch(model.covariates)
    values = parameter_values(model, params)

    def predict_all(has_infusions):
        return np.asarray(jax.jit(jax.vmap(lambda e, s: model.subject_predict(
            values, e, s, has_infusions=has_infusions)))(etas, batch))

    general, bolus_only = predict_all(True), predict_all(False)
    assert np.isfinite(general).all()
    assert_close(bolus_only, general, rtol=1e-12, atol=1e-12, what=f"{model.name}: bolus-only engine")


@pytest.fixture(scope="module")
def iv_histories():
    """Random histories of IV doses (CMT 1 is the central compartment), and the same
    with CMT numbered as in a model with a depot (where the central compartment's dose
    modifiers are f2, alag2, ...)."""
    frame = random_histories(201, depot=False)
    assert (frame["SS"] > 0).any()
    with_depot = frame.assign(CMT=np.where(frame["CMT"] > 0, frame["CMT"] + 1, 0), F2=frame["F1"],
                              LAG2=frame["LAG1"], R2=frame["R1"], D2=frame["D1"])
    return pkmix.read_nonmem(frame), pkmix.read_nonmem(with_depot), random_etas(4, N_SUBJECTS, 3)


@pytest.mark.parametrize("n_cmt", [1, 2, 3])
def test_iv_closed_forms_match_ode(n_cmt, iv_histories):
    # ADVAN1/3/11 (no depot) against the ODE with every dose into its central
    # compartment: the depot stays empty.
    iv, with_depot, etas = iv_histories
    a = pkmix.predict(make_model(n_cmt, depot=False), iv, etas=etas[:, :2])
    b = pkmix.predict(make_ode_model(), with_depot, ode_params(n_cmt), etas=etas)
    assert_close(a["PRED"], b["PRED"], **AGREE, what=f"{n_cmt}-cmt IV PRED")
    assert_close(a["IPRED"], b["IPRED"], **AGREE, what=f"{n_cmt}-cmt IV IPRED")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    amounts=st.lists(st.floats(1.0, 500.0), min_size=2, max_size=2),
    times=st.lists(st.floats(0.0, 48.0), min_size=2, max_size=2),
    f=st.floats(0.1, 1.0),
    lag=st.floats(0.0, 3.0),
)
def test_superposition_and_scaling(amounts, times, f, lag):
    """Linearity of the closed forms through the whole stack: doses add, F scales.

    Every example has the same shapes (one subject, 16 records), so the jitted
    prediction compiles once.
    """
    obs = np.linspace(0.0, 60.0, 13)

    def frame(doses):
        rows = [dict(ID=1, TIME=t, AMT=a, EVID=1, DV=0.0, CMT=1) for a, t in doses]
        rows += [dict(ID=1, TIME=t, AMT=0.0, EVID=0, DV=0.0, CMT=2) for t in obs]
        rows += [dict(ID=1, TIME=60.0, AMT=0.0, EVID=2, DV=0.0, CMT=2)] * (3 - len(doses))
        out = pd.DataFrame(rows).sort_values("TIME", kind="stable")
        return out.assign(F1=f, F2=1.0, LAG1=lag, LAG2=0.0, R1=1.0, R2=1.0, D1=1.0, D2=1.0)

    model = make_model(2)
    both = _observed(pkmix.predict(model, frame(list(zip(amounts, times)))))
    one = _observed(pkmix.predict(model, frame([(amounts[0], times[0])])))
    two = _observed(pkmix.predict(model, frame([(amounts[1], times[1])])))
    assert_close(both, one + two, rtol=1e-10, atol=1e-12, what="superposition")
    unit = _observed(pkmix.predict(model, frame([(amounts[0], times[0])]).assign(F1=1.0)))
    assert_close(one, f * unit, rtol=1e-10, atol=1e-12, what="F scales a bolus")


def _observed(out):
    return out.loc[out["EVID"] == 0, "PRED"].to_numpy()


# ------------------------------------------------------------- textbook formulas
class Case(NamedTuple):
    """A model and the subject covariates that set its dose modifiers."""

    model: pkmix.Model
    columns: dict


@functools.lru_cache(maxsize=None)
def _one_cmt(depot, modifiers):
    def individual(p):
        out = {"cl": p.cl, "v": p.v}
        if depot:
            out["ka"] = p.ka
        if modifiers:
            out.update(f1=p.F1, alag1=p.LAG1, r1=p.R1, d1=p.D1)
        return out

    return pkmix.Model(
        theta={"cl": 2.0, "v": 20.0, "ka": 1.1},
        omega={"eta": 0.1}, sigma={"add": 1.0},
        individual=individual, structure=pkmix.one_compartment(depot=depot),
        observe=lambda a, p: a.central / p.v, error=pkmix.additive("add"),
        covariates=["F1", "LAG1", "R1", "D1"] if modifiers else [],
    )


def one_cmt_model(*, depot=False, lag=0.0, f=1.0, rate=1.0, duration=1.0):
    """CL = 2, V = 20 (k = 0.1), KA = 1.1, and dose modifiers of CMT 1 (f1, alag1, r1,
    d1). The modifiers are covariates, so that one compiled prediction serves every
    test of a shape."""
    return Case(_one_cmt(depot, True), {"F1": f, "LAG1": lag, "R1": rate, "D1": duration})


CL, V, KA = 2.0, 20.0, 1.1
K = CL / V


def frame_of(doses, obs, obs_cmt=0):
    """Doses as dicts (TIME, AMT, ...) listed before observations at the same time;
    observations at `obs` (CMT `obs_cmt`: 2, the central compartment, with a depot)."""
    rows = [dict(dict(ID=1, DV=0.0, EVID=1, MDV=1), **d) for d in doses]
    rows += [dict(ID=1, TIME=t, DV=0.0, AMT=0.0, EVID=0, MDV=0, CMT=obs_cmt) for t in obs]
    return pd.DataFrame(rows).sort_values("TIME", kind="stable").fillna(0.0)


def predict_case(case, frame, **kwargs):
    return pkmix.predict(case.model, frame.assign(**case.columns), **kwargs)


def observed(case, frame):
    out = predict_case(case, frame) if isinstance(case, Case) else pkmix.predict(case, frame)
    return out.loc[out["EVID"] == 0, ["TIME", "PRED"]].to_numpy().T


def test_one_compartment_bolus():
    t, c = observed(one_cmt_model(), frame_of([dict(TIME=0.0, AMT=100.0)], [0.0, 0.5, 2.0, 7.0, 24.0]))
    assert_close(c, 100.0 / V * np.exp(-K * t), rtol=1e-12, atol=0, what="Dose/V exp(-CL/V t)")


def test_two_doses_superpose():
    t, c = observed(one_cmt_model(), frame_of([dict(TIME=0.0, AMT=100.0), dict(TIME=6.0, AMT=50.0)],
                                              [1.0, 5.9, 6.0, 8.0, 30.0]))
    expected = 100.0 / V * np.exp(-K * t) + np.where(t >= 6.0, 50.0 / V * np.exp(-K * (t - 6.0)), 0.0)
    assert_close(c, expected, rtol=1e-12, atol=0, what="two boluses")


def test_infusion_by_rate_and_by_duration():
    # 100 mg over 2 h: C = R/CL (1 - e^{-k t}) during, then the end value decays.
    def by_hand(t, rate, duration):
        during = rate / CL * (1 - np.exp(-K * np.minimum(t, duration)))
        return during * np.exp(-K * np.maximum(t - duration, 0.0))

    obs = [0.5, 2.0, 3.0, 10.0]
    _, by_rate = observed(one_cmt_model(), frame_of([dict(TIME=0.0, AMT=100.0, RATE=50.0)], obs))
    t, by_dur = observed(one_cmt_model(), frame_of([dict(TIME=0.0, AMT=100.0, DUR=2.0)], obs))
    assert_close(by_rate, by_hand(t, 50.0, 2.0), rtol=1e-12, atol=0, what="RATE")
    assert_close(by_dur, by_hand(t, 50.0, 2.0), rtol=1e-12, atol=0, what="DUR")
    # F: with RATE the duration is F*AMT/RATE; with DUR the rate is F*AMT/DUR.
    _, f_rate = observed(one_cmt_model(f=0.5), frame_of([dict(TIME=0.0, AMT=100.0, RATE=50.0)], obs))
    _, f_dur = observed(one_cmt_model(f=0.5), frame_of([dict(TIME=0.0, AMT=100.0, DUR=2.0)], obs))
    assert_close(f_rate, by_hand(t, 50.0, 1.0), rtol=1e-12, atol=0, what="F with RATE")
    assert_close(f_dur, by_hand(t, 25.0, 2.0), rtol=1e-12, atol=0, what="F with DUR")


def test_modelled_rate_and_duration():
    obs = [0.5, 1.5, 4.0, 12.0]

    def by_hand(t, rate, duration):
        return rate / CL * (1 - np.exp(-K * np.minimum(t, duration))) * np.exp(-K * np.maximum(t - duration, 0.0))

    # RATE = -1: rate from r1 = 40, duration F*AMT/r1 = 0.8*100/40 = 2.
    t, c = observed(one_cmt_model(f=0.8, rate=40.0), frame_of([dict(TIME=0.0, AMT=100.0, RATE=-1.0)], obs))
    assert_close(c, by_hand(t, 40.0, 2.0), rtol=1e-12, atol=0, what="RATE=-1")
    # RATE = -2: duration from d1 = 3, rate F*AMT/d1 = 80/3.
    t, c = observed(one_cmt_model(f=0.8, duration=3.0), frame_of([dict(TIME=0.0, AMT=100.0, RATE=-2.0)], obs))
    assert_close(c, by_hand(t, 80.0 / 3.0, 3.0), rtol=1e-12, atol=0, what="RATE=-2")


def test_modelled_rate_the_model_does_not_define_is_refused():
    # RATE = -1 into CMT 1 without r1: there is no rate to use, so no number is made up;
    # the data/model mismatch is named before any prediction.
    with pytest.raises(pkmix.DatasetError, match=r"record 1 \(ID 1\), column RATE.*no 'r1'"):
        observed(_one_cmt(False, False), frame_of([dict(TIME=0.0, AMT=100.0, RATE=-1.0)], [1.0, 2.0]))


def test_infusion_plateau():
    # A constant infusion at steady state (SS=1, AMT=0, RATE=10, II=0) starts the system at
    # Rate/CL and ends at its record (NONMEM: "the infusion terminates at the event time
    # of the SS dose record"): C(t) = Rate/CL exp(-CL/V (t - t_ss)) afterwards.
    t, c = observed(one_cmt_model(), frame_of([dict(TIME=2.0, AMT=0.0, RATE=10.0, SS=1, II=0.0)],
                                              [2.0, 3.0, 50.0, 100.0]))
    assert_close(c, 10.0 / CL * np.exp(-K * (t - 2.0)), rtol=1e-12, atol=0, what="SS constant infusion decay")
    # A long infusion (30 half-lives) reaches the same plateau.
    _, c = observed(one_cmt_model(), frame_of([dict(TIME=0.0, AMT=2100.0, RATE=10.0)], [208.0]))
    assert_close(c, [10.0 / CL], rtol=1e-9, atol=0, what="long infusion")


def test_oral_bateman_function():
    obs = np.array([0.0, 0.25, 1.0, 3.0, 8.0, 24.0])
    t, c = observed(one_cmt_model(depot=True), frame_of([dict(TIME=0.0, AMT=100.0, CMT=1)], obs, obs_cmt=2))
    bateman = 100.0 * KA / (V * (KA - K)) * (np.exp(-K * t) - np.exp(-KA * t))
    assert_close(c, bateman, rtol=1e-12, atol=1e-14, what="Bateman")


def test_oral_with_ka_equal_to_k():
    # The limit of the Bateman function: Dose/V ka t e^{-k t}.
    out = predict_case(one_cmt_model(depot=True),
                       frame_of([dict(TIME=0.0, AMT=100.0, CMT=1)], [0.5, 2.0, 10.0], obs_cmt=2), params={"ka": K})
    obs = out[out["EVID"] == 0]
    t = obs["TIME"].to_numpy()
    assert_close(obs["PRED"], 100.0 / V * K * t * np.exp(-K * t), rtol=1e-12, atol=0, what="ka = k")


def test_lag_time_shifts_and_f_scales_the_curve():
    obs = np.array([0.0, 0.5, 0.75, 1.0, 3.0, 12.0])

    def bateman(t):
        t = np.maximum(t, 0.0)
        return 100.0 * KA / (V * (KA - K)) * (np.exp(-K * t) - np.exp(-KA * t))

    t, c = observed(one_cmt_model(depot=True, lag=0.75, f=0.6),
                    frame_of([dict(TIME=0.0, AMT=100.0, CMT=1)], obs, obs_cmt=2))
    assert_close(c, 0.6 * bateman(t - 0.75), rtol=1e-12, atol=1e-14, what="ALAG and F")
    assert c[0] == 0 and c[1] == 0 and c[2] == 0


def test_steady_state_bolus():
    # SS=1 every tau = 12: the trough is Dose/V e^{-k tau}/(1 - e^{-k tau}), and the
    # curve within the interval is the same series shifted.
    tau = 12.0
    obs = np.array([0.0, 3.0, 11.0, 12.0])
    t, c = observed(one_cmt_model(), frame_of([dict(TIME=0.0, AMT=100.0, SS=1, II=tau)], obs))
    series = 100.0 / V * np.exp(-K * t) / (1 - np.exp(-K * tau))
    assert_close(c, series, rtol=1e-12, atol=0, what="SS bolus")
    assert_close(c[-1], 100.0 / V * np.exp(-K * tau) / (1 - np.exp(-K * tau)), rtol=1e-12, atol=0, what="trough")
    # The observation at t = 0 is after the dose in data order (doses are listed first).
    assert_close(c[0], 100.0 / V / (1 - np.exp(-K * tau)), rtol=1e-12, atol=0, what="peak")


def test_steady_state_superposition_ss2():
    # SS=1 100 mg q24h at 0, SS=2 50 mg q24h at 12: two steady-state series added.
    tau = 24.0
    obs = np.array([12.0, 13.0, 20.0, 23.9])
    doses = [dict(TIME=0.0, AMT=100.0, SS=1, II=tau), dict(TIME=12.0, AMT=50.0, SS=2, II=tau)]
    t, c = observed(one_cmt_model(), frame_of(doses, obs))
    expected = (100.0 * np.exp(-K * t) + 50.0 * np.exp(-K * (t - 12.0))) / (V * (1 - np.exp(-K * tau)))
    assert_close(c, expected, rtol=1e-12, atol=0, what="SS=2")


def test_steady_state_infusion_and_oral_against_a_long_regimen():
    # A steady-state dose is the limit of the same dose repeated forever: compare with
    # 31 real doses (k tau = 1.2, so e^{-36} is far below the tolerance).
    tau = 12.0
    obs = np.array([0.0, 0.5, 1.0, 2.5, 6.0, 11.9])
    for model, dose in [
        (one_cmt_model(), dict(AMT=100.0, RATE=40.0)),  # infusion over 2.5 h
        (one_cmt_model(depot=True, lag=0.8), dict(AMT=100.0, CMT=1)),  # oral with a lag
        (one_cmt_model(depot=True, lag=0.8, f=0.7), dict(AMT=100.0, CMT=1, RATE=50.0)),  # into the depot
    ]:
        cmt = 2 if model.model.structure.depot else 0
        _, ss = observed(model, frame_of([dict(TIME=0.0, SS=1, II=tau, **dose)], obs, cmt))
        regimen = [dict(TIME=k * tau, **dose) for k in range(31)]
        _, long = observed(model, frame_of(regimen, obs + 30 * tau, cmt))
        assert_close(ss, long, rtol=1e-10, atol=1e-12, what=f"SS vs repeated doses, {dose}")


def test_steady_state_infusion_longer_than_the_interval_is_nan():
    # Implied infusions still running at the record's time are not supported: NaN, not
    # a wrong number.
    _, c = observed(one_cmt_model(), frame_of([dict(TIME=0.0, AMT=100.0, RATE=5.0, SS=1, II=12.0)], [1.0]))
    assert np.isnan(c).all()


def test_two_compartment_bolus_biexponential():
    # C = A e^{-alpha t} + B e^{-beta t} with the textbook macro-constants.
    cl, v1, q, v2 = 2.0, 20.0, 3.0, 40.0
    k10, k12, k21 = cl / v1, q / v1, q / v2
    s = k10 + k12 + k21
    alpha = (s + math.sqrt(s * s - 4 * k10 * k21)) / 2
    beta = (s - math.sqrt(s * s - 4 * k10 * k21)) / 2
    dose = 100.0
    a = dose / v1 * (alpha - k21) / (alpha - beta)
    b = dose / v1 * (k21 - beta) / (alpha - beta)
    model = pkmix.Model(
        theta={"cl": cl, "v1": v1, "q": q, "v2": v2}, omega={"eta": 0.1}, sigma={"add": 1.0},
        individual=lambda p: {"cl": p.cl, "v1": p.v1, "q": p.q, "v2": p.v2},
        structure=pkmix.two_compartment(), observe=lambda a_, p: a_.central / p.v1,
        error=pkmix.additive("add"),
    )
    t, c = observed(model, frame_of([dict(TIME=0.0, AMT=dose)], [0.0, 0.5, 2.0, 10.0, 48.0]))
    assert_close(c, a * np.exp(-alpha * t) + b * np.exp(-beta * t), rtol=1e-12, atol=0, what="biexponential")


def test_reset_with_time_going_back():
    # EVID 3 at an earlier TIME: the records before the reset keep their predictions,
    # the ones after it start from zero at their own times.
    frame = pd.DataFrame({
        "ID": 1, "TIME": [0.0, 1.0, 2.0, 0.0, 0.0, 1.0, 3.0],
        "AMT": [100.0, 0, 0, 0, 50.0, 0, 0], "EVID": [1, 0, 0, 3, 1, 0, 0], "DV": 0.0,
        "MDV": [1, 0, 0, 1, 1, 0, 0],
    })
    c = predict_case(one_cmt_model(), frame)["PRED"].to_numpy()
    t = frame["TIME"].to_numpy()
    expected = np.where(np.arange(7) < 3, 100.0, 50.0) / V * np.exp(-K * t)
    expected[3] = 0.0
    assert_close(c, expected, rtol=1e-12, atol=0, what="EVID 3 with time going back")


def test_evid4_and_ss1_cancel_a_running_infusion_and_a_pending_lagged_dose():
    # An infusion from 0 to 10 h and an oral dose lagged to 5 h, then EVID 4 at 2 h: only
    # the EVID 4 dose remains. The same for an SS=1 dose.
    model = one_cmt_model(depot=True, lag=3.0)
    obs = [1.0, 2.5, 6.0, 12.0]
    doses = [dict(TIME=0.0, AMT=100.0, RATE=10.0, CMT=2), dict(TIME=2.0, AMT=80.0, CMT=1)]
    for reset in (dict(EVID=4), dict(SS=1, II=1000.0)):
        t, c = observed(model, frame_of(doses + [dict(TIME=2.0, AMT=50.0, CMT=2, **reset)], obs, 2))
        before = 10.0 / CL * (1 - np.exp(-K * t))  # the infusion alone, before the reset
        after = 50.0 / V * np.exp(-K * (t - 2.0))
        if "SS" in reset:  # SS with II=1000: the implied earlier doses have vanished
            after = after / (1 - np.exp(-K * 1000.0))
        assert_close(c, np.where(t < 2.0, before, after), rtol=1e-12, atol=1e-14, what=str(reset))


# ------------------------------------------------------------------ derivatives
def central_difference(f, x, h=1e-5):
    x = np.asarray(x, dtype=float)
    cols = []
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h * max(1.0, abs(x[i]))
        cols.append((np.asarray(f(jnp.asarray(x + e))) - np.asarray(f(jnp.asarray(x - e)))) / (2 * e[i]))
    return np.stack(cols, axis=-1)


GRADIENT_FRAME = pd.DataFrame({
    "ID": 1,
    "TIME": [0.0, 0.5, 1.0, 2.0, 4.0, 6.0, 6.0, 7.0, 9.0, 12.0, 24.0],
    "AMT": [100.0, 0, 0, 0, 0, 80.0, 0, 0, 0, 0, 0],
    "RATE": [0.0, 0, 0, 0, 0, 40.0, 0, 0, 0, 0, 0],
    "EVID": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0],
    "CMT": [1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2],
    "DV": 0.0,
})


def _check_gradients(model, frame, theta=None, eta=None, h=1e-5, tol=None):
    """Forward-mode Jacobians of one subject's predictions with respect to the thetas
    and the etas, against central differences. Returns the two Jacobians.

    ``tol`` defaults to 1e-6 relative; an adaptive ODE solution is only smooth in the
    parameters to about its own tolerance, so ODE checks take a larger step and a
    looser tolerance (and are checked against the closed form's exact Jacobian too).
    """
    tol = tol or dict(rtol=1e-6, atol=1e-8)
    subject = pkmix.read_nonmem(frame).batch(model.covariates).subject(0)
    values = model.initial_values()

    @jax.jit
    def f(theta, eta):
        return model.subject_predict(values._replace(theta=theta), eta, subject, has_steady_state=False)

    theta = values.theta if theta is None else jnp.asarray(theta)
    eta = jnp.zeros(model.spec.n_eta) + 0.1 if eta is None else jnp.asarray(eta)
    d_theta, d_eta = (np.asarray(x) for x in jax.jit(jax.jacfwd(f, argnums=(0, 1)))(theta, eta))
    assert np.isfinite(d_theta).all() and np.isfinite(d_eta).all()
    assert_close(d_theta, central_difference(lambda x: f(x, eta), theta, h), **tol, what="d f / d theta")
    assert_close(d_eta, central_difference(lambda x: f(theta, x), eta, h), **tol, what="d f / d eta")
    return d_theta, d_eta


def lag_model(structure):
    """2-cmt oral with F and a lag as thetas, an IV infusion into the central compartment."""

    def individual(p):
        return {"cl": jnp.exp(p.lcl + p.eta_cl), "v1": jnp.exp(p.lv1 + p.eta_v), "q": jnp.exp(p.lq),
                "v2": jnp.exp(p.lv2), "ka": jnp.exp(p.lka + p.eta_ka), "f1": p.f1, "alag1": p.lag}

    return pkmix.Model(
        theta={"lcl": math.log(2.0), "lv1": math.log(20.0), "lq": math.log(3.0), "lv2": math.log(40.0),
               "lka": math.log(1.1), "f1": pkmix.Theta(0.7, lower=0.0, upper=1.0), "lag": 0.3},
        omega={"eta_cl": 0.1, "eta_v": 0.1, "eta_ka": 0.1}, sigma={"prop": 0.1},
        individual=individual, structure=structure, observe=lambda a, p: a.central / p.v1,
        error=pkmix.proportional("prop"),
    )


@pytest.fixture(scope="module")
def closed_form_jacobians():
    """The closed form's Jacobians (checked against central differences on creation)."""
    return _check_gradients(lag_model(pkmix.two_compartment(depot=True)), GRADIENT_FRAME)


def test_gradients_closed_form(closed_form_jacobians):
    d_theta, d_eta = closed_form_jacobians
    # The lag moves the curve: its derivative is not zero after the dose; and every eta
    # matters somewhere.
    assert np.abs(d_theta[2:, -1]).max() > 1e-3
    assert (np.abs(d_eta).max(axis=0) > 1e-3).all()


def test_gradients_ode(closed_form_jacobians):
    ode = pkmix.ODE(["depot", "central", "peripheral"], linear_rhs(2, True), **ODE_TOL)
    d_theta, d_eta = _check_gradients(lag_model(ode), GRADIENT_FRAME, h=1e-3, tol=dict(rtol=1e-4, atol=1e-5))
    # And they agree with the closed form's exact ones.
    assert_close(d_theta, closed_form_jacobians[0], rtol=1e-6, atol=1e-8, what="ODE vs closed form d/dtheta")
    assert_close(d_eta, closed_form_jacobians[1], rtol=1e-6, atol=1e-8, what="ODE vs closed form d/deta")


def test_gradients_at_ka_equal_to_k():
    model = make_model(1, modifiers=False)
    theta = model.initial_values().theta
    k = TYPICAL["cl"] / TYPICAL["v"]
    theta = theta.at[model.theta_names.index("lka")].set(math.log(k))
    frame = GRADIENT_FRAME.drop(columns="RATE").assign(AMT=np.where(GRADIENT_FRAME["AMT"] > 0, 100.0, 0.0),
                                                         CMT=np.where(GRADIENT_FRAME["AMT"] > 0, 1, 2))
    _check_gradients(model, frame, theta=theta, eta=jnp.zeros(3))

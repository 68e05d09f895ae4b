"""ODE structural models (``pkmix.ODE``): nonlinear and time-varying systems against
analytic solutions worked out here, stiff systems, batching over subjects, and the
steady state of a nonlinear system against brute-force repeated dosing."""

from __future__ import annotations

import functools
import math
import warnings

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import assert_close
from scipy.special import lambertw

import pkmix

TOL = dict(rtol=1e-10, atol=1e-12)


def model_of(structure, individual, observe, theta, covariates=()):
    return pkmix.Model(
        theta=theta, omega={"eta": 0.1}, sigma={"add": 1.0}, individual=individual,
        structure=structure, observe=observe, error=pkmix.additive("add"), covariates=list(covariates),
    )


def frame_of(doses, obs, **columns):
    rows = [dict(dict(ID=1, DV=0.0, EVID=1, MDV=1), **d) for d in doses]
    rows += [dict(ID=1, TIME=t, DV=0.0, AMT=0.0, EVID=0, MDV=0) for t in obs]
    frame = pd.DataFrame(rows).sort_values("TIME", kind="stable").fillna(0.0)
    for k, v in columns.items():
        frame[k] = v
    return frame


def observed(model, frame, params=None):
    out = pkmix.predict(model, frame, params)
    obs = out[out["EVID"] == 0]
    return obs["TIME"].to_numpy(), obs["PRED"].to_numpy()


# ------------------------------------------------------------ Michaelis-Menten
VMAX, KM, V_MM = 10.0, 2.0, 10.0


def mm_rhs(t, a, p):
    c = a.central / p.v
    return {"central": -p.vmax * c / (p.km + c)}


@functools.lru_cache(maxsize=None)
def mm_model():
    return model_of(
        pkmix.ODE(["central"], mm_rhs, **TOL),
        lambda p: {"vmax": p.vmax, "km": p.km, "v": p.v},
        lambda a, p: a.central / p.v,
        {"vmax": VMAX, "km": KM, "v": V_MM},
    )


def mm_bolus(c0, t):
    """The exact solution of V dC/dt = -Vmax C/(Km + C): Km ln(C0/C) + C0 - C = Vmax t/V,
    so C = Km W((C0/Km) exp((C0 - Vmax t/V)/Km)) with W the Lambert W function."""
    arg = (c0 / KM) * np.exp((c0 - VMAX * t / V_MM) / KM)
    return KM * np.real(lambertw(arg))


def test_michaelis_menten_bolus_matches_lambert_w():
    t, c = observed(mm_model(), frame_of([dict(TIME=0.0, AMT=200.0)], [0.0, 0.5, 2.0, 5.0, 12.0, 30.0]))
    assert_close(c, mm_bolus(200.0 / V_MM, t), rtol=1e-7, atol=1e-10, what="MM vs Lambert W")


def test_michaelis_menten_is_not_dose_proportional():
    # Saturation: ten times the dose gives more than ten times the concentration later.
    _, low = observed(mm_model(), frame_of([dict(TIME=0.0, AMT=20.0)], [4.0]))
    _, high = observed(mm_model(), frame_of([dict(TIME=0.0, AMT=200.0)], [4.0]))
    assert high[0] > 10 * low[0] * 1.5


def test_michaelis_menten_steady_state_matches_repeated_dosing():
    # SS=1 for a nonlinear system (Newton on the dosing cycle) against 150 real doses;
    # the bolus regimen and an infusion regimen, observed through one interval. (Near
    # saturation the approach to steady state is slow: 60 doses are 1e-5 short.)
    # The four profiles are four subjects of one dataset: one compiled prediction instead
    # of one per shape and steady-state flag (subjects of a batch are independent:
    # test_subjects_are_independent_in_a_batch).
    tau = 12.0
    obs = np.array([0.0, 0.5, 2.0, 6.0, 11.5])
    start = 149 * tau
    doses = (dict(AMT=100.0), dict(AMT=100.0, RATE=50.0))
    frames = []
    for i, dose in enumerate(doses):
        frames.append(frame_of([dict(TIME=0.0, SS=1, II=tau, **dose)], obs).assign(ID=2 * i + 1))
        frames.append(frame_of([dict(TIME=k * tau, **dose) for k in range(150)], obs + start).assign(ID=2 * i + 2))
    out = pkmix.predict(mm_model(), pd.concat(frames, ignore_index=True).fillna(0.0))
    pred = out[out["EVID"] == 0]
    for i, dose in enumerate(doses):
        ss = pred.loc[pred["ID"] == 2 * i + 1, "PRED"].to_numpy()
        brute = pred.loc[pred["ID"] == 2 * i + 2, "PRED"].to_numpy()
        assert np.isfinite(ss).all()
        assert_close(ss, brute, rtol=1e-7, atol=1e-9, what=f"MM steady state {dose}")
        if "RATE" not in dose:
            # Saturated: the peak is well above the linear (C << Km) prediction.
            assert ss[0] > 1.5 * 100.0 / V_MM / (1 - math.exp(-VMAX / KM / V_MM * tau))


# ------------------------------------------------------------------ transit chain
def transit_rhs(n):
    names = [f"transit{i}" for i in range(1, n + 1)]

    def rhs(t, a, p):
        out = {names[0]: -p.ktr * a[names[0]]}
        for prev, name in zip(names, names[1:]):
            out[name] = p.ktr * (a[prev] - a[name])
        out["central"] = p.ktr * a[names[-1]] - p.cl / p.v * a.central
        return out

    return names + ["central"], rhs


def test_transit_compartments():
    n, ktr, cl, v = 4, 2.0, 2.0, 20.0
    names, rhs = transit_rhs(n)
    model = model_of(
        pkmix.ODE(names, rhs, **TOL),
        lambda p: {"ktr": p.ktr, "cl": p.cl, "v": p.v},
        lambda a, p: a.transit4,
        {"ktr": ktr, "cl": cl, "v": v},
    )
    t, last = observed(model, frame_of([dict(TIME=0.0, AMT=100.0)], [0.0, 0.5, 1.0, 2.0, 4.0, 10.0]))
    # The last of n transit compartments holds an Erlang(n, ktr) profile.
    erlang = 100.0 * (ktr * t) ** (n - 1) / math.factorial(n - 1) * np.exp(-ktr * t)
    assert_close(last, erlang, rtol=1e-8, atol=1e-10, what="Erlang")
    # The central compartment against the matrix exponential of the linear chain.
    from scipy.linalg import expm

    K = np.zeros((n + 1, n + 1))
    for i in range(n):
        K[i, i] = -ktr
        K[i + 1, i] = ktr
    K[n, n] = -cl / v
    x0 = np.zeros(n + 1)
    x0[0] = 100.0
    central = np.array([(expm(K * s) @ x0)[n] / v for s in t])
    model_c = model_of(pkmix.ODE(names, rhs, **TOL), lambda p: {"ktr": p.ktr, "cl": p.cl, "v": p.v},
                       lambda a, p: a.central / p.v, {"ktr": ktr, "cl": cl, "v": v})
    _, c = observed(model_c, frame_of([dict(TIME=0.0, AMT=100.0)], t))
    assert_close(c, central, rtol=1e-8, atol=1e-10, what="central after a transit chain")


# --------------------------------------------------------------- effect compartment
def test_effect_compartment():
    # Ce' = ke0 (C - Ce) after a 1-cmt bolus: Ce = D/V ke0/(ke0 - k) (e^{-k t} - e^{-ke0 t}).
    cl, v, ke0, dose = 2.0, 20.0, 0.7, 100.0
    k = cl / v

    def rhs(t, a, p):
        c = a.central / p.v
        return {"central": -p.cl / p.v * a.central, "effect": p.ke0 * (c - a.effect)}

    model = model_of(
        pkmix.ODE(["central", "effect"], rhs, **TOL),
        lambda p: {"cl": p.cl, "v": p.v, "ke0": p.ke0},
        lambda a, p: p.emax * a.effect / (p.ec50 + a.effect),
        {"cl": cl, "v": v, "ke0": ke0, "emax": 100.0, "ec50": 2.0},
    )
    t, e = observed(model, frame_of([dict(TIME=0.0, AMT=dose, CMT=1)], [0.0, 0.5, 2.0, 6.0, 24.0]))
    ce = dose / v * ke0 / (ke0 - k) * (np.exp(-k * t) - np.exp(-ke0 * t))
    assert_close(e, 100.0 * ce / (2.0 + ce), rtol=1e-8, atol=1e-10, what="Emax of the effect site")


# ------------------------------------------------------------------ time-varying
def test_time_varying_covariate_reaches_the_rhs():
    # CL from a weight that changes at t = 4 (NONMEM's rule: a record's value governs the
    # interval that ends at it), used inside the rhs. The solution is exponential decay
    # piece by piece.
    def rhs(t, a, p):
        return {"central": -p.cl / p.v * a.central}

    model = model_of(
        pkmix.ODE(["central"], rhs, **TOL),
        lambda p: {"cl": p.tcl * p.WT / 70.0, "v": p.v},
        lambda a, p: a.central / p.v,
        {"tcl": 2.0, "v": 20.0},
        covariates=["WT"],
    )
    frame = frame_of([dict(TIME=0.0, AMT=100.0)], [1.0, 4.0, 6.0, 10.0])
    frame["WT"] = np.where(frame["TIME"] <= 4.0, 70.0, 140.0)
    t, c = observed(model, frame)
    k1, k2 = 2.0 / 20.0, 4.0 / 20.0
    expected = 5.0 * np.where(t <= 4.0, np.exp(-k1 * t), np.exp(-k1 * 4.0 - k2 * (t - 4.0)))
    assert_close(c, expected, rtol=1e-9, atol=1e-12, what="piecewise clearance")


def test_rhs_sees_absolute_time():
    # A clearance with a daily rhythm, k(t) = k0 (1 + a sin(2 pi t/24)), between several
    # records and a second dose: A(t) = A(s) exp(-(K(t) - K(s))) with K the integral of k.
    k0, amp = 0.1, 0.5

    def rhs(t, a, p):
        return {"central": -p.k0 * (1 + p.amp * jnp.sin(2 * jnp.pi * t / 24.0)) * a.central}

    model = model_of(
        pkmix.ODE(["central"], rhs, **TOL),
        lambda p: {"k0": p.k0, "amp": p.amp},
        lambda a, p: a.central,
        {"k0": k0, "amp": amp},
    )

    def integral(t):
        return k0 * (t + amp * 24.0 / (2 * np.pi) * (1 - np.cos(2 * np.pi * t / 24.0)))

    obs = np.array([3.0, 7.0, 10.0, 13.0, 20.0])
    t, a = observed(model, frame_of([dict(TIME=0.0, AMT=100.0), dict(TIME=10.0, AMT=50.0)], obs))
    expected = 100.0 * np.exp(-integral(t)) + np.where(t >= 10.0, 50.0 * np.exp(-(integral(t) - integral(10.0))), 0)
    assert_close(a, expected, rtol=1e-9, atol=1e-12, what="time-dependent rhs")


# ------------------------------------------------------------------------ stiff
def test_stiff_system_with_implicit_solver():
    # Two compartments exchanging 10^4 times faster than they eliminate: stiff. The
    # implicit solver must agree with the closed form.
    cl, v1, q, v2 = 2.0, 20.0, 2e4, 40.0

    def rhs(t, a, p):
        k10, k12, k21 = p.cl / p.v1, p.q / p.v1, p.q / p.v2
        return {"central": -(k10 + k12) * a.central + k21 * a.peripheral,
                "peripheral": k12 * a.central - k21 * a.peripheral}

    def individual(p):
        return {"cl": p.cl, "v1": p.v1, "q": p.q, "v2": p.v2}

    theta = {"cl": cl, "v1": v1, "q": q, "v2": v2}
    obs = [0.01, 0.1, 1.0, 5.0, 24.0, 48.0]
    frame = frame_of([dict(TIME=0.0, AMT=100.0), dict(TIME=24.0, AMT=100.0, RATE=50.0)], obs)
    stiff = model_of(pkmix.ODE(["central", "peripheral"], rhs, stiff=True, rtol=1e-9, atol=1e-11),
                     individual, lambda a, p: a.central / p.v1, theta)
    closed = model_of(pkmix.two_compartment(), individual, lambda a, p: a.central / p.v1, theta)
    _, c_stiff = observed(stiff, frame)
    _, c_closed = observed(closed, frame)
    assert np.isfinite(c_stiff).all()
    assert_close(c_stiff, c_closed, rtol=1e-6, atol=1e-9, what="stiff ODE vs closed form")


# ----------------------------------------------------------- subjects in a batch
def test_subjects_are_independent_in_a_batch():
    # Predicting subjects together (vmap over a padded batch, records of different
    # counts) gives each one what it gets alone; the subjects differ by covariate.
    def rhs(t, a, p):
        c = a.central / p.v
        return {"depot": -p.ka * a.depot, "central": p.ka * a.depot - p.vmax * c / (p.km + c)}

    model = model_of(
        pkmix.ODE(["depot", "central"], rhs, **TOL),
        lambda p: {"ka": p.ka, "vmax": p.vmax * p.WT / 70.0, "km": p.km, "v": p.v},
        lambda a, p: a.central / p.v,
        {"ka": 1.0, "vmax": VMAX, "km": KM, "v": V_MM},
        covariates=["WT"],
    )
    frames = []
    for i, (wt, n_obs) in enumerate([(50.0, 3), (70.0, 9), (110.0, 5)]):
        f = frame_of([dict(TIME=0.0, AMT=100.0 * (i + 1), CMT=1)], np.linspace(0.5, 24.0, n_obs), WT=wt)
        frames.append(f.assign(ID=i + 1, CMT=np.where(f["EVID"] == 1, 1, 2)))
    together = pkmix.predict(model, pd.concat(frames, ignore_index=True))
    alone = pd.concat([pkmix.predict(model, f) for f in frames], ignore_index=True)
    assert_close(together["PRED"], alone["PRED"], rtol=1e-12, atol=1e-14, what="batched vs alone")


# ------------------------------------------------------------------ failures
def test_a_failed_solve_gives_nan_not_a_number():
    # Too few steps for the interval: the solver gives up, and the prediction says so.
    def rhs(t, a, p):
        return {"central": -p.k * a.central}

    model = model_of(pkmix.ODE(["central"], rhs, rtol=1e-12, atol=1e-14, max_steps=4),
                     lambda p: {"k": p.k}, lambda a, p: a.central, {"k": 50.0})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, a = observed(model, frame_of([dict(TIME=0.0, AMT=100.0)], [10.0]))
    assert np.isnan(a).all()


def test_rhs_naming_an_unknown_compartment_is_an_error():
    def rhs(t, a, p):
        return {"centrl": -a.central}

    model = model_of(pkmix.ODE(["central"], rhs), lambda p: {"k": p.k}, lambda a, p: a.central, {"k": 1.0})
    with pytest.raises(ValueError, match="centrl"):
        observed(model, frame_of([dict(TIME=0.0, AMT=100.0)], [1.0]))


def test_undefined_modelled_rate_is_refused_before_the_solve():
    # RATE = -1 without r1: the infusion's end time would be NaN and the solve would wait
    # for it; the data/model mismatch is named before any solve.
    def rhs(t, a, p):
        return {"central": -p.k * a.central}

    model = model_of(pkmix.ODE(["central"], rhs), lambda p: {"k": p.k}, lambda a, p: a.central, {"k": 0.1})
    with pytest.raises(pkmix.DatasetError, match=r"record 1 \(ID 1\), column RATE.*no 'r1'"):
        observed(model, frame_of([dict(TIME=0.0, AMT=100.0, RATE=-1.0)], [1.0, 2.0]))

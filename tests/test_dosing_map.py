"""MAP individualisation against an independent computation.

For each case the test writes the one-compartment model's concentrations in numpy from
the textbook equations (superposition of bolus/infusion/oral doses, or stepping the
amount through the intervals between events where parameters change with time), the
-2 log posterior from them, and minimises it with scipy's bounded L-BFGS-B from eta = 0.
pkmix's MAP etas must agree to 1e-5; its posterior covariance must equal the inverse of
the expected information H~ computed here with finite-difference sensitivities.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, stats

import pkmix
from pkmix.dosing import load_patient, map_estimate
from pkmix.dosing.map import TRACES

# ----------------------------------------------------------------------------- models
TCL, TV, TKA = 4.0, 50.0, 1.2
OMEGA_IV = np.diag([0.1, 0.2])
ADD, PROP = 0.5, 0.15


def iv_model():
    return pkmix.Model(
        theta={"tcl": TCL, "tv": TV},
        omega={"eta_cl": OMEGA_IV[0, 0], "eta_v": OMEGA_IV[1, 1]},
        sigma={"add": ADD, "prop": PROP},
        individual=lambda p: {"cl": p.tcl * (p.CRCL / 100.0) ** 0.7 * jnp.exp(p.eta_cl),
                              "v": p.tv * (p.WT / 70.0) * jnp.exp(p.eta_v)},
        structure=pkmix.one_compartment(),
        observe=lambda a, p: a.central / p.v,
        error=pkmix.combined("add", "prop"),
        covariates=["WT", "CRCL"],
        name="test_iv",
    )


OMEGA_ORAL = np.diag([0.3, 0.1, 0.2])


def oral_model():
    return pkmix.Model(
        theta={"tka": TKA, "tcl": TCL, "tv": TV},
        omega={"eta_ka": OMEGA_ORAL[0, 0], "eta_cl": OMEGA_ORAL[1, 1], "eta_v": OMEGA_ORAL[2, 2]},
        sigma={"prop": 0.2},
        individual=lambda p: {"ka": p.tka * jnp.exp(p.eta_ka), "cl": p.tcl * jnp.exp(p.eta_cl),
                              "v": p.tv * jnp.exp(p.eta_v)},
        structure=pkmix.one_compartment(depot=True),
        observe=lambda a, p: a.central / p.v,
        error=pkmix.proportional("prop"),
        name="test_oral",
    )


KAPPA = 0.05


def iov_model():
    return pkmix.Model(
        theta={"tcl": TCL, "tv": TV},
        omega={"eta_cl": OMEGA_IV[0, 0], "eta_v": OMEGA_IV[1, 1]},
        iov=pkmix.IOV(occasion="OCC", kappa_cl=KAPPA),
        sigma={"add": ADD, "prop": PROP},
        individual=lambda p: {"cl": p.tcl * jnp.exp(p.eta_cl + p.kappa_cl), "v": p.tv * jnp.exp(p.eta_v)},
        structure=pkmix.one_compartment(),
        observe=lambda a, p: a.central / p.v,
        error=pkmix.combined("add", "prop"),
        name="test_iov",
    )


# ------------------------------------------------------------- independent numpy model
def step_1cmt(records, rule="nonmem"):
    """Concentrations at each record of a one-compartment IV model whose CL and V may
    change from record to record, by stepping the amount between events.

    ``records``: list of dicts in data order with time, amt, dur (0 = bolus), cl, v.
    An interval is governed by the first record at or after its end ("nonmem") or by
    the last record at or before its start ("locf").
    """
    events = []
    for i, r in enumerate(records):
        events.append((r["time"], 3 * i, i, "record"))
        if r.get("amt", 0) > 0 and r.get("dur", 0) > 0:
            events.append((r["time"] + r["dur"], 3 * i + 2, i, "stop"))
    events.sort(key=lambda e: (e[0], e[1]))
    record_positions = [k for k, e in enumerate(events) if e[3] == "record"]
    amount, rate = 0.0, 0.0
    conc = np.zeros(len(records))
    t_prev = events[0][0]
    for k, (t, _, i, kind) in enumerate(events):
        if rule == "nonmem":
            g = min([events[j][2] for j in record_positions if j >= k], default=len(records) - 1)
        else:
            before = [events[j][2] for j in record_positions if j < k]
            g = max(before) if before else 0
        ke = records[g]["cl"] / records[g]["v"]
        dt = t - t_prev
        amount = amount * np.exp(-ke * dt) + rate * (1 - np.exp(-ke * dt)) / ke
        r = records[i]
        if kind == "record":
            if r.get("amt", 0) > 0:
                if r.get("dur", 0) > 0:
                    rate += r["amt"] / r["dur"]
                else:
                    amount += r["amt"]
            conc[i] = amount / r["v"]
        else:
            rate -= r["amt"] / r["dur"]
        t_prev = t
    return conc


def infusion_superposition(t, doses, cl, v):
    """Concentration at times t after IV infusions [(time, amount, duration)] (constant CL, V)."""
    ke = cl / v
    c = np.zeros_like(t, dtype=float)
    for td, amt, dur in doses:
        s = t - td
        on = np.clip(s, 0, dur)
        off = np.maximum(s - dur, 0)
        c += np.where(s > 0, amt / dur / cl * (1 - np.exp(-ke * on)) * np.exp(-ke * off), 0.0)
    return c


def oral_superposition(t, doses, ka, cl, v):
    ke = cl / v
    c = np.zeros_like(t, dtype=float)
    for td, amt in doses:
        s = np.maximum(t - td, 0)
        c += np.where(t > td, amt * ka / (v * (ka - ke)) * (np.exp(-ke * s) - np.exp(-ka * s)), 0.0)
    return c


def neg2_log_posterior(eta, conc_fn, y, blq, lloq, omega_inv, variance):
    f = conc_fn(eta)
    var = variance(f)
    obs = ~blq
    total = np.sum(np.log(var[obs]) + (y[obs] - f[obs]) ** 2 / var[obs])
    if blq.any():
        total += np.sum(-2 * stats.norm.logcdf((lloq[blq] - f[blq]) / np.sqrt(var[blq])))
    return total + eta @ omega_inv @ eta


def scipy_map(conc_fn, y, blq, lloq, omega, variance):
    omega_inv = np.linalg.inv(omega)
    q = omega.shape[0]

    def fun(eta):
        return neg2_log_posterior(eta, conc_fn, y, blq, lloq, omega_inv, variance)

    res = optimize.minimize(fun, np.zeros(q), method="L-BFGS-B", bounds=[(-4.0, 4.0)] * q,
                            options={"ftol": 1e-16, "gtol": 1e-11, "maxiter": 20000, "maxfun": 100000})
    # Polish: L-BFGS-B's finite-difference gradient leaves ~1e-6 in eta; a few
    # Nelder-Mead steps from there on the same objective reach the 1e-7 level.
    res2 = optimize.minimize(fun, res.x, method="Nelder-Mead",
                             options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000})
    return res2.x if res2.fun <= res.fun else res.x


def expected_information(conc_fn, eta, omega, variance, dvariance, obs_mask):
    """H~ = Omega^-1 + sum a a'/R + 1/2 sum dR dR'/R^2, by central differences."""
    h = 1e-6
    q = len(eta)
    f = conc_fn(eta)
    a = np.zeros((len(f), q))
    for j in range(q):
        e = np.zeros(q)
        e[j] = h
        a[:, j] = (conc_fn(eta + e) - conc_fn(eta - e)) / (2 * h)
    var = variance(f)
    dvar = dvariance(f)[:, None] * a
    a, dvar, var = a[obs_mask], dvar[obs_mask], var[obs_mask]
    return np.linalg.inv(omega) + (a.T / var) @ a + 0.5 * (dvar.T / var**2) @ dvar


def combined_var(f):
    return ADD**2 + (PROP * f) ** 2


def combined_dvar(f):
    return 2 * PROP**2 * f


# ---------------------------------------------------------------------------- patients
def iv_patient(levels, *, crcl=90.0, wt=80.0, ss=False):
    doses = [{"time": 0, "amount": 1000, "route": "iv", "duration": 1.0}] if not ss else [
        {"time": 0, "amount": 1000, "route": "iv", "duration": 1.0, "steady_state": True, "interval": 12}]
    doses.append({"time": 12, "amount": 1000, "route": "iv", "duration": 1.0, "interval": 12, "count": 2})
    return {"id": "p", "covariates": {"WT": wt, "CRCL": crcl}, "doses": doses,
            "levels": [{"time": t, "value": v} for t, v in levels]}


LEVELS_IV = [(2.0, 28.0), (11.5, 6.0), (35.5, 9.5)]


def check(fit, eta_ref, omega, conc_fn, obs_mask):
    assert fit.converged
    np.testing.assert_allclose(fit.eta, eta_ref, atol=1e-5)
    info = expected_information(conc_fn, fit.eta, omega, combined_var, combined_dvar, obs_mask)
    np.testing.assert_allclose(fit.covariance, np.linalg.inv(info), rtol=1e-5, atol=1e-9)


def test_infusion_multiple_doses():
    model = iv_model()
    fit = map_estimate(model, iv_patient(LEVELS_IV), curve_points=0)
    t = np.array([x for x, _ in LEVELS_IV])
    y = np.array([v for _, v in LEVELS_IV])
    doses = [(0, 1000, 1.0), (12, 1000, 1.0), (24, 1000, 1.0)]

    def conc(eta):
        cl = TCL * (90 / 100) ** 0.7 * np.exp(eta[0])
        v = TV * (80 / 70) * np.exp(eta[1])
        return infusion_superposition(t, doses, cl, v)

    ref = scipy_map(conc, y, np.zeros(3, bool), np.zeros(3), OMEGA_IV, combined_var)
    check(fit, ref, OMEGA_IV, conc, np.ones(3, bool))
    # The individual parameters are the model's, at the estimate.
    np.testing.assert_allclose(fit.current["cl"], TCL * 0.9**0.7 * np.exp(fit.eta[0]), rtol=1e-12)
    np.testing.assert_allclose(fit.observations["IPRED"], conc(fit.eta), rtol=1e-9)


def test_steady_state_only_samples_converge_from_zero():
    # Levels taken at steady state only, far from the typical patient (CL about a third
    # of typical): Newton from eta = 0 must not diverge.
    levels = [(11.9, 60.0), (13.0, 85.0), (23.9, 61.0)]
    model = iv_model()
    fit = map_estimate(model, iv_patient(levels, ss=True), curve_points=0)
    t = np.array([x for x, _ in levels])
    y = np.array([v for _, v in levels])
    # SS=1 at time 0 with II 12: the same as infinitely many earlier doses.
    doses = [(-12.0 * k, 1000, 1.0) for k in range(0, 400)] + [(12, 1000, 1.0), (24, 1000, 1.0)]

    def conc(eta):
        cl = TCL * 0.9**0.7 * np.exp(eta[0])
        v = TV * (80 / 70) * np.exp(eta[1])
        return infusion_superposition(t, doses, cl, v)

    ref = scipy_map(conc, y, np.zeros(3, bool), np.zeros(3), OMEGA_IV, combined_var)
    assert ref[0] < -0.8  # a patient far from eta = 0
    check(fit, ref, OMEGA_IV, conc, np.ones(3, bool))


def test_oral():
    model = oral_model()
    patient = {"covariates": {}, "doses": [{"time": 0, "amount": 500, "route": "oral"},
                                           {"time": 12, "amount": 500, "route": "oral"}],
               "levels": [{"time": 1.0, "value": 5.5}, {"time": 4.0, "value": 6.1}, {"time": 14.0, "value": 7.9}]}
    fit = map_estimate(model, patient, curve_points=0)
    t = np.array([1.0, 4.0, 14.0])
    y = np.array([5.5, 6.1, 7.9])

    def conc(eta):
        return oral_superposition(t, [(0, 500), (12, 500)], TKA * np.exp(eta[0]), TCL * np.exp(eta[1]),
                                  TV * np.exp(eta[2]))

    def var(f):
        return (0.2 * f) ** 2

    ref = scipy_map(conc, y, np.zeros(3, bool), np.zeros(3), OMEGA_ORAL, var)
    assert fit.converged
    np.testing.assert_allclose(fit.eta, ref, atol=1e-5)
    info = expected_information(conc, fit.eta, OMEGA_ORAL, var, lambda f: 2 * 0.04 * f, np.ones(3, bool))
    np.testing.assert_allclose(fit.covariance, np.linalg.inv(info), rtol=1e-5)


@pytest.mark.parametrize("rule", ["nonmem", "locf"])
def test_time_varying_covariate(rule):
    # Creatinine clearance falls from 100 to 40 mL/min at 20 h; the records carry the
    # values as pkmix builds them (each record: the latest measurement at or before it).
    model = iv_model()
    patient = iv_patient(LEVELS_IV)
    patient["covariates"]["CRCL"] = {"values": [{"time": 0, "value": 100.0}, {"time": 20, "value": 40.0}]}
    fit = map_estimate(model, patient, covariate_rule=rule, curve_points=0)
    # The same records in numpy: covariate change records at 0 and 20 come first at
    # their time, then levels, then doses.
    rows = [(0.0, 0, None), (0.0, 2, 1000), (2.0, 1, None), (11.5, 1, None), (12.0, 2, 1000), (20.0, 0, None),
            (24.0, 2, 1000), (35.5, 1, None)]
    crcl = [100.0 if t < 20 else 40.0 for t, _, _ in rows]
    obs_idx = [i for i, r in enumerate(rows) if r[1] == 1]
    y = np.array([v for _, v in LEVELS_IV])

    def conc(eta):
        return conc_rule(eta, rows, crcl, obs_idx, rule)

    ref = scipy_map(conc, y, np.zeros(3, bool), np.zeros(3), OMEGA_IV, combined_var)
    check(fit, ref, OMEGA_IV, conc, np.ones(3, bool))
    # The change matters (the two rules give different estimates).
    other = "locf" if rule == "nonmem" else "nonmem"
    other_ref = scipy_map(lambda e: conc_rule(e, rows, crcl, obs_idx, other),
                          y, np.zeros(3, bool), np.zeros(3), OMEGA_IV, combined_var)
    assert np.max(np.abs(other_ref - ref)) > 1e-3


def conc_rule(eta, rows, crcl, obs_idx, rule):
    """Concentrations at the levels of the time-varying-covariate case (numpy)."""
    recs = [{"time": t, "amt": amt or 0.0, "dur": 1.0 if amt else 0.0,
             "cl": TCL * (c / 100) ** 0.7 * np.exp(eta[0]), "v": TV * (80 / 70) * np.exp(eta[1])}
            for (t, _, amt), c in zip(rows, crcl)]
    return step_1cmt(recs, rule)[obs_idx]


def test_inter_occasion_variability():
    model = iov_model()
    patient = {"doses": [{"time": 0, "amount": 1000, "duration": 1, "occasion": 1},
                         {"time": 12, "amount": 1000, "duration": 1, "occasion": 1},
                         {"time": 48, "amount": 1000, "duration": 1, "occasion": 2},
                         {"time": 60, "amount": 1000, "duration": 1, "occasion": 2}],
               "levels": [{"time": 11.5, "value": 5.0, "occasion": 1}, {"time": 14.0, "value": 22.0, "occasion": 1},
                          {"time": 59.5, "value": 7.5, "occasion": 2}, {"time": 62.0, "value": 25.0, "occasion": 2}]}
    fit = map_estimate(model, patient, curve_points=0)
    assert fit.eta_names == ["eta_cl", "eta_v", "kappa_cl[occ 1]", "kappa_cl[occ 2]"]
    rows = [(0.0, 1000, 0), (11.5, None, 0), (12.0, 1000, 0), (14.0, None, 0), (48.0, 1000, 1), (59.5, None, 1),
            (60.0, 1000, 1), (62.0, None, 1)]
    obs_idx = [i for i, r in enumerate(rows) if r[1] is None]
    y = np.array([5.0, 22.0, 7.5, 25.0])
    omega = np.diag([OMEGA_IV[0, 0], OMEGA_IV[1, 1], KAPPA, KAPPA])

    def conc(eta):
        recs = [{"time": t, "amt": amt or 0.0, "dur": 1.0 if amt else 0.0,
                 "cl": TCL * np.exp(eta[0] + eta[2 + occ]), "v": TV * np.exp(eta[1])} for t, amt, occ in rows]
        return step_1cmt(recs)[obs_idx]

    ref = scipy_map(conc, y, np.zeros(4, bool), np.zeros(4), omega, combined_var)
    check(fit, ref, omega, conc, np.ones(4, bool))
    assert abs(ref[2] - ref[3]) > 1e-3  # the occasions differ


def test_blq_level_by_m3():
    model = iv_model()
    levels = [{"time": 2.0, "value": 28.0}, {"time": 11.5, "value": "<8"}, {"time": 35.5, "value": 9.5}]
    patient = iv_patient([])
    patient["levels"] = levels
    fit = map_estimate(model, patient, curve_points=0)
    assert fit.bound.has_blq
    t = np.array([2.0, 11.5, 35.5])
    y = np.array([28.0, 8.0, 9.5])
    blq = np.array([False, True, False])
    lloq = np.array([0.0, 8.0, 0.0])
    doses = [(0, 1000, 1.0), (12, 1000, 1.0), (24, 1000, 1.0)]

    def conc(eta):
        return infusion_superposition(t, doses, TCL * 0.9**0.7 * np.exp(eta[0]), TV * (80 / 70) * np.exp(eta[1]))

    ref = scipy_map(conc, y, blq, lloq, OMEGA_IV, combined_var)
    assert fit.converged
    np.testing.assert_allclose(fit.eta, ref, atol=1e-5)
    # A censored level still informs: the posterior is tighter than without it.
    info_obs = expected_information(conc, fit.eta, OMEGA_IV, combined_var, combined_dvar, ~blq)
    assert np.all(np.diag(fit.covariance) <= np.diag(np.linalg.inv(info_obs)) + 1e-12)


def test_nonmem_csv_patient(tmp_path):
    # The same infusion case from a one-patient NONMEM file.
    path = tmp_path / "p.csv"
    path.write_text("ID,TIME,AMT,DUR,DV,EVID,MDV,WT,CRCL\n"
                    "1,0,1000,1,.,1,1,80,90\n1,2,0,0,28,0,0,80,90\n1,11.5,0,0,6,0,0,80,90\n"
                    "1,12,1000,1,.,1,1,80,90\n1,24,1000,1,.,1,1,80,90\n1,35.5,0,0,9.5,0,0,80,90\n")
    fit_csv = map_estimate(iv_model(), load_patient(path), curve_points=0)
    fit_json = map_estimate(iv_model(), iv_patient(LEVELS_IV), curve_points=0)
    np.testing.assert_allclose(fit_csv.eta, fit_json.eta, atol=1e-10)


def test_a_priori_without_levels_is_the_prior():
    patient = iv_patient([])
    fit = map_estimate(iv_model(), patient, curve_points=0)
    np.testing.assert_allclose(fit.eta, 0.0, atol=1e-12)
    np.testing.assert_allclose(fit.covariance, OMEGA_IV, rtol=1e-12)
    assert fit.current["cl"] == pytest.approx(fit.typical["cl"])


def test_no_recompile_for_a_second_patient_of_the_same_shape():
    model = iv_model()
    map_estimate(model, iv_patient(LEVELS_IV))
    before = dict(TRACES)
    other = iv_patient([(3.0, 20.0), (11.0, 4.0), (34.0, 12.0)], crcl=60.0, wt=95.0)
    fit = map_estimate(model, other)
    assert dict(TRACES) == before
    assert fit.converged


def test_curve_and_uncertainty_summaries():
    fit = map_estimate(iv_model(), iv_patient(LEVELS_IV))
    # The curve passes through the individual predictions at the level times.
    for t, ipred in zip(fit.observations["TIME"], fit.observations["IPRED"]):
        np.testing.assert_allclose(np.interp(t, fit.curve["TIME"], fit.curve["IPRED"]), ipred, rtol=0.02)
    lo, hi = fit.ci["cl"]
    assert lo < fit.current["cl"] < hi
    # The CI is the log-normal one: symmetric on the log scale.
    np.testing.assert_allclose(np.log(fit.current["cl"]) - np.log(lo), np.log(hi) - np.log(fit.current["cl"]))
    np.testing.assert_allclose(fit.se["cl"], fit.current["cl"] * np.sqrt(fit.covariance[0, 0]), rtol=1e-10)
    assert "eta_cl" in fit.summary()
    d = fit.to_dict()
    assert set(d["parameters"]) == {"cl", "v"}

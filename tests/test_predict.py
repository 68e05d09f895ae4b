"""``pkmix.predict``: the prediction table, reference datasets against hand-computed
curves, covariate rules, and that a second dataset of the same padded shape reuses
the compiled program."""

from __future__ import annotations

import contextlib
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from conftest import assert_close

import pkmix
from pkmix._predict import _predict_batch


@functools.lru_cache(maxsize=None)
def theo_model():
    def individual(p):
        return {"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl), "v": jnp.exp(p.tv + p.eta_v)}

    return pkmix.Model(
        theta={"tka": 0.45, "tcl": 1.0, "tv": 3.45},
        omega={"eta_ka": 0.6, "eta_cl": 0.3, "eta_v": 0.1},
        sigma={"add_sd": 0.7},
        individual=individual,
        structure=pkmix.one_compartment(depot=True),
        observe=lambda a, p: a.central / p.v,
        error=pkmix.additive("add_sd"),
    )


@functools.lru_cache(maxsize=None)
def pheno_model():
    return pkmix.Model(
        theta={"tcl": pkmix.Theta(0.0047, lower=0), "tv": pkmix.Theta(0.99, lower=0)},
        omega={"eta_cl": 0.05, "eta_v": 0.03},
        sigma={"prop": 0.1},
        individual=lambda p: {"cl": p.tcl * p.WT * jnp.exp(p.eta_cl), "v": p.tv * p.WT * jnp.exp(p.eta_v)},
        structure=pkmix.one_compartment(),
        observe=lambda a, p: a.central / p.v,
        error=pkmix.proportional("prop"),
        covariates=["WT"],
    )


def bateman(dose, ka, cl, v, t):
    k = cl / v
    return dose * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))


# ------------------------------------------------------------------ the table
def test_prediction_table(theo):
    out = pkmix.predict(theo_model(), theo)
    assert list(out.columns) == ["ID", "TIME", "EVID", "DV", "PRED", "IPRED"]
    assert len(out) == theo.n_records
    f = theo.frame
    for c in ("ID", "TIME", "EVID"):
        np.testing.assert_array_equal(out[c].to_numpy(), f[c].to_numpy())
    np.testing.assert_array_equal(out["PRED"].to_numpy(), out["IPRED"].to_numpy())  # etas default to 0


def test_theophylline_pred_is_the_bateman_function(theo):
    out = pkmix.predict(theo_model(), theo)
    ka, cl, v = math.exp(0.45), math.exp(1.0), math.exp(3.45)
    f = theo.frame
    dose = f.loc[f["EVID"] == 1].set_index("ID")["AMT"]
    obs = out["EVID"] == 0
    expected = bateman(dose.loc[out.loc[obs, "ID"]].to_numpy(), ka, cl, v, out.loc[obs, "TIME"].to_numpy())
    assert_close(out.loc[obs, "PRED"], expected, rtol=1e-12, atol=1e-12, what="theophylline PRED")


def test_ipred_uses_each_subjects_etas(theo):
    rng = np.random.default_rng(0)
    etas = rng.normal(0.0, 0.3, (theo.n_subjects, 3))
    out = pkmix.predict(theo_model(), theo, etas=etas)
    f = theo.frame
    dose = f.loc[f["EVID"] == 1].set_index("ID")["AMT"]
    for i, sid in enumerate(theo.ids):
        rows = (out["ID"] == sid) & (out["EVID"] == 0)
        ka, cl, v = (math.exp(t + e) for t, e in zip((0.45, 1.0, 3.45), etas[i]))
        expected = bateman(dose.loc[sid], ka, cl, v, out.loc[rows, "TIME"].to_numpy())
        assert_close(out.loc[rows, "IPRED"], expected, rtol=1e-12, atol=1e-12, what=f"IPRED of ID {sid}")
    # The same etas as a table by ID, in another order, give the same predictions.
    table = pd.DataFrame(etas, columns=["eta_ka", "eta_cl", "eta_v"]).assign(ID=theo.ids).iloc[::-1]
    again = pkmix.predict(theo_model(), theo, etas=table)
    np.testing.assert_array_equal(again["IPRED"].to_numpy(), out["IPRED"].to_numpy())


def test_etas_of_the_wrong_shape_are_refused(theo):
    with pytest.raises(pkmix.ModelError, match="etas have shape"):
        pkmix.predict(theo_model(), theo, etas=np.zeros((theo.n_subjects, 2)))


def test_params_by_name(theo):
    base = pkmix.predict(theo_model(), theo)
    doubled_v = pkmix.predict(theo_model(), theo, params={"tv": 3.45 + math.log(2.0)})
    obs = base["EVID"] == 0
    ka, cl, v = math.exp(0.45), math.exp(1.0), 2 * math.exp(3.45)
    f = theo.frame
    dose = f.loc[f["EVID"] == 1].set_index("ID")["AMT"]
    expected = bateman(dose.loc[base.loc[obs, "ID"]].to_numpy(), ka, cl, v, base.loc[obs, "TIME"].to_numpy())
    assert_close(doubled_v.loc[obs, "PRED"], expected, rtol=1e-12, atol=1e-12, what="params override")
    with pytest.raises(pkmix.ModelError, match="'tk'"):
        pkmix.predict(theo_model(), theo, params={"tk": 1.0})


def test_phenobarbital_pred_superposes_every_dose(pheno):
    # Repeated IV boluses, CL and V proportional to weight: the sum of every earlier
    # dose's exponential, subject by subject.
    out = pkmix.predict(pheno_model(), pheno)
    f = pheno.frame
    for sid, rows in f.groupby("ID", sort=False):
        wt = rows["WT"].iloc[0]
        cl, v = 0.0047 * wt, 0.99 * wt
        t = rows["TIME"].to_numpy()
        doses = rows.loc[rows["EVID"] == 1, ["TIME", "AMT"]].to_numpy()
        expected = np.array([
            sum(a / v * math.exp(-cl / v * (s - td)) for td, a in doses if td <= s) for s in t
        ])
        got = out.loc[out["ID"] == sid, "PRED"].to_numpy()
        assert_close(got, expected, rtol=1e-11, atol=1e-12, what=f"phenobarbital ID {sid}")


def test_dataset_path_frame_and_dataset_agree(theo, tmp_path):
    path = tmp_path / "theo.csv"
    theo.to_frame().to_csv(path, index=False, na_rep=".")
    a = pkmix.predict(theo_model(), theo)
    b = pkmix.predict(theo_model(), str(path))
    c = pkmix.predict(theo_model(), theo.to_frame())
    np.testing.assert_array_equal(a["PRED"].to_numpy(), b["PRED"].to_numpy())
    np.testing.assert_array_equal(a["PRED"].to_numpy(), c["PRED"].to_numpy())


def test_subjects_predicted_together_or_alone(theo):
    # Padding (subjects with fewer records than the batch) changes nothing.
    together = pkmix.predict(theo_model(), theo)
    f = theo.to_frame()
    short = f[(f["ID"] != 1) | (f["TIME"] < 5)]  # subject 1 with fewer records
    both = pkmix.predict(theo_model(), short)
    alone = pkmix.predict(theo_model(), short[short["ID"] == 1])
    np.testing.assert_allclose(both.loc[both["ID"] == 1, "PRED"], alone["PRED"], rtol=1e-14, atol=0)
    np.testing.assert_allclose(both.loc[both["ID"] == 2, "PRED"],
                               together.loc[together["ID"] == 2, "PRED"], rtol=1e-14, atol=0)


# ------------------------------------------------------------- covariate rules
def test_time_varying_covariate_rules():
    # WT doubles on the record at t = 4 (so does CL). NONMEM's rule: the values on a
    # record govern the interval that ends at it, so (2, 4] already has the new CL;
    # LOCF: the interval (2, 4] keeps the values of the record at 2.
    frame = pd.DataFrame({
        "ID": 1, "TIME": [0.0, 2.0, 4.0, 6.0], "AMT": [100.0, 0, 0, 0], "EVID": [1, 0, 0, 0],
        "DV": 0.0, "WT": [70.0, 70.0, 140.0, 140.0],
    })
    model = pkmix.Model(
        theta={"tcl": 0.1, "tv": 0.3}, omega={"eta": 0.1}, sigma={"prop": 0.1},
        individual=lambda p: {"cl": p.tcl * p.WT, "v": p.tv * 70.0},
        structure=pkmix.one_compartment(), observe=lambda a, p: a.central / p.v,
        error=pkmix.proportional("prop"), covariates=["WT"],
    )
    v, k1, k2 = 21.0, 7.0 / 21.0, 14.0 / 21.0
    c0 = 100.0 / v
    nonmem = pkmix.predict(model, frame)["PRED"].to_numpy()
    locf = pkmix.predict(model, frame, covariate_rule="locf")["PRED"].to_numpy()
    assert_close(nonmem, [c0, c0 * math.exp(-2 * k1), c0 * math.exp(-2 * k1 - 2 * k2),
                          c0 * math.exp(-2 * k1 - 4 * k2)], rtol=1e-12, atol=0, what="NONMEM rule")
    assert_close(locf, [c0, c0 * math.exp(-2 * k1), c0 * math.exp(-4 * k1),
                        c0 * math.exp(-4 * k1 - 2 * k2)], rtol=1e-12, atol=0, what="LOCF")
    with pytest.raises(ValueError, match="covariate_rule"):
        pkmix.predict(model, frame, covariate_rule="nearest")


# --------------------------------------------------------------------- no retrace
@contextlib.contextmanager
def count_compilations():
    """Count JAX tracing and XLA compilation events (from `jax.monitoring`) while active.

    A cache hit of the persistent compilation cache still traces, so tracing counts
    catch a retrace whether or not the compiled program came from disk.
    """
    counts = {"trace": 0, "compile": 0}
    active = [True]

    def listener(name, *args, **kwargs):
        if not active[0]:
            return
        if name == "/jax/core/compile/jaxpr_trace_duration":
            counts["trace"] += 1
        elif name == "/jax/core/compile/backend_compile_duration":
            counts["compile"] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        active[0] = False  # listeners cannot be removed; this one goes quiet


def test_same_shapes_do_not_retrace(theo):
    model = theo_model()
    frame = theo.to_frame()
    pkmix.predict(model, frame)  # compile
    # Another dataset of the same padded shape: other doses, times, observations, and
    # a subject with a record fewer (the record axis is padded to the same width).
    rng = np.random.default_rng(1)
    other = frame.assign(TIME=frame["TIME"] * 1.1, AMT=frame["AMT"] * rng.uniform(0.5, 2.0, len(frame)))
    other = other.drop(index=other.index[(other["ID"] == 3) & (other["EVID"] == 0)][-1])
    before = _predict_batch._cached._cache_size() if hasattr(_predict_batch, "_cached") else None
    with count_compilations() as counts:
        out = pkmix.predict(model, other, params={"tcl": 1.2}, etas=rng.normal(0, 0.2, (12, 3)))
    assert counts == {"trace": 0, "compile": 0}
    if before is not None:
        assert _predict_batch._cached._cache_size() == before
    assert np.isfinite(out["IPRED"]).all()
    # A different padded shape does compile (the counter does see compilations).
    with count_compilations() as counts:
        pkmix.predict(model, frame[frame["ID"] <= 3])
    assert counts["trace"] > 0

"""Prediction speed: 1,000 subjects x 100 records (10 doses each), 2-compartment oral.

Times the jitted prediction kernel for a closed form (``pkmix.two_compartment``) and
the same system written as an ODE (``pkmix.ODE``, explicit Tsit5, at its default
tolerances unless --rtol/--atol say otherwise). Compilation is timed on the first call
with JAX's persistent compilation cache off; warm times are the minimum over repeats of
a call on the same shapes after a warm-up, each ended with ``block_until_ready``.

Run from the repository root (see benchmarks/README.md)::

    python benchmarks/bench_predict.py
"""

from __future__ import annotations

import argparse
import os
import platform
import time

# Measure real compilation: no persistent cache (set before pkmix is imported).
os.environ.setdefault("PKMIX_CACHE_DIR", "off")
os.environ.setdefault("EQX_ON_ERROR", "nan")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import pkmix  # noqa: E402
from pkmix._predict import _predict_batch  # noqa: E402


def make_data(n_subjects: int, n_records: int, n_doses: int, seed: int = 0) -> pd.DataFrame:
    """Oral doses every 12 h; the other records are observations at random times."""
    rng = np.random.default_rng(seed)
    n_obs = n_records - n_doses
    tau = 12.0
    rows = []
    for i in range(1, n_subjects + 1):
        dose_t = tau * np.arange(n_doses)
        obs_t = np.sort(rng.uniform(0.0, tau * (n_doses + 1), n_obs))
        wt = rng.uniform(50.0, 100.0)
        for t in dose_t:
            rows.append((i, t, 0.0, 100.0, 1, 1, 1, wt))
        for t in obs_t:
            rows.append((i, t, 1.0, 0.0, 0, 0, 2, wt))
    frame = pd.DataFrame(rows, columns=["ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "WT"])
    return frame.sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False], kind="stable")


def individual(p):
    return {
        "ka": jnp.exp(p.tka + p.eta_ka),
        "cl": jnp.exp(p.tcl + p.eta_cl) * (p.WT / 70.0) ** 0.75,
        "v1": jnp.exp(p.tv1 + p.eta_v1),
        "q": jnp.exp(p.tq),
        "v2": jnp.exp(p.tv2),
    }


def rhs(t, a, p):
    k10, k12, k21 = p.cl / p.v1, p.q / p.v1, p.q / p.v2
    return {
        "depot": -p.ka * a.depot,
        "central": p.ka * a.depot - (k10 + k12) * a.central + k21 * a.peripheral,
        "peripheral": k12 * a.central - k21 * a.peripheral,
    }


def make_model(structure):
    return pkmix.Model(
        theta={"tka": 0.0, "tcl": 1.0, "tv1": 3.0, "tq": 0.5, "tv2": 4.0},
        omega={"eta_ka": 0.3, "eta_cl": 0.1, "eta_v1": 0.1},
        sigma={"prop": 0.1},
        individual=individual,
        structure=structure,
        observe=lambda a, p: a.central / p.v1,
        error=pkmix.proportional("prop"),
        covariates=["WT"],
    )


def bench(model, batch, etas, values, repeats):
    has_ss = bool(np.any(np.asarray(batch.ss) > 0))

    def pred_ipred():
        return _predict_batch(model, values, etas, batch, has_ss, "nonmem")

    one_pass = jax.jit(lambda v, e, b: jax.vmap(
        lambda eta, s: model.subject_predict(v, eta, s, has_steady_state=has_ss))(e, b))

    out = {}
    for label, fn in (("pkmix.predict kernel (PRED+IPRED)", pred_ipred),
                      ("one pass (IPRED)", lambda: one_pass(values, etas, batch))):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        first = time.perf_counter() - t0
        warm = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            warm.append(time.perf_counter() - t0)
        out[label] = (first - min(warm), min(warm))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=1000)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--doses", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rtol", type=float, default=None, help="ODE relative tolerance (default: pkmix.ODE's)")
    parser.add_argument("--atol", type=float, default=None, help="ODE absolute tolerance (default: pkmix.ODE's)")
    parser.add_argument("--only", choices=("closed", "ode"), default=None)
    args = parser.parse_args()

    frame = make_data(args.subjects, args.records, args.doses)
    ds = pkmix.read_nonmem(frame)
    rng = np.random.default_rng(1)
    cases = []
    if args.only in (None, "closed"):
        cases.append(("closed form", make_model(pkmix.two_compartment(depot=True))))
    if args.only in (None, "ode"):
        tol = {k: v for k, v in (("rtol", args.rtol), ("atol", args.atol)) if v is not None}
        ode = pkmix.ODE(["depot", "central", "peripheral"], rhs, **tol)
        cases.append((f"ODE Tsit5 rtol={ode.rtol:g} atol={ode.atol:g}", make_model(ode)))

    print(f"# {args.subjects} subjects x {args.records} records ({args.doses} doses each), "
          f"2-compartment oral; jax {jax.__version__} on {jax.devices()[0].device_kind} "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)")
    print(f"{'structure':<34} {'what':<36} {'compile s':>10} {'warm s':>10}")
    for name, model in cases:
        batch = ds.batch(model.covariates)
        values = model.initial_values()
        etas = jnp.asarray(rng.normal(0.0, 0.3, (ds.n_subjects, len(model.eta_names))))
        for label, (compile_s, warm_s) in bench(model, batch, etas, values, args.repeats).items():
            print(f"{name:<34} {label:<36} {compile_s:>10.3f} {warm_s:>10.4f}")


if __name__ == "__main__":
    main()

"""Batch-fit throughput: replicate FOCE-I fits per second with ``pkmix.fit_batch``.

Two cases, each 100 subjects x 10 observations per replicate, single oral dose,
proportional error, simulated from the model itself (``pkmix.simulate``) and fitted
from the true values (as PsN's SSE does by default):

* 1-compartment oral: KA, CL, V with etas on all three (7 estimated parameters);
* 2-compartment oral: KA, CL, V1, Q, V2 with etas on KA, CL, V1 (9 parameters).

For each R the program is compiled and run once as a warm-up on one chunk of other
replicates (the compile time is reported apart), then the R replicates are timed
(``block_until_ready`` inside ``fit_batch``). Fits per second = R / run seconds,
compile excluded. Peak memory is the device's ``peak_bytes_in_use`` where the backend
reports it (GPU), else the process's peak resident set size (CPU; includes everything
the process held); *plan* is XLA's memory plan of the compiled chunk program per device
(arguments, outputs, temporaries: ``timing["planned_bytes"]``). ``--plan-width W``
compiles the program for W replicates side by side and runs one objective evaluation
each (``max_iter=0``), printing only the plan: how a GPU chunk will be sized, measured
on any machine (the plan grows linearly with W; the GPU's own plan may differ).
``--extrapolate`` adds lines, marked as such, for larger R at the
measured rate (valid on CPU, where each device fits its replicates one at a time so
time grows linearly in R; not on GPU, where the rate depends on R).

Run from the repository root::

    python benchmarks/bench_batch.py                     # R = 100, both models (2 CPU devices: 3.9 s, 12.1 s)
    python benchmarks/bench_batch.py --R 20 --extrapolate 1000 10000
    python benchmarks/bench_batch.py --R 100 1000 10000 --chunk 2000   # on a GPU
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python benchmarks/bench_batch.py  # one device per core
    python benchmarks/bench_batch.py --plan-width 20 200                # memory plan only

Every case prints one line; ``--covariance none`` leaves the 2p + 1 covariance
evaluations per replicate out.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

os.environ.setdefault("PKMIX_CACHE_DIR", "off")  # measure real compilation
os.environ.setdefault("EQX_ON_ERROR", "nan")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import pkmix  # noqa: E402
from pkmix.batch import fit_batch  # noqa: E402
from pkmix._simulate import Dose, TrialDesign, simulate  # noqa: E402

TIMES = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 24.0, 36.0)


def one_compartment():
    def individual(p):
        return {"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl), "v": jnp.exp(p.tv + p.eta_v)}

    return pkmix.Model(
        name="1cmt-oral", theta={"tka": 0.0, "tcl": 1.0, "tv": 3.0},
        omega={"eta_ka": 0.2, "eta_cl": 0.1, "eta_v": 0.1}, sigma={"prop_sd": 0.15},
        individual=individual, structure=pkmix.one_compartment(depot=True),
        observe=lambda a, p: a.central / p.v, error=pkmix.proportional("prop_sd"))


def two_compartment():
    def individual(p):
        return {"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl),
                "v1": jnp.exp(p.tv1 + p.eta_v1), "q": jnp.exp(p.tq), "v2": jnp.exp(p.tv2)}

    return pkmix.Model(
        name="2cmt-oral", theta={"tka": 0.2, "tcl": 1.6, "tv1": 3.4, "tq": 2.1, "tv2": 4.1},
        omega={"eta_ka": 0.2, "eta_cl": 0.1, "eta_v1": 0.1}, sigma={"prop_sd": 0.15},
        individual=individual, structure=pkmix.two_compartment(depot=True),
        observe=lambda a, p: a.central / p.v1, error=pkmix.proportional("prop_sd"))


MODELS = {"1cmt": one_compartment, "2cmt": two_compartment}


def peak_memory():
    """(bytes, what): the device's peak where reported, else this process's peak RSS."""
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)()
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"], "device peak"
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb * 1024, "process peak RSS"


def run_case(name, R, chunk, covariance, width, seed=1):
    model = MODELS[name]()
    design = TrialDesign(n_subjects=100, doses=[Dose(100.0)], times=TIMES)
    t0 = time.perf_counter()
    reps = simulate(model, design, n=R, seed=seed, output="arrays")
    sim_s = time.perf_counter() - t0
    chunk = min(chunk, R)
    # Warm-up: the first chunk, compiled and run (compile time reported separately).
    warm = simulate(model, design, n=chunk, seed=seed + 1, output="arrays")
    w = fit_batch(model, warm, chunk_size=chunk, covariance=covariance, vmap_width=width)
    compile_s = w.timing["compile_s"]
    res = fit_batch(model, reps, chunk_size=chunk, covariance=covariance, vmap_width=width)
    mem, what = peak_memory()
    t = res.timing
    est = res.estimates
    return {
        "model": name, "R": R, "chunk": t["chunk_size"], "devices": t["devices"], "compile_s": compile_s,
        "run_s": t["run_s"], "fits_per_s": R / t["run_s"], "simulate_s": sim_s,
        "converged": float(est["converged"].mean()), "median_iter": float(est["iterations"].median()),
        "max_evals": int(est["evaluations"].max()),
        "statuses": est.loc[~est["converged"], "message"].str.split(";").str[0].value_counts().to_dict(),
        "width": t["vmap_width"], "peak_mem_gib": mem / 2**30, "mem_kind": what,
        "plan_gib": _gib(t["planned_bytes"]),
    }


def _gib(n_bytes):
    return float("nan") if n_bytes is None else n_bytes / 2**30


def plan_case(name, width, n_devices, covariance, seed=1):
    """XLA's memory plan of the chunk program with ``width`` replicates side by side on
    each device (compiled, and run for one evaluation per replicate: ``max_iter=0``)."""
    model = MODELS[name]()
    design = TrialDesign(n_subjects=100, doses=[Dose(100.0)], times=TIMES)
    reps = simulate(model, design, n=width * n_devices, seed=seed, output="arrays")
    res = fit_batch(model, reps, chunk_size=width * n_devices, covariance=covariance, vmap_width=width, max_iter=0)
    return res.timing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--R", type=int, nargs="+", default=[100])
    parser.add_argument("--models", nargs="+", default=["1cmt", "2cmt"], choices=sorted(MODELS))
    parser.add_argument("--chunk", type=int, default=None,
                        help="replicates per compiled call (default 20 per CPU device, 2000 on GPU)")
    parser.add_argument("--vmap-width", type=int, default=None,
                        help="replicates vmapped side by side per device (default: 1 on CPU, the chunk on GPU)")
    parser.add_argument("--extrapolate", type=int, nargs="*", default=[],
                        help="also print the time R fits would take at the measured rate (CPU)")
    parser.add_argument("--covariance", default="sandwich", choices=["sandwich", "none"])
    parser.add_argument("--plan-width", type=int, nargs="+", default=None,
                        help="only print XLA's memory plan of the chunk program at these vmap widths")
    args = parser.parse_args(argv)
    dev = jax.devices()
    print(f"pkmix {pkmix.__version__}, jax {jax.__version__}, {len(dev)} x {dev[0].platform}:"
          f"{getattr(dev[0], 'device_kind', '')}, {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}")
    print(f"FOCE-I, 100 subjects x 10 observations per replicate, covariance={args.covariance}")
    if args.plan_width:
        print(f"{'model':8s} {'width':>6s} {'dev':>4s} {'compile s':>10s} {'plan GiB':>9s} {'per replicate MiB':>18s}")
        for name in args.models:
            for width in args.plan_width:
                t = plan_case(name, width, len(dev), args.covariance)
                print(f"{name:8s} {width:6d} {t['devices']:4d} {t['compile_s']:10.1f} {_gib(t['planned_bytes']):9.3f} "
                      f"{_gib(t['planned_bytes']) * 1024 / width:18.2f}", flush=True)
        return 0
    chunk = args.chunk or (20 * len(dev) if dev[0].platform == "cpu" else 2000)
    header = (f"{'model':8s} {'R':>6s} {'chunk':>6s} {'dev':>4s} {'width':>5s} {'compile s':>10s} {'run s':>9s} "
              f"{'fits/s':>8s} {'conv':>6s} {'med it':>7s} {'max ev':>7s} {'plan GiB':>9s} {'peak GiB':>9s}")
    print(header)
    for name in args.models:
        for R in args.R:
            r = run_case(name, R, chunk, args.covariance, args.vmap_width)
            print(f"{r['model']:8s} {r['R']:6d} {r['chunk']:6d} {r['devices']:4d} {r['width']:5d} {r['compile_s']:10.1f} "
                  f"{r['run_s']:9.1f} {r['fits_per_s']:8.3f} {r['converged']:6.1%} {r['median_iter']:7.0f} "
                  f"{r['max_evals']:7d} {r['plan_gib']:9.3f} {r['peak_mem_gib']:9.2f}  ({r['mem_kind']})", flush=True)
            for message, count in r["statuses"].items():
                print(f"{'':8s} {'':6s}  not converged: {count} x {message}", flush=True)
        for R in args.extrapolate:
            print(f"{name:8s} {R:6d}  EXTRAPOLATED from R={args.R[-1]} at {r['fits_per_s']:.3f} fits/s: "
                  f"{R / r['fits_per_s']:,.0f} s ({R / r['fits_per_s'] / 3600:.1f} h), not measured", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

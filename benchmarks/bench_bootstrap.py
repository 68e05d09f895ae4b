"""Bootstrap throughput: ``pkmix.bootstrap`` (every replicate refitted in one compiled
``fit_batch`` program) against a warm serial loop of ``pkmix.fit``, side by side.

Cases:

* ``theo``: theophylline (12 subjects, 1-cmt oral, FOCE-I, 7 estimated parameters),
  each replicate with its covariance step (sandwich), as ``pkmix bootstrap`` runs it.
* ``2cmt``: a 120-subject 2-cmt oral model (19 samples a subject, 9 estimated
  parameters), its data simulated from the model once and fitted first.

The bootstrap is timed whole (resampling, the compiled batch fit, the tables;
compilation reported apart, and ``--repeat`` reruns it warm). The serial reference fits
the first ``--serial`` bootstrap datasets one by one with ``pkmix.fit`` after a warm-up
fit (compiled, so every timed fit is warm; diagnostics off, covariance on) and scales
the mean to the bootstrap's n: it is an estimate, printed as such. BCa's acceleration
is off here (``--acceleration``): the jackknife adds N fits of one more program.

    python benchmarks/bench_bootstrap.py                        # theo, n = 1000, 2 CPU devices
    python benchmarks/bench_bootstrap.py --cases 2cmt --n 200
    python benchmarks/bench_bootstrap.py --devices 1            # one CPU device
    python benchmarks/bench_bootstrap.py --covariance none      # estimates only (bootstrap's default)

``--devices D`` (default: the CPU cores) sets
``XLA_FLAGS=--xla_force_host_platform_device_count=D`` before JAX starts: fit_batch then
fits D replicates at a time on a CPU, one per core.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=["theo"], choices=["theo", "2cmt"])
    p.add_argument("--n", type=int, default=1000, help="bootstrap replicates (default 1000)")
    p.add_argument("--serial", type=int, default=20, help="serial pkmix.fit calls timed (default 20)")
    p.add_argument("--devices", type=int, default=os.cpu_count() or 1, help="CPU devices (default: cores)")
    p.add_argument("--acceleration", choices=["none", "regression", "jackknife"], default="none")
    p.add_argument("--repeat", action="store_true", help="run the bootstrap a second time (warm)")
    p.add_argument("--covariance", choices=["sandwich", "none"], default="sandwich",
                   help="each replicate's covariance step, in the bootstrap and the serial fits (default sandwich)")
    p.add_argument("--vmap-width", type=int, default=None, help="fit_batch's vmap_width (default: 1 on CPU)")
    return p.parse_args(argv)


ARGS = _args() if __name__ == "__main__" else None
if ARGS is not None and "jax" not in sys.modules:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={ARGS.devices}").strip()
# Measure real compilation: a fresh, empty cache folder ("off" is not used: with it the
# exported-program path of a model file's fit fails in this version, a bug reported).
if "PKMIX_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["PKMIX_CACHE_DIR"] = tempfile.mkdtemp(prefix="pkmix-bench-cache-")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import pkmix  # noqa: E402
from pkmix.workflows.bootstrap import replicate_frame, resample_subjects  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES_2CMT = (0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 36, 48, 60, 72)  # 19


def theo_case():
    sys.path.insert(0, os.path.join(ROOT, "examples", "theophylline"))
    from model import model

    return model, os.path.join(ROOT, "examples", "theophylline", "theo_sd.csv")


def two_cmt_case():
    def individual(p):
        return {"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl),
                "v1": jnp.exp(p.tv1 + p.eta_v1), "q": jnp.exp(p.tq), "v2": jnp.exp(p.tv2)}

    model = pkmix.Model(
        name="2cmt-oral", theta={"tka": 0.2, "tcl": 1.6, "tv1": 3.4, "tq": 2.1, "tv2": 4.1},
        omega={"eta_ka": 0.2, "eta_cl": 0.1, "eta_v1": 0.1}, sigma={"prop_sd": 0.15},
        individual=individual, structure=pkmix.two_compartment(depot=True),
        observe=lambda a, p: a.central / p.v1, error=pkmix.proportional("prop_sd"))
    design = pkmix.TrialDesign(n_subjects=120, doses=[pkmix.Dose(100.0)], times=SAMPLES_2CMT)
    data = pkmix.simulate(model, design, n=1, seed=7).drop(columns="REP")
    return model, data


def run_case(name, args):
    model, data = {"theo": theo_case, "2cmt": two_cmt_case}[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        fit = pkmix.fit(model, data, progress=False)
        first_fit = time.perf_counter() - t0
    print(f"[{name}] original fit: OFV {fit.ofv:.3f}, {fit.n_subjects} subjects, converged {fit.converged}, "
          f"{first_fit:.1f} s (compile included)", flush=True)

    acc = None if args.acceleration == "none" else args.acceleration
    kw = dict(acceleration=acc, covariance=args.covariance, vmap_width=args.vmap_width, progress=False)
    # Wall and CPU seconds of this process (all its threads): on a shared machine the CPU
    # time is the work done, the wall time also what other processes took from it.
    t0, c0 = time.perf_counter(), time.process_time()
    boot = pkmix.bootstrap(fit, n=args.n, seed=1, **kw)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    t = boot.timing
    e = boot.estimates
    print(f"[{name}] bootstrap n={args.n} (covariance {args.covariance}): {wall:.1f} s wall, {cpu:.1f} s CPU "
          f"(compile {t['compile_s']:.1f} s, fits {t['fit_s']:.1f} s), {t['devices']} device(s); successful "
          f"{boot.shares['successful']:.1%}, boundary {boot.shares['boundary']:.1%}, covariance failed "
          f"{boot.shares['covariance_failed']:.1%}; iterations per replicate median {e['iterations'].median():.0f}, "
          f"90th percentile {e['iterations'].quantile(0.9):.0f}, max {e['iterations'].max()}", flush=True)
    warm = warm_cpu = None
    if args.repeat:
        t0, c0 = time.perf_counter(), time.process_time()
        pkmix.bootstrap(fit, n=args.n, seed=2, **kw)
        warm, warm_cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"[{name}] bootstrap again (warm, seed 2): {warm:.1f} s wall, {warm_cpu:.1f} s CPU", flush=True)

    # The serial reference: the same kind of resampled datasets, one pkmix.fit each.
    draws = resample_subjects(fit.dataset, args.serial + 1, seed=1)
    frames = [replicate_frame(fit.dataset, draws[r:r + 1]).drop(columns="REP") for r in range(args.serial + 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fkw = dict(params=fit.values, progress=False, diagnostics=False, covariance=args.covariance)
        pkmix.fit(model, frames[-1], **fkw)  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        for f in frames[:-1]:
            pkmix.fit(model, f, **fkw)
        serial = (time.perf_counter() - t0) / args.serial
        serial_cpu = (time.process_time() - c0) / args.serial
    est, est_cpu = serial * args.n, serial_cpu * args.n
    best = min(wall, warm) if warm else wall
    best_cpu = min(cpu, warm_cpu) if warm_cpu else cpu
    print(f"[{name}] serial pkmix.fit (warm): {serial:.3f} s/fit wall, {serial_cpu:.3f} s/fit CPU over {args.serial} "
          f"fits -> {est:.0f} s wall, {est_cpu:.0f} s CPU for {args.n} (scaled); bootstrap {est / best:.1f}x faster "
          f"by wall time ({args.n / best:.1f} fits/s), {est_cpu / best_cpu:.1f}x less CPU time; on an idle machine "
          f"with D cores the bootstrap's wall time approaches its CPU time / D", flush=True)


def main():
    d = jax.devices()
    print(f"pkmix {pkmix.__version__}, jax {jax.__version__}, {platform.machine()} {os.cpu_count()} cores, "
          f"{len(d)} {d[0].platform} device(s); {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    for name in ARGS.cases:
        run_case(name, ARGS)


if __name__ == "__main__":
    main()

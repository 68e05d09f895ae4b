"""Bayesian dosing speed: MAP, a full recommendation, and cold `pkmix dose` processes.

    python benchmarks/bench_dosing.py [--repeats 20] [--skip-cold]

Prints one table:

* MAP (warm): `map_estimate` for the vancomycin example (2 levels, Goti 2018), with and
  without the prediction curve; minimum and median of the repeats. Target < 20 ms.
* recommendation (warm): `recommend` with 2,000 SIR posterior draws (every interval,
  both roundings, the current regimen, PTA), from a MAP result; and the same plus
  the MAP. Target < 1 s.
* cold process: `pkmix dose --model vancomycin_goti2018 --patient ...` in a new
  Python process with an empty JAX compilation cache (everything compiles). Target
  < 10 s.
* second cold process: the same command again, now with the persistent compilation
  cache the first one filled (pkmix turns it on at import), and, when `flatbuffers` is
  installed, the traced programs the first one exported (see pkmix.dosing.map's
  program cache). Target < 4 s.

* phenytoin (Grasela 1983, Michaelis-Menten ODE): `recommend` for its example
  patient at the default options (trough 10-20 mg/L, 2,000 SIR draws); the first call
  in the process (tracing and compiling the ODE search, reported separately) and warm.
  Target < 30 s warm. Without --skip-cold also the command itself,
  `pkmix dose --model phenytoin_grasela1983 --patient tests/data/patients/...json`, in a
  new process with an empty compilation cache and again with it filled.

Timings follow the usual rules: a warm-up call first, block until ready, minimum of
repeats. The load average is printed with them: on a shared machine it explains much
of the spread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATIENT = ROOT / "examples" / "vancomycin_tdm" / "patient.json"
MODEL = "vancomycin_goti2018"


def timed(fn, repeats):
    fn()  # warm-up (compiles)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


PHT_MODEL = "phenytoin_grasela1983"
PHT_PATIENT = ROOT / "tests" / "data" / "patients" / "phenytoin_grasela1983.json"


def cold_process(cache_dir: str, model: str = MODEL, patient: Path = PATIENT, extra=("--target", "auc24=400:600")) \
        -> float:
    env = dict(os.environ, PKMIX_CACHE_DIR=cache_dir)
    # What a user runs: the `pkmix` console script of this environment.
    script = Path(sys.executable).with_name("pkmix")
    launcher = [str(script)] if script.exists() else [sys.executable, "-c",
                                                       "import sys; from pkmix.cli import main; sys.exit(main())"]
    cmd = launcher + ["dose", "--model", model, "--patient", str(patient), "--no-audit", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"pkmix dose failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-cold", action="store_true", help="skip the two cold-process measurements")
    args = parser.parse_args()

    rows = []
    if not args.skip_cold:
        with tempfile.TemporaryDirectory(prefix="pkmix-bench-cache-") as cache:
            load = os.getloadavg()[0]
            first = cold_process(cache)
            second = cold_process(cache)
        rows.append(("cold `pkmix dose` process (empty compilation cache)", first, first, 10.0, load))
        rows.append(("second cold process (persistent compilation cache)", second, second, 4.0, load))
        with tempfile.TemporaryDirectory(prefix="pkmix-bench-cache-") as cache:
            load = os.getloadavg()[0]
            first = cold_process(cache, PHT_MODEL, PHT_PATIENT, ())
            second = cold_process(cache, PHT_MODEL, PHT_PATIENT, ())
        rows.append(("phenytoin: cold `pkmix dose` process (empty cache)", first, first, None, load))
        rows.append(("phenytoin: second cold process (cache filled)", second, second, None, load))

    import jax

    import pkmix.dosing as dosing
    from pkmix.dosing.posterior import sir_draws

    patient = dosing.load_patient(PATIENT)
    fit = dosing.map_estimate(MODEL, patient)

    def map_full():
        jax.block_until_ready(dosing.map_estimate(MODEL, patient).eta)

    def map_core():
        jax.block_until_ready(dosing.map_estimate(MODEL, patient, curve_points=0).eta)

    def rec_only():
        dosing.recommend(MODEL, fit, "auc24=400:600", n_samples=2000, curve=False)

    def rec_with_curve():
        dosing.recommend(MODEL, fit, "auc24=400:600", n_samples=2000)

    def rec_from_patient():
        f = dosing.map_estimate(MODEL, patient, curve_points=0)
        dosing.recommend(MODEL, f, "auc24=400:600", n_samples=2000, curve=False)

    load = os.getloadavg()[0]
    best, med = timed(map_core, args.repeats)
    rows.append(("MAP, warm (estimates + covariance + SEs)", best, med, 0.020, load))
    best, med = timed(map_full, args.repeats)
    rows.append(("MAP + prediction curve, warm", best, med, None, load))
    n = max(args.repeats // 4, 3)
    best, med = timed(rec_only, n)
    rows.append(("recommendation, 2,000 SIR draws, warm", best, med, 1.0, os.getloadavg()[0]))
    best, med = timed(rec_with_curve, n)
    rows.append(("recommendation + regimen curve, warm", best, med, None, os.getloadavg()[0]))
    best, med = timed(rec_from_patient, n)
    rows.append(("MAP + recommendation, warm", best, med, 1.0, os.getloadavg()[0]))
    # The Michaelis-Menten ODE model: the first call traces and compiles (its time less
    # the warm time is the compilation), then warm repeats.
    pht_fit = dosing.map_estimate(PHT_MODEL, PHT_PATIENT, curve_points=0)

    def pht_rec():
        dosing.recommend(PHT_MODEL, pht_fit, n_samples=2000, curve=False)

    start = time.perf_counter()
    pht_rec()
    first_call = time.perf_counter() - start
    best, med = timed(pht_rec, max(args.repeats // 4, 3))
    rows.append(("phenytoin (MM ODE): first recommendation in process (disk caches as found)", first_call, first_call, None,
                 os.getloadavg()[0]))
    rows.append(("  of which tracing + compiling (first - warm median)", first_call - med, first_call - med, None,
                 os.getloadavg()[0]))
    rows.append(("phenytoin recommendation, 2,000 SIR draws, warm", best, med, 30.0, os.getloadavg()[0]))
    draws = sir_draws(fit, n_samples=2000)

    print(f"pkmix dosing benchmark: {MODEL}, {PATIENT.relative_to(ROOT)} "
          f"({fit.bound.n_observations} levels, {fit.bound.n_records} records); "
          f"{os.cpu_count()} CPUs, JAX {jax.__version__} on {jax.devices()[0].platform}")
    print(f"SIR: {draws.stats['n_proposals']} proposals, effective sample size {draws.stats['ess']:.0f}")
    import importlib.util

    if importlib.util.find_spec("flatbuffers") is not None:
        print("traced-program cache (jax.export, needs flatbuffers): on")
    else:
        print("traced-program cache (jax.export) off: flatbuffers is not installed, so a second process "
              "traces every program again (only XLA compilation is cached)")
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'min':>9}  {'median':>9}  {'target':>8}  {'ok':>3}  load")
    for name, best, med, target, load in rows:
        ok = "" if target is None else ("yes" if best < target else "NO")
        tgt = "" if target is None else _fmt(target)
        print(f"{name:<{width}}  {_fmt(best):>9}  {_fmt(med):>9}  {tgt:>8}  {ok:>3}  {load:.1f}")


def _fmt(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


if __name__ == "__main__":
    main()

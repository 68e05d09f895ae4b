"""Fit benchmarks (FOCE-I): cold processes, warm fits, and simulated datasets.

Prints one table. Each row:
  * cold (no cache): a fresh Python process with an empty JAX compilation cache: import,
    compile, fit, covariance step (wall time of the whole process; no diagnostics table);
  * cold (cache): the same again, a new process reusing the persistent compilation cache;
  * warm fit: in one process, the second fit of the same model and data shape (nothing
    compiles), covariance step included; minimum of 3 repeats;
  * compile: what the first in-process fit spent compiling (into an empty cache);
  * diagnostics: the diagnostics table (PRED ... CWRES; NPDE only on request) of a warm
    fit, which ``pkmix fit`` and ``pkmix.fit`` add by default.
Run: python benchmarks/bench_fit.py [--quick]

``--cli`` instead times whole ``pkmix fit`` processes on theophylline and the simulated
2-cmt oral 120 x 19 case (``--quick``: theophylline only) at the command's defaults
(FOCE-I, covariance step, CWRES table, results written), with an empty cache and with
the cache the first one left (JAX's compilation cache and pkmix's exported programs),
each beside a yardstick process (``python -c "import jax, pandas"`` and a
fixed NumPy workload) run just before it, so that runs on a shared or loaded machine can
be compared by their ratio to the yardstick. ``--repeats`` rounds; the minimum is shown.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def simulated(n_subjects, n_obs, two_cmt, seed=1):
    """A 1- or 2-cmt oral dataset simulated with numpy (true parameters near the fit's start)."""
    rng = np.random.default_rng(seed)
    times = np.geomspace(0.25, 24.0, n_obs)
    rows = []
    for i in range(1, n_subjects + 1):
        ka, cl, v = np.exp(np.log([1.2, 3.0, 30.0]) + rng.normal(0, 0.25, 3))
        if two_cmt:
            q, v2 = 2.0, 40.0
            k10, k12, k21 = cl / v, q / v, q / v2
            s = k10 + k12 + k21
            disc = np.sqrt(s * s - 4 * k10 * k21)
            a, b = (s + disc) / 2, (s - disc) / 2
            c = 100 * ka / v * ((k21 - a) / ((ka - a) * (b - a)) * np.exp(-a * times)
                                + (k21 - b) / ((ka - b) * (a - b)) * np.exp(-b * times)
                                + (k21 - ka) / ((a - ka) * (b - ka)) * np.exp(-ka * times))
        else:
            k = cl / v
            c = 100 * ka / (v * (ka - k)) * (np.exp(-k * times) - np.exp(-ka * times))
        dv = c * (1 + 0.1 * rng.normal(size=times.size))
        rows.append(dict(ID=i, TIME=0.0, DV=0.0, AMT=100.0, EVID=1, MDV=1, CMT=1))
        rows += [dict(ID=i, TIME=t, DV=y, AMT=0.0, EVID=0, MDV=0, CMT=2) for t, y in zip(times, dv)]
    return pd.DataFrame(rows)


MODEL_CODE = {
    "1cmt": "pkmix.one_compartment(depot=True)",
    "2cmt": "pkmix.two_compartment(depot=True)",
}


def model_source(structure, ode):
    if structure == "1cmt":
        ind = '{"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl), "v": jnp.exp(p.tv + p.eta_v)}'
        theta = '{"tka": 0.1, "tcl": 1.0, "tv": 3.3}'
        rhs = ('lambda t, a, p: {"depot": -p.ka * a.depot, "central": p.ka * a.depot - p.cl / p.v * a.central}')
        cmts = '["depot", "central"]'
        obs = "a.central / p.v"
    else:
        ind = ('{"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl), "v1": jnp.exp(p.tv + p.eta_v),'
               ' "q": jnp.exp(p.tq), "v2": jnp.exp(p.tv2)}')
        theta = '{"tka": 0.1, "tcl": 1.0, "tv": 3.3, "tq": 0.7, "tv2": 3.7}'
        rhs = ('lambda t, a, p: {"depot": -p.ka * a.depot, "central": p.ka * a.depot - (p.cl + p.q) / p.v1 * a.central'
               ' + p.q / p.v2 * a.peripheral, "peripheral": p.q / p.v1 * a.central - p.q / p.v2 * a.peripheral}')
        cmts = '["depot", "central", "peripheral"]'
        obs = "a.central / p.v1"
    struct = f"pkmix.ODE({cmts}, {rhs}, rtol=1e-8, atol=1e-10)" if ode else MODEL_CODE[structure]
    return textwrap.dedent(f"""
        import jax.numpy as jnp
        import pkmix
        model = pkmix.Model(name="{structure}{'_ode' if ode else ''}", theta={theta},
            omega={{"eta_ka": 0.1, "eta_cl": 0.1, "eta_v": 0.1}}, sigma={{"prop_sd": 0.2}},
            individual=lambda p: {ind}, structure={struct},
            observe=lambda a, p: {obs}, error=pkmix.proportional("prop_sd"))
    """)


def cold_process(model_py, data_csv, cache_dir):
    code = textwrap.dedent(f"""
        import runpy, pkmix
        model = runpy.run_path({str(model_py)!r})["model"]
        r = pkmix.fit(model, {str(data_csv)!r}, progress=False, diagnostics=False)
        print(repr(r.ofv), r.converged)
    """)
    env = dict(os.environ, PKMIX_CACHE_DIR=str(cache_dir))
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, out.stdout.strip()


YARDSTICK = ("import jax, pandas, numpy as np; a = np.random.default_rng(0).normal(size=(400, 400)); "
             "[np.linalg.eigh(a @ a.T) for _ in range(20)]")


def timed_process(argv, env=None):
    start = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start


def cli_rows(repeats, work, quick=False):
    """Whole ``pkmix fit`` processes (empty and warm cache) beside yardstick processes:
    theophylline, and (unless ``quick``) the simulated 2-cmt oral 120 x 19 case."""
    cases = [("theophylline", ROOT / "examples/theophylline/model.py", ROOT / "examples/theophylline/theo_sd.csv")]
    if not quick:
        model_py, data_csv = work / "model_2cmt_cli.py", work / "data_2cmt_120.csv"
        model_py.write_text(model_source("2cmt", False))
        simulated(120, 19, True).to_csv(data_csv, index=False)
        cases.append(("2-cmt oral 120 x 19", model_py, data_csv))
    rows = []
    for r in range(repeats):
        for label, model_py, data_csv in cases:
            cache = Path(tempfile.mkdtemp(prefix="cache_cli_", dir=work))
            env = dict(os.environ, PKMIX_CACHE_DIR=str(cache))
            fit = [sys.executable, "-c", "import sys; from pkmix.cli import main; sys.exit(main(sys.argv[1:]))",
                   "fit", str(model_py), str(data_csv), "--quiet", "--out", str(work / f"out_{r}")]
            row = {"case": label, "round": r + 1}
            row["yardstick (s)"] = timed_process([sys.executable, "-c", YARDSTICK])
            row["pkmix fit, empty cache (s)"] = timed_process(fit, env)
            row["yardstick again (s)"] = timed_process([sys.executable, "-c", YARDSTICK])
            row["pkmix fit, warm cache (s)"] = timed_process(fit, env)
            rows.append(row)
            print(pd.DataFrame([row]).to_string(index=False, float_format=lambda v: f"{v:.2f}"), flush=True)
    table = pd.DataFrame(rows)
    for label, _, _ in cases:
        best = table[table["case"] == label].drop(columns=["case", "round"]).min()
        print(f"\n{label}, minimum of {repeats} rounds: " + ", ".join(f"{k} {v:.2f}" for k, v in best.items()))
        print(f"ratio to the yardstick: empty cache {best['pkmix fit, empty cache (s)'] / best['yardstick (s)']:.2f}, "
              f"warm cache {best['pkmix fit, warm cache (s)'] / best['yardstick again (s)']:.2f}")


def in_process(model_py, data_csv, repeats=3):
    import runpy

    import pkmix

    model = runpy.run_path(str(model_py))["model"]
    data = pkmix.read_nonmem(data_csv)
    first = pkmix.fit(model, data, progress=False, diagnostics=False)
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        r = pkmix.fit(model, data, progress=False, diagnostics=False)
        warm.append(time.perf_counter() - start)
    pkmix.fit(model, data, progress=False)  # compiles the diagnostics program
    diagnostics_s = pkmix.fit(model, data, progress=False).timing["diagnostics_s"]
    return first, r, min(warm), diagnostics_s


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="only theophylline and phenobarbital")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-process rows")
    parser.add_argument("--cli", action="store_true",
                        help="only whole `pkmix fit` processes (theophylline, 2-cmt 120 x 19) beside a yardstick "
                             "process")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of --cli (default 3)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pkmix_bench_"))
    if args.cli:
        cli_rows(args.repeats, work, quick=args.quick)
        return
    # The in-process rows compile into an empty cache of their own (read when pkmix is
    # imported, below), so "compile" is a real compilation, not a read of the user's cache.
    os.environ["PKMIX_CACHE_DIR"] = str(Path(tempfile.mkdtemp(prefix="cache_inprocess_", dir=work)))
    cases = [
        ("theophylline (12 subj)", ROOT / "examples/theophylline/model.py", ROOT / "examples/theophylline/theo_sd.csv"),
        ("phenobarbital (59 subj)", ROOT / "examples/phenobarbital/model.py",
         ROOT / "examples/phenobarbital/pheno.csv"),
    ]
    if not args.quick:
        for n, structure, ode, n_obs in ((120, "1cmt", False, 19), (120, "2cmt", False, 19),
                                         (120, "1cmt", True, 19), (120, "2cmt", True, 19),
                                         (1000, "1cmt", False, 10)):
            label = f"simulated {structure}{' ODE' if ode else ''} ({n} subj x {n_obs} obs)"
            model_py = work / f"model_{structure}_{ode}.py"
            model_py.write_text(model_source(structure, ode))
            data_csv = work / f"data_{structure}_{n}.csv"
            if not data_csv.exists():
                simulated(n, n_obs, structure == "2cmt").to_csv(data_csv, index=False)
            cases.append((label, model_py, data_csv))

    rows = []
    for label, model_py, data_csv in cases:
        row = {"case": label}
        if not args.no_cold:
            cache = Path(tempfile.mkdtemp(prefix="cache_", dir=work))
            row["cold no cache (s)"], _ = cold_process(model_py, data_csv, cache)
            row["cold with cache (s)"], _ = cold_process(model_py, data_csv, cache)
        first, last, warm, diagnostics_s = in_process(model_py, data_csv)
        row.update({"compile (s)": first.timing["compile_s"], "warm fit+cov (s)": warm,
                    "diagnostics (s)": diagnostics_s,
                    "iterations": last.iterations, "OFV": last.ofv, "converged": last.converged})
        rows.append(row)
        print(pd.DataFrame([row]).to_string(index=False, float_format=lambda v: f"{v:.3f}"), flush=True)
    import jax

    print(f"\nFOCE-I, sandwich covariance step, {os.cpu_count()} CPU cores, device {jax.devices()[0]}")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()

"""Trial simulation end to end: simulate R replicate trials, fit each with the full and
the reduced model in one compiled program per model (``fit_batch``: vmapped over
replicates, sharded over every visible device), and report bias, precision, coverage
and the power to detect the treatment effect; then a VPC of one replicate.

    python examples/trial_simulation/run.py                 # R = 20 (CPU: a few minutes)
    python examples/trial_simulation/run.py --R 1000        # on a GPU
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python examples/trial_simulation/run.py

The same code runs on one CPU, several (virtual) CPU devices, or GPUs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pkmix  # noqa: E402
from pkmix import fit_batch, likelihood_ratio_test, simulate, vpc  # noqa: E402

from design import design  # noqa: E402
from model import model, reduced  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--R", type=int, default=20, help="replicate trials")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--out", default=None, help="folder for the first replicate's CSV and the tables")
    args = parser.parse_args(argv)
    devices = jax.devices()
    print(f"pkmix {pkmix.__version__}: {len(devices)} device(s) ({devices[0].platform}); {args.R} replicate trials")

    t0 = time.perf_counter()
    reps = simulate(model, design, n=args.R, seed=args.seed, output="arrays")
    print(f"simulated {reps} in {time.perf_counter() - t0:.1f} s")

    full = fit_batch(model, reps)
    t = full.timing
    print(f"full model: converged {full.success_rate:.0%}, compile {t['compile_s']:.1f} s, run {t['run_s']:.1f} s "
          f"({t['fits_per_second']:.2f} fits/s on {t['devices']} device(s))")
    # The whole table: every parameter and column, however wide the terminal.
    print(full.summary().to_string(float_format=lambda v: f"{v:.4g}"))
    null = fit_batch(reduced, reps)
    print(f"reduced model: converged {null.success_rate:.0%}, compile {null.timing['compile_s']:.1f} s, "
          f"run {null.timing['run_s']:.1f} s")
    power = likelihood_ratio_test(full, null)
    lo, hi = power.power_ci
    print(f"power to detect the treatment effect (LRT, chi2 {power.critical:.2f}, df {power.df}): "
          f"{power.power:.0%} (95 % CI {lo:.0%}-{hi:.0%}, {power.n} replicates)")

    data = reps.dataset_of(0)
    check = vpc(model, data, n=200, bins=6, stratify="TRT", seed=1)
    with pd.option_context("display.width", 120, "display.precision", 3):
        print("VPC of replicate 1 (true parameters), stratified by TRT:")
        print(check.percentiles.to_string(index=False))
    print(f"observed percentiles inside their simulated 95 % band: {check.coverage():.0%}")

    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        reps.to_frame([0]).drop(columns="REP").to_csv(out / "replicate_1.csv", index=False, na_rep=".")
        full.estimates.to_csv(out / "estimates_full.csv", index=False)
        full.summary().to_csv(out / "summary_full.csv")
        power.table.to_csv(out / "lrt.csv", index=False)
        print(f"wrote {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

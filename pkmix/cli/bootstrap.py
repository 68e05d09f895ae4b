"""``pkmix bootstrap RUN_DIR [--n N] [--stratify COL] [--seed S] [--acceleration A] [--out DIR]``.

Resamples the subjects of a ``pkmix fit --out`` run with replacement, refits every
replicate in one compiled batch program from the run's estimates, and writes
bootstrap.json (percentile and BCa intervals, bias, shares of successful / boundary /
covariance-failed fits), bootstrap_estimates.csv and bootstrap_distributions.png to
DIR (default RUN_DIR/bootstrap). Exit status: 0 written, 2 bad input.
"""

from __future__ import annotations

import argparse

from ._common import CLIError, check_output, error_exit, fraction, nonnegative_int, output_dir, positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bootstrap", help="nonparametric bootstrap of a fit (replicates refitted in one batch program)",
        description="Resample subjects with replacement, refit all replicates, report percentile and BCa "
                    "intervals, bias and the shares of failed fits.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of `pkmix fit` (holds results.json)")
    parser.add_argument("--n", type=positive_int, default=1000, help="bootstrap replicates (default 1000)")
    parser.add_argument("--stratify", metavar="COL", help="resample subjects within the values of this column")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    parser.add_argument("--level", type=fraction, default=0.95, help="confidence level (default 0.95)")
    parser.add_argument("--acceleration", choices=("jackknife", "regression", "none"), default="jackknife",
                        help="BCa acceleration: jackknife refits (default), regression on the replicates "
                             "(no refits), or none (BC interval)")
    parser.add_argument("--no-covariance", action="store_true", help="skip each replicate's covariance step")
    parser.add_argument("--out", metavar="DIR", type=output_dir, help="output folder (default RUN_DIR/bootstrap)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .. import DatasetError, ModelError
    from ..workflows import bootstrap
    from ._replicates import load_run_dir

    try:
        fit = load_run_dir(args.run_dir)
        out = check_output(args.out or Path(args.run_dir) / "bootstrap", folder=True)
        if args.n < 2:
            raise CLIError("--n: a bootstrap needs at least 2 replicates")
        result = bootstrap(fit, n=args.n, stratify=args.stratify, seed=args.seed, level=args.level,
                           acceleration=None if args.acceleration == "none" else args.acceleration,
                           covariance="none" if args.no_covariance else "sandwich", out=out)
    except (CLIError, DatasetError, ModelError, ValueError) as e:
        return error_exit(str(e))
    print(result)
    print(f"written to {out}")
    return 0

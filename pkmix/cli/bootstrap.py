"""``pkmix bootstrap RUN_DIR [--n N] [--stratify COL] [--seed S] [--acceleration A] [--covariance C] [--out DIR]``.

Resamples the subjects of a ``pkmix fit --out`` run with replacement, refits every
replicate in one compiled batch program from the run's estimates, and writes
bootstrap.json (percentile and BCa intervals, bias, shares of successful / boundary /
covariance-failed fits), bootstrap_estimates.csv and bootstrap_distributions.png to
DIR (default RUN_DIR/bootstrap). Exit status: 0 written, 2 bad input.
"""

from __future__ import annotations

import argparse

from ._common import CLIError, check_output, fraction, positive_int
from ._replicates import add_run_dir, add_seed_and_out, load_run_dir, run_workflow


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bootstrap", help="nonparametric bootstrap of a fit (replicates refitted in one batch program)",
        description="Resample subjects with replacement, refit all replicates, report percentile and BCa "
                    "intervals, bias and the shares of failed fits.")
    add_run_dir(parser)
    parser.add_argument("--n", type=positive_int, default=1000, help="bootstrap replicates (default 1000)")
    parser.add_argument("--stratify", metavar="COL", help="resample subjects within the values of this column")
    parser.add_argument("--level", type=fraction, default=0.95, help="confidence level (default 0.95)")
    parser.add_argument("--acceleration", choices=("jackknife", "regression", "none"), default="jackknife",
                        help="BCa acceleration: jackknife refits (default), regression on the replicates "
                             "(no refits), or none (BC interval)")
    parser.add_argument("--covariance", choices=("none", "sandwich"), default="none",
                        help="each replicate's covariance step: none (default: the intervals need only the "
                             "estimates) or sandwich (standard errors, and the share of failed steps)")
    add_seed_and_out(parser, "output folder (default RUN_DIR/bootstrap)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..workflows import bootstrap

    def work():
        fit = load_run_dir(args.run_dir)
        out = check_output(args.out or Path(args.run_dir) / "bootstrap", folder=True)
        if args.n < 2:
            raise CLIError("--n: a bootstrap needs at least 2 replicates")
        result = bootstrap(fit, n=args.n, stratify=args.stratify, seed=args.seed, level=args.level,
                           acceleration=None if args.acceleration == "none" else args.acceleration,
                           covariance=args.covariance, out=out)
        return result, out

    return run_workflow(work)

"""``pkmix sir RUN_DIR [--samples M] [--resamples m] [--inflation F] [--df NU] [--seed S] [--out DIR]``.

Sampling importance resampling (Dosne et al. 2016) of a ``pkmix fit --out`` run's
parameter uncertainty: proposals from its covariance step (inflated), the OFV of every
proposal in one compiled program, resampling without replacement by importance ratio.
Writes sir.json, sir_proposals.csv, sir_dofv.png and sir_distributions.png to DIR
(default RUN_DIR/sir). Exit status: 0 written, 2 bad input.
"""

from __future__ import annotations

import argparse

from ._common import CLIError, check_output, positive_float, positive_int
from ._replicates import add_run_dir, add_seed_and_out, load_run_dir, run_workflow


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "sir", help="sampling importance resampling of a fit's parameter uncertainty",
        description="SIR: proposals from the covariance step, OFVs in one batched program, resampled by "
                    "importance ratio.")
    add_run_dir(parser)
    parser.add_argument("--samples", type=positive_int, default=1000, help="proposals (default 1000)")
    parser.add_argument("--resamples", type=positive_int, help="resamples (default samples / 5)")
    parser.add_argument("--inflation", type=positive_float, default=1.0,
                        help="factor on the proposal's covariance (default 1)")
    parser.add_argument("--df", type=positive_float, help="a multivariate t proposal with these degrees of freedom")
    add_seed_and_out(parser, "output folder (default RUN_DIR/sir)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..workflows import sir

    def work():
        fit = load_run_dir(args.run_dir)
        out = check_output(args.out or Path(args.run_dir) / "sir", folder=True)
        if args.resamples is not None and args.resamples > args.samples:
            raise CLIError(f"--resamples ({args.resamples}) must not exceed --samples ({args.samples})")
        result = sir(fit, samples=args.samples, resamples=args.resamples, inflation=args.inflation, df=args.df,
                     seed=args.seed, out=out)
        return result, out

    return run_workflow(work)

"""``pkmix sse MODEL DESIGN [--n N] [--alt MODEL2] [--n-subjects 20,40,80] [--seed S] [--out DIR]``.

Stochastic simulation and estimation: N replicates simulated from MODEL (its initial
values, or ``--params``) and DESIGN (a NONMEM-format CSV or a Python file defining
``design``, as for ``pkmix simulate``), fitted in one batch program; bias, relative
bias, RMSE, relative RMSE and Wald CI coverage per parameter; with ``--alt``, the
type I error or power of the likelihood-ratio test, per sample size with
``--n-subjects`` (a power curve, sse_power.png). Writes to DIR (default ./sse).
"""

from __future__ import annotations

import argparse

from ._common import CLIError, fraction, load_model, positive_int
from ._replicates import BATCH_METHODS, add_seed_and_out, run_workflow


def _sizes(text: str) -> list:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got '{text}'") from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"{text}: every size must be a whole number of at least 1")
    return sizes


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "sse", help="stochastic simulation and estimation: bias, precision, coverage, power",
        description="Simulate from a true model and design, fit (and an alternative model), report bias, "
                    "RMSE, coverage and the LRT's power or type I error.")
    parser.add_argument("model", metavar="MODEL", help="the true model: a .py file or a library model name")
    parser.add_argument("design", metavar="DESIGN",
                        help="NONMEM-format CSV (records kept, DV simulated) or a .py file defining `design`")
    parser.add_argument("--n", type=positive_int, default=500, help="replicates per sample size (default 500)")
    parser.add_argument("--alt", metavar="MODEL2", help="an alternative (nested) model for the LRT")
    parser.add_argument("--n-subjects", type=_sizes, metavar="N1,N2,...",
                        help="sample sizes for a power curve (needs a design file defining a TrialDesign)")
    parser.add_argument("--params", metavar="FILE", help="true parameter values: JSON {name: value} or results.json")
    parser.add_argument("--method", choices=BATCH_METHODS, default="focei",
                        help="estimation method of the replicate fits (default focei)")
    parser.add_argument("--alpha", type=fraction, default=0.05, help="the LRT's level (default 0.05)")
    add_seed_and_out(parser, "output folder (default ./sse)", out_default="sse")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..workflows import sse
    from .predict import read_params
    from .simulate import load_design

    def work():
        model = load_model(args.model)
        alt = load_model(args.alt) if args.alt else None
        design = load_design(args.design)
        params = read_params(args.params, model) if args.params else None
        if args.n < 2:
            raise CLIError("--n: an SSE needs at least 2 replicates")
        result = sse(model, design, n=args.n, alt=alt, params=params, n_subjects=args.n_subjects, seed=args.seed,
                     method=args.method, alpha=args.alpha, out=args.out)
        return result, args.out

    return run_workflow(work)

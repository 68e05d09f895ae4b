"""``pkmix report RUN_DIR [--out FILE] [--no-vpc] [--n-sim N] [--seed S]``.

Writes one self-contained HTML file (default RUN_DIR/report.html) from what ``pkmix fit
MODEL DATA --out RUN_DIR`` wrote: the model, the data summary, the parameter table,
OFV/AIC/BIC, convergence and covariance-step status, timing, goodness-of-fit, individual
fit, eta and VPC plots. The plots that need the model and data (individual fits, VPC)
are left out, and the report says so, when the paths recorded in results.json no
longer load. Exit status: 0 written, 2 not a run directory.
"""

from __future__ import annotations

import argparse

from ._common import error_exit


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report", help="a self-contained HTML report of a fit's output folder",
        description="Write an HTML report (tables and plots, images embedded) of a `pkmix fit --out` folder.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of `pkmix fit` (holds results.json)")
    parser.add_argument("--out", metavar="FILE", help="the HTML file to write (default RUN_DIR/report.html)")
    parser.add_argument("--no-vpc", action="store_true", help="leave out the visual predictive check")
    parser.add_argument("--n-sim", type=int, default=200, help="simulated replicates for the VPC (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the VPC (default 0)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    if args.n_sim < 1:
        return error_exit(f"--n-sim must be at least 1, got {args.n_sim}")
    try:
        path = write_report(args.run_dir, args.out, vpc=not args.no_vpc, n_sim=args.n_sim, seed=args.seed)
    except (FileNotFoundError, ValueError) as e:
        return error_exit(str(e))
    print(f"wrote {path}")
    return 0

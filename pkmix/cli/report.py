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
from pathlib import Path

from ._common import CLIError, check_output, error_exit, nonnegative_int, output_file, positive_int


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report", help="a self-contained HTML report of a fit's output folder",
        description="Write an HTML report (tables and plots, images embedded) of a `pkmix fit --out` folder.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of `pkmix fit` (holds results.json)")
    parser.add_argument("--out", metavar="FILE", type=output_file,
                        help="the HTML file to write (default RUN_DIR/report.html)")
    parser.add_argument("--no-vpc", action="store_true", help="leave out the visual predictive check")
    parser.add_argument("--n-sim", type=positive_int, default=200,
                        help="simulated replicates for the VPC (default 200)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="random seed for the VPC (default 0)")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from .._progress import while_running
    from ..report import write_report

    try:
        run_dir = Path(args.run_dir)
        if not run_dir.is_dir():
            what = "is a file" if run_dir.exists() else "does not exist"
            raise CLIError(f"{run_dir} {what}: RUN_DIR is the --out folder of `pkmix fit`, which holds results.json")
        if not (run_dir / "results.json").is_file():
            raise CLIError(f"{run_dir} has no results.json (is it the --out folder of `pkmix fit`?)")
        check_output(args.out if args.out else run_dir / "report.html", folder=False)
        with while_running("writing the report (plots, VPC)"):
            path = write_report(run_dir, args.out, vpc=not args.no_vpc, n_sim=args.n_sim, seed=args.seed)
    except (CLIError, FileNotFoundError, ValueError) as e:
        return error_exit(str(e))
    except OSError as e:
        return error_exit(f"could not write the report: {e}")
    print(f"wrote {path}")
    return 0

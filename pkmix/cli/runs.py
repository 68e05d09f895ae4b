"""``pkmix runs DIR... [--reference RUN]``: the run table of several ``pkmix fit --out`` folders.

One row per run, as PsN's runrecord or Pirana's run list: run, description, method, OFV,
dOFV against the reference run (default the first), estimated parameters, AIC, BIC,
condition number, convergence, covariance step, time. Exit status: 0, 2 a folder that
is not a run folder.
"""

from __future__ import annotations

import argparse

from ._common import error_exit


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("runs", help="a run table (OFV, dOFV, AIC/BIC, convergence) of fit folders",
                                   description="Print a run table of `pkmix fit --out` folders.")
    parser.add_argument("run_dirs", metavar="DIR", nargs="+", help="--out folders of `pkmix fit`")
    parser.add_argument("--reference", metavar="RUN",
                        help="the run (folder name) dOFV is taken against (default the first)")
    parser.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..runs import format_run_table, load_runs, run_table

    try:
        table = run_table(load_runs(args.run_dirs), args.reference)
    except (FileNotFoundError, ValueError) as e:
        return error_exit(str(e))
    print(format_run_table(table))
    if args.csv:
        try:
            table.to_csv(args.csv, index=False)
        except OSError as e:
            return error_exit(f"could not write {args.csv}: {e}")
    return 0

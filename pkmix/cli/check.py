"""``pkmix check DATA [--model MODEL]``: validate a NONMEM-format dataset.

Prints the dataset summary (subjects, observations, doses, covariates and their
ranges, BLQ count) when the data are valid, or every rule they break (one line per
violation, with record number, ID and column) and exits with status 2. With
``--model`` the data are also checked against the model: compartments that exist,
covariates present and never missing, the occasion column for IOV.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ._common import CLIError, add_drop_argument, error_exit, load_model


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "check",
        help="validate a NONMEM-format dataset and summarise it",
        description=(
            "Validate a NONMEM-format dataset. Prints a summary when it is valid; "
            "otherwise lists every violation (record, ID, column, rule) and exits with status 2."
        ),
    )
    parser.add_argument("data", metavar="DATA", help="NONMEM-format CSV (comma- or whitespace-separated)")
    parser.add_argument(
        "--model", metavar="MODEL",
        help="also check the data against this model (a .py file defining `model`, or a library model name)",
    )
    add_drop_argument(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from .. import DatasetError, DatasetWarning, read_nonmem

    model = None
    if args.model is not None:
        try:
            model = load_model(args.model)
        except CLIError as e:
            return error_exit(str(e))
        except Exception as e:  # a model file that fails to define its model
            return error_exit(f"could not load model {args.model}: {type(e).__name__}: {e}")

    # Warnings (a subject without observations) are part of the report, not noise on
    # stderr from the warnings machinery: collect them and print them after the summary.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DatasetWarning)
        try:
            dataset = read_nonmem(args.data, model=model, drop=args.drop)
        except DatasetError as e:
            # The report is the command's output, so it goes to stdout (like a linter's).
            print(str(e))
            return 2
        except FileNotFoundError as e:
            return error_exit(str(e))

    print(dataset.summary())
    if model is not None:
        print(f"  model         {getattr(model, 'name', args.model)}: compartments, covariates "
              "and occasions consistent with the data")
    for w in caught:
        if issubclass(w.category, DatasetWarning):
            print(f"warning: {w.message}")
        else:  # not ours: hand it back to the normal machinery
            warnings.showwarning(w.message, w.category, w.filename, w.lineno, file=sys.stderr)
    return 0

"""``pkmix compare A B``: two fits' estimates side by side, and the likelihood-ratio test
when the models are nested (see ``pkmix.runs`` for how nestedness is decided).
Exit status: 0, 2 a folder that is not a run folder.
"""

from __future__ import annotations

import argparse

from ._common import error_exit


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("compare", help="two fits side by side, with the likelihood-ratio test",
                                   description="Compare two `pkmix fit --out` folders: estimates side by side "
                                               "and, for nested models, the likelihood-ratio test.")
    parser.add_argument("a", metavar="A", help="a --out folder of `pkmix fit`")
    parser.add_argument("b", metavar="B", help="another one")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..runs import compare, format_comparison, load_runs

    try:
        a, b = load_runs([args.a, args.b])
    except (FileNotFoundError, ValueError) as e:
        return error_exit(str(e))
    print(format_comparison(compare(a, b)))
    return 0

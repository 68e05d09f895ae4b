"""The ``pkmix`` command line: one module per subcommand, each with ``add_parser`` and ``run``.

Exit codes: 0 success, 1 a run that failed (e.g. a fit that did not converge when
``--strict``), 2 bad input (dataset violations, a model that does not load).
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("check", "predict", "fit", "dose", "simulate", "report")  # fit also registers evaluate


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="pkmix", description="Population pharmacokinetics on JAX.")
    parser.add_argument("--version", action="version", version=f"pkmix {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue  # subcommand not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

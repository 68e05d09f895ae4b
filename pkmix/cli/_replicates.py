"""Pieces shared by ``pkmix bootstrap``, ``pkmix sir`` and ``pkmix sse``: the run folder
they start from, the options they have in common, and how a run ends (the result
printed, or an input error reported with exit status 2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import CLIError, error_exit, nonnegative_int, output_dir

# Estimation methods fit_batch runs (SAEM's own loop is not batched).
BATCH_METHODS = ("fo", "foce", "focei", "laplace", "agq", "imp")


def add_run_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out folder of `pkmix fit` (holds results.json)")


def add_seed_and_out(parser: argparse.ArgumentParser, out_help: str, out_default: str | None = None) -> None:
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", metavar="DIR", type=output_dir, default=out_default, help=out_help)


def load_run_dir(spec: str):
    """The ``FitResult`` of a ``pkmix fit --out`` folder, with its model and data
    (``pkmix.load_run``, the loader ``pkmix report`` uses); a CLIError when the folder
    is not a run or its model or data no longer load."""
    from ..report import load_run

    run_dir = Path(spec)
    if not run_dir.is_dir():
        what = "is a file" if run_dir.exists() else "does not exist"
        raise CLIError(f"{run_dir} {what}: RUN_DIR is the --out folder of `pkmix fit`, which holds results.json")
    try:
        fit = load_run(run_dir)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from None
    if fit.model is None or fit.dataset is None:
        raise CLIError(f"{run_dir}: the run's model or data could not be loaded: " + " ".join(fit.load_notes))
    return fit


def run_workflow(work) -> int:
    """``work()`` returns (result, output folder): the result is printed with where it
    was written (exit 0); bad input (a CLIError, a dataset or model error, a ValueError
    from the workflow's checks) is reported on stderr with exit 2."""
    from .. import DatasetError, ModelError

    try:
        result, out = work()
    except (CLIError, DatasetError, ModelError, ValueError) as e:
        return error_exit(str(e))
    print(result)
    print(f"written to {out}")
    return 0

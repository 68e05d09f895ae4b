"""Pieces shared by ``pkmix bootstrap`` and ``pkmix sir``: the run folder they start from."""

from __future__ import annotations

from pathlib import Path

from ._common import CLIError


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

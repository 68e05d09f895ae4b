"""Helpers shared by subcommands: loading a model file, printing errors."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


class CLIError(Exception):
    """A problem with the command's input; printed without a traceback, exit status 2."""


def load_model(spec: str):
    """A model from a Python file defining a module-level ``model``, or the name of a
    model in the library (``models/`` shipped as ``pkmix.models``)."""
    path = Path(spec)
    if path.suffix == ".py" or path.exists():
        if not path.exists():
            raise CLIError(f"model file not found: {spec}")
        module_name = f"_pkmix_user_model_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.path.insert(0, str(path.parent.resolve()))
        try:
            loader_spec.loader.exec_module(module)
        finally:
            sys.path.pop(0)
    else:
        try:
            module = importlib.import_module(f"pkmix.models.{spec}")
        except ModuleNotFoundError:
            raise CLIError(f"'{spec}' is neither a model file nor a model in the library") from None
    model = getattr(module, "model", None)
    if model is None:
        raise CLIError(f"{spec} does not define a module-level 'model'")
    return model


def error_exit(message: str, code: int = 2) -> int:
    print(f"pkmix: error: {message}", file=sys.stderr)
    return code


def default_data_for(model_path: str) -> str | None:
    """The CSV next to an example model, when the user gives none."""
    folder = Path(model_path).parent
    csvs = sorted(folder.glob("*.csv")) if folder.exists() else []
    return str(csvs[0]) if len(csvs) == 1 else None


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

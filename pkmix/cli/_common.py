"""Helpers shared by subcommands: the one model loader, argument types, printing errors."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType


class CLIError(Exception):
    """A problem with the command's input; printed without a traceback, exit status 2."""


def exec_python_file(path: Path, kind: str = "model") -> ModuleType:
    """Run a user's Python file (a model, a design) as a module; any failure becomes a
    CLIError naming file:line."""
    module_name = f"_pkmix_user_{kind}_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise CLIError(f"{path}: not a Python file that can be loaded")
    module = importlib.util.module_from_spec(loader_spec)
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        loader_spec.loader.exec_module(module)
    except SyntaxError as e:
        raise CLIError(f"{e.filename or path}:{e.lineno}: syntax error: {e.msg}") from None
    except ImportError as e:
        raise CLIError(f"{path}:{_line_in(e, path)}: {type(e).__name__}: {e}") from None
    except Exception as e:  # the model file's own code failed while defining the model
        raise CLIError(f"{path}:{_line_in(e, path)}: {type(e).__name__}: {e}") from None
    finally:
        sys.path.pop(0)
    return module


def _line_in(error: BaseException, path: Path) -> str:
    """The line of ``path`` where ``error`` was raised (the innermost frame in that file)."""
    line = "?"
    target = str(path.resolve())
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename and str(Path(frame.filename).resolve()) == target:
            line = str(frame.lineno)
    return line


def load_model_module(spec: str):
    """``(model, METADATA, module)`` from a Python file defining a module-level ``model``,
    or the name of a model in the library (``models/`` shipped as ``pkmix.models``).

    The one model loader of the command line: every failure (missing file, syntax
    error, failing import, no ``model``, a ``model`` that is not a ``pkmix.Model``) is
    a CLIError whose message names the file (and line) and what is wrong.
    """
    from .. import Model

    path = Path(spec)
    if path.suffix.lower() in (".mod", ".ctl"):  # a NONMEM control stream, translated
        from ..nonmem import ControlStreamError, load

        if not path.is_file():
            raise CLIError(f"control stream not found: {spec}")
        try:
            module = load(path)
        except ControlStreamError as e:
            raise CLIError(f"{spec}: {e}") from None
        except Exception as e:  # the translated model failed pkmix's model check
            raise CLIError(f"{spec}: the translated model is not valid: {type(e).__name__}: {e}") from None
    elif path.suffix == ".py" or path.exists():
        if not path.exists():
            raise CLIError(f"model file not found: {spec}")
        if path.is_dir():
            raise CLIError(f"model: {spec} is a folder, not a Python file defining `model`")
        module = exec_python_file(path)
    else:
        import pkmix.models as library

        try:
            module = library.load(spec)
        except KeyError:
            raise CLIError(f"'{spec}' is neither a model file nor a model in the library "
                           f"(available: {', '.join(library.available())})") from None
    model = getattr(module, "model", None)
    if model is None:
        raise CLIError(f"{spec} does not define a module-level 'model'")
    if not isinstance(model, Model):
        raise CLIError(f"{spec}: 'model' is {a_or_an(type(model).__name__)}, not a pkmix.Model")
    metadata = getattr(module, "METADATA", None) or {}
    if not isinstance(metadata, dict):
        raise CLIError(f"{spec}: 'METADATA' is {a_or_an(type(metadata).__name__)}, not a dict")
    return model, dict(metadata), module


def a_or_an(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def load_model(spec: str):
    """The ``pkmix.Model`` of ``spec`` (see ``load_model_module``)."""
    return load_model_module(spec)[0]


def _number_type(kind, rule: str, ok):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got '{text}'") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text}: must be {rule}")
        return value

    parse.__name__ = f"{kind.__name__} ({rule})"
    return parse


# argparse types that check a numeric option's range at parse time (exit 2, usage message).
positive_int = _number_type(int, "a whole number of at least 1", lambda v: v >= 1)
nonnegative_int = _number_type(int, "a whole number of at least 0", lambda v: v >= 0)
positive_float = _number_type(float, "a finite number above 0", lambda v: 0 < v < float("inf"))
nonnegative_float = _number_type(float, "a finite number of at least 0", lambda v: 0 <= v < float("inf"))
finite_float = _number_type(float, "a finite number", lambda v: abs(v) < float("inf"))
fraction = _number_type(float, "between 0 and 1 (e.g. 0.95)", lambda v: 0 < v < 1)  # levels, alphas


def positive_list(text: str) -> str:
    """An argparse type for comma-separated positive numbers (``8,12,24``): checked at
    parse time, handed on as the text."""
    parts = [x.strip() for x in text.split(",") if x.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("no values given")
    for x in parts:
        try:
            v = float(x)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None
        if not 0 < v < float("inf"):
            raise argparse.ArgumentTypeError(f"{x}: every value must be a finite number above 0")
    return text


positive_list.__name__ = "comma-separated positive numbers"


def _output_problem(path: Path, expect_dir: bool) -> str | None:
    """Why ``path`` cannot be written (as a folder or as a file), or None: checked before
    the work, so a fit is not lost to a bad --out at its end."""
    if path.exists():
        if expect_dir and not path.is_dir():
            return f"{path} is a file, not a folder"
        if not expect_dir and path.is_dir():
            return f"{path} is a folder; give a file name"
        if not os.access(path, os.W_OK):
            return f"{path} is not writable"
        return None
    # The first existing folder above it must be a folder we may create things in.
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create {path}: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {path}: no permission to write in {parent}"
    return None


def check_output(path, *, folder: bool) -> Path:
    """``path`` as a Path, or a CLIError when it cannot be written (see ``_output_problem``)."""
    path = Path(path)
    problem = _output_problem(path, folder)
    if problem:
        raise CLIError(problem)
    return path


def _output_type(folder: bool):
    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError("empty path")
        problem = _output_problem(Path(text), folder)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return text

    parse.__name__ = "output folder" if folder else "output file"
    return parse


# argparse types for where a command writes: checked at parse time (exit 2), before any work.
output_dir = _output_type(folder=True)
output_file = _output_type(folder=False)


def add_drop_argument(parser) -> None:
    """``--drop COL`` (repeatable): the one spelling of it on check, fit, evaluate and predict."""
    parser.add_argument("--drop", metavar="COL", action="append", default=[],
                        help="ignore this data column (like $INPUT COL=DROP); repeatable. Without it "
                             "every column that is not a NONMEM data item is read as a covariate")


def read_dropping(data, model, drop):
    """``data`` (a path or a frame) read with the columns ``drop`` left out, as a
    ``Dataset``; ``data`` unchanged when nothing is dropped (the fit reads it then)."""
    if not drop:
        return data
    from .. import read_nonmem

    return read_nonmem(data, model=model, drop=drop)


def error_exit(message: str, code: int = 2) -> int:
    print(f"pkmix: error: {message}", file=sys.stderr)
    return code


def default_data_for(model_path: str) -> str | None:
    """The CSV next to an example model, when the user gives none."""
    folder = Path(model_path).parent
    csvs = sorted(folder.glob("*.csv")) if folder.exists() else []
    return str(csvs[0]) if len(csvs) == 1 else None


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

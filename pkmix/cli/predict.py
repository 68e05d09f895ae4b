"""``pkmix predict MODEL [DATA] [--params FILE] [--etas FILE] [--out FILE]``.

Population (PRED, every eta 0) and individual (IPRED) predictions at every record of a
dataset, as `pkmix.predict` computes them. Parameters are the model's initial values
unless ``--params`` gives others: a JSON object ``{name: value}`` (thetas, sigmas,
eta names for OMEGA diagonal elements, ``"omega"`` for the full matrix), or a fit's
``results.json`` (its ``theta``, ``omega`` and ``sigma`` are used). Individual etas
come from ``--etas``, a CSV with an ID column and one column per eta (a fit's
``table.csv`` works: the first row of each subject is used); without it IPRED = PRED.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np

from ._common import CLIError, add_drop_argument, default_data_for, error_exit, load_model, output_file, read_dropping

OUTPUT_FLOAT_FORMAT = "%.6g"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="population (PRED) and individual (IPRED) predictions per record",
        description=(
            "Predict every record of a dataset: PRED (etas 0) and IPRED (the given etas). "
            "Prints the table, or writes it as CSV with --out."
        ),
    )
    parser.add_argument("model", metavar="MODEL",
                        help="a .py file defining a module-level `model`, or a library model name")
    parser.add_argument("data", metavar="DATA", nargs="?",
                        help="NONMEM-format CSV (default: the only CSV next to MODEL)")
    parser.add_argument("--params", metavar="FILE",
                        help="JSON parameter values: {name: value} or a fit's results.json")
    parser.add_argument("--etas", metavar="FILE",
                        help="CSV with ID and one column per eta (e.g. a fit's table.csv)")
    parser.add_argument("--out", metavar="FILE", type=output_file,
                        help="write the table here as CSV instead of printing it")
    add_drop_argument(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from .. import DatasetError, ModelError, predict

    data = args.data or default_data_for(args.model)
    if data is None:
        return error_exit(f"no DATA given and no single CSV next to {args.model}")
    try:
        model = load_model(args.model)
        data = read_dropping(data, model, args.drop)
        params = read_params(args.params, model) if args.params else None
        etas = read_etas(args.etas, model) if args.etas else None
        table = predict(model, data, params=params, etas=etas)
    except DatasetError as e:
        print(str(e))
        return 2
    except (CLIError, ModelError, FileNotFoundError, ValueError) as e:
        return error_exit(str(e))
    except KeyError as e:  # an ID of the data that the eta file lacks
        return error_exit(f"{args.etas}: no etas for some subjects of {data}: {e}")

    if args.out:
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            # '.' for missing values, as NONMEM tables and datasets write them.
            table.to_csv(out, index=False, na_rep=".", float_format="%.10g")
        except OSError as e:
            return error_exit(f"could not write {out}: {e}")
        print(f"wrote {len(table)} records ({table['ID'].nunique()} subjects) to {out}")
    else:
        print(table.to_string(index=False, na_rep=".", float_format=lambda x: OUTPUT_FLOAT_FORMAT % x))
    return _report_nonfinite(table, model, data, params)


def _report_nonfinite(table, model, data, params) -> int:
    """A prediction that is not a number is a failed run (exit 1), named on stderr with
    the piece at fault: the table shows it as '.', which would otherwise pass for a
    record without a prediction."""
    pred_bad = ~np.isfinite(table["PRED"].to_numpy(dtype=float))
    bad = pred_bad | ~np.isfinite(table["IPRED"].to_numpy(dtype=float))
    if not bad.any():
        return 0
    first = table.loc[bad].iloc[0]
    why = "with the given etas (PRED, at etas 0, is finite there)"
    if pred_bad.any():
        from .._estimation.fit import _explain_nonfinite
        from .._predict import bind, parameter_values

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset, batch = bind(model, data)
        why = _explain_nonfinite(model, parameter_values(model, params), dataset, batch, "nonmem")
    print(f"pkmix: error: {int(bad.sum())} prediction(s) are not finite, the first at ID {first['ID']:g}, "
          f"TIME {first['TIME']:g} (PRED {first['PRED']}, IPRED {first['IPRED']}): {why}", file=sys.stderr)
    return 1


def read_params(path: str, model) -> dict:
    """Parameter values by name from a JSON file, in the form `pkmix.predict` takes.

    Accepts a flat ``{name: value}`` object or a fit's results.json (``theta``,
    ``sigma`` and, when present, ``iov`` as ``{name: value}``; ``omega`` as
    ``{"names": [...], "matrix": [[...]]}``, reordered to the model's etas).

    Raises:
        CLIError: the file is missing, not JSON, or holds something that is not a number.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except FileNotFoundError:
        raise CLIError(f"parameter file not found: {path}") from None
    except IsADirectoryError:
        raise CLIError(f"parameter file {path} is a folder, not a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CLIError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise CLIError(f"{path}: expected a JSON object of parameter values, got {type(raw).__name__}")

    if isinstance(raw.get("theta"), dict):  # a results.json
        params: dict = {}
        for section in ("theta", "sigma", "iov"):
            for name, value in (raw.get(section) or {}).items():
                params[name] = _number(value, f"{path}: {section} '{name}'")
        omega = raw.get("omega")
        if omega is not None:
            params["omega"] = _omega_from_results(omega, model, path)
        return params

    params = {}
    for name, value in raw.items():
        if name == "omega":
            params[name] = value
        else:
            params[name] = _number(value, f"{path}: '{name}'")
    return params


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CLIError(f"{where} = {value!r} is not a finite number")
    return float(value)


def _omega_from_results(omega, model, path) -> list[list[float]]:
    """results.json's OMEGA, rows and columns put in the model's eta order."""
    if not isinstance(omega, dict) or "names" not in omega or "matrix" not in omega:
        raise CLIError(f"{path}: 'omega' must be {{\"names\": [...], \"matrix\": [[...]]}}")
    names, matrix = list(omega["names"]), omega["matrix"]
    wanted = list(model.eta_names)
    if sorted(names) != sorted(wanted):
        raise CLIError(f"{path}: omega is for etas {names}, the model has {wanted}")
    index = [names.index(n) for n in wanted]
    try:
        return [[_number(matrix[i][j], f"{path}: omega[{i}][{j}]") for j in index] for i in index]
    except (IndexError, TypeError):
        raise CLIError(f"{path}: omega matrix is not {len(names)}x{len(names)}") from None


def read_etas(path: str, model):
    """An ``ID`` + one column per eta frame (one row per subject) from a CSV file.

    Raises:
        CLIError: the file is missing or lacks the ID column or an eta column.
    """
    import pandas as pd

    if Path(path).is_dir():
        raise CLIError(f"eta file {path} is a folder, not a CSV file")
    try:
        frame = pd.read_csv(path, na_values=["."])
    except FileNotFoundError:
        raise CLIError(f"eta file not found: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise CLIError(f"{path} could not be read as a CSV table: {str(e).strip()}") from None
    by_upper = {str(c).upper(): c for c in frame.columns}
    if "ID" not in by_upper:
        raise CLIError(f"{path}: no ID column")
    columns = {}
    for name in model.eta_names:
        column = name if name in frame.columns else by_upper.get(name.upper())
        if column is None:
            raise CLIError(f"{path}: no column for eta '{name}' (columns: {', '.join(map(str, frame.columns))})")
        columns[column] = name
    etas = frame[[by_upper["ID"], *columns]].rename(columns={by_upper["ID"]: "ID", **columns})
    for column in ["ID", *columns.values()]:
        values = pd.to_numeric(etas[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CLIError(f"{path}: row {i + 2}, column {column}: {etas[column].iloc[i]!r} is not a finite number")
        etas[column] = values
    # A fit's table.csv repeats a subject's etas on every record; keep one row each.
    return etas.drop_duplicates(subset="ID", keep="first").reset_index(drop=True)

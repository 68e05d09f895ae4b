"""``pkmix simulate MODEL DESIGN [--n N] [--seed S] [--params FILE] [--censor-blq] [--lloq X] [--out DIR]``.

Simulates N replicate datasets from a model. DESIGN is a NONMEM-format CSV (its dosing
and sampling records and covariates are kept, DV is simulated) or a Python file
defining a module-level ``design`` (a ``pkmix.TrialDesign``). Parameters are the
model's initial values unless ``--params`` gives others (a JSON ``{name: value}`` or a
fit's ``results.json``, as for ``pkmix predict``).

Writes DIR/simulated.csv (every replicate, a REP column first), or with
``--per-replicate`` one DIR/rep_0001.csv ... per replicate (NONMEM-ready, no REP).
Missing values are written as '.'.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (CLIError, a_or_an, error_exit, exec_python_file, load_model, nonnegative_float,
                      nonnegative_int, output_dir, positive_int)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate replicate datasets from a model and a design",
        description="Simulate N replicate NONMEM-format datasets (etas, residual errors, optional BLQ censoring).",
    )
    parser.add_argument("model", metavar="MODEL",
                        help="a .py file defining a module-level `model`, or a library model name")
    parser.add_argument("design", metavar="DESIGN",
                        help="NONMEM-format CSV (records kept, DV simulated) or a .py file defining `design`")
    parser.add_argument("--n", type=positive_int, default=1, help="number of replicates (default 1)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default 0)")
    parser.add_argument("--params", metavar="FILE",
                        help="JSON parameter values: {name: value} or a fit's results.json")
    parser.add_argument("--censor-blq", action="store_true",
                        help="censor observations below the LLOQ (DV = LLOQ, BLQ = 1)")
    parser.add_argument("--lloq", type=nonnegative_float, help="LLOQ for observations without one in the design")
    parser.add_argument("--per-replicate", action="store_true",
                        help="write one CSV per replicate instead of one file with a REP column")
    parser.add_argument("--out", metavar="DIR", type=output_dir, default="simulated",
                        help="output folder (default ./simulated)")
    parser.set_defaults(run=run)
    return parser


def load_design(spec: str):
    """A CSV path as is, or the module-level ``design`` (a ``pkmix.TrialDesign``) of a
    Python file; every failure is a CLIError naming the file (and line)."""
    from .._simulate import TrialDesign

    path = Path(spec)
    if not path.exists():
        raise CLIError(f"design not found: {spec}")
    if path.is_dir():
        raise CLIError(f"design: {spec} is a folder, not a CSV file or a Python file defining `design`")
    if path.suffix != ".py":
        return str(path)
    module = exec_python_file(path, "design")
    design = getattr(module, "design", None)
    if design is None:
        raise CLIError(f"{spec} does not define a module-level 'design'")
    if not isinstance(design, TrialDesign):
        raise CLIError(f"{spec}: 'design' is {a_or_an(type(design).__name__)}, not a pkmix.TrialDesign")
    return design


def run(args: argparse.Namespace) -> int:
    from .. import DatasetError, ModelError
    from .._simulate import simulate
    from .predict import read_params

    try:
        model = load_model(args.model)
        design = load_design(args.design)
        params = read_params(args.params, model) if args.params else None
        frame = simulate(model, design, n=args.n, seed=args.seed, params=params, censor_blq=args.censor_blq,
                         lloq=args.lloq)
    except DatasetError as e:
        print(str(e))
        return 2
    except (CLIError, ModelError, ValueError, FileNotFoundError) as e:
        return error_exit(str(e))
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if args.per_replicate:
            width = max(4, len(str(args.n)))
            for rep, part in frame.groupby("REP", sort=True):
                part.drop(columns="REP").to_csv(out / f"rep_{int(rep):0{width}d}.csv", index=False, na_rep=".")
        else:
            frame.to_csv(out / "simulated.csv", index=False, na_rep=".")
    except OSError as e:
        return error_exit(f"could not write the simulations to {out}: {e}")
    if args.per_replicate:
        print(f"wrote {args.n} replicate file(s) to {out}/ ({len(frame) // args.n} records each)")
    else:
        print(f"wrote {out / 'simulated.csv'}: {args.n} replicate(s), {len(frame)} records")
    return 0

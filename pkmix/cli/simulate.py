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
import importlib.util
import sys
from pathlib import Path

from ._common import CLIError, error_exit, load_model


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
    parser.add_argument("--n", type=int, default=1, help="number of replicates (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--params", metavar="FILE",
                        help="JSON parameter values: {name: value} or a fit's results.json")
    parser.add_argument("--censor-blq", action="store_true",
                        help="censor observations below the LLOQ (DV = LLOQ, BLQ = 1)")
    parser.add_argument("--lloq", type=float, help="LLOQ for observations without one in the design")
    parser.add_argument("--per-replicate", action="store_true",
                        help="write one CSV per replicate instead of one file with a REP column")
    parser.add_argument("--out", metavar="DIR", default="simulated", help="output folder (default ./simulated)")
    parser.set_defaults(run=run)
    return parser


def load_design(spec: str):
    """A CSV path as is, or the module-level ``design`` of a Python file."""
    path = Path(spec)
    if not path.exists():
        raise CLIError(f"design not found: {spec}")
    if path.suffix != ".py":
        return str(path)
    loader_spec = importlib.util.spec_from_file_location(f"_pkmix_design_{abs(hash(str(path.resolve())))}", path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        loader_spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    design = getattr(module, "design", None)
    if design is None:
        raise CLIError(f"{spec} does not define a module-level 'design'")
    return design


def run(args: argparse.Namespace) -> int:
    from .. import DatasetError, ModelError
    from .._simulate import simulate
    from .predict import read_params

    if args.n < 1:
        return error_exit(f"--n must be at least 1, got {args.n}")
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
    out.mkdir(parents=True, exist_ok=True)
    if args.per_replicate:
        width = max(4, len(str(args.n)))
        for rep, part in frame.groupby("REP", sort=True):
            part.drop(columns="REP").to_csv(out / f"rep_{int(rep):0{width}d}.csv", index=False, na_rep=".")
        print(f"wrote {args.n} replicate file(s) to {out}/ ({len(frame) // args.n} records each)")
    else:
        frame.to_csv(out / "simulated.csv", index=False, na_rep=".")
        print(f"wrote {out / 'simulated.csv'}: {args.n} replicate(s), {len(frame)} records")
    return 0

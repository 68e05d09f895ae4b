"""``pkmix fit MODEL DATA [--method ...] [--out DIR]`` and ``pkmix evaluate``.

``fit`` estimates the model, prints the parameter table, and writes DIR/results.json
(every key of the results contract in DESIGN.md, plus ``model_path`` and ``data_path``),
DIR/parameters.csv and DIR/table.csv, the run record DIR/run.json (``pkmix.runs``) and the
NONMEM-style files (sdtab/patab/cotab/catab, $TABLE files, RUN.ext, RUN.lst:
``pkmix.nonmem.tables``; docs/nonmem_outputs.md). ``evaluate`` computes the OFV at the model's
initial values (or ``--params``) without estimating, like NONMEM's MAXEVAL=0.
Exit status: 0 converged, 1 a fit that did not converge (results are still written; with
``--strict`` also one that converged with a warning or whose covariance step failed),
2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

from ._common import (CLIError, add_drop_argument, check_output, default_data_for, error_exit, load_model_module,
                      nonnegative_int, output_dir, positive_int, read_dropping)

METHODS = ("fo", "foce", "focei", "laplace", "agq", "imp", "saem")


def _common_arguments(parser):
    parser.add_argument("model", metavar="MODEL",
                        help="a .py file defining a module-level `model`, a library model name, or a NONMEM "
                             "control stream (.mod/.ctl)")
    parser.add_argument("data", metavar="DATA", nargs="?",
                        help="NONMEM-format CSV (default: a control stream's $DATA, or the only CSV next to MODEL)")
    parser.add_argument("--method", choices=METHODS, default=None,
                        help="estimation method (default: a control stream's $ESTIMATION, otherwise focei)")
    parser.add_argument("--out", metavar="DIR", type=output_dir,
                        help="write results.json, parameters.csv, table.csv, run.json and the NONMEM-style "
                             "files (sdtab1, patab1, cotab1/catab1, $TABLE files, RUN.ext, RUN.lst) here")
    parser.add_argument("--params", metavar="FILE",
                        help="JSON initial/fixed values: {name: value} or a fit's results.json")
    parser.add_argument("--npde", action="store_true",
                        help="add NPDE to table.csv (simulation based; default: CWRES and the other residuals)")
    parser.add_argument("--no-diagnostics", action="store_true",
                        help="no diagnostics table (table.csv): the estimates only, fastest")
    parser.add_argument("--npde-samples", type=positive_int, default=1000, help="simulations per subject for NPDE")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="random seed for NPDE")
    add_drop_argument(parser)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("fit", help="estimate a population model (FO, FOCE, FOCE-I, Laplace)",
                                   description="Estimate a model and write the results.")
    _common_arguments(parser)
    parser.add_argument("--max-iter", type=nonnegative_int, default=None,
                        help="outer iteration limit (default 500; a control stream's MAXEVAL=0 evaluates)")
    parser.add_argument("--covariance", choices=("sandwich", "r", "s", "none"), default=None,
                        help="covariance step: R^-1 S R^-1 (default), R-only, S-only, or none (default for a "
                             "control stream: its $COVARIANCE, none without one)")
    parser.add_argument("--report", action="store_true", help="also write DIR/report.html")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 also when the fit converged with a warning (eta modes that did not "
                             "converge, an estimate near its boundary) or its covariance step failed")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress lines (shown on a terminal for work that takes over 2 s)")
    parser.set_defaults(run=run_fit)

    ev = subparsers.add_parser("evaluate", help="the OFV at given parameter values, without estimation",
                               description="OFV, EBEs and diagnostics at fixed parameter values (MAXEVAL=0).")
    _common_arguments(ev)
    ev.set_defaults(run=run_evaluate)
    return parser


def _inputs(args):
    model, _, module = load_model_module(args.model)
    estimation = getattr(module, "ESTIMATION", {})  # an imported control stream's $ESTIMATION and $COVARIANCE
    if args.method is None:
        args.method = estimation.get("method", "focei")
    if getattr(args, "covariance", "") is None:
        args.covariance = estimation.get("covariance", "sandwich")
    if getattr(args, "max_iter", "") is None:
        args.max_iter = 0 if estimation.get("maxeval") == 0 else 500
    data = args.data or (module.load_data() if hasattr(module, "load_data") else default_data_for(args.model))
    if data is None:
        raise CLIError(f"no DATA given and no single CSV next to {args.model}")
    args.model_source = getattr(module, "SOURCE", None)  # an imported control stream's translation
    args.data_path = data if isinstance(data, (str, os.PathLike)) else data.attrs.get("source", "")
    data = read_dropping(data, model, args.drop)
    params = None
    if args.params:
        from .predict import read_params

        params = read_params(args.params, model)
    return model, data, params


def write_outputs(result, out: str | os.PathLike, *, model_path: str, data_path: str) -> Path:
    """results.json, parameters.csv and table.csv in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = result.to_dict()
    payload["model_path"] = str(Path(model_path).resolve()) if Path(model_path).exists() else model_path
    payload["data_path"] = str(Path(data_path).resolve())
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    result.parameters().to_csv(out / "parameters.csv", index=False)
    try:
        result.table().to_csv(out / "table.csv", index=False)
    except ValueError:
        pass  # no diagnostics computed
    return out


def write_run_files(result, out: Path, args) -> str:
    """The run record (run.json: what reproduces the fit, ``pkmix.runs``) and the
    NONMEM-style tables (``pkmix.nonmem.tables``); returns the names written."""
    from ..nonmem import CONTROL_STREAM_SUFFIXES, read
    from ..nonmem.tables import write_nonmem_outputs
    from ..runs import write_run_record

    options = {k: getattr(args, k, None) for k in ("method", "max_iter", "covariance", "params", "npde",
                                                    "npde_samples", "seed", "drop", "no_diagnostics")}
    options["estimated"] = result.estimated
    write_run_record(out, result, model_path=args.model, data_path=args.data_path, options=options)

    path = Path(args.model)
    control_stream = read(path) if path.suffix.lower() in CONTROL_STREAM_SUFFIXES else None
    run_name = path.stem if path.suffix else "run1"
    names = ["run.json"] + write_nonmem_outputs(result, out, run_name=run_name, control_stream=control_stream,
                                                source=args.model_source)
    return ", ".join(names)


def _run(args, estimate: bool) -> int:
    from .. import DatasetError, ModelError, evaluate, fit

    report = estimate and getattr(args, "report", False)
    try:
        if report:
            if not args.out:
                raise CLIError("--report writes DIR/report.html: give the folder with --out DIR")
            check_output(Path(args.out) / "report.html", folder=False)
        model, data, params = _inputs(args)
        # MAXEVAL=0 (or --max-iter 0): the OFV, EBEs and diagnostics at the initial values, as NONMEM's.
        estimate = estimate and args.max_iter != 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if estimate:
                result = fit(model, data, method=args.method, params=params, max_iter=args.max_iter,
                             covariance=args.covariance, progress=False if args.quiet else None,
                             diagnostics=not args.no_diagnostics, npde=args.npde,
                             npde_samples=args.npde_samples, seed=args.seed)
            else:
                result = evaluate(model, data, method=args.method, params=params,
                                  diagnostics=not args.no_diagnostics, npde=args.npde,
                                  npde_samples=args.npde_samples, seed=args.seed)
    except DatasetError as e:
        print(str(e))
        return 2
    except (ModelError, CLIError, FileNotFoundError, ValueError) as e:
        return error_exit(str(e))
    for w in caught:
        print(f"warning: {w.message}")
    print(result)
    if args.out:
        try:
            out = write_outputs(result, args.out, model_path=args.model,
                                data_path=args.data_path)
            written = "results.json, parameters.csv, table.csv"
            written += ", " + write_run_files(result, out, args)
            if report:
                from .._progress import while_running
                from ..report import write_report

                with while_running("writing report.html (plots, VPC)", False if args.quiet else None):
                    write_report(result, out / "report.html")
                written += ", report.html"
        except OSError as e:
            return error_exit(f"could not write the results to {args.out}: {e}")
        print(f"\nwrote {out}/{written}")
    if not result.converged:
        return 1
    if getattr(args, "strict", False):
        problems = [w for w in caught if "did not converge" in str(w.message) or "boundary" in str(w.message)]
        cov_failed = args.covariance != "none" and not result.se
        if problems or cov_failed:
            print("strict: exit status 1 ("
                  + "; ".join([str(w.message) for w in problems]
                              + ([f"covariance step: {result.covariance_message}"] if cov_failed else [])) + ")")
            return 1
    return 0


def run_fit(args) -> int:
    return _run(args, estimate=True)


def run_evaluate(args) -> int:
    return _run(args, estimate=False)

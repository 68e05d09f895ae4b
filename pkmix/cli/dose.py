"""``pkmix dose --model MODEL --patient FILE [--target auc24=400:600] [--interval 8,12,24] ...``.

Individualises a published model to one patient (MAP estimates with their
uncertainty), reports the exposure of the current regimen, recommends a regimen for the
target with its probability of target attainment (from posterior draws), and
optionally when the level falls below a threshold, a loading dose, a plot (``--plot``)
and machine-readable output (``--json``). MODEL is a library model name
(``pkmix.models.available()``) or a Python file defining ``model`` (and, optionally,
``METADATA``). The patient file is JSON (docs/patient_format.md) or a one-patient
NONMEM-format CSV.

Exit status: 0 a recommendation was made (even one that says the target is not
reachable), 2 bad input (patient file, model, target), 1 an unexpected failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._common import (CLIError, error_exit, load_model_module, nonnegative_float, nonnegative_int, output_file,
                      positive_float, positive_int, positive_list)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "dose",
        help="individual estimates and a regimen recommendation for one patient (TDM)",
        description=(
            "Bayesian dosing: MAP individual estimates from a patient's levels, the exposure of the "
            "current regimen, and the regimen (dose, interval, infusion, loading dose) that reaches "
            "the target, with its probability of target attainment."
        ),
    )
    parser.add_argument("--model", metavar="MODEL",
                        help="a library model name (e.g. vancomycin_goti2018) or a .py file defining `model`")
    parser.add_argument("--patient", metavar="FILE",
                        help="patient JSON (docs/patient_format.md) or a one-patient NONMEM CSV")
    parser.add_argument("--target", metavar="SPEC",
                        help="e.g. auc24=400:600, trough=15, trough=10:20, peak=30:40,time=1, "
                             "ft_mic=50:,mic=2 (default: the model's first listed target)")
    parser.add_argument("--interval", type=positive_list, metavar="H[,H...]",
                        help="allowed dosing intervals in hours, e.g. 8,12,24")
    parser.add_argument("--dose-unit", type=positive_float, metavar="X", help="round doses to multiples of X")
    parser.add_argument("--dose-min", type=nonnegative_float, metavar="X", help="smallest dose")
    parser.add_argument("--dose-max", type=positive_float, metavar="X", help="largest dose")
    parser.add_argument("--infusion", type=positive_list, metavar="H[,H...]",
                        help="allowed infusion durations in hours")
    parser.add_argument("--max-rate", type=positive_float, metavar="X",
                        help="largest infusion rate (dose units per hour)")
    parser.add_argument("--max-daily-dose", type=positive_float, metavar="X", help="largest daily amount")
    parser.add_argument("--route", choices=("iv", "oral"), help="route of the new regimen (default: as given)")
    parser.add_argument("--loading", action="store_true", help="also recommend a loading dose")
    parser.add_argument("--threshold", type=positive_float, metavar="C",
                        help="report when the level falls below C; the new regimen starts then")
    parser.add_argument("--start", type=nonnegative_float, metavar="T", help="start time of the new regimen (hours)")
    parser.add_argument("--posterior", choices=("sir", "nuts"), default="sir",
                        help="posterior sampler for the probability of target attainment (default sir)")
    parser.add_argument("--samples", type=positive_int, default=None, metavar="N",
                        help="posterior draws (default 2000; with several models, 1000 per model)")
    parser.add_argument("--average-scheme", choices=("laplace", "ofv", "aic"), default=None,
                        help="with several models in --model (comma-separated, one drug): the weights of model "
                             "averaging (default laplace: Laplace marginal likelihood; ofv, aic: mapbayr's)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="random seed of the posterior draws")
    parser.add_argument("--covariate-rule", choices=("nonmem", "locf"), default="nonmem",
                        help="which record's covariates govern an interval (default nonmem: the record ending it)")
    parser.add_argument("--plot", type=output_file, metavar="PNG",
                        help="write a plot of the levels, fit and recommended regimen")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    parser.add_argument("--continuous", action="store_true",
                        help="recommend a continuous infusion (amount per 24 h; with --loading, a loading dose)")
    q = parser.add_argument_group("other questions (instead of a regimen recommendation)")
    q.add_argument("--next-dose-at", type=nonnegative_float, metavar="T",
                   help="the dose to give at T h (patient clock) for --target, given the history; the trough or "
                        "AUC window is the first --interval")
    q.add_argument("--exposure", action="store_true",
                   help="exposure over the history: AUC over each --window, the level at each --at, each dose's "
                        "peak and trough, with 95%% credible intervals")
    q.add_argument("--window", action="append", metavar="A:B", help="an AUC window in hours (repeatable), e.g. 0:24")
    q.add_argument("--at", action="append", type=float, metavar="T", help="a time for the level (repeatable)")
    q.add_argument("--ci-draws", type=nonnegative_int, default=200, metavar="N",
                   help="posterior draws for --exposure's credible intervals (default 200; 0 none)")
    q.add_argument("--interval-for", type=positive_float, metavar="DOSE",
                   help="the dosing interval at which DOSE meets --target (trough, peak, conc, auc24) at steady state")
    q.add_argument("--what-if", metavar="D,TAU[,TINF]",
                   help="predictions for a regimen: each of the first --n-doses doses' peak and trough, and steady "
                        "state (TINF = TAU: continuous infusion)")
    q.add_argument("--n-doses", type=positive_int, default=4, metavar="N", help="doses reported by --what-if (1-15)")
    q.add_argument("--etas", metavar="map|prior|E1,E2,...",
                   help="the etas of --what-if: the MAP (default), a priori, or given (e.g. an earlier MAP)")
    parser.add_argument("--audit-db", metavar="PATH",
                        help="the audit database (SQLite) every answer is stored in (default: $PKMIX_AUDIT_DB, "
                             "else audit.sqlite3 in the user's data directory, e.g. ~/.local/share/pkmix)")
    parser.add_argument("--no-audit", action="store_true", help="do not store this answer in the audit database")
    parser.add_argument("--replay", type=positive_int, metavar="ID",
                        help="answer the stored recommendation ID again and compare the numbers (exit 0 when "
                             "identical, 1 when they differ)")
    parser.set_defaults(run=run)
    return parser


def _floats(text: str | None, what: str):
    if text is None:
        return None
    if not isinstance(text, str):
        return tuple(float(x) for x in text)
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise CLIError(f"--{what}: expected comma-separated numbers, got '{text}'") from None
    if not values:
        raise CLIError(f"--{what}: no values given")
    return values


def _input_errors() -> tuple:
    """What a dose request that cannot be answered raises: one message, exit 2 (imported
    only when needed, so a bad option is refused without loading the dosing library)."""
    from .. import ModelError
    from ..dosing.service import RequestError

    return CLIError, RequestError, ModelError, FileNotFoundError, ValueError, TypeError


def _input_error(args, error: Exception) -> int:
    from ..dosing.patient import PatientError

    return error_exit(f"{args.patient}: {error}" if isinstance(error, PatientError) else str(error))


def run(args: argparse.Namespace) -> int:
    from ..dosing.service import DoseRequest, answer_objects, module_model_info

    if args.replay is not None:
        return _replay(args)
    for name in ("model", "patient"):
        if getattr(args, name) is None:
            return error_exit(f"--{name} is required (unless --replay ID)")
    asked = [n for n in ("next_dose_at", "interval_for", "what_if") if getattr(args, n) is not None]
    asked += ["exposure"] if args.exposure else []
    if len(asked) > 1:
        return error_exit(f"ask one question at a time: {', '.join('--' + a.replace('_', '-') for a in asked)}")
    several = "," in args.model
    if args.average_scheme is not None and not several:
        return error_exit("--average-scheme: give two or more models in --model (comma-separated) to average")
    if several:
        if asked:
            return error_exit(f"--{asked[0].replace('_', '-')}: not available with several models (model averaging "
                              "answers the regimen question)")
        return _average(args)
    if asked:
        return _question(args, asked[0])
    try:
        _, _, module = load_model_module(args.model)
        request = DoseRequest(
            model=args.model, patient=args.patient, target=args.target,
            interval=_floats(args.interval, "interval"), dose_unit=args.dose_unit, dose_min=args.dose_min,
            dose_max=args.dose_max, infusion=_floats(args.infusion, "infusion"), max_rate=args.max_rate,
            max_daily_dose=args.max_daily_dose, route=args.route, loading=args.loading,
            threshold=args.threshold, start=args.start, posterior=args.posterior,
            samples=args.samples if args.samples is not None else 2000,
            seed=args.seed, covariate_rule=args.covariate_rule,
            # The prediction curves are only drawn: without --plot they are not computed
            # (one compiled program less for a cold process).
            curve=bool(args.plot), audit=not args.no_audit, audit_db=args.audit_db, continuous=args.continuous)
        out, fit, rec = answer_objects(request, module_model_info(module))
    except _input_errors() as e:
        return _input_error(args, e)

    if args.plot:
        try:
            plot(rec, args.plot)
        except Exception as e:  # a plot must never lose the recommendation
            print(f"pkmix: warning: could not write the plot: {e}", file=sys.stderr)
        out["plot"] = str(args.plot)
    extra = "".join(f"\nwarning [{w['code']}] {w['message']}" for w in out["warnings"]
                    if w["code"] not in ("covariate_out_of_range", "fit", "target_not_reachable"))
    if out.get("audit_id") is not None:
        extra += f"\naudit: stored as recommendation {out['audit_id']} (pkmix dose --replay {out['audit_id']})"
    text = json.dumps(out, indent=2) if args.json else (
        rec.summary() + extra + (f"\nplot written to {args.plot}" if args.plot else ""))
    print(text)  # a reader that leaves early is handled once, in pkmix.cli.main
    return 0


def _question_request(args, question: str) -> dict:
    common = {"model": args.model, "patient": args.patient, "covariate_rule": args.covariate_rule,
              "audit": not args.no_audit, "audit_db": args.audit_db}
    first = (lambda text, what: None if text is None else _floats(text, what)[0])
    if question == "next_dose_at":
        return {**common, "at": args.next_dose_at, "target": args.target, "interval": first(args.interval, "interval"),
                "infusion": first(args.infusion, "infusion"), "route": args.route, "dose_unit": args.dose_unit,
                "dose_min": args.dose_min, "dose_max": args.dose_max, "max_daily_dose": args.max_daily_dose,
                "max_rate": args.max_rate}
    if question == "exposure":
        return {**common, "windows": list(args.window or []), "times": list(args.at or []),
                "samples": args.ci_draws, "seed": args.seed}
    if question == "interval_for":
        return {**common, "dose": args.interval_for, "target": args.target,
                "infusion": first(args.infusion, "infusion"), "route": args.route}
    parts = _floats(args.what_if, "what-if")
    if len(parts) not in (2, 3):
        raise CLIError(f"--what-if: expected D,TAU or D,TAU,TINF, got '{args.what_if}'")
    etas = args.etas or "map"
    if etas not in ("map", "prior"):
        etas = list(_floats(etas, "etas")) if all(x.strip().lstrip("+-").replace(".", "", 1).replace("e-", "", 1)
                                                  .replace("e", "", 1).isdigit() for x in etas.split(",")) else etas
    return {**common, "dose": parts[0], "interval": parts[1], "infusion": parts[2] if len(parts) == 3 else 0.0,
            "n_doses": args.n_doses, "start": args.start, "etas": etas, "route": args.route,
            "times": list(args.at or []), "target": args.target}


def _question(args, asked: str) -> int:
    from ..dosing.service import QUESTIONS, module_model_info

    name = {"next_dose_at": "next_dose"}.get(asked, asked)
    try:
        _, _, module = load_model_module(args.model)
        request = {k: v for k, v in _question_request(args, asked).items() if v is not None}
        out = QUESTIONS[name](request, info=module_model_info(module))
    except _input_errors() as e:
        return _input_error(args, e)
    text = json.dumps(out, indent=2) if args.json else _question_text(name, out)
    print(text)  # a reader that leaves early is handled once, in pkmix.cli.main
    return 0


def _average(args) -> int:
    """Model averaging (``--model A,B``): `pkmix.dosing.service.average`, printing the
    `AveragedRecommendation`'s summary, or its JSON with ``--json``."""
    from ..dosing.service import average, module_model_info

    unsupported = [f"--{n.replace('_', '-')}" for n in ("loading", "threshold", "start", "plot")
                   if getattr(args, n) not in (None, False)]
    if args.posterior != "sir":
        unsupported.append("--posterior")
    if unsupported:
        return error_exit(f"{', '.join(unsupported)}: not available with model averaging (ask each model alone)")
    names = [n.strip() for n in args.model.split(",")]
    try:
        infos = {}
        for n in names:
            if n:
                _, _, module = load_model_module(n)
                infos[n] = module_model_info(module)
        request = {"model": names, "patient": args.patient, "target": args.target, "scheme": args.average_scheme,
                   "samples": args.samples, "seed": args.seed, "interval": _floats(args.interval, "interval"),
                   "infusion": _floats(args.infusion, "infusion"), "route": args.route,
                   "continuous": args.continuous or None, "dose_unit": args.dose_unit, "dose_min": args.dose_min,
                   "dose_max": args.dose_max, "max_daily_dose": args.max_daily_dose, "max_rate": args.max_rate,
                   "covariate_rule": args.covariate_rule, "audit": not args.no_audit, "audit_db": args.audit_db}
        out, avg = average({k: v for k, v in request.items() if v is not None}, infos=infos, objects=True)
    except _input_errors() as e:
        return _input_error(args, e)
    if args.json:
        text = json.dumps(out, indent=2)
    else:
        text = avg.summary() + "".join(f"\nwarning [{w['code']}] {w['message']}" for w in out["warnings"]
                                       if w["code"] != "target_not_reachable")
        if out.get("audit_id") is not None:
            text += f"\naudit: stored as recommendation {out['audit_id']} (pkmix dose --replay {out['audit_id']})"
    print(text)  # a reader that leaves early is handled once, in pkmix.cli.main
    return 0


def _ci(ci) -> str:
    return f" (95% CI {ci[0]:.4g} to {ci[1]:.4g})" if ci else ""


def _question_text(name: str, out: dict) -> str:
    a = out[name]
    u = a.get("units", {"dose": "mg", "conc": "mg/L", "auc": "mg*h/L"})
    lines = []
    if name == "next_dose":
        when = f" ({a['datetime']})" if a.get("datetime") else ""
        how = f" over {a['infusion']:g} h" if a["infusion"] > 0 else ""
        lines.append(f"Next dose at t = {a['time']:g} h{when}: {a['dose']:g} {u['dose']}{how} "
                     f"(unrounded {a['unrounded']:.1f}); predicted {a['target'].split()[0]} {a['predicted']:.4g}")
        if a["message"]:
            lines.append(("NOT REACHABLE: " if not a["reachable"] else "  note: ") + a["message"])
    elif name == "exposure":
        for w in a["auc"]:
            lines.append(f"AUC {w['start']:g}-{w['end']:g} h: {w['value']:.4g} {u['auc']}{_ci(w['ci'])}")
        for c in a["concentrations"]:
            lines.append(f"level at t = {c['time']:g} h: {c['value']:.4g} {u['conc']}{_ci(c['ci'])}")
        for d in a["doses"]:
            trough = (f", trough {d['trough']:.4g}{_ci(d['trough_ci'])} at {d['trough_time']:g} h"
                      if d["trough"] is not None else "")
            lines.append(f"dose {d['amount']:g} {u['dose']} at {d['time']:g} h: peak {d['peak']:.4g}"
                         f"{_ci(d['peak_ci'])}{trough}")
    elif name == "interval_for":
        lines.append(f"{a['dose']:g} {u['dose']} meets {a['target']} at steady state every {a['interval']:.2f} h "
                     f"({a['status']}): trough {a['trough']:.4g}, peak {a['peak']:.4g} {u['conc']}, "
                     f"AUC24 {a['auc24']:.4g} {u['auc']}")
    else:
        r = a["regimen"]
        lines.append(f"What if {r['dose']:g} {u['dose']} every {r['interval']:g} h"
                     f"{' (continuous)' if r['continuous'] else ''} from t = {r['start']:g} h, "
                     f"etas {a['etas']['source']}:")
        for d in a["doses"]:
            lines.append(f"  dose {d['dose_number']}: peak {d['peak']:.4g}, trough before the next "
                         f"{d['trough_before_next']:.4g} {u['conc']}")
        ss = a["steady_state"]
        lines.append(f"  steady state: trough {ss['trough']:.4g}, peak {ss['peak']:.4g} {u['conc']}, "
                     f"AUC24 {ss['auc24']:.4g} {u['auc']}")
    for w in out["warnings"]:
        lines.append(f"warning [{w['code']}] {w['message']}")
    if out.get("audit_id") is not None:
        lines.append(f"audit: stored as {out['audit_id']} (pkmix dose --replay {out['audit_id']})")
    return "\n".join(lines)


def _replay(args) -> int:
    from ..dosing.service import RequestError, replay

    try:
        out = replay(args.replay, args.audit_db)
    except (RequestError, ValueError) as e:
        return error_exit(str(e))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        rec = out["replayed"].get("recommendation", {}).get("recommendation", {})
        print(f"replay of recommendation {out['audit_id']} (stored {out['created_utc']}, pkmix "
              f"{out['pkmix_version']['stored']}; now {out['pkmix_version']['now']})")
        if rec.get("text"):
            print(f"  recommendation: {rec['text']}")
        if out["model_changed"]:
            print("  note: the model's source has changed since")
        if out["identical"]:
            print("  identical: every number is the same")
        else:
            print(f"  DIFFERENT in {len(out['differences'])} places:")
            for d in out["differences"][:20]:
                print(f"    {d}")
    return 0 if out["identical"] else 1


def plot(rec, path: str) -> None:
    """Levels, the individual fit (MAP), the population prediction, the doses, and the
    predicted profile of the recommended regimen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fit = rec.fit
    u = rec.units
    fig, ax = plt.subplots(figsize=(9, 4.5))
    curve = fit.curve
    start = rec.regimen.start_time
    hist = curve[curve["TIME"] <= (start if start is not None else np.inf)]
    ax.plot(hist["TIME"], hist["IPRED"], color="C0", label="individual (MAP)")
    ax.plot(hist["TIME"], hist["PRED"], color="C0", ls=":", alpha=0.7, label="population (typical)")
    if rec.curve is not None:
        ax.plot(rec.curve["TIME"], rec.curve["IPRED"], color="C2",
                label=f"recommended: {rec.regimen.describe(u['dose'])}")
    obs = fit.observations
    q = obs[~obs["BLQ"]]
    ax.scatter(q["TIME"], q["DV"], color="k", zorder=3, label="levels")
    b = obs[obs["BLQ"]]
    if len(b):
        ax.scatter(b["TIME"], b["LLOQ"], facecolors="none", edgecolors="k", zorder=3, label="below LLOQ (at LLOQ)")
    rec_t = fit.bound.records
    doses = rec_t["TIME"][np.isin(rec_t["EVID"], (1, 4))]
    for t in doses:
        ax.axvline(t, color="grey", lw=0.5, alpha=0.5)
    t = rec.target
    if t.kind in ("trough", "peak", "conc"):
        lo = t.low if t.low is not None else 0.0
        hi = t.high if t.high is not None else ax.get_ylim()[1]
        ax.axhspan(lo, hi, color="C2", alpha=0.1, label=f"target {t.kind}")
    if rec.next_dose is not None and rec.next_dose.get("time") is not None:
        ax.axhline(rec.next_dose["threshold"], color="C3", lw=0.8, ls="--")
    ax.set_xlabel("time (h)")
    ax.set_ylabel(f"concentration ({u['conc']})")
    ax.set_title(f"{fit.model_name}: patient {fit.patient_id}")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)

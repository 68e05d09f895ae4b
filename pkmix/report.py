"""A one-file HTML report of a fit: model, data, parameter table, status, timing and plots.

``write_report(result, path)`` takes a ``FitResult`` in the process that made it;
``write_report(run_dir)`` takes what ``pkmix fit MODEL DATA --out DIR`` wrote
(results.json, table.csv, and the model and data paths recorded in results.json under
``model_path`` and ``data_path``). The file is self-contained: the images are embedded
as base64 PNG, the style sheet is inline, there is no script and no external link, so
it opens in any browser without a network.

Every number in the report comes from the results dictionary (``FitResult.to_dict()``,
which is what results.json holds). Each number's cell carries its full-precision value
in a ``data-value`` attribute and what it is in ``data-key`` (e.g. ``theta.tka``,
``se.omega(eta_cl,eta_cl)``, ``ofv``), so a script can read the report back.

A run folder's bootstrap and SIR results (``pkmix bootstrap RUN_DIR`` and ``pkmix sir
RUN_DIR`` write them to RUN_DIR/bootstrap and RUN_DIR/sir) appear in a section of their
own: the intervals per parameter (keys ``bootstrap.pct_lower.NAME``, ``sir.median.NAME``,
...) and the plots those commands drew.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#222;margin:0;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:18px 28px 40px;background:#fff}
h1{font-size:1.55em;margin:.4em 0 .1em}h2{font-size:1.2em;border-bottom:2px solid #1f4e79;padding-bottom:3px;
margin-top:1.8em;color:#1f4e79}h3{font-size:1.02em;margin:1.2em 0 .4em}
.sub{color:#666;font-size:.9em}
table{border-collapse:collapse;font-size:.9em;margin:.4em 0}
th,td{border:1px solid #d4d8de;padding:3px 9px;text-align:right}
th{background:#eef2f7;text-align:center}td.l,th.l{text-align:left}
tr:nth-child(even) td{background:#fafbfc}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:.8em 0}
.card{border:1px solid #d4d8de;border-radius:6px;padding:8px 14px;min-width:120px}
.card .k{font-size:.78em;color:#666;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:1.25em;font-weight:600}
.ok{color:#1e7b34}.bad{color:#b42318}.warn{color:#b54708}
pre{background:#f3f4f6;border:1px solid #e1e4e8;padding:10px;overflow-x:auto;font-size:.82em;line-height:1.35}
figure{margin:.8em 0 1.6em}figure img{max-width:100%;height:auto;border:1px solid #e1e4e8}
figcaption{font-size:.85em;color:#555;margin-top:3px}
.note{background:#fff8e5;border-left:4px solid #e0a800;padding:6px 12px;margin:.5em 0;font-size:.9em}
nav a{margin-right:12px;font-size:.9em;color:#1f4e79}
"""


# ----------------------------------------------------------------------------- loading
def load_run(run_dir) -> "FitResult":  # noqa: F821 (string annotation; imported lazily)
    """A ``FitResult`` rebuilt from a run directory (``pkmix fit ... --out DIR``).

    The numbers come from results.json and the diagnostics table from table.csv. The
    model (``model_path`` in results.json) and the data (``data_path``) are loaded
    when they can be; otherwise ``.model``/``.dataset``/``.values`` stay None and
    ``.load_notes`` says why (plots that need them are then left out of a report).
    Besides the ``FitResult`` fields, the object has ``.results_json`` (results.json as
    a dict), ``.load_notes`` and ``.run_dir``. A covariance matrix, per-subject OFVs and
    inner-convergence flags are not in the run files: those fields are empty.

    Raises:
        FileNotFoundError: the directory has no results.json.
        ValueError: results.json is not a pkmix results file.
    """
    from ._results import FitResult

    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no results.json (is it the --out folder of `pkmix fit`?)")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(summary, dict):
        raise ValueError(f"{path} holds a JSON {type(summary).__name__}, not a pkmix results object")
    missing = [k for k in ("theta", "omega", "sigma", "ofv", "method", "model") if k not in summary]
    if missing:
        raise ValueError(f"{path} lacks the key(s) {missing}: not a pkmix results.json")
    _check_results_shape(summary, path)
    notes: list[str] = []

    def num(v):
        return float("nan") if v is None else float(v)

    names = list(summary["omega"].get("names") or [])
    matrix = np.array([[num(v) for v in row] for row in (summary["omega"].get("matrix") or [])], dtype=float)
    omega = pd.DataFrame(matrix.reshape(len(names), len(names)), index=names, columns=names)

    table = None
    table_path = run_dir / "table.csv"
    if table_path.is_file():
        try:
            table = pd.read_csv(table_path, na_values=["."])
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            notes.append(f"table.csv could not be read ({str(e).strip()}): no goodness-of-fit or eta plots.")
        if table is not None and "ID" not in table.columns:
            notes.append("table.csv has no ID column: no goodness-of-fit or eta plots.")
            table = None
    else:
        notes.append("table.csv is missing: no diagnostics table, so no goodness-of-fit or eta plots.")

    if table is not None and all(n in table.columns for n in names):
        etas = table.drop_duplicates("ID", keep="first")[["ID", *names]].reset_index(drop=True)
    else:
        etas = pd.DataFrame({"ID": [], **{n: [] for n in names}})

    model, dataset, values = _load_model_and_data(summary, run_dir, table, notes)
    if model is not None and model.iov_names and dataset is not None:
        # table.csv holds the between-subject etas only; the curves use IOV etas of 0.
        n_occ = int(dataset.frame[model.occasion_column].nunique())
        for k in range(n_occ):
            for n in model.iov_names:
                etas[f"{n}_occ{k + 1}"] = 0.0
        notes.append("table.csv has no inter-occasion etas: individual curves use IOV etas of 0.")

    minus2ll, aic = summary.get("minus2ll"), summary.get("aic")
    n_est = (int(round((aic - minus2ll) / 2)) if aic is not None and minus2ll is not None
             else len(summary.get("se") or {}))
    cov = summary.get("covariance_step") or {}
    corr = cov.get("correlation")
    corr_df = None
    if corr:
        corr_df = pd.DataFrame([[num(v) for v in row] for row in corr["matrix"]], index=corr["names"],
                               columns=corr["names"])
    result = FitResult(
        model_name=summary["model"], method=summary["method"], n_subjects=int(summary.get("n_subjects") or 0),
        n_observations=int(summary.get("n_observations") or 0), ofv=num(summary["ofv"]),
        theta={k: num(v) for k, v in summary["theta"].items()}, omega=omega,
        iov={k: num(v) for k, v in (summary.get("iov") or {}).items()},
        sigma={k: num(v) for k, v in summary["sigma"].items()},
        se={k: num(v) for k, v in (summary.get("se") or {}).items()},
        rse_percent={k: num(v) for k, v in (summary.get("rse_percent") or {}).items()},
        covariance_matrix=None, correlation=corr_df, condition_number=cov.get("condition_number"),
        covariance_message=cov.get("message") or "", etas=etas, subject_ofv=pd.DataFrame(),
        shrinkage_percent={k: v for k, v in (summary.get("shrinkage_percent") or {}).items()},
        epsilon_shrinkage_percent=summary.get("epsilon_shrinkage_percent"),
        converged=bool(summary.get("converged")), message=summary.get("message") or "",
        iterations=int(summary.get("iterations") or 0), timing=summary.get("timing") or {},
        device=summary.get("device") or "", n_estimated=n_est, inner_converged=np.array([], dtype=bool),
        _table=table, model=model, dataset=dataset, values=values,
    )
    result.results_json = summary
    result.load_notes = notes
    result.run_dir = run_dir
    return result


def _check_results_shape(summary: dict, path: Path) -> None:
    """ValueError naming the key when results.json's values are not what a fit writes."""
    def number(v):
        return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))

    for key in ("theta", "sigma"):
        section = summary[key]
        if not isinstance(section, dict) or not all(number(v) for v in section.values()):
            raise ValueError(f"{path}: '{key}' must be an object of numbers {{name: value}}")
    for key in ("iov", "se", "rse_percent", "shrinkage_percent"):
        section = summary.get(key)
        if section is not None and (not isinstance(section, dict) or not all(number(v) for v in section.values())):
            raise ValueError(f"{path}: '{key}' must be an object of numbers {{name: value}}")
    omega = summary["omega"]
    names = omega.get("names") if isinstance(omega, dict) else None
    matrix = omega.get("matrix") if isinstance(omega, dict) else None
    if not (isinstance(names, list) and isinstance(matrix, list) and len(matrix) == len(names)
            and all(isinstance(row, list) and len(row) == len(names) and all(number(v) for v in row)
                    for row in matrix)):
        raise ValueError(f"{path}: 'omega' must be {{\"names\": [...], \"matrix\": [[...]]}}, square, of numbers")
    for key in ("ofv", "minus2ll", "aic", "bic", "n_subjects", "n_observations", "iterations"):
        if not number(summary.get(key)):
            raise ValueError(f"{path}: '{key}' must be a number, got {summary.get(key)!r}")
    if not isinstance(summary.get("covariance_step") or {}, dict) or not isinstance(summary.get("timing") or {}, dict):
        raise ValueError(f"{path}: 'covariance_step' and 'timing' must be objects")


def _resolve(recorded: str | None, run_dir: Path) -> Path | None:
    if not recorded:
        return None
    p = Path(recorded)
    for candidate in (p, run_dir / p):
        if candidate.exists():
            return candidate
    return None


def _load_model_and_data(summary: dict, run_dir: Path, table, notes: list):
    from .cli._common import load_model

    model_path = summary.get("model_path")
    if not model_path:
        notes.append("results.json records no model_path: the model is not shown and the individual fits, "
                     "covariate and VPC plots that need it are left out.")
        return None, None, None
    try:
        resolved = _resolve(model_path, run_dir)
        model = load_model(str(resolved) if resolved is not None else model_path)
    except Exception as e:  # noqa: BLE001 - a user's model file can fail in any way (CLIError included)
        notes.append(f"the model {model_path} could not be loaded ({type(e).__name__}: {e}): the plots that "
                     f"need it (individual fits, VPC) are left out.")
        return None, None, None
    data_path = summary.get("data_path")
    resolved = _resolve(data_path, run_dir)
    if resolved is None:
        notes.append(f"the data file {data_path!r} recorded in results.json was not found: the plots that need "
                     f"it (individual fits, eta vs covariates, VPC) are left out.")
        return model, None, None
    try:
        from . import read_nonmem
        from .cli.predict import read_params
        from ._predict import parameter_values

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = read_nonmem(resolved, model=model)
        values = parameter_values(model, read_params(str(run_dir / "results.json"), model))
    except Exception as e:  # noqa: BLE001 - reported in the page, the rest still renders
        notes.append(f"the data {data_path} or the estimates could not be used with the model "
                     f"({type(e).__name__}: {e}): individual fits and VPC are left out.")
        return model, None, None
    if dataset.n_observations != summary.get("n_observations") or (
            table is not None and list(pd.unique(table["ID"])) != [i for i in dataset.ids]):
        notes.append(f"the data at {data_path} no longer match the fit (subjects or observations differ): "
                     f"individual fits and VPC are left out.")
        return model, None, None
    return model, dataset, values


# ----------------------------------------------------------------------------- formatting
def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) and math.isfinite(v)


def fmt(v, kind: str = "g") -> str:
    """How a number is shown: ``g`` 6 significant digits, ``ofv`` 4 decimals, ``pct`` 1
    decimal, ``s`` seconds with 2 decimals. Missing/non-finite values are empty."""
    if not _is_num(v):
        return ""
    v = float(v)
    if kind == "ofv":
        return f"{v:.4f}"
    if kind == "pct":
        return f"{v:.1f}"
    if kind == "s":
        return f"{v:.2f}"
    if kind == "int":
        return f"{int(v)}"
    return f"{v:.6g}"


def _td(v, key: str | None = None, kind: str = "g", cls: str = "") -> str:
    attrs = f' class="{cls}"' if cls else ""
    if key is not None and _is_num(v):
        attrs += f' data-key="{_esc(key)}" data-value="{float(v)!r}"'
    return f"<td{attrs}>{_esc(fmt(v, kind))}</td>"


# Warnings in a fit's message that qualify a convergence, and how the badge says them.
_CAVEATS = {"near its boundary": "estimate near its boundary", "did not converge": "eta modes not converged"}


def _status_card(converged: bool, message: str) -> str:
    """The status badge: green only for a clean convergence; a converged fit whose
    message carries a warning (an estimate near its boundary, eta modes that did not
    converge) is amber and names it (the full message is in the table below)."""
    if not converged:
        return _card("status", "not converged", cls="bad")
    caveats = [label for key, label in _CAVEATS.items() if key in message]
    if caveats:
        return _card("status", "converged, " + ", ".join(caveats), cls="warn")
    return _card("status", "converged", cls="ok")


def _card(label: str, value: str, key: str | None = None, raw=None, cls: str = "") -> str:
    data = f' data-key="{_esc(key)}" data-value="{float(raw)!r}"' if key and _is_num(raw) else ""
    return (f'<div class="card"><div class="k">{_esc(label)}</div>'
            f'<div class="v {cls}"{data}>{_esc(value)}</div></div>')


def parameter_rows(result) -> list[dict]:
    """The parameter table of a fit: ``FitResult.parameters()`` (95 % CIs on the log
    scale for variances and sigmas, which cannot go below zero) with, per row,
    cv_percent (an exponential eta's CV %, ``FitResult.omega_summary()``; IOV),
    correlation (OMEGA off-diagonal) and shrinkage_percent. Missing numbers are None."""
    def clean(v):
        return v if _is_num(v) else None

    summary = result.omega_summary().set_index("eta") if len(result.omega) else None
    omega = result.omega
    rows = []
    for r in result.parameters().to_dict("records"):
        row = {k: clean(r[k]) for k in ("estimate", "se", "rse_percent", "ci_lower", "ci_upper")}
        row.update(parameter=r["parameter"], type=r["type"], cv_percent=None, correlation=None,
                   shrinkage_percent=None)
        if r["type"] in ("omega", "iov"):
            a, b = r["parameter"][len("omega("):-1].split(",")
            v = row["estimate"]
            if r["type"] == "iov":
                row["cv_percent"] = 100.0 * math.sqrt(math.expm1(v)) if v is not None and v >= 0 else None
            elif a == b:
                row["cv_percent"] = clean(summary.loc[a, "cv_percent"])
                row["shrinkage_percent"] = clean(result.shrinkage_percent.get(a))
            else:
                vi, vj = float(omega.loc[a, a]), float(omega.loc[b, b])
                row["correlation"] = v / math.sqrt(vi * vj) if v is not None and vi > 0 and vj > 0 else None
        rows.append(row)
    return rows


def _parameter_table(result) -> str:
    head = ("<tr><th class='l'>parameter</th><th>type</th><th>estimate</th><th>SE</th><th>RSE %</th>"
            "<th>95 % CI lower</th><th>95 % CI upper</th><th>CV % / corr.</th><th>shrinkage %</th></tr>")
    body = []
    for r in parameter_rows(result):
        p = r["parameter"]
        cv = (_td(r["cv_percent"], f"cv_percent.{p}", "pct") if r["cv_percent"] is not None
              else _td(r["correlation"], f"correlation.{p}", "g") if r["correlation"] is not None else "<td></td>")
        body.append(
            f"<tr><td class='l'>{_esc(p)}</td><td>{_esc(r['type'])}</td>"
            + _td(r["estimate"], f"estimate.{p}") + _td(r["se"], f"se.{p}")
            + _td(r["rse_percent"], f"rse_percent.{p}", "pct")
            + _td(r["ci_lower"], f"ci_lower.{p}") + _td(r["ci_upper"], f"ci_upper.{p}") + cv
            + _td(r["shrinkage_percent"], f"shrinkage_percent.{p}", "pct") + "</tr>")
    return f"<table id='parameters'>{head}{''.join(body)}</table>"


def _matrix_table(names, matrix, key: str, table_id: str) -> str:
    head = "<tr><th></th>" + "".join(f"<th>{_esc(n)}</th>" for n in names) + "</tr>"
    rows = []
    for i, a in enumerate(names):
        cells = "".join(_td(matrix[i][j], f"{key}.{a}.{names[j]}") if j <= i else "<td></td>"
                        for j in range(len(names)))
        rows.append(f"<tr><th class='l'>{_esc(a)}</th>{cells}</tr>")
    return f"<table id='{table_id}'>{head}{''.join(rows)}</table>"


def _png(fig, dpi: int = 96) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure_html(fig, caption: str, fig_id: str) -> str:
    return (f"<figure id='{_esc(fig_id)}'><img alt='{_esc(caption)}' src='data:image/png;base64,{_png(fig)}'>"
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


# ----------------------------------------------------------------------------- bootstrap and SIR
# What `pkmix bootstrap RUN_DIR` and `pkmix sir RUN_DIR` write into the run folder by
# default: (folder, JSON file, images, heading).
_UNCERTAINTY = (("bootstrap", "bootstrap.json", ("bootstrap_distributions.png",), "Bootstrap"),
                ("sir", "sir.json", ("sir_dofv.png", "sir_distributions.png"), "Sampling importance resampling"))
# Columns of each summary table: (JSON field, header, data-key prefix).
_UNCERTAINTY_COLUMNS = {
    "bootstrap": (("estimate", "estimate"), ("median", "median"), ("sd", "SD"), ("bias", "bias"),
                  ("relative_bias_percent", "bias %"), ("pct_lower", "percentile lower"),
                  ("pct_upper", "percentile upper"), ("bca_lower", "BCa lower"), ("bca_upper", "BCa upper"),
                  ("n", "n")),
    "sir": (("estimate", "estimate"), ("se_covariance", "SE (covariance step)"), ("sir_se", "SE (SIR)"),
            ("median", "median"), ("pct_lower", "percentile lower"), ("pct_upper", "percentile upper")),
}


def _uncertainty_sections(run_dir) -> list[str]:
    """HTML of the bootstrap and SIR results found in a run folder (their default
    output folders RUN_DIR/bootstrap and RUN_DIR/sir): a line of settings and shares,
    the per-parameter table (intervals at the stored level) and the stored plots."""
    if run_dir is None:
        return []
    out = []
    for folder, name, images, heading in _UNCERTAINTY:
        path = Path(run_dir) / folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            rows = data["summary"]
        except (OSError, ValueError, KeyError) as e:
            out.append(f"<h3>{_esc(heading)}</h3><p class='note'>{_esc(path)} could not be read: {_esc(e)}</p>")
            continue
        settings = data.get("settings") or {}
        level = data.get("level")
        if folder == "bootstrap":
            shares = data.get("shares") or {}
            parts = [f"{settings.get('n', '?')} replicates ({_esc(settings.get('method', ''))})"]
            parts += [f"{label} {fmt(100 * shares[k], 'pct')} %" for k, label in
                      (("successful", "successful"), ("boundary", "at a boundary"),
                       ("covariance_failed", "covariance step failed")) if _is_num(shares.get(k))]
            parts.append(f"BCa acceleration: {_esc(settings.get('acceleration') or 'none')}")
        else:
            parts = [f"{settings.get('samples', '?')} proposals, {settings.get('resamples', '?')} resamples",
                     f"inflation {fmt(settings.get('inflation'))}",
                     f"effective sample size {fmt(data.get('effective_samples'))}"]
        level_text = f"{fmt(100 * level, 'pct')} % intervals" if _is_num(level) else "intervals"
        head = "<tr><th class='l'>parameter</th>" + "".join(
            f"<th>{_esc(h)}</th>" for _, h in _UNCERTAINTY_COLUMNS[folder]) + "</tr>"
        body = []
        for r in rows:
            p = r.get("parameter", "")
            body.append(f"<tr><td class='l'>{_esc(p)}</td>" + "".join(
                _td(r.get(k), f"{folder}.{k}.{p}", "int" if k == "n" else "g")
                for k, _ in _UNCERTAINTY_COLUMNS[folder]) + "</tr>")
        out.append(f"<h3>{_esc(heading)}</h3><p class='sub'>{'; '.join(parts)}; {level_text}.</p>"
                   f"<table id='{folder}-summary'>{head}{''.join(body)}</table>")
        for image in images:
            img = Path(run_dir) / folder / image
            if img.is_file():
                data64 = base64.b64encode(img.read_bytes()).decode("ascii")
                out.append(f"<figure id='{_esc(img.stem)}'><img alt='{_esc(image)}' "
                           f"src='data:image/png;base64,{data64}'><figcaption>{_esc(image)}</figcaption></figure>")
    return out


# ----------------------------------------------------------------------------- report
def write_report(result_or_run_dir, path=None, *, vpc: bool = True, vpc_data=None, n_sim: int = 200,
                 seed: int = 0, per_page: int = 12, title: str | None = None, model_path=None) -> Path:
    """Write the HTML report of a fit.

    Args:
        result_or_run_dir: a ``FitResult`` (from ``pkmix.fit``/``pkmix.evaluate``) or a
            run directory written by ``pkmix fit ... --out DIR``.
        path: the HTML file to write; default ``DIR/report.html`` for a run directory
            (required for a ``FitResult``).
        vpc: include a visual predictive check (simulates ``n_sim`` replicates).
        vpc_data: precomputed VPC data (see ``pkmix.plots.vpc``) to draw instead.
        n_sim: replicates for the VPC.
        seed: random seed for the VPC simulation.
        per_page: subjects per page of individual fits.
        title: the page title (default from the model name and method).
        model_path: the model's file, shown in the report (default: results.json's
            ``model_path`` for a run directory, else the file that defines the model's
            ``individual`` function, when there is one).

    Returns:
        The path written.

    Raises:
        FileNotFoundError: a run directory without results.json.
        TypeError: ``path`` missing for a ``FitResult``.
    """
    if isinstance(result_or_run_dir, (str, os.PathLike)):
        run_dir = Path(result_or_run_dir)
        result = load_run(run_dir)
        summary = result.results_json
        notes = list(result.load_notes)
        if model_path is None:
            model_path = summary.get("model_path")
            resolved = _resolve(model_path, run_dir)
            model_path = str(resolved) if resolved is not None else model_path
        if path is None:
            path = run_dir / "report.html"
    else:
        result = result_or_run_dir
        if not hasattr(result, "to_dict"):
            raise TypeError(f"write_report: expected a FitResult or a run directory, got {type(result).__name__}")
        if path is None:
            raise TypeError("write_report(result, path): give the HTML file to write")
        stored = getattr(result, "results_json", None)  # load_run keeps results.json as read
        summary = stored if isinstance(stored, dict) else result.to_dict()
        notes = list(getattr(result, "load_notes", []))
        if model_path is None:
            model_path = _model_source_file(getattr(result, "model", None))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_report(result, summary, notes=notes, model_path=model_path, vpc=vpc, vpc_data=vpc_data,
                         n_sim=n_sim, seed=seed, per_page=per_page, title=title)
    path.write_text(text, encoding="utf-8")
    return path


def _model_source_file(model) -> str | None:
    import inspect

    try:
        f = inspect.getsourcefile(model.individual)
    except (TypeError, AttributeError):
        return None
    return f if f and f.endswith(".py") and Path(f).is_file() else None


def _bands_positive(layout: dict) -> bool:
    bins = layout.get("bins")
    cols = [c for c in bins.columns if c.startswith(("sim_p", "obs_p"))]
    values = bins[cols].to_numpy(dtype=float)
    return bool(np.all(values[np.isfinite(values)] > 0))


def _plots(result, *, vpc, vpc_data, n_sim, seed, per_page, notes) -> list[tuple[str, str]]:
    """(section title, html) for every plot; a plot that fails becomes a note."""
    from . import plots

    out: list[tuple[str, str]] = []

    def attempt(section, label, make, fig_id, caption):
        try:
            made = make()
        except Exception as e:  # noqa: BLE001 - one plot's failure must not lose the report
            notes.append(f"{label} not drawn: {type(e).__name__}: {e}")
            if os.environ.get("PKMIX_DEBUG"):
                traceback.print_exc()
            return None
        figs = made if isinstance(made, list) else [made]
        for k, fig in enumerate(figs):
            if isinstance(fig, tuple):  # (figure, its own caption)
                fig, cap = fig
            else:
                cap = caption if len(figs) == 1 else f"{caption} (page {k + 1} of {len(figs)})"
            out.append((section, _figure_html(fig, cap, f"{fig_id}-{k + 1}" if len(figs) > 1 else fig_id)))
        return made

    has_table = getattr(result, "_table", None) is not None
    if has_table:
        attempt("Goodness of fit", "goodness-of-fit panel", lambda: plots.gof_panel(result), "gof",
                "DV vs PRED and IPRED (identity line dashed, smooth orange), normal QQ plot of CWRES, CWRES vs "
                "TIME and PRED (0 and ±1.96), |IWRES| vs IPRED.")
    else:
        notes.append("no diagnostics table: goodness-of-fit plots left out.")
    has_model = all(getattr(result, k, None) is not None for k in ("model", "dataset", "values"))
    if has_model:
        attempt("Individual fits", "individual fits", lambda: plots.individual_fits(result, per_page=per_page),
                "individual", "Observations (points), IPRED (solid) and PRED (dashed) on a fine time grid; "
                "triangles mark doses.")
    if len(getattr(result, "etas", [])):
        attempt("Eta diagnostics", "eta histograms", lambda: plots.eta_histograms(result), "eta-hist",
                "Empirical Bayes estimates of each eta with the N(0, omega) density.")
    if getattr(result, "dataset", None) is not None and result.dataset.covariates:
        attempt("Eta diagnostics", "etas vs covariates", lambda: plots.eta_vs_covariates(result), "eta-cov",
                "Each eta against each covariate (first value per subject): scatter with a smooth, or boxplots "
                "for categorical covariates.")
    if vpc_data is not None or (vpc and has_model):
        caption = ("Observed percentiles (lines) against the intervals of the same percentiles over simulated "
                   "replicates of the study (bands).")

        def make_vpc():
            data = vpc_data if vpc_data is not None else plots.vpc_from_result(result, n_sim=n_sim, seed=seed)
            figs = [(plots.vpc_plot(data), caption)]
            # A log scale only where every band is positive: with additive error the
            # lower bands go below zero and would be cut off.
            if all(_bands_positive(d) for _, d in plots.vpc_layouts(data)):
                figs.append((plots.vpc_plot(data, log_y=True, title="VPC, log scale"), caption + " Log scale."))
            return figs

        attempt("Visual predictive check", "VPC", make_vpc, "vpc", caption)
    elif not vpc:
        notes.append("VPC not requested.")
    return out


def render_report(result, summary: dict, *, notes=None, model_path=None, vpc=True, vpc_data=None, n_sim=200,
                  seed=0, per_page=12, title=None) -> str:
    """The report's HTML text (see ``write_report``)."""
    notes = list(notes or [])
    model_name = summary.get("model") or "model"
    method = str(summary.get("method") or "").upper()
    title = title or f"pkmix report: {model_name} ({method})"
    plots_html = _plots(result, vpc=vpc, vpc_data=vpc_data, n_sim=n_sim, seed=seed, per_page=per_page, notes=notes)

    s = summary
    conv = bool(s.get("converged"))
    cov = s.get("covariance_step") or {}
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{_esc(title)}</h1>",
        f"<div class='sub'>pkmix {_esc(s.get('pkmix_version', ''))} · device {_esc(s.get('device', ''))} · "
        f"report written {_esc(_dt.datetime.now().strftime('%Y-%m-%d %H:%M'))}</div>",
        "<nav><a href='#summary'>Summary</a><a href='#parameters-section'>Parameters</a><a href='#model'>Model</a>"
        "<a href='#data'>Data</a><a href='#plots'>Plots</a></nav>",
        "<h2 id='summary'>Summary</h2><div class='cards'>",
        _status_card(conv, s.get("message") or ""),
        _card("OFV", fmt(s.get("ofv"), "ofv"), "ofv", s.get("ofv")),
        (_card("OFV Monte Carlo SE", fmt(s.get("ofv_mc_se"), "ofv"), "ofv_mc_se", s.get("ofv_mc_se"))
         if _is_num(s.get("ofv_mc_se")) else ""),
        _card("-2LL", fmt(s.get("minus2ll"), "ofv"), "minus2ll", s.get("minus2ll")),
        _card("AIC", fmt(s.get("aic"), "ofv"), "aic", s.get("aic")),
        _card("BIC", fmt(s.get("bic"), "ofv"), "bic", s.get("bic")),
        _card("subjects", fmt(s.get("n_subjects"), "int"), "n_subjects", s.get("n_subjects")),
        _card("observations", fmt(s.get("n_observations"), "int"), "n_observations", s.get("n_observations")),
        _card("iterations", fmt(s.get("iterations"), "int"), "iterations", s.get("iterations")),
        "</div>",
        "<table id='status'>",
        f"<tr><th class='l'>method</th><td class='l'>{_esc(method)}</td></tr>",
        f"<tr><th class='l'>estimation</th><td class='l' id='message'>{_esc(s.get('message', ''))}</td></tr>",
        f"<tr><th class='l'>covariance step</th><td class='l' id='covariance-message'>"
        f"{_esc(cov.get('message', 'not reported'))}</td></tr>",
    ]
    if _is_num(cov.get("condition_number")):
        parts.append("<tr><th class='l'>condition number</th>"
                     + _td(cov["condition_number"], "condition_number", cls="l") + "</tr>")
    if _is_num(s.get("epsilon_shrinkage_percent")):
        parts.append("<tr><th class='l'>epsilon shrinkage %</th>"
                     + _td(s["epsilon_shrinkage_percent"], "epsilon_shrinkage_percent", "pct", cls="l") + "</tr>")
    parts.append("</table>")
    timing = s.get("timing") or {}
    if timing:
        parts.append("<h3>Timing (seconds)</h3><table id='timing'><tr>"
                     + "".join(f"<th>{_esc(k.removesuffix('_s'))}</th>" for k in timing) + "</tr><tr>"
                     + "".join(_td(v, f"timing.{k}", "s") for k, v in timing.items()) + "</tr></table>")

    parts.append("<h2 id='parameters-section'>Parameters</h2>")
    parts.append("<p class='sub'>OMEGA and SIGMA as declared (OMEGA as variances); 95 % CI = estimate ± 1.96 SE, "
                 "for variances and sigmas on the log scale (estimate·exp(±1.96 SE/estimate)); CV % of an "
                 "exponential eta = 100·sqrt(exp(ω²) − 1) (none for an additive eta: its SD is its spread); "
                 "corr. = the correlation of an OMEGA off-diagonal element.</p>")
    parts.append(_parameter_table(result))
    om = s.get("omega") or {}
    if om.get("names"):
        parts.append("<h3>OMEGA (variances and covariances)</h3>")
        parts.append(_matrix_table(om["names"], om["matrix"], "omega", "omega-matrix"))
    corr = cov.get("correlation")
    if corr and corr.get("names"):
        parts.append("<h3>Correlation of the estimates</h3>")
        parts.append(_matrix_table(corr["names"], corr["matrix"], "correlation", "correlation-matrix"))

    uncertainty = _uncertainty_sections(getattr(result, "run_dir", None))
    if uncertainty:
        parts.append("<h2 id='uncertainty'>Bootstrap and SIR</h2>")
        parts.extend(uncertainty)

    parts.append("<h2 id='model'>Model</h2>")
    model = getattr(result, "model", None)
    if model is not None:
        parts.append(f"<pre id='model-summary'>{_esc(repr(model))}</pre>")
    source = None
    if model_path:
        try:
            p = Path(model_path)
            source = p.read_text(encoding="utf-8") if p.suffix == ".py" and p.is_file() else None
        except OSError:
            source = None
    if source is not None:
        parts.append(f"<h3>{_esc(Path(model_path).name)}</h3><pre id='model-source'>{_esc(source)}</pre>")
    elif model is None:
        parts.append(f"<p class='note'>The model ({_esc(model_name)}) could not be loaded: see the notes.</p>")

    parts.append("<h2 id='data'>Data</h2>")
    dataset = getattr(result, "dataset", None)
    if dataset is not None:
        parts.append(f"<pre id='data-summary'>{_esc(dataset.summary())}</pre>")
    else:
        parts.append(f"<p>{_esc(fmt(s.get('n_subjects'), 'int'))} subjects, "
                     f"{_esc(fmt(s.get('n_observations'), 'int'))} observations (the data file was not "
                     f"available for a fuller summary).</p>")

    parts.append("<h2 id='plots'>Plots</h2>")
    current = None
    for section, block in plots_html:
        if section != current:
            parts.append(f"<h3>{_esc(section)}</h3>")
            current = section
        parts.append(block)
    if notes:
        parts.append("<h2 id='notes'>Notes</h2>")
        parts.extend(f"<p class='note'>{_esc(n)}</p>" for n in notes)
    parts.append("</main></body></html>")
    return "\n".join(parts)


def read_report_numbers(html_text: str) -> dict:
    """``{data-key: float}`` of every number in a report (see the module docstring)."""
    from html.parser import HTMLParser

    found: dict = {}

    class _P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if "data-key" in a and "data-value" in a:
                found[a["data-key"]] = float(a["data-value"])

    _P().feed(html_text)
    return found

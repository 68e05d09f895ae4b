"""NONMEM-style outputs of a fit: xpose's sdtab/patab/cotab/catab, ``$TABLE`` files, an
``.ext``-like parameter file and a ``.lst``-like summary.

Tables are written in NONMEM's ``$TABLE`` layout, which xpose and PsN read::

    TABLE NO.  1
     ID          TIME        DV          MDV         PRED        ...
      1.0000E+00  0.0000E+00  7.4000E-01  0.0000E+00  ...

(a title line, the column names left-aligned in 12-character fields after one space,
then every value in a 12-character ``E12.4`` field; a value NONMEM leaves undefined,
such as a residual on a dose record, is written as 0, as NONMEM does), and beside each
the same columns as CSV (``sdtab1.csv``; missing values as ``.``).

- ``sdtab``: ID TIME DV MDV PRED IPRED RES IRES WRES CWRES IWRES (NPDE with ``--npde``).
- ``patab``: ID TIME, the individual parameters of every record (CL, V, KA ...: the
  names ``individual()`` returns, upper case) and the etas as ETA1, ETA2 ... in the
  model's eta order.
- ``cotab`` / ``catab``: ID TIME and the continuous / categorical covariates (a column
  with at most ``CATEGORICAL_LEVELS`` distinct values counts as categorical, as xpose's
  own guess does).
- An imported control stream's ``$TABLE`` records: each writes the columns it names to
  its ``FILE=`` (``NOAPPEND`` respected; otherwise NONMEM's appended DV PRED RES WRES).
- ``RUN.ext``: NONMEM's ``.ext`` layout (``TABLE NO.`` title, ITERATION, the parameters
  as THETA1.. OMEGA(1,1).. SIGMA(1,1).., OBJ): the final estimates (iteration -1000000000),
  their SEs (-1000000001) when the covariance step ran, and the iteration history where
  the fit kept one (``FitResult.history``).
- ``RUN.lst``: a text summary as NONMEM prints it: minimisation status, OFV, the
  estimates, their SEs, and the covariance step (condition number, eigenvalues of the
  correlation matrix, the correlation matrix of the estimates).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

# A covariate with at most this many distinct values is categorical (catab), as in xpose.
CATEGORICAL_LEVELS = 4
SDTAB = ["ID", "TIME", "DV", "MDV", "PRED", "IPRED", "RES", "IRES", "WRES", "CWRES", "IWRES", "NPDE"]
# Data items that are not covariates.
DATA_ITEMS = {"ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "DUR", "II", "ADDL", "SS", "LLOQ", "BLQ",
              "CENS", "OCC", "REC"}
# NONMEM appends these to every $TABLE unless NOAPPEND.
APPENDED = ["DV", "PRED", "RES", "WRES"]
TABLE_OPTIONS = {"NOPRINT", "PRINT", "ONEHEADER", "NOHEADER", "NOAPPEND", "FIRSTONLY", "FIRSTRECORDONLY",
                 "NOTITLE", "NOLABEL", "FORMAT", "FILE", "NOSUB", "ESAMPLE", "SEED", "WRESCHOL", "RANMETHOD",
                 "ONEHEADERALL", "LFORMAT", "RFORMAT", "EXCLUDE_BY", "VARCALC", "FIXEDETAS", "CONDITIONAL",
                 "UNCONDITIONAL", "OMITTED", "PARAFILE", "FORWARD", "BACKWARD", "APPEND"}
# NONMEM's ITERATION codes in .ext for the final estimates and their standard errors.
EXT_FINAL, EXT_SE = -1000000000, -1000000001


# --------------------------------------------------------------------------- layout
def format_table(frame: pd.DataFrame, number: int = 1) -> str:
    """``frame`` in NONMEM's $TABLE text layout (module docstring)."""
    lines = [f"TABLE NO.  {number}", " " + "".join(f"{c:<12}" for c in frame.columns).rstrip()]
    values = frame.to_numpy(dtype=float, na_value=np.nan)
    values = np.where(np.isfinite(values), values, 0.0)  # NONMEM writes 0 where it has no value
    for row in values:
        lines.append("".join(f"{v:12.4E}" for v in row))
    return "\n".join(lines) + "\n"


def read_table(path) -> pd.DataFrame:
    """A NONMEM table file read back as xpose reads it (whitespace-separated, the title
    line skipped)."""
    return pd.read_csv(path, sep=r"\s+", skiprows=1)


def write_table(frame: pd.DataFrame, path, number: int = 1) -> list[str]:
    """``path`` in NONMEM's layout and ``path.csv`` as CSV; returns the file names."""
    path = Path(path)
    path.write_text(format_table(frame, number))
    csv = path.with_name(path.name + ".csv")
    frame.to_csv(csv, index=False, na_rep=".", float_format="%.10g")
    return [path.name, csv.name]


# --------------------------------------------------------------------------- columns
def _records(result) -> pd.DataFrame:
    """The diagnostics table (``FitResult.table()``) with the data's own columns beside it."""
    table = result.table().copy()
    frame = getattr(result.dataset, "frame", None)
    if frame is not None and len(frame) == len(table):
        for c in frame.columns:
            if c.upper() not in table.columns:
                table[c.upper()] = frame[c].to_numpy()
    return table


def individual_parameters(result) -> pd.DataFrame:
    """Every record's individual parameters at the EBEs (``individual()``'s names, upper
    case), in the data's row order."""
    import jax

    model, dataset, values = result.model, result.dataset, result.values
    if model is None or dataset is None or values is None:
        return pd.DataFrame()
    batch = dataset.batch(model.covariates, occasion_column=model.occasion_column)
    eta = result.etas.drop(columns="ID").to_numpy(dtype=float)
    ip = jax.jit(jax.vmap(lambda e, s: model.individual_parameters(values, e, s)))(eta, batch)
    return pd.DataFrame({k.upper(): batch.rows(v) for k, v in sorted(ip.items())})


def covariates(result) -> tuple[list[str], list[str]]:
    """(continuous, categorical) covariate columns of the data."""
    frame = getattr(result.dataset, "frame", None)
    if frame is None:
        return [], []
    cont, cat = [], []
    for c in frame.columns:
        if c.upper() in DATA_ITEMS or not pd.api.types.is_numeric_dtype(frame[c]):
            continue
        (cat if frame[c].nunique(dropna=True) <= CATEGORICAL_LEVELS else cont).append(c.upper())
    return cont, cat


def xpose_tables(result) -> dict[str, pd.DataFrame]:
    """{"sdtab": ..., "patab": ..., "cotab": ..., "catab": ...} (empty tables left out)."""
    records = _records(result)
    out = {"sdtab": records[[c for c in SDTAB if c in records.columns]]}
    ip = individual_parameters(result)
    eta_names = [n for n in result.omega.index if n in records.columns]
    if len(ip) == len(records):
        # The etas as ETA1, ETA2 ... (NONMEM's names, which xpose finds the random effects by).
        etas = records[eta_names].reset_index(drop=True)
        etas.columns = [f"ETA{list(result.omega.index).index(n) + 1}" for n in eta_names]
        patab = pd.concat([records[["ID", "TIME"]].reset_index(drop=True), ip, etas], axis=1)
        out["patab"] = patab.loc[:, ~patab.columns.duplicated()]
    cont, cat = covariates(result)
    if cont:
        out["cotab"] = records[["ID", "TIME", *cont]]
    if cat:
        out["catab"] = records[["ID", "TIME", *cat]]
    return out


def _eta_aliases(result, source: str | None) -> dict[str, str]:
    """NONMEM's ETA1/ETA(1) names of an imported model's etas (the "ETA(n) -> name" notes
    of its translation ``source``; the n-th eta otherwise)."""
    names = list(result.omega.index)
    aliases = {f"ETA{i + 1}": n for i, n in enumerate(names)}
    for n, name in re.findall(r"ETA\((\d+)\) -> (\w+)", source or ""):
        aliases[f"ETA{n}"] = name
    return aliases


def control_stream_tables(result, tables: list, folder, source: str | None = None) -> tuple[list[str], list[str]]:
    """Each $TABLE record (as ``pkmix.nonmem.read`` keeps them: [(item, value)]) written to
    its FILE in ``folder`` (``source``: the translated model file, for the ETA(n) names).
    Returns (the files written, the items pkmix does not compute, with their file)."""
    records = _records(result)
    ip = individual_parameters(result)
    if len(ip) == len(records):
        for c in ip.columns:
            if c not in records.columns:
                records[c] = ip[c].to_numpy()
    aliases = _eta_aliases(result, source)
    for alias, name in aliases.items():
        if name in records.columns:
            records[alias] = records[name].to_numpy()
    if "IPRED" in records.columns:
        records["IPRE"] = records["IPRED"]
    written, missing = [], []
    for number, options in enumerate(tables, start=1):
        keys = [k.upper() for k, v in options if v is None]
        named = {k.upper(): v for k, v in options if v is not None}
        file = (named.get("FILE") or f"table{number}").strip("'\"")
        items = []
        for k in keys:
            k = re.sub(r"^ETA\((\d+)\)$", r"ETA\1", k)
            if k in TABLE_OPTIONS or k in items:
                continue
            items.append(k)
        if "NOAPPEND" not in keys:
            items = [k for k in items if k not in APPENDED] + APPENDED
        have = [k for k in items if k in records.columns]
        missing += [f"{k} ({file})" for k in items if k not in records.columns]
        frame = records[have]
        if "FIRSTONLY" in keys or "FIRSTRECORDONLY" in keys:
            frame = frame[~records["ID"].duplicated()]
        written += write_table(frame, Path(folder) / file, number)
    return written, missing


# --------------------------------------------------------------------------- ext, lst
def nonmem_names(result) -> list[tuple[str, str]]:
    """[(NONMEM name, pkmix name)]: THETA1.., OMEGA(i,j) (lower triangle), SIGMA(i,i)."""
    out = [(f"THETA{i + 1}", n) for i, n in enumerate(result.theta)]
    etas = list(result.omega.index)
    for i, a in enumerate(etas):
        for j, b in enumerate(etas[: i + 1]):
            out.append((f"OMEGA({i + 1},{j + 1})", f"omega({a},{b})"))
    for k, n in enumerate(result.iov):
        m = len(etas) + k + 1
        out.append((f"OMEGA({m},{m})", f"omega({n},{n})"))
    for i, n in enumerate(result.sigma):
        out.append((f"SIGMA({i + 1},{i + 1})", n))
    return out


def _sd_sigmas(result) -> set[str]:
    """Sigmas declared as SDs (pkmix's default): NONMEM's SIGMA is a variance."""
    model = result.model
    if model is None:
        return set()
    return {n for n, sg in zip(model.spec.sigma_names, model.spec.sigmas) if sg.scale != "variance"}


def _nonmem_scale(result, name: str, value: float) -> float:
    """A value as NONMEM reports it (an SD-declared sigma as its variance)."""
    return value * value if name in _sd_sigmas(result) else value


def _value(result, name: str) -> float:
    if name in result.theta:
        return float(result.theta[name])
    if name in result.sigma:
        v = float(result.sigma[name])
        return v * v if name in _sd_sigmas(result) else v
    a, b = name[6:-1].split(",")
    if a in result.iov:
        return float(result.iov[a])
    return float(result.omega.loc[a, b])


def _standard_error(result, name: str) -> float | None:
    """The SE on NONMEM's scale (an SD-declared sigma's by the delta method: 2 SD SE)."""
    se = result.se.get(name)
    if se is None:
        return None
    if name in _sd_sigmas(result):
        return 2.0 * float(result.sigma[name]) * float(se)
    return float(se)


def ext_frame(result) -> pd.DataFrame:
    """The .ext table: iteration history (where kept), final estimates, SEs."""
    names = nonmem_names(result)
    rows = []
    history = getattr(result, "history", None)
    if history is not None and len(history):
        for _, h in history.iterrows():
            rows.append([int(h["iteration"])] + [_nonmem_scale(result, p, float(h.get(p, np.nan))) for _, p in names]
                        + [float(h["ofv"])])
    rows.append([EXT_FINAL] + [_value(result, p) for _, p in names] + [result.ofv])
    if result.se:
        rows.append([EXT_SE] + [_standard_error(result, p) or 0.0 for _, p in names] + [0.0])
    return pd.DataFrame(rows, columns=["ITERATION"] + [n for n, _ in names] + ["OBJ"])


def format_ext(result) -> str:
    """``ext_frame`` in NONMEM's .ext layout (a title line, names, E-format values)."""
    frame = ext_frame(result)
    title = f"TABLE NO.     1: {result.method.upper()}: Goal Function=MINIMUM VALUE OF OBJECTIVE FUNCTION"
    lines = [title, " " + "".join(f"{c:<13}" for c in frame.columns).rstrip()]
    for row in frame.itertuples(index=False):
        lines.append(f" {int(row[0]):>11d}" + "".join(f" {v: .5E}" for v in row[1:]))
    return "\n".join(lines) + "\n"


def _matrix_block(names, matrix, fmt="{: .2E}") -> list[str]:
    width = 11
    lines = ["            " + "".join(f"{n[:width]:>{width + 1}}" for n in names)]
    for i, n in enumerate(names):
        cells = "".join(f" {fmt.format(matrix[i][j]):>{width}}" for j in range(i + 1))
        lines.append(f" {n[:width]:<{width}}" + cells)
    return lines


def format_lst(result) -> str:
    """A ``.lst``-like summary (module docstring)."""
    names = nonmem_names(result)
    status = "MINIMIZATION SUCCESSFUL" if result.converged else "MINIMIZATION TERMINATED"
    if not result.estimated:
        status = "NO MINIMIZATION (EVALUATION AT THE GIVEN ESTIMATES, AS MAXEVAL=0)"
    bar = "*" * 100
    lines = [
        f"pkmix {result.method.upper()} {'estimation' if result.estimated else 'evaluation'} of "
        f"{result.model_name}", "",
        f" TOT. NO. OF INDIVIDUALS: {result.n_subjects}",
        f" TOT. NO. OF OBS RECS:    {result.n_observations}", "",
        " #TERM:", f" 0{status}", f" {result.message}",
        f" NO. OF FUNCTION EVALUATIONS USED: (see timing)   ITERATIONS: {result.iterations}", "",
        " ETASHRINKSD(%)  " + "  ".join(f"{result.shrinkage_percent.get(n) or 0.0: .4E}" for n in result.omega.index),
        f" EPSSHRINKSD(%)   {result.epsilon_shrinkage_percent or 0.0: .4E}", "",
        bar, " #OBJV:" + "*" * 40 + f"  {result.ofv:.3f}  " + "*" * 40, bar, "",
        " FINAL PARAMETER ESTIMATE", "",
    ]

    def section(title, value_of):
        out = [f" {title}", ""]
        out.append(" " + "".join(f"{n:>13}" for n, _ in names))
        out.append(" " + "".join(f"{_fmt(value_of(p)):>13}" for _, p in names))
        return out

    sd = _sd_sigmas(result)
    lines.append(" NAMES: " + ", ".join(f"{n} = {p}" + ("^2 (declared as an SD)" if p in sd else "")
                                        for n, p in names))
    lines.append("")
    lines += section("THETA - VECTOR, OMEGA(i,j) AND SIGMA(i,i)", lambda p: _value(result, p))
    lines.append("")
    if result.se:
        lines += [bar, " STANDARD ERROR OF ESTIMATE (" + result.covariance_message + ")", bar, ""]
        lines += section("SE OF THETA, OMEGA AND SIGMA", lambda p: _standard_error(result, p))
        lines.append("")
    else:
        lines += [" COVARIANCE STEP: " + (result.covariance_message or "not run"), ""]
    corr = result.correlation
    if corr is not None and len(corr):
        m = corr.to_numpy(dtype=float)
        eig = np.sort(np.linalg.eigvalsh((m + m.T) / 2))
        cond = eig[-1] / eig[0] if eig[0] > 0 else math.inf
        lines += [bar, " CORRELATION MATRIX OF ESTIMATE", bar, ""]
        lines += _matrix_block(list(corr.index), m)
        lines += ["", bar, " EIGENVALUES OF THE CORRELATION MATRIX OF ESTIMATE", bar, ""]
        lines.append(" " + "".join(f"{i + 1:>12}" for i in range(len(eig))))
        lines.append(" " + "".join(f"{v:>12.2E}" for v in eig))
        lines.append("")
        lines.append(f" CONDITION NUMBER (largest / smallest eigenvalue): {cond:.4g}")
        lines.append("")
    t = result.timing or {}
    lines.append(f" Elapsed time: total {t.get('total_s', 0) or 0:.2f} s (estimation {t.get('estimation_s', 0) or 0:.2f}"
                 f" s, covariance {t.get('covariance_s', 0) or 0:.2f} s) on {result.device}")
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return "........." if v is None or not math.isfinite(float(v)) else f"{float(v): .2E}"


# --------------------------------------------------------------------------- all
def write_nonmem_outputs(result, out, *, run_name: str = "run1", control_stream=None,
                         source: str | None = None) -> list[str]:
    """sdtab1/patab1/cotab1/catab1 (and their .csv; the number is ``run_name``'s trailing
    digits, as xpose's runno), an imported model's $TABLE files (``control_stream``: its
    ``pkmix.nonmem.read``; ``source``: its translation), RUN.ext and RUN.lst in ``out``;
    returns the names written. The tables need the diagnostics table (not written after
    ``--no-diagnostics``)."""
    out = Path(out)
    digits = re.findall(r"\d+$", run_name)
    number = digits[0] if digits else "1"
    written = []
    try:
        result.table()
        has_table = True
    except ValueError:
        has_table = False
    if has_table:
        # A $TABLE record's own FILE (FILE=sdtab1, PsN's habit) takes the place of the xpose table of that name.
        requested = {(dict((k.upper(), v) for k, v in t if v is not None).get("FILE") or "").strip("'\"")
                     for t in (control_stream.tables if control_stream is not None else [])}
        for name, frame in xpose_tables(result).items():
            if f"{name}{number}" not in requested:
                written += write_table(frame, out / f"{name}{number}")
        if control_stream is not None and control_stream.tables:
            files, missing = control_stream_tables(result, control_stream.tables, out, source)
            written += files
            if missing:
                print(f"warning: $TABLE items pkmix does not compute, left out: {', '.join(missing)}")
    (out / f"{run_name}.ext").write_text(format_ext(result))
    (out / f"{run_name}.lst").write_text(format_lst(result))
    return written + [f"{run_name}.ext", f"{run_name}.lst"]


__all__ = ["format_table", "read_table", "write_table", "xpose_tables", "control_stream_tables", "ext_frame",
           "format_ext", "format_lst", "write_nonmem_outputs"]

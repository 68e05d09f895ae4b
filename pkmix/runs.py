"""Run records and model comparison: what reproduces a fit, a run table, and the
likelihood-ratio test between two fits.

``pkmix fit --out DIR`` writes ``DIR/run.json`` (``run_record``): the model's source,
the data file's SHA-256, the method and options, the pkmix, JAX and Python versions, the
machine and device, and the estimated parameters' names (which ``compare`` uses to
decide whether two models are nested). ``run_table`` is what ``pkmix runs`` prints, as
PsN's runrecord or Pirana's run list: one row per run with OFV, dOFV against a reference
run, parameter count, AIC/BIC, condition number, convergence, covariance step and time.
``compare`` is ``pkmix compare A B``: estimates side by side and, when the models are
nested, the likelihood-ratio test.

Nested, as pkmix decides it: the same data (the same SHA-256 where both runs recorded
one, otherwise the same numbers of subjects and observations), the same method (OFVs
of different approximations are not comparable), and the estimated parameters' names of
one a proper subset of the other's. The test's degrees of freedom are the difference in
the number of estimated parameters. The names cannot tell whether the larger model
reduces to the smaller one when the extra parameters take their null values (a
covariance of 0, a covariate effect of 0): that stays the modeller's judgement, as with
PsN and Pirana, and the output says so.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

RECORD = "run.json"


# --------------------------------------------------------------------------- record
def sha256(path) -> str | None:
    """The file's SHA-256 (hex), or None when it cannot be read."""
    try:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return None


def _model_source(model_path: str, model) -> tuple[str | None, str | None]:
    """(the file the model came from, its text): the model file or control stream as
    given, or a library model's module file."""
    candidates = [Path(model_path)]
    if model is not None:
        from .report import _model_source_file

        found = _model_source_file(model)
        if found:
            candidates.append(Path(found))
    for path in candidates:
        if path.is_file():
            try:
                return str(path.resolve()), path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                pass
    return None, None


def description_of(source: str | None, model_name: str) -> str:
    """The first line of the model file's docstring or a control stream's $PROBLEM, else
    the model's name: what the run table shows as the run's description."""
    if source:
        text = source.lstrip()
        for quote in ('"""', "'''"):
            if text.startswith(quote):
                first = text[3:].strip().splitlines()
                return first[0].strip().rstrip(".") if first else model_name
        for line in text.splitlines():
            if line.strip().upper().startswith("$PROB"):
                return line.strip().split(None, 1)[1].strip() if len(line.split()) > 1 else model_name
    return model_name


def estimated_names(model) -> list[str] | None:
    """The estimated parameters' names as the SE keys spell them (fixed ones left out)."""
    if model is None:
        return None
    from ._estimation.covariance import natural_names
    from ._estimation.engine import transform_for

    return list(natural_names(transform_for(model)))


def run_record(result, *, model_path: str, data_path: str, options: dict | None = None,
               argv: list[str] | None = None) -> dict:
    """What reproduces a fit: model source, data checksum, method and options, versions,
    machine. ``options``: the fit's options as given (max_iter, covariance, ...)."""
    import jax

    from . import __version__

    source_path, source = _model_source(model_path, result.model)
    data = Path(data_path) if data_path else None
    return {
        "pkmix_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "description": description_of(source, result.model_name),
        "command": list(sys.argv if argv is None else argv),
        "model": {"path": source_path or model_path, "name": result.model_name, "source": source,
                  "sha256": hashlib.sha256(source.encode()).hexdigest() if source is not None else None},
        "data": {"path": str(data.resolve()) if data is not None and data.exists() else data_path,
                 "sha256": sha256(data) if data is not None else None,
                 "n_subjects": result.n_subjects, "n_observations": result.n_observations},
        "method": result.method,
        "options": dict(options or {}),
        "estimated_parameters": estimated_names(result.model),
        "versions": {"pkmix": __version__, "jax": jax.__version__, "python": platform.python_version(),
                     "numpy": _version("numpy"), "scipy": _version("scipy")},
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "cpus": os.cpu_count(), "hostname": platform.node(), "device": result.device},
    }


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - a version we cannot read is not worth failing for
        return None


def write_run_record(out, result, **kwargs) -> Path:
    """``run_record`` written to ``out/run.json``."""
    path = Path(out) / RECORD
    path.write_text(json.dumps(run_record(result, **kwargs), indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- runs
@dataclass
class Run:
    """One run directory: its name (the folder's), the results (``pkmix.load_run``) and
    the run record (empty for a folder written before run.json existed)."""

    name: str
    path: Path
    result: object
    record: dict

    @property
    def estimated(self) -> list[str]:
        """Estimated parameters: from the run record, else every parameter of results.json
        (OMEGA covariances that are exactly 0 left out: not estimated)."""
        names = self.record.get("estimated_parameters")
        if names:
            return list(names)
        table = self.result.parameters()
        keep = [not (t == "omega" and "," in p and p[6:-1].split(",")[0] != p[6:-1].split(",")[1] and v == 0.0)
                for p, t, v in zip(table["parameter"], table["type"], table["estimate"])]
        return list(table["parameter"][keep])

    @property
    def description(self) -> str:
        return self.record.get("description") or self.result.model_name

    @property
    def data_sha256(self) -> str | None:
        return (self.record.get("data") or {}).get("sha256")


def load_runs(paths) -> list[Run]:
    """Each run directory loaded (results.json through ``pkmix.load_run``, run.json when
    present).

    Raises:
        FileNotFoundError, ValueError: a folder that is not a ``pkmix fit --out`` folder.
    """
    import warnings

    from .report import load_run

    runs = []
    for p in paths:
        path = Path(p)
        if not path.is_dir():
            raise FileNotFoundError(f"{path} {'is a file' if path.exists() else 'does not exist'}: "
                                    "give the --out folders of `pkmix fit`")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = load_run(path)
        record = {}
        if (path / RECORD).is_file():
            try:
                record = json.loads((path / RECORD).read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{path / RECORD} is not valid JSON: {e}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path / RECORD}: expected a JSON object")
        runs.append(Run(path.resolve().name or str(path), path, result, record))
    return runs


def run_table(runs: list[Run], reference: str | None = None) -> pd.DataFrame:
    """One row per run: run, description, method, OFV, dOFV (against ``reference``, a
    run's name; default the first run), estimated parameters, AIC, BIC, condition
    number, converged, covariance step, time (s).

    Raises:
        ValueError: ``reference`` is not one of the runs.
    """
    if not runs:
        raise ValueError("no runs given")
    names = [r.name for r in runs]
    ref = runs[0] if reference is None else next((r for r in runs if r.name == reference), None)
    if ref is None:
        raise ValueError(f"reference run '{reference}' is not among the runs ({', '.join(names)})")
    rows = []
    for r in runs:
        res = r.result
        same_data = _same_data(r, ref)
        cov = res.covariance_message or ""
        rows.append({
            "run": r.name, "description": r.description, "method": res.method.upper(),
            "OFV": res.ofv, "dOFV": res.ofv - ref.result.ofv if same_data else float("nan"),
            "n_par": len(r.estimated), "AIC": res.aic, "BIC": res.bic,
            "condition_number": res.condition_number, "converged": "yes" if res.converged else "NO",
            "covariance": _covariance_word(cov, res), "time_s": (res.timing or {}).get("total_s"),
        })
    table = pd.DataFrame(rows)
    table.attrs["reference"] = ref.name
    return table


def _covariance_word(message: str, result) -> str:
    if message in ("", "not requested") or "not requested" in message:
        return "not run"
    return "ok" if result.se else "FAILED"


def _same_data(a: Run, b: Run) -> bool:
    if a.data_sha256 and b.data_sha256:
        return a.data_sha256 == b.data_sha256
    return (a.result.n_subjects, a.result.n_observations) == (b.result.n_subjects, b.result.n_observations)


def format_run_table(table: pd.DataFrame) -> str:
    """The run table as text (PsN runrecord-like), the reference run marked with '*'."""
    ref = table.attrs.get("reference")

    def num(v, spec):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    shown = pd.DataFrame({
        "run": [("*" if n == ref else " ") + n for n in table["run"]],
        "description": [d if len(d) <= 40 else d[:37] + "..." for d in table["description"]],
        "method": table["method"],
        "OFV": [num(v, ".3f") for v in table["OFV"]],
        "dOFV": [num(v, ".3f") for v in table["dOFV"]],
        "n_par": table["n_par"],
        "AIC": [num(v, ".2f") for v in table["AIC"]],
        "BIC": [num(v, ".2f") for v in table["BIC"]],
        "cond": [num(v, ".3g") for v in table["condition_number"]],
        "conv": table["converged"],
        "cov": table["covariance"],
        "time_s": [num(v, ".1f") for v in table["time_s"]],
    })
    return (shown.to_string(index=False)
            + f"\n* reference run for dOFV: {ref} (dOFV = OFV - OFV of the reference; empty where the data differ)")


# --------------------------------------------------------------------------- compare
@dataclass
class Comparison:
    """``compare``'s answer: the estimates side by side, and the likelihood-ratio test
    when the models are nested (else ``lrt`` None and ``why_not`` the reason)."""

    a: Run
    b: Run
    estimates: pd.DataFrame
    lrt: dict | None
    why_not: str | None


def nesting(a: Run, b: Run) -> tuple[Run, Run] | str:
    """(reduced, full) when the runs are nested by pkmix's rule (module docstring), else
    the reason they are not."""
    if not _same_data(a, b):
        return "the runs fit different data (data checksums or subject/observation counts differ)"
    if a.result.method != b.result.method:
        return (f"the methods differ ({a.result.method.upper()} and {b.result.method.upper()}): their OFVs are "
                "different approximations of the likelihood, so their difference has no chi-square distribution")
    ea, eb = set(a.estimated), set(b.estimated)
    if ea == eb:
        return "both estimate the same parameters: not nested (compare the OFVs directly)"
    if ea < eb:
        return a, b
    if eb < ea:
        return b, a
    return ("neither run's estimated parameters are a subset of the other's "
            f"(only in {a.name}: {', '.join(sorted(ea - eb))}; only in {b.name}: {', '.join(sorted(eb - ea))})")


def likelihood_ratio(reduced_ofv: float, full_ofv: float, df: int) -> dict:
    """dOFV = OFV(reduced) - OFV(full), referred to chi-square with ``df`` degrees of freedom."""
    from scipy.stats import chi2

    dofv = float(reduced_ofv - full_ofv)
    return {"dofv": dofv, "df": int(df), "p_value": float(chi2.sf(dofv, df)) if dofv > 0 else 1.0,
            "critical_0.05": float(chi2.ppf(0.95, df))}


def compare(a: Run, b: Run) -> Comparison:
    """Estimates of two runs side by side (SE and RSE % where computed), with the
    likelihood-ratio test when they are nested."""
    ta, tb = a.result.parameters(), b.result.parameters()
    cols = ["parameter", "estimate", "rse_percent"]
    merged = pd.merge(ta[cols], tb[cols], on="parameter", how="outer", suffixes=(f" {a.name}", f" {b.name}"))
    # In the parameter tables' order (thetas, OMEGA, sigmas), B's own parameters after A's of their kind.
    kinds = {p: (("theta", "omega", "iov", "sigma").index(t), i)
             for i, (p, t) in enumerate(zip(list(ta["parameter"]) + list(tb["parameter"]),
                                            list(ta["type"]) + list(tb["type"])))}
    kinds = {p: min(v for q, v in kinds.items() if q == p) for p in kinds}
    merged = merged.iloc[sorted(range(len(merged)), key=lambda i: kinds[merged["parameter"].iloc[i]])]
    merged = merged.reset_index(drop=True)
    merged.attrs["names"] = (a.name, b.name)
    nest = nesting(a, b)
    if isinstance(nest, str):
        return Comparison(a, b, merged, None, nest)
    reduced, full = nest
    df = len(full.estimated) - len(reduced.estimated)
    lrt = likelihood_ratio(reduced.result.ofv, full.result.ofv, df)
    lrt.update({"reduced": reduced.name, "full": full.name,
                "extra_parameters": sorted(set(full.estimated) - set(reduced.estimated))})
    return Comparison(a, b, merged, lrt, None)


def format_comparison(c: Comparison) -> str:
    def num(v, spec):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    a, b = c.a, c.b
    lines = [f"{a.name}: {a.description} ({a.result.method.upper()}, OFV {a.result.ofv:.3f})",
             f"{b.name}: {b.description} ({b.result.method.upper()}, OFV {b.result.ofv:.3f})", ""]
    shown = c.estimates.copy()
    for col in shown.columns[1:]:
        spec = ".1f" if col.startswith("rse_percent") else ".6g"
        shown[col] = [num(v, spec) for v in shown[col]]
    shown.columns = [col.replace("rse_percent", "RSE%") for col in shown.columns]
    lines.append(shown.to_string(index=False))
    lines.append("")
    lines.append(f"dOFV ({b.name} - {a.name}): {b.result.ofv - a.result.ofv:.3f}")
    if c.lrt:
        t = c.lrt
        verdict = "significant" if t["p_value"] < 0.05 else "not significant"
        lines.append(
            f"likelihood-ratio test: {t['reduced']} (reduced) is nested in {t['full']} (full; extra: "
            f"{', '.join(t['extra_parameters'])}): dOFV {t['dofv']:.3f} on {t['df']} df, p = {t['p_value']:.4g} "
            f"({verdict} at 0.05; critical value {t['critical_0.05']:.3f})")
        lines.append("  nested by parameter names, same data and method: that the full model reduces to the "
                     "reduced one at the extra parameters' null values is the modeller's judgement")
    else:
        lines.append(f"no likelihood-ratio test: {c.why_not}")
    return "\n".join(lines)


__all__ = ["Comparison", "Run", "compare", "format_comparison", "format_run_table", "likelihood_ratio",
           "load_runs", "nesting", "run_record", "run_table", "write_run_record"]

"""``pkmix.bootstrap``: the nonparametric (case) bootstrap of a fit, every replicate
refitted in ``fit_batch``.

Subjects are resampled with replacement (within strata when ``stratify`` names a
column: each stratum keeps its number of subjects), and every replicate is fitted in
one compiled program from the original estimates, each subject's modes starting from
its original modes; a replicate is its rows of subject indices into the one dataset
(``fit_batch``'s ``subjects``), so no replicate dataset is built. Intervals:
percentile and BCa (bias-corrected and accelerated); BCa's acceleration comes from the
jackknife (N leave-one-subject-out refits, also in one ``fit_batch`` call) or
from a regression of the replicates on their subject frequencies (no refits).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ._common import (acceleration as acceleration_of, as_fit, bca_interval, estimate_vector, fit_modes,
                      fit_replicates,
                      jackknife_acceleration, percentile_interval, regression_influence, table_records, write_json)


@dataclass
class BootstrapResult:
    """A bootstrap of a fit.

    Attributes:
        estimates: one row per replicate (``fit_batch``'s table: REP, converged, status,
            ofv, every parameter, ``se(NAME)``, ``covariance``) plus ``boundary``.
        summary: one row per parameter: ``estimate`` (the original fit), ``mean``,
            ``median``, ``sd``, ``bias`` (mean - estimate), ``relative_bias_percent``,
            ``se_original`` (the fit's covariance step), ``pct_lower``/``pct_upper``
            (percentile interval), ``bca_lower``/``bca_upper``, ``acceleration``
            (see ``acceleration``; 0 with ``acceleration=None``: the BC interval), ``n`` replicates used.
        names: the parameters. level: the intervals' level.
        shares: fractions of replicates: ``successful`` (converged), ``boundary``
            (an estimate at a boundary: ``fit_batch``'s ``boundary`` column, see
            ``pkmix.batch.BOUNDARY_RELATIVE``),
            ``covariance_failed`` (no standard errors; NaN without the covariance
            step), ``used``.
        jackknife: leave-one-subject-out estimates (``acceleration="jackknife"`` only).
        timing: seconds: ``resample_s``, ``fit_s``, ``jackknife_s``, ``total_s``, and
            ``fits_per_second`` of the bootstrap's fits (compilation included).
        settings: n, seed, stratify, method, converged_only.
    """

    estimates: pd.DataFrame
    summary: pd.DataFrame
    names: list
    level: float
    shares: dict
    jackknife: pd.DataFrame | None
    timing: dict
    settings: dict = field(default_factory=dict)

    def samples(self) -> pd.DataFrame:
        """The parameter estimates of the replicates used for the intervals."""
        rows = self.estimates
        if self.settings.get("converged_only", True):
            rows = rows[rows["converged"]]
        return rows[self.names].reset_index(drop=True)

    def to_dict(self) -> dict:
        return {"kind": "bootstrap", "level": self.level, "shares": self.shares, "timing": self.timing,
                "settings": self.settings, "summary": table_records(self.summary)}

    def write(self, folder) -> Path:
        """bootstrap.json (summary, shares, settings), bootstrap_estimates.csv, and
        bootstrap_distributions.png (needs matplotlib) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "bootstrap.json", self.to_dict())
        self.estimates.to_csv(folder / "bootstrap_estimates.csv", index=False)
        from .plots import distributions

        distributions(self).savefig(folder / "bootstrap_distributions.png", dpi=110)
        return folder

    def __str__(self):
        s = self.shares
        cov = ("covariance step not run" if not np.isfinite(s["covariance_failed"])
               else f"covariance failed {s['covariance_failed']:.1%}")
        lines = [f"bootstrap: {self.settings['n']} replicates ({self.settings['method']}); successful "
                 f"{s['successful']:.1%}, boundary {s['boundary']:.1%}, {cov}; {self.timing['total_s']:.1f} s"]
        cols = ["estimate", "mean", "bias", "relative_bias_percent", "pct_lower", "pct_upper", "bca_lower",
                "bca_upper"]
        with pd.option_context("display.width", 200, "display.max_columns", None, "display.precision", 4):
            lines.append(str(self.summary[cols]))
        return "\n".join(lines)


def resample_subjects(dataset, n: int, seed: int = 0, stratify: str | None = None) -> np.ndarray:
    """[n, N] indices of subjects (0-based, in the dataset's order) drawn with
    replacement; with ``stratify``, each stratum (the column's first value per subject)
    keeps its number of subjects. Replicate r's draw depends on ``seed`` and r only."""
    frame = dataset.frame
    ids = pd.unique(frame["ID"])
    N = len(ids)
    if stratify is None:
        groups = [np.arange(N)]
    else:
        col = next((c for c in frame.columns if c.upper() == stratify.upper()), None)
        if col is None:
            raise ValueError(f"stratify: the data have no column {stratify!r} (columns: {list(frame.columns)})")
        first = frame.drop_duplicates("ID", keep="first").set_index("ID")[col].reindex(ids).to_numpy()
        groups = [np.flatnonzero(first == v) for v in pd.unique(first)]
    out = np.empty((n, N), dtype=np.int64)
    for r in range(n):
        rng = np.random.default_rng([int(seed), r])
        out[r] = np.concatenate([rng.choice(g, size=g.size, replace=True) for g in groups])
    return out


def replicate_frame(dataset, subjects: np.ndarray, reps=None) -> pd.DataFrame:
    """One long frame (REP, then the data's NONMEM columns) of the replicates whose rows
    of ``subjects`` (subject indices) are given; the subjects of each get IDs 1..N in
    draw order, so a subject drawn twice is two subjects."""
    frame = dataset.to_frame()
    codes, _ = pd.factorize(frame["ID"], sort=False)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    subjects = np.atleast_2d(subjects)
    reps = np.arange(subjects.shape[0]) if reps is None else np.asarray(reps)
    flat = subjects.ravel()
    lengths = counts[flat]
    rows = order[np.repeat(starts[flat] - np.cumsum(np.concatenate([[0], lengths[:-1]])), lengths)
                 + np.arange(lengths.sum())]
    out = frame.iloc[rows].reset_index(drop=True)
    N = subjects.shape[1]
    out["ID"] = np.repeat(np.tile(np.arange(1, N + 1), subjects.shape[0]), lengths)
    out.insert(0, "REP", np.repeat(np.repeat(reps + 1, N), lengths))
    return out


def bootstrap(fit, n: int = 1000, stratify: str | None = None, seed: int = 0, *, level: float = 0.95,
              acceleration: str | None = "jackknife", converged_only: bool = True, method: str | None = None,
              max_iter: int = 500, covariance: str = "none", chunk_size: int | None = None,
              vmap_width: int | None = None, out=None, progress: bool | None = None) -> BootstrapResult:
    """The nonparametric bootstrap of a fit.

    Args:
        fit: a ``FitResult`` of ``pkmix.fit`` or a run folder (``pkmix fit --out DIR``).
        n: bootstrap replicates.
        stratify: a data column; subjects are resampled within its values.
        seed: random seed of the resampling.
        level: the intervals' confidence level.
        acceleration: how BCa's acceleration is estimated: "jackknife" (N
            leave-one-subject-out refits in one more ``fit_batch`` call, compiled for
            N - 1 subjects), "regression" (influence values regressed from the
            bootstrap replicates' subject frequencies: no refits, no compilation; needs
            n > N) or None (a = 0: the bias-corrected interval).
        converged_only: intervals and bias from converged replicates only (PsN's default
            keeps all; the shares say how many were left out).
        method: estimation method (default the fit's).
        max_iter, chunk_size, vmap_width: passed to ``fit_batch``.
        covariance: "none" (default: the intervals and bias need only the estimates) or
            "sandwich": each replicate's covariance step too (2p + 1 more evaluations a
            replicate; its SEs in ``estimates`` and the share ``covariance_failed``).
        out: a folder to write the tables and plots to (``BootstrapResult.write``).
        progress: ``fit_batch``'s progress line.

    Returns:
        A ``BootstrapResult``.
    """
    t0 = time.perf_counter()
    fit = as_fit(fit)
    n = int(n)
    if n < 2:
        raise ValueError(f"n must be at least 2 bootstrap replicates, got {n}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    model, dataset = fit.model, fit.dataset
    N = dataset.n_subjects
    if acceleration not in ("jackknife", "regression", None):
        raise ValueError(f"acceleration must be 'jackknife', 'regression' or None, got {acceleration!r}")
    if acceleration == "regression" and n <= N:
        raise ValueError(f"acceleration='regression' needs more replicates than subjects (n {n}, {N} subjects): "
                         "use 'jackknife'")
    method = fit.method if method is None else method
    kw = dict(method=method, params=fit.values, max_iter=max_iter, chunk_size=chunk_size, vmap_width=vmap_width)
    draws = resample_subjects(dataset, n, seed, stratify)
    modes = fit_modes(fit)
    t_resample = time.perf_counter() - t0
    t1 = time.perf_counter()
    est, res = fit_replicates(model, dataset, draws, etas=None if modes is None else modes[draws],
                              covariance=covariance, progress=progress, **kw)
    fit_s = time.perf_counter() - t1
    names = list(res.names)
    original = estimate_vector(fit, names)

    jack, jack_s = None, 0.0
    if acceleration == "jackknife":
        t2 = time.perf_counter()
        leave_out = np.asarray([[j for j in range(N) if j != i] for i in range(N)])
        jack, _ = fit_replicates(model, dataset, leave_out, etas=None if modes is None else modes[leave_out],
                                 covariance="none", progress=progress, **kw)
        jack_s = time.perf_counter() - t2

    used = est[est["converged"]] if converged_only else est
    frequencies = np.stack([np.bincount(d, minlength=N) for d in draws])
    rows = []
    for k, name in enumerate(names):
        s = used[name].to_numpy(dtype=float)
        s = s[np.isfinite(s)]
        if acceleration == "jackknife":
            a = jackknife_acceleration(jack.loc[jack["converged"], name])
        elif acceleration == "regression":
            a = acceleration_of(regression_influence(frequencies[used.index.to_numpy()], used[name]))
        else:
            a = 0.0
        mean = float(np.mean(s)) if s.size else np.nan
        bias = mean - original[k]
        plo, phi = percentile_interval(s, level)
        blo, bhi = bca_interval(s, original[k], a, level)
        rows.append({"parameter": name, "estimate": original[k], "mean": mean,
                     "median": float(np.median(s)) if s.size else np.nan,
                     "sd": float(np.std(s, ddof=1)) if s.size > 1 else np.nan, "bias": bias,
                     "relative_bias_percent": 100.0 * bias / original[k] if original[k] else np.nan,
                     "se_original": fit.se.get(name, np.nan), "pct_lower": plo, "pct_upper": phi,
                     "bca_lower": blo, "bca_upper": bhi, "acceleration": a, "n": int(s.size)})
    summary = pd.DataFrame(rows).set_index("parameter")
    conv = est["converged"].to_numpy()
    cov_failed = (est["covariance"] == "none") | ~np.isfinite(est[[f"se({m})" for m in names]].to_numpy()).all(1)
    shares = {"successful": float(conv.mean()), "boundary": float(est["boundary"].mean()),
              "covariance_failed": float(cov_failed.mean()) if covariance != "none" else float("nan"),
              "used": float(len(used) / n)}
    total = time.perf_counter() - t0
    result = BootstrapResult(
        estimates=est, summary=summary, names=names, level=level, shares=shares, jackknife=jack,
        timing={"resample_s": t_resample, "fit_s": fit_s, "jackknife_s": jack_s, "total_s": total,
                "fits_per_second": n / fit_s if fit_s > 0 else float("inf"),
                "compile_s": res.timing["compile_s"], "devices": res.timing["devices"]},
        settings={"n": n, "seed": int(seed), "stratify": stratify, "method": res.method,
                  "converged_only": converged_only, "acceleration": acceleration, "n_subjects": N})
    if out is not None:
        result.write(out)
    return result


__all__ = ["BootstrapResult", "bootstrap", "replicate_frame", "resample_subjects"]

"""``pkmix.sse``: stochastic simulation and estimation (PsN ``sse``): bias, precision,
coverage, and the type I error or power of a likelihood-ratio test, over sample sizes.

Replicates are simulated from the true model (``pkmix.simulate``, arrays kept on the
device) and fitted by ``fit_batch`` from the true values; with ``alt``, the same
replicates are fitted with the alternative model too and compared by
``likelihood_ratio_test``. The model with more estimated parameters is the full one:
when the true model is the reduced one the LRT's rejection rate is its type I error,
else its power.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ._common import table_records, write_json


@dataclass
class SSEResult:
    """An SSE.

    Attributes:
        summary: per number of subjects and parameter (``n_subjects``, ``parameter``
            index): ``fit_batch``'s summary: true, mean, sd, bias, bias_mcse,
            relative_bias_percent, rmse, relative_rmse_percent, mean_se, coverage, n.
        power_table: with ``alt``: per number of subjects, ``rate`` (power or type I
            error), ``rate_lower``/``rate_upper`` (Wilson 95 %), ``n`` replicates where
            both fits converged, ``success_true``, ``success_alt``; else None.
        test: "power" or "type I error" (None without ``alt``).
        fits: {n_subjects: (true BatchFitResult, alt BatchFitResult or None)}.
        alpha, timing, settings.
    """

    summary: pd.DataFrame
    power_table: pd.DataFrame | None
    test: str | None
    alpha: float
    fits: dict
    timing: dict
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {"kind": "sse", "alpha": self.alpha, "test": self.test, "timing": self.timing,
             "settings": self.settings, "summary": table_records(self.summary)}
        if self.power_table is not None:
            d["power"] = table_records(self.power_table.set_index("n_subjects"))
        return d

    def write(self, folder) -> Path:
        """sse.json, sse_summary.csv, sse_estimates.csv (every replicate and size) and,
        with an alternative model, sse_power.csv and sse_power.png into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "sse.json", self.to_dict())
        self.summary.to_csv(folder / "sse_summary.csv")
        frames = []
        for n_subj, (true, _) in self.fits.items():
            frames.append(true.estimates.assign(n_subjects=n_subj))
        pd.concat(frames).to_csv(folder / "sse_estimates.csv", index=False)
        if self.power_table is not None:
            from .plots import power_curve

            self.power_table.to_csv(folder / "sse_power.csv", index=False)
            power_curve(self).savefig(folder / "sse_power.png", dpi=110)
        return folder

    def __str__(self):
        cols = ["true", "mean", "bias", "bias_mcse", "relative_bias_percent", "rmse", "relative_rmse_percent",
                "coverage", "n"]
        lines = [f"SSE: {self.settings['n']} replicates per size, sizes {self.settings['n_subjects']}; "
                 f"{self.timing['total_s']:.1f} s"]
        with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_rows", None,
                               "display.precision", 4):
            lines.append(str(self.summary[cols]))
            if self.power_table is not None:
                lines.append(f"{self.test} of the LRT at alpha {self.alpha:g}:")
                lines.append(self.power_table.to_string(index=False))
        return "\n".join(lines)


def scaled_design(design, n_subjects: int):
    """A ``TrialDesign`` with ``n_subjects`` in all, split over the arms in proportion to
    their sizes (largest remainders)."""
    from .._simulate import TrialDesign

    if not isinstance(design, TrialDesign):
        raise ValueError("n_subjects needs a TrialDesign (a data file's design has fixed subjects)")
    arms = design.all_arms()
    sizes = np.asarray([a.n_subjects for a in arms], dtype=float)
    share = sizes / sizes.sum() * n_subjects
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts))[: n_subjects - counts.sum()]:
        counts[i] += 1
    if np.any(counts < 1):
        raise ValueError(f"n_subjects {n_subjects} leaves an arm without subjects ({len(arms)} arms)")
    new_arms = [dataclasses.replace(a, n_subjects=int(c)) for a, c in zip(arms, counts)]
    return dataclasses.replace(design, arms=new_arms, n_subjects=None, doses=(), times=())


def sse(model, design, n: int = 500, alt=None, *, params=None, n_subjects=None, seed: int = 0,
        method: str = "focei", alpha: float = 0.05, df: int | None = None, level: float = 0.95,
        covariance: str = "sandwich", max_iter: int = 500, chunk_size: int | None = None,
        vmap_width: int | None = None, out=None, progress: bool | None = None) -> SSEResult:
    """Stochastic simulation and estimation.

    Args:
        model: the true ``pkmix.Model`` (simulated from, and fitted).
        design: a ``TrialDesign``, or a data set whose records are kept (see ``simulate``).
        n: replicates per sample size.
        alt: an alternative ``Model`` fitted to the same replicates; the LRT between it
            and the true model gives power (true model full) or type I error (true
            model reduced).
        params: the true parameter values (default the model's initial values).
        n_subjects: sample sizes (a list) for a power curve; the design's arms are scaled
            (``scaled_design``). Default the design as given.
        seed: random seed of the simulation (the same for every size).
        method, covariance, max_iter, chunk_size, vmap_width, progress: ``fit_batch``'s.
        alpha, df: the LRT's level and degrees of freedom (default the difference in
            estimated parameters).
        level: the Wald intervals' level for coverage.
        out: a folder for the tables and plots (``SSEResult.write``).
    """
    from ..batch import fit_batch, likelihood_ratio_test
    from .._simulate import simulate

    t0 = time.perf_counter()
    n = int(n)
    if n < 2:
        raise ValueError(f"n must be at least 2 replicates, got {n}")
    sizes = [None] if n_subjects is None else [int(k) for k in n_subjects]
    if any(k is not None and k < 1 for k in sizes):
        raise ValueError(f"n_subjects: every size must be at least 1, got {n_subjects}")
    kw = dict(method=method, covariance=covariance, max_iter=max_iter, chunk_size=chunk_size,
              vmap_width=vmap_width, progress=progress)
    summaries, power_rows, fits, test = [], [], {}, None
    for size in sizes:
        d = design if size is None else scaled_design(design, size)
        reps = simulate(model, d, n=n, seed=seed, params=params, output="arrays")
        true = fit_batch(model, reps, params=params, **kw)
        label = reps.n_subjects if size is None else size
        table = true.summary(level=level)
        table.insert(0, "n_subjects", label)
        summaries.append(table)
        other = None
        if alt is not None:
            other = fit_batch(alt, reps, **kw)
            if true.n_estimated == other.n_estimated:
                raise ValueError("the true and alternative models estimate the same number of parameters: "
                                 "the LRT needs nested models")
            true_is_full = true.n_estimated > other.n_estimated
            full, reduced = (true, other) if true_is_full else (other, true)
            test = "power" if true_is_full else "type I error"
            lrt = likelihood_ratio_test(full, reduced, df=df, alpha=alpha)
            power_rows.append({"n_subjects": label, "rate": lrt.power, "rate_lower": lrt.power_ci[0],
                               "rate_upper": lrt.power_ci[1], "n": lrt.n, "critical": lrt.critical,
                               "df": lrt.df, "success_true": true.success_rate,
                               "success_alt": other.success_rate})
        fits[label] = (true, other)
    summary = pd.concat(summaries).reset_index().set_index(["n_subjects", "parameter"])
    power_table = pd.DataFrame(power_rows) if power_rows else None
    result = SSEResult(summary=summary, power_table=power_table, test=test, alpha=float(alpha), fits=fits,
                       timing={"total_s": time.perf_counter() - t0},
                       settings={"n": n, "seed": int(seed), "method": method,
                                 "n_subjects": [k for k in fits], "alt": None if alt is None else alt.name,
                                 "model": model.name})
    if out is not None:
        result.write(out)
    return result


__all__ = ["SSEResult", "scaled_design", "sse"]

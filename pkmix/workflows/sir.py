"""``pkmix.sir``: sampling importance resampling of a fit's parameter uncertainty
(Dosne, Bergstrand, Harling & Karlsson 2016, J Pharmacokinet Pharmacodyn 43:583).

1. Proposals: ``samples`` parameter vectors from a multivariate normal (or t, with
   ``df``) centred at the estimates with the covariance step's matrix times
   ``inflation`` (user's scale: thetas, OMEGA elements, sigmas).
2. The OFV of every proposal, in one compiled program: the fit engine's own program
   (``engine.fit_program`` stopped after its first evaluation, as ``pkmix.evaluate``
   runs it: eta modes solved, no estimation), through ``fit_batch`` with
   ``max_iter=0``, one replicate a proposal started from it (the bootstrap's program
   when the chunk shapes agree). A proposal
   outside the parameter space (a theta beyond a bound, OMEGA not positive definite)
   gets no OFV and weight 0.
3. Importance ratio IR = exp(-dOFV / 2) / proposal density (dOFV = OFV - OFV at the
   estimate, evaluated in the same program).
4. ``resamples`` vectors drawn without replacement with probabilities proportional to
   IR (sequential weighted sampling, done in one pass by the Efraimidis-Spirakis keys
   u^(1/IR)); their quantiles are the intervals.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ._common import (as_fit, covariance_from_run, estimate_vector, fit_modes, fit_replicates, percentile_interval,
                      table_records, valid_values, values_from_vector, write_json)


@dataclass
class SIRResult:
    """SIR of a fit.

    Attributes:
        proposals: one row per proposal: the parameters, ``valid``, ``ofv``, ``dofv``,
            ``log_ir`` (log importance ratio, -inf where invalid), ``resampled``.
        resamples: the resampled rows (parameters, ``dofv``).
        summary: one row per parameter: ``estimate``, ``se_covariance`` (the proposal's
            SE before inflation), ``sir_se`` (SD of the resamples), ``pct_lower``,
            ``pct_upper`` (the ``level`` interval of the resamples), ``median``.
        names, level, ofv (at the estimate, in the batched program), timing, settings.
        effective_samples: Kish's effective sample size of the importance weights
            (sum w)^2 / sum w^2: far below ``resamples`` means the proposal is poor.
    """

    proposals: pd.DataFrame
    resamples: pd.DataFrame
    summary: pd.DataFrame
    names: list
    level: float
    ofv: float
    effective_samples: float
    timing: dict
    settings: dict = field(default_factory=dict)

    def samples(self) -> pd.DataFrame:
        return self.resamples[self.names].reset_index(drop=True)

    def to_dict(self) -> dict:
        return {"kind": "sir", "level": self.level, "ofv": self.ofv, "effective_samples": self.effective_samples,
                "timing": self.timing, "settings": self.settings, "summary": table_records(self.summary)}

    def write(self, folder) -> Path:
        """sir.json, sir_proposals.csv, sir_dofv.png and sir_distributions.png into ``folder``."""
        from .plots import distributions, dofv_plot

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "sir.json", self.to_dict())
        self.proposals.to_csv(folder / "sir_proposals.csv", index=False)
        dofv_plot(self).savefig(folder / "sir_dofv.png", dpi=110)
        distributions(self).savefig(folder / "sir_distributions.png", dpi=110)
        return folder

    def __str__(self):
        head = (f"SIR: {self.settings['samples']} proposals (inflation {self.settings['inflation']:g}), "
                f"{len(self.resamples)} resamples; effective sample size {self.effective_samples:.0f}; "
                f"{self.timing['total_s']:.1f} s")
        with pd.option_context("display.width", 200, "display.max_columns", None, "display.precision", 4):
            return head + "\n" + str(self.summary)


# ------------------------------------------------------------------ the batched objective
def ofv_at(fit, vectors, names, *, chunk_size: int = 256, vmap_width: int | None = None) -> np.ndarray:
    """The OFV of ``fit``'s model and data at each row of ``vectors`` (user's scale,
    columns ``names``; the other parameters at the fit's values), NaN where a row is
    outside the parameter space: ``fit_batch`` with no iterations and no covariance step
    (``pkmix.evaluate``'s use of the fit program), one replicate a row, each the whole
    dataset by subject index, started from the row's values and the fit's eta modes.
    With ``jax.distributed`` each process evaluates its share of the rows
    (``fit_replicates``)."""
    model, base, dataset = fit.model, fit.values, fit.dataset
    vectors = np.atleast_2d(np.asarray(vectors, dtype=float))
    sets, valid = [], np.zeros(len(vectors), bool)
    for i, v in enumerate(vectors):
        values = values_from_vector(model, base, names, v)
        valid[i] = valid_values(model, values) is None
        sets.append(values if valid[i] else base)  # (evaluated at the estimate, then dropped)
    n = len(vectors)
    subjects = np.tile(np.arange(dataset.n_subjects), (n, 1))
    modes = fit_modes(fit)
    etas = None if modes is None else np.broadcast_to(modes, (n,) + modes.shape)
    est, _ = fit_replicates(model, dataset, subjects, etas=etas, params=sets, method=fit.method, max_iter=0,
                            covariance="none", chunk_size=min(int(chunk_size), n), vmap_width=vmap_width,
                            progress=False)
    out = np.array(est["ofv"], dtype=float)
    out[~valid] = np.nan
    return out


# ------------------------------------------------------------------ the weights
def proposal_logpdf(vectors, mean, cov, df: float | None = None) -> np.ndarray:
    """Log density of the proposal (multivariate normal, or t with ``df``) at each row."""
    from scipy.stats import multivariate_normal, multivariate_t

    if df is None:
        return multivariate_normal(mean, cov, allow_singular=False).logpdf(vectors)
    return multivariate_t(mean, cov, df=df).logpdf(vectors)


def log_importance_ratio(dofv, logpdf) -> np.ndarray:
    """log IR = -dOFV / 2 - log proposal density; -inf where dOFV is not finite."""
    dofv = np.asarray(dofv, dtype=float)
    out = -0.5 * dofv - np.asarray(logpdf, dtype=float)
    return np.where(np.isfinite(dofv), out, -np.inf)


def resample_without_replacement(log_ir, m: int, rng) -> np.ndarray:
    """``m`` indices drawn without replacement with probabilities proportional to
    exp(log_ir), sequentially (each draw among those left): the ``m`` largest keys
    log(u) / w (Efraimidis & Spirakis 2006), computed on the log scale."""
    log_ir = np.asarray(log_ir, dtype=float)
    ok = np.isfinite(log_ir)
    if ok.sum() < m:
        raise ValueError(f"only {int(ok.sum())} proposals have a finite importance ratio; {m} resamples asked for "
                         "(raise samples, or lower resamples or inflation)")
    w = np.exp(log_ir - np.max(log_ir[ok]))
    u = rng.random(log_ir.size)
    with np.errstate(divide="ignore"):
        keys = np.where(ok & (w > 0), np.log(u) / np.where(w > 0, w, 1.0), -np.inf)
    return np.argsort(-keys, kind="stable")[:m]


def sir(fit, samples: int = 1000, resamples: int | None = None, inflation: float = 1.0, seed: int = 0, *,
        df: float | None = None, level: float = 0.95, chunk_size: int = 256, out=None) -> SIRResult:
    """Sampling importance resampling of a fit's parameter uncertainty.

    Args:
        fit: a ``FitResult`` with a covariance step, or a run folder (``pkmix fit --out``;
            the covariance is rebuilt from results.json's standard errors and correlations).
        samples: proposals M (Dosne et al. suggest 1000-5000 for 200-1000 resamples).
        resamples: m drawn without replacement (default samples // 5).
        inflation: the proposal's covariance is the covariance step's times this.
        seed: random seed of the proposals and the resampling.
        df: a multivariate t proposal with these degrees of freedom (default normal).
        level: the intervals' level.
        chunk_size: proposals per call of the compiled objective.
        out: a folder for the tables and plots (``SIRResult.write``).

    Returns:
        A ``SIRResult``.
    """
    t0 = time.perf_counter()
    fit = as_fit(fit)
    samples = int(samples)
    resamples = samples // 5 if resamples is None else int(resamples)
    if samples < 2:
        raise ValueError(f"samples must be at least 2, got {samples}")
    if not 1 <= resamples <= samples:
        raise ValueError(f"resamples must be between 1 and samples ({samples}), got {resamples}")
    if not (inflation > 0 and math.isfinite(inflation)):
        raise ValueError(f"inflation must be a finite number above 0, got {inflation}")
    from .._estimation.covariance import natural_names
    from .._estimation.engine import transform_for

    names = natural_names(transform_for(fit.model))
    cov = covariance_from_run(fit, names)
    if cov is None or not np.all(np.isfinite(cov)):
        raise ValueError("sir needs the fit's covariance matrix: fit with covariance='sandwich' (or 'r'/'s') "
                         f"and a successful covariance step ({fit.covariance_message or 'none'})")
    mean = estimate_vector(fit, names)
    proposal_cov = inflation * cov
    rng = np.random.default_rng(int(seed))
    if df is None:
        draws = rng.multivariate_normal(mean, proposal_cov, size=samples, method="eigh")
    else:
        g = rng.chisquare(df, size=(samples, 1)) / df
        draws = mean + rng.multivariate_normal(np.zeros(len(mean)), proposal_cov, size=samples,
                                               method="eigh") / np.sqrt(g)
    t1 = time.perf_counter()
    ofvs = ofv_at(fit, np.vstack([mean, draws]), names, chunk_size=chunk_size)
    ofv_s = time.perf_counter() - t1
    ofv0, ofvs = float(ofvs[0]), ofvs[1:]
    dofv = ofvs - ofv0
    log_ir = log_importance_ratio(dofv, proposal_logpdf(draws, mean, proposal_cov, df))
    pick = resample_without_replacement(log_ir, resamples, rng)
    proposals = pd.DataFrame(draws, columns=names)
    proposals["valid"] = np.isfinite(ofvs)
    proposals["ofv"] = ofvs
    proposals["dofv"] = dofv
    proposals["log_ir"] = log_ir
    proposals["resampled"] = False
    proposals.loc[pick, "resampled"] = True
    res = proposals.iloc[pick][names + ["dofv"]].reset_index(drop=True)
    finite = np.isfinite(log_ir)
    w = np.exp(log_ir[finite] - log_ir[finite].max())
    ess = float(w.sum() ** 2 / np.sum(w * w))
    rows = []
    for k, name in enumerate(names):
        s = res[name].to_numpy(dtype=float)
        lo, hi = percentile_interval(s, level)
        rows.append({"parameter": name, "estimate": mean[k], "se_covariance": float(np.sqrt(cov[k, k])),
                     "sir_se": float(np.std(s, ddof=1)), "median": float(np.median(s)), "pct_lower": lo,
                     "pct_upper": hi})
    summary = pd.DataFrame(rows).set_index("parameter")
    total = time.perf_counter() - t0
    result = SIRResult(proposals=proposals, resamples=res, summary=summary, names=names, level=level, ofv=ofv0,
                       effective_samples=ess,
                       timing={"ofv_s": ofv_s, "total_s": total, "proposals_per_second": (samples + 1) / ofv_s},
                       settings={"samples": samples, "resamples": resamples, "inflation": float(inflation),
                                 "seed": int(seed), "df": df, "valid": int(np.isfinite(ofvs).sum())})
    if out is not None:
        result.write(out)
    return result


__all__ = ["SIRResult", "sir", "ofv_at", "log_importance_ratio", "proposal_logpdf", "resample_without_replacement"]

"""Pieces shared by the replicate workflows: confidence intervals, parameter vectors on
the user's scale, run folders, and the split of replicates over processes.

Parameters are handled on the user's scale of ``fit_batch``'s estimate table and of the
covariance step (thetas by name, OMEGA elements as ``omega(A,B)``, IOV variances,
sigmas as declared): the names of ``FitResult.covariance_matrix`` and of
``BatchFitResult.names``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

# ------------------------------------------------------------------ intervals
def percentile_interval(samples, level: float = 0.95):
    """(lower, upper): the (1-level)/2 and (1+level)/2 quantiles of ``samples`` (NaNs
    dropped), numpy's default linear interpolation between order statistics."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return (math.nan, math.nan)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(s, [a, 1.0 - a])
    return (float(lo), float(hi))


def acceleration(influence) -> float:
    """BCa's acceleration from influence values l_i: a = sum l^3 / (6 (sum l^2)^1.5)."""
    d = np.asarray(influence, dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 3:
        return 0.0
    den = 6.0 * float(np.sum(d * d)) ** 1.5
    return float(np.sum(d ** 3) / den) if den > 0 else 0.0


def jackknife_acceleration(jack) -> float:
    """BCa's acceleration from leave-one-out estimates t_i (Efron & Tibshirani 1993,
    14.15): the influence values are m - t_i, m the mean of the t_i."""
    t = np.asarray(jack, dtype=float)
    t = t[np.isfinite(t)]
    return acceleration(t.mean() - t) if t.size else 0.0


def regression_influence(frequencies, samples) -> np.ndarray:
    """Empirical influence values from the bootstrap replicates themselves (Davison &
    Hinkley 1997, 2.7.4): least squares of t*_r - mean(t*) on f*_r / N (f*_r: how often
    replicate r drew each subject), centred to sum 0. Needs more replicates than
    subjects; costs no refits."""
    F = np.asarray(frequencies, dtype=float)
    t = np.asarray(samples, dtype=float)
    ok = np.isfinite(t)
    F, t = F[ok], t[ok]
    l = np.linalg.lstsq(F / F.shape[1], t - t.mean(), rcond=None)[0]
    return l - l.mean()


def bca_interval(samples, estimate: float, acceleration: float = 0.0, level: float = 0.95):
    """(lower, upper): the bias-corrected and accelerated percentile interval.

    z0 = Phi^-1(share of samples below the estimate, ties counted half); the interval
    is the samples' quantiles at Phi(z0 + (z0 + z_a) / (1 - a (z0 + z_a))) for
    z_a = Phi^-1((1-level)/2) and Phi^-1((1+level)/2). With a = 0 it is the BC interval;
    with also z0 = 0, the percentile interval.
    """
    from scipy.stats import norm

    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0 or not np.isfinite(estimate):
        return (math.nan, math.nan)
    below = (np.sum(s < estimate) + 0.5 * np.sum(s == estimate)) / s.size
    if below <= 0.0 or below >= 1.0:  # every sample on one side: z0 is infinite
        return (math.nan, math.nan)
    z0 = float(norm.ppf(below))
    out = []
    for alpha in ((1.0 - level) / 2.0, (1.0 + level) / 2.0):
        z = z0 + float(norm.ppf(alpha))
        out.append(float(norm.cdf(z0 + z / (1.0 - acceleration * z))))
    lo, hi = np.quantile(s, out)
    return (float(lo), float(hi))


# ------------------------------------------------------------------ parameters
def estimate_vector(result, names) -> np.ndarray:
    """A ``FitResult``'s estimates on the user's scale, in the order of ``names``."""
    out = []
    for n in names:
        if n in result.theta:
            out.append(result.theta[n])
        elif n in result.sigma:
            out.append(result.sigma[n])
        elif n.startswith("omega("):
            a, b = n[6:-1].split(",")
            if a in result.omega.index:
                out.append(float(result.omega.loc[a, b]))
            else:  # an IOV variance
                out.append(float(result.iov[a]))
        else:
            raise KeyError(f"parameter {n!r} is not in the fit")
    return np.asarray(out, dtype=float)


def values_from_vector(model, base, names, vector):
    """``ParameterValues`` with the named parameters (user's scale) set from ``vector``
    and the others from ``base``; OMEGA kept symmetric."""
    from .._model.parameters import ParameterValues

    s = model.spec
    theta = np.array(base.theta, dtype=float)
    omega = np.array(base.omega, dtype=float)
    iov = np.array(base.iov, dtype=float)
    sigma = np.array(base.sigma, dtype=float)
    eta = list(s.eta_names)
    for n, v in zip(names, np.asarray(vector, dtype=float)):
        if n in s.theta_names:
            theta[list(s.theta_names).index(n)] = v
        elif n in s.sigma_names:
            sigma[list(s.sigma_names).index(n)] = v
        elif n.startswith("omega("):
            a, b = n[6:-1].split(",")
            if a in eta:
                i, j = eta.index(a), eta.index(b)
                omega[i, j] = omega[j, i] = v
            else:
                iov[list(s.iov_names).index(a)] = v
        else:
            raise KeyError(f"parameter {n!r} is not in model {model.name}")
    return ParameterValues(theta=theta, omega=omega, iov=iov, sigma=sigma)


def valid_values(model, values) -> str | None:
    """Why ``values`` lie outside the model's parameter space (a theta or sigma beyond
    its bounds, OMEGA not positive definite, an IOV variance not above 0), or None."""
    s = model.spec
    for name, t, v in zip(s.theta_names, s.thetas, np.asarray(values.theta)):
        if not (t.fixed or t.lower < v < t.upper):
            return f"theta {name} = {v:g} outside ({t.lower:g}, {t.upper:g})"
    for name, sg, v in zip(s.sigma_names, s.sigmas, np.asarray(values.sigma)):
        if not (sg.fixed or sg.lower < v < sg.upper):
            return f"sigma {name} = {v:g} outside ({sg.lower:g}, {sg.upper:g})"
    omega = np.asarray(values.omega)
    if omega.size and np.min(np.linalg.eigvalsh(omega)) <= 0:
        return "OMEGA not positive definite"
    if np.any(np.asarray(values.iov) <= 0):
        return "an IOV variance not above 0"
    return None


def covariance_from_run(result, names) -> np.ndarray | None:
    """The covariance matrix of ``names`` from a fit: ``covariance_matrix`` when the fit
    was made in this process, else rebuilt as D C D from the standard errors and the
    correlation matrix that results.json keeps (``pkmix.load_run``). None without one."""
    cov = getattr(result, "covariance_matrix", None)
    if cov is not None:
        return cov.loc[names, names].to_numpy(dtype=float)
    corr = getattr(result, "correlation", None)
    if corr is None or not result.se or any(n not in result.se for n in names):
        return None
    sd = np.asarray([result.se[n] for n in names], dtype=float)
    return corr.loc[names, names].to_numpy(dtype=float) * np.outer(sd, sd)


def fit_modes(fit) -> np.ndarray | None:
    """[N, q] a fit's eta modes in its dataset's subject order (replicate fits start
    from those of their subjects), or None where the fit has none of that shape (a run
    folder without them)."""
    etas = getattr(fit, "etas", None)
    if etas is None:
        return None
    model, dataset = fit.model, fit.dataset
    values = etas.drop(columns="ID").to_numpy(dtype=float)
    q = model.n_eta_total(dataset.batch(model.covariates, occasion_column=model.occasion_column).n_occasions)
    if values.shape != (dataset.n_subjects, q) or not np.all(np.isfinite(values)):
        return None
    return values


def as_fit(fit):
    """A ``FitResult`` with its model and data: the object itself, or a run folder
    (``pkmix fit --out DIR``) loaded with ``pkmix.load_run``."""
    if isinstance(fit, (str, Path)):
        from ..report import load_run

        fit = load_run(fit)
        if fit.model is None or fit.dataset is None:
            raise ValueError(f"{fit.run_dir}: " + " ".join(fit.load_notes))
    if getattr(fit, "model", None) is None or getattr(fit, "dataset", None) is None:
        raise ValueError("the fit has no model or data attached (a FitResult from pkmix.fit, or a run folder)")
    return fit


def write_json(path: Path, obj) -> None:
    def clean(x):
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, (np.floating, float)):
            return float(x) if np.isfinite(x) else None
        if isinstance(x, (np.integer,)):
            return int(x)
        if isinstance(x, np.bool_):
            return bool(x)
        return x

    Path(path).write_text(json.dumps(clean(obj), indent=2))


def table_records(frame: pd.DataFrame) -> list:
    # Full precision: pandas keeps 10 digits by default.
    return json.loads(frame.reset_index().to_json(orient="records", double_precision=15))


# ------------------------------------------------------------------ processes
def process_share(n: int, process_id: int | None = None, processes: int | None = None) -> np.ndarray:
    """The replicate indices this process fits: a contiguous share of ``range(n)``, the
    same size on every process (the last shares may be shorter; ``gather_rows`` pads).
    Default: ``jax.process_index()`` of ``jax.process_count()`` (1 of 1 without
    ``jax.distributed``)."""
    import jax

    processes = jax.process_count() if processes is None else int(processes)
    process_id = jax.process_index() if process_id is None else int(process_id)
    if not 0 <= process_id < processes:
        raise ValueError(f"process_id must be in [0, {processes}), got {process_id}")
    size = -(-n // processes)
    return np.arange(process_id * size, min(n, (process_id + 1) * size))


def gather_rows(local: np.ndarray, n: int) -> np.ndarray:
    """Every process's rows of a float table (its ``process_share``), in replicate order
    on every process: ``multihost_utils.process_allgather`` of equal-sized padded shares;
    the table itself without ``jax.distributed``."""
    import jax

    local = np.asarray(local, dtype=np.float64)
    if jax.process_count() == 1:
        return local
    from jax.experimental import multihost_utils

    size = -(-n // jax.process_count())
    padded = np.full((size,) + local.shape[1:], np.nan)
    padded[:local.shape[0]] = local
    every = np.asarray(multihost_utils.process_allgather(padded, tiled=False))
    return every.reshape((-1,) + local.shape[1:])[:n]


# ------------------------------------------------------------------ batch fits over processes
COVARIANCE_KINDS = ("none", "sandwich", "r", "s")


def fit_replicates(model, dataset, subjects, *, etas=None, progress=None, **fit_kw):
    """``fit_batch`` of replicates drawn from one dataset (``subjects``: [n, N] subject
    indices, ``fit_batch``'s ``subjects``; ``etas``: [n, N, q] starting modes or None;
    ``params`` in ``fit_kw``: one set, or a list of n sets),
    each process fitting its ``process_share`` on its own devices
    (``jax.local_devices()``), the estimate tables gathered.

    Without ``jax.distributed`` this is one ``fit_batch`` call. With it, no fit talks to
    another process: only the numeric estimate table is gathered at the end
    (``gather_rows``), and each row's ``message`` is then left empty (text is not
    gathered).

    Returns:
        (estimates DataFrame, the ``BatchFitResult`` of this process's share).
    """
    from collections.abc import Mapping

    import jax

    from .._model.parameters import ParameterValues
    from ..batch import fit_batch

    subjects = np.asarray(subjects)
    n = subjects.shape[0]
    share = process_share(n)
    kw = dict(fit_kw, subjects=subjects[share], etas=None if etas is None else np.asarray(etas)[share],
              progress=progress)
    params = fit_kw.get("params")
    if params is not None and not isinstance(params, (ParameterValues, Mapping)):  # one set a replicate
        kw["params"] = [params[i] for i in share]
    if jax.process_count() == 1:
        res = fit_batch(model, dataset, **kw)
        return res.estimates, res
    res = fit_batch(model, dataset, devices=jax.local_devices(), **kw)
    est = res.estimates.copy()
    est["REP"] = share + 1
    est["covariance"] = [COVARIANCE_KINDS.index(k) if k in COVARIANCE_KINDS else -1 for k in est["covariance"]]
    columns = [c for c in est.columns if c != "message"]
    every = gather_rows(est[columns].to_numpy(dtype=float), n)
    out = pd.DataFrame(every, columns=columns)
    for c in ("REP", "status", "iterations", "evaluations", "eta_failures"):
        out[c] = out[c].astype(int)
    for c in ("converged", "boundary"):
        out[c] = out[c].astype(bool)
    out["covariance"] = [COVARIANCE_KINDS[int(k)] if k >= 0 else "?" for k in out["covariance"]]
    out.insert(list(res.estimates.columns).index("message"), "message", "")
    return out, res

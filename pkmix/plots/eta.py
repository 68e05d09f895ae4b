"""Eta (EBE) diagnostics: histograms against N(0, omega), and etas against covariates."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ._common import OBS_COLOR, REF_COLOR, SMOOTH_COLOR, eta_names, fig_title, new_figure, smooth


def _omega_variance(result, name: str) -> float | None:
    omega = getattr(result, "omega", None)
    if isinstance(omega, pd.DataFrame) and name in omega.index:
        return float(omega.loc[name, name])
    return None


def eta_histograms(result, *, bins="auto", ncols: int = 3):
    """A histogram of each between-subject eta's EBEs, with the N(0, omega) density.

    Args:
        result: a ``FitResult``.
        bins: passed to ``numpy.histogram_bin_edges``.
        ncols: panels per row.

    Returns:
        A matplotlib ``Figure`` with one axes per eta (x label the eta name); the title
        of each gives the eta's shrinkage when known.
    """
    names = eta_names(result)
    if not names:
        raise ValueError("eta_histograms: the model has no etas")
    etas = result.etas
    ncols = min(ncols, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = new_figure(nrows, ncols)
    flat = axes.ravel()
    shrinkage = getattr(result, "shrinkage_percent", {}) or {}
    for ax, name in zip(flat, names):
        x = etas[name].to_numpy(dtype=float)
        x = x[np.isfinite(x)]
        edges = np.histogram_bin_edges(x, bins=bins) if x.size > 1 else 10
        ax.hist(x, bins=edges, density=True, color=OBS_COLOR, alpha=0.55, edgecolor="white")
        var = _omega_variance(result, name)
        if var is not None and var > 0:
            sd = math.sqrt(var)
            lim = max(4 * sd, np.abs(x).max(initial=0.0) * 1.1)
            g = np.linspace(-lim, lim, 200)
            ax.plot(g, np.exp(-0.5 * g**2 / var) / (sd * math.sqrt(2 * math.pi)), color=SMOOTH_COLOR,
                    lw=1.6, label="N(0, omega)")
        ax.axvline(0.0, color=REF_COLOR, lw=0.8, ls="--")
        ax.set_xlabel(name)
        ax.set_ylabel("density")
        s = shrinkage.get(name)
        ax.set_title(f"{name} (shrinkage {s:.1f} %)" if s is not None and np.isfinite(s) else name,
                     fontsize="medium")
    for ax in flat[len(names):]:
        fig.delaxes(ax)
    title = fig_title(result)
    fig.suptitle(f"Eta distributions{': ' + title if title else ''}")
    return fig


def subject_covariates(result, covariates=None) -> pd.DataFrame:
    """One row per subject: ID and each covariate's first (baseline) value.

    Args:
        result: a ``FitResult`` with its dataset.
        covariates: the columns (default every covariate column of the dataset).
    """
    dataset = getattr(result, "dataset", None)
    if dataset is None:
        raise ValueError("covariate plots need the dataset (result.dataset is None)")
    frame = dataset.frame
    names = list(dataset.covariates) if covariates is None else list(covariates)
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise ValueError(f"covariates {missing} are not in the dataset; it has {list(dataset.covariates)}")
    return frame.groupby("ID", sort=False)[names].first().reset_index()


def _is_categorical(values: np.ndarray, max_levels: int) -> bool:
    v = values[np.isfinite(values)]
    return v.size > 0 and np.all(v == np.round(v)) and np.unique(v).size <= max_levels


def eta_vs_covariates(result, covariates=None, *, categorical=None, max_levels: int = 5,
                      frac: float = 2.0 / 3.0):
    """Each eta against each covariate: scatter with a smooth for continuous covariates,
    boxplots by level for categorical ones.

    Args:
        result: a ``FitResult`` with its dataset (covariates are each subject's first
            value).
        covariates: covariate columns (default every covariate column of the dataset).
        categorical: columns to treat as categorical; by default a column is categorical
            when its values are integers with at most ``max_levels`` distinct values.
        max_levels: see ``categorical``.
        frac: the smoother's span.

    Returns:
        A matplotlib ``Figure``: one row per eta, one column per covariate (with a single
        covariate, one row of etas); x label the covariate, y label the eta.

    Raises:
        ValueError: no covariates, or a named one is missing.
    """
    names = eta_names(result)
    cov = subject_covariates(result, covariates)
    cov_names = [c for c in cov.columns if c != "ID"]
    if not cov_names:
        raise ValueError("eta_vs_covariates: the dataset has no covariate columns")
    if not names:
        raise ValueError("eta_vs_covariates: the model has no etas")
    merged = result.etas[["ID", *names]].merge(cov, on="ID", how="left")
    cats = set(categorical or [])
    # One covariate: the etas side by side in one row (axes still ordered by eta).
    one_row = len(cov_names) == 1
    nrows, ncols = (1, len(names)) if one_row else (len(names), len(cov_names))
    fig, axes = new_figure(nrows, ncols, width=3.0 * ncols + 0.6, height=2.6 * nrows + 0.6, squeeze=False)
    for j, c in enumerate(cov_names):
        x = merged[c].to_numpy(dtype=float)
        is_cat = c in cats or (categorical is None and _is_categorical(x, max_levels))
        for i, e in enumerate(names):
            ax = axes[0, i] if one_row else axes[i, j]
            y = merged[e].to_numpy(dtype=float)
            if is_cat:
                levels = np.unique(x[np.isfinite(x)])
                groups = [y[(x == lv) & np.isfinite(y)] for lv in levels]
                labels = [f"{lv:g}" for lv in levels]
                ax.boxplot(groups, tick_labels=labels, widths=0.5, medianprops={"color": SMOOTH_COLOR})
                rng = np.random.default_rng(0)  # fixed jitter: the same picture every time
                for k, g in enumerate(groups):
                    ax.scatter(k + 1 + rng.uniform(-0.12, 0.12, g.size), g, s=10, color=OBS_COLOR, alpha=0.5,
                               zorder=3)
            else:
                ax.scatter(x, y, s=14, color=OBS_COLOR, alpha=0.6, edgecolors="none")
                gx, gy = smooth(x, y, frac=frac)
                if gx.size:
                    ax.plot(gx, gy, color=SMOOTH_COLOR, lw=1.6)
            ax.axhline(0.0, color=REF_COLOR, lw=0.8, ls="--")
            ax.set_xlabel(c)
            ax.set_ylabel(e)
            ax.tick_params(labelsize="small")
    title = fig_title(result)
    fig.suptitle(f"Etas vs covariates{': ' + title if title else ''}")
    return fig

"""Shared pieces of the plots: figure creation, the smoother, and reading a fit's table.

matplotlib is imported inside functions only, so ``import pkmix`` (and the engine) never
needs it. Figures are built as ``matplotlib.figure.Figure`` objects, not through
``pyplot``: no backend has to be chosen (saving to PNG uses Agg, to SVG the SVG
renderer, with or without a display), and figures made in a loop are freed when
dropped instead of piling up in pyplot's figure manager. In Jupyter a returned figure
displays as usual; ``fig.savefig("gof.png")`` or ``"gof.svg"`` writes it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

OBS_COLOR = "#1f4e79"
IPRED_COLOR = "#c0392b"
PRED_COLOR = "#2e8b57"
SMOOTH_COLOR = "#d35400"
REF_COLOR = "#555555"


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float | None = None, height: float | None = None,
               squeeze: bool = False, **subplot_kw):
    """A figure and a 2-D array of axes (``squeeze=False``)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImportError("pkmix plots need matplotlib: pip install 'pkmix[plots]'") from None
    width = width if width is not None else 3.6 * ncols + 0.6
    height = height if height is not None else 3.2 * nrows + 0.4
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=squeeze, **subplot_kw)
    return fig, axes


def figure_for(ax, **kw):
    """(figure, ax): a new single-axes figure when ``ax`` is None, else ``ax``'s figure."""
    if ax is None:
        fig, axes = new_figure(1, 1, **kw)
        return fig, axes[0, 0]
    return ax.figure, ax


def smooth(x, y, *, frac: float = 2.0 / 3.0, n_points: int = 100):
    """A local linear regression smoother (LOWESS's first pass, without the robustness
    iterations): at each of ``n_points`` points spanning the range of ``x``, a straight
    line fitted to the nearest ``frac`` of the data with tricube weights.

    It reproduces any straight line exactly, and for a smooth curve its bias shrinks with
    ``frac``. statsmodels is not a dependency, hence this small version.

    Args:
        x, y: data (non-finite pairs are dropped).
        frac: fraction of the points in each local fit (0 < frac <= 1).
        n_points: number of points where the smooth is evaluated.

    Returns:
        (grid, fitted): arrays of length ``n_points``; empty when fewer than 3 distinct
        x values remain.
    """
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"smooth: frac must be in (0, 1], got {frac}")
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if np.unique(x).size < 3:
        return np.array([]), np.array([])
    n = x.size
    k = min(n, max(3, int(math.ceil(frac * n))))
    grid = np.linspace(x.min(), x.max(), n_points)
    dist = np.abs(x[None, :] - grid[:, None])  # [grid, data]
    # Bandwidth: distance to the k-th nearest point (never zero, so ties do not divide by 0).
    h = np.partition(dist, k - 1, axis=1)[:, k - 1]
    h = np.maximum(h * 1.0001, 1e-12 * max(1.0, np.abs(x).max()))
    u = np.clip(dist / h[:, None], 0.0, 1.0)
    w = (1.0 - u**3) ** 3
    sw = w.sum(axis=1)
    mx = (w * x).sum(axis=1) / sw
    my = (w * y).sum(axis=1) / sw
    dx = x[None, :] - mx[:, None]
    sxx = (w * dx * dx).sum(axis=1)
    sxy = (w * dx * (y[None, :] - my[:, None])).sum(axis=1)
    # Where every weighted point shares one x (a degenerate window) the local line has
    # no slope: use the weighted mean.
    slope = np.where(sxx > 1e-300, sxy / np.where(sxx > 1e-300, sxx, 1.0), 0.0)
    return grid, my + slope * (grid - mx)


def result_table(result) -> pd.DataFrame:
    """The per-record diagnostics table of a ``FitResult`` (or a table given directly)."""
    if isinstance(result, pd.DataFrame):
        return result
    table = getattr(result, "table", None)
    if table is None:
        raise TypeError(f"expected a pkmix FitResult or a diagnostics DataFrame, got {type(result).__name__}")
    return table() if callable(table) else table


def observations(result, columns=()) -> pd.DataFrame:
    """Rows of quantified observations (EVID 0, MDV 0, not BLQ) of a result's table.

    Raises:
        ValueError: a needed column is missing or has no finite value.
    """
    t = result_table(result)
    missing = [c for c in ("DV", *columns) if c not in t.columns]
    if missing:
        raise ValueError(f"the diagnostics table has no column(s) {missing}; it has {list(t.columns)}")
    keep = np.ones(len(t), dtype=bool)
    if "EVID" in t.columns:
        keep &= t["EVID"].to_numpy() == 0
    if "MDV" in t.columns:
        keep &= t["MDV"].to_numpy() == 0
    if "BLQ" in t.columns:
        keep &= t["BLQ"].fillna(0).to_numpy() == 0
    obs = t.loc[keep]
    for c in columns:
        if not np.isfinite(obs[c].to_numpy(dtype=float)).any():
            raise ValueError(f"column {c} has no finite value at the observations (were diagnostics computed?)")
    return obs


def eta_names(result) -> list[str]:
    """The between-subject eta names of a result (the OMEGA rows)."""
    omega = getattr(result, "omega", None)
    if isinstance(omega, pd.DataFrame):
        return list(omega.index)
    etas = getattr(result, "etas", None)
    if isinstance(etas, pd.DataFrame):
        return [c for c in etas.columns if c != "ID"]
    raise TypeError(f"expected a pkmix FitResult, got {type(result).__name__}")


def fig_title(result) -> str:
    name = getattr(result, "model_name", None)
    method = getattr(result, "method", None)
    if name and method:
        return f"{name} ({str(method).upper()})"
    return name or ""

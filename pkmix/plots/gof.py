"""Goodness-of-fit plots: DV vs PRED/IPRED, CWRES vs TIME/PRED, |IWRES| vs IPRED, QQ of CWRES.

Each function takes a ``FitResult`` (or its ``.table()`` DataFrame) and returns a
matplotlib ``Figure``; pass ``ax=`` to draw into an existing axes instead (the axes'
figure is returned). Only quantified observations are drawn (EVID 0, MDV 0, not BLQ).
"""

from __future__ import annotations

import numpy as np

from ._common import OBS_COLOR, REF_COLOR, SMOOTH_COLOR, fig_title, figure_for, new_figure, observations, smooth

_POINT = dict(s=14, alpha=0.6, color=OBS_COLOR, edgecolors="none")


def _draw_smooth(ax, x, y, frac):
    gx, gy = smooth(x, y, frac=frac)
    if gx.size:
        ax.plot(gx, gy, color=SMOOTH_COLOR, lw=1.8, label="smooth")


def _dv_vs(result, column, *, ax, log, frac, title):
    obs = observations(result, (column,))
    x = obs[column].to_numpy(dtype=float)
    y = obs["DV"].to_numpy(dtype=float)
    fig, ax = figure_for(ax)
    if log:
        pos = (x > 0) & (y > 0)
        x, y = x[pos], y[pos]
    ax.scatter(x, y, **_POINT)
    finite = np.concatenate([x[np.isfinite(x)], y[np.isfinite(y)]])
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    if not log:
        lo = min(lo, 0.0)
    ax.plot([lo, hi], [lo, hi], color=REF_COLOR, lw=1, ls="--", label="identity")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        gx, gy = smooth(np.log(x), np.log(y), frac=frac)
        if gx.size:
            ax.plot(np.exp(gx), np.exp(gy), color=SMOOTH_COLOR, lw=1.8, label="smooth")
    else:
        _draw_smooth(ax, x, y, frac)
        ax.set_xlim(lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))
        ax.set_ylim(lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))
    ax.set_xlabel(column)
    ax.set_ylabel("DV")
    ax.set_title(title)
    return fig


def dv_vs_pred(result, *, ax=None, log: bool = False, frac: float = 2.0 / 3.0):
    """Observations against population predictions, with the identity line and a smooth.

    Args:
        result: a ``FitResult`` or its ``.table()``.
        ax: draw into this matplotlib axes instead of a new figure.
        log: log-log axes (non-positive values are left out).
        frac: the smoother's span (see ``pkmix.plots.smooth``).

    Returns:
        The matplotlib ``Figure``.
    """
    return _dv_vs(result, "PRED", ax=ax, log=log, frac=frac, title="DV vs PRED")


def dv_vs_ipred(result, *, ax=None, log: bool = False, frac: float = 2.0 / 3.0):
    """Observations against individual predictions (see ``dv_vs_pred``)."""
    return _dv_vs(result, "IPRED", ax=ax, log=log, frac=frac, title="DV vs IPRED")


def _residual_vs(result, x_col, y_col, *, ax, frac, title, absolute=False):
    obs = observations(result, (x_col, y_col))
    x = obs[x_col].to_numpy(dtype=float)
    y = obs[y_col].to_numpy(dtype=float)
    if absolute:
        y = np.abs(y)
    fig, ax = figure_for(ax)
    ax.scatter(x, y, **_POINT)
    if absolute:
        ax.set_ylim(bottom=0)
    else:
        ax.axhline(0.0, color=REF_COLOR, lw=1)
        for level in (-1.96, 1.96):
            ax.axhline(level, color=REF_COLOR, lw=0.8, ls=":")
    _draw_smooth(ax, x, y, frac)
    ax.set_xlabel(x_col)
    ax.set_ylabel(f"|{y_col}|" if absolute else y_col)
    ax.set_title(title)
    return fig


def cwres_vs_time(result, *, ax=None, frac: float = 2.0 / 3.0):
    """Conditional weighted residuals against time, with 0 and ±1.96 lines and a smooth."""
    return _residual_vs(result, "TIME", "CWRES", ax=ax, frac=frac, title="CWRES vs TIME")


def cwres_vs_pred(result, *, ax=None, frac: float = 2.0 / 3.0):
    """Conditional weighted residuals against population predictions."""
    return _residual_vs(result, "PRED", "CWRES", ax=ax, frac=frac, title="CWRES vs PRED")


def abs_iwres_vs_ipred(result, *, ax=None, frac: float = 2.0 / 3.0):
    """|IWRES| against individual predictions: a trend says the error model misses."""
    return _residual_vs(result, "IPRED", "IWRES", ax=ax, frac=frac, title="|IWRES| vs IPRED", absolute=True)


def qq_cwres(result, *, ax=None, column: str = "CWRES"):
    """Normal QQ plot of CWRES (or another residual ``column``) with the identity line.

    Theoretical quantiles are Blom's plotting positions Phi^-1((i - 3/8)/(n + 1/4)).
    """
    from scipy.stats import norm

    obs = observations(result, (column,))
    r = np.sort(obs[column].to_numpy(dtype=float))
    r = r[np.isfinite(r)]
    n = r.size
    q = norm.ppf((np.arange(1, n + 1) - 0.375) / (n + 0.25))
    fig, ax = figure_for(ax)
    ax.scatter(q, r, **_POINT)
    lim = max(np.abs(q).max(initial=1.0), np.abs(r).max(initial=1.0)) * 1.05
    ax.plot([-lim, lim], [-lim, lim], color=REF_COLOR, lw=1, ls="--")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel("theoretical N(0,1) quantile")
    ax.set_ylabel(f"{column} quantile")
    ax.set_title(f"QQ plot of {column}")
    return fig


def gof_panel(result, *, log: bool = False, frac: float = 2.0 / 3.0):
    """The six standard goodness-of-fit plots on one figure (2 x 3):
    DV vs PRED, DV vs IPRED, QQ of CWRES; CWRES vs TIME, CWRES vs PRED, |IWRES| vs IPRED.

    Args:
        result: a ``FitResult`` or its ``.table()``.
        log: log-log axes for the DV plots.
        frac: the smoother's span.

    Returns:
        The matplotlib ``Figure``.
    """
    fig, axes = new_figure(2, 3, width=12.5, height=8.0)
    dv_vs_pred(result, ax=axes[0, 0], log=log, frac=frac)
    dv_vs_ipred(result, ax=axes[0, 1], log=log, frac=frac)
    qq_cwres(result, ax=axes[0, 2])
    cwres_vs_time(result, ax=axes[1, 0], frac=frac)
    cwres_vs_pred(result, ax=axes[1, 1], frac=frac)
    abs_iwres_vs_ipred(result, ax=axes[1, 2], frac=frac)
    title = fig_title(result)
    if title:
        fig.suptitle(f"Goodness of fit: {title}")
    return fig

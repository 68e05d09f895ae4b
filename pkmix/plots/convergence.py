"""The convergence of a fit: every parameter's value per iteration (``FitResult.history``).

For SAEM the history holds the burn-in, exploratory and smoothing iterations
(``phase``); the plot marks where smoothing starts. For the gradient methods (FOCE-I,
...) it holds the accepted iterations of the optimiser.
"""

from __future__ import annotations

import math

import numpy as np

from ._common import OBS_COLOR, REF_COLOR, SMOOTH_COLOR, fig_title, new_figure

_NOT_PARAMETERS = {"iteration", "phase", "step", "ofv", "accept_prior", "accept_rw", "accept_component"}


def convergence_parameters(result) -> list[str]:
    """The history's parameter columns worth a panel: the thetas, the OMEGA elements the
    model estimates (an element that is 0 or constant throughout is left out) and the
    sigmas."""
    history = getattr(result, "history", None)
    if history is None or not len(history):
        raise ValueError("convergence_plot: the result has no iteration history (a fit keeps one; evaluate does not)")
    names = []
    for column in history.columns:
        if column in _NOT_PARAMETERS:
            continue
        values = history[column].to_numpy(dtype=float)
        if column.startswith("omega(") and np.all(values == values[0]):
            continue
        names.append(column)
    return names


def convergence_plot(result, *, ncols: int = 4, objective: bool = True):
    """Every estimated parameter's value per iteration, one panel each, with the final
    estimate as a dashed line; with ``objective``, a first panel of the history's ``ofv``
    (for SAEM: the complete-data -2 log-likelihood at the chains' samples, a noisy
    quantity, not the OFV). For SAEM a vertical line marks the first smoothing iteration
    (the step 1/k).

    Args:
        result: a ``FitResult`` with a ``history`` (``pkmix.fit``'s, any method).
        ncols: panels per row.
        objective: add the objective's panel.

    Returns:
        A matplotlib ``Figure``.

    Raises:
        ValueError: the result has no history.
    """
    names = convergence_parameters(result)
    history = result.history
    panels = (["ofv"] if objective and "ofv" in history.columns else []) + names
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = new_figure(nrows, ncols, width=3.0 * ncols + 0.6, height=2.3 * nrows + 0.6)
    flat = axes.ravel()
    x = history["iteration"].to_numpy()
    smoothing_start = None
    if "phase" in history.columns:
        smooth = x[history["phase"].to_numpy() == "smoothing"]
        smoothing_start = smooth[0] if smooth.size else None
    for ax, name in zip(flat, panels):
        y = history[name].to_numpy(dtype=float)
        ax.plot(x, y, color=SMOOTH_COLOR if name == "ofv" else OBS_COLOR, lw=1.0)
        if name != "ofv":
            ax.axhline(y[-1], color=REF_COLOR, lw=0.8, ls="--")
        if smoothing_start is not None:
            ax.axvline(smoothing_start, color=REF_COLOR, lw=0.8, ls=":")
        ax.set_title("-2LL (complete data)" if name == "ofv" and smoothing_start is not None else name,
                     fontsize="medium")
        ax.set_xlabel("iteration")
    for ax in flat[len(panels):]:
        fig.delaxes(ax)
    fig.suptitle(fig_title(result))
    return fig

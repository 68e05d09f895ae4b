"""VPCs of non-Gaussian data: proportions per time bin (binary, ordinal, count data) and
Kaplan-Meier curves (time to event), drawn from ``pkmix.vpc_proportions`` and
``pkmix.km_vpc``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._common import OBS_COLOR, new_figure
from .vpc import _BAND_COLORS, _LINE_COLORS, _stratum_label


def _strata(table: pd.DataFrame, stratify) -> list:
    strata = list(pd.unique(table["stratum"])) if "stratum" in table.columns else ["all"]
    try:
        strata = sorted(strata)
    except TypeError:  # mixed kinds: keep the order of appearance
        pass
    return strata if stratify is not None else strata[:1]


def proportion_vpc_plot(vpc, *, title: str | None = None, xlabel: str = "TIME", ylabel: str = "proportion"):
    """Draw a VPC of proportions: per category (rows of panels) and stratum (columns),
    the observed proportion per time bin as a line and the simulated proportion's band.

    Args:
        vpc: ``pkmix.vpc_proportions``'s ``ProportionVPCResult``.
        title, xlabel, ylabel: labels.

    Returns:
        A matplotlib ``Figure`` (axes row-major: category by stratum).
    """
    props = getattr(vpc, "proportions", None)
    if not isinstance(props, pd.DataFrame):
        raise TypeError("proportion_vpc_plot: expected pkmix.vpc_proportions's result (a 'proportions' table)")
    categories = list(pd.unique(props["category"]))
    strata = _strata(props, getattr(vpc, "stratify", None))
    fig, axes = new_figure(len(categories), len(strata), width=max(6.0, 4.6 * len(strata)),
                           height=max(3.4, 2.8 * len(categories)), sharex=True)
    ci = float(getattr(vpc, "ci", 0.95))
    n = getattr(vpc, "n", None)
    for i, cat in enumerate(categories):
        for j, st in enumerate(strata):
            ax = axes[i, j]
            rows = props[(props["category"] == cat) & (props["stratum"] == st)].sort_values("time")
            t = rows["time"].to_numpy(dtype=float)
            ax.fill_between(t, rows["sim_lower"], rows["sim_upper"], color=_BAND_COLORS["outer"], alpha=0.3, lw=0,
                            label=f"simulated, {100 * ci:g} % interval")
            ax.plot(t, rows["sim_median"], color=_BAND_COLORS["outer"], lw=1.0, ls="--", label="simulated median")
            ax.plot(t, rows["observed"], color=_LINE_COLORS["median"], marker="o", ms=3, lw=1.8, label="observed")
            ax.set_ylim(0.0, 1.0)
            label = _stratum_label(getattr(vpc, "stratify", None), st) if getattr(vpc, "stratify", None) else None
            head = f"DV = {cat:g}" + (f", {label}" if label else "")
            ax.set_title(head if i or j or title is None else f"{title}: {head}", fontsize="medium")
            if j == 0:
                ax.set_ylabel(ylabel)
            if i == len(categories) - 1:
                ax.set_xlabel(xlabel)
            if i == 0 and j == 0:
                ax.legend(fontsize="x-small", loc="best", frameon=False)
    if title is None:
        fig.suptitle("VPC of proportions" + (f" ({n} simulations)" if n else ""))
    return fig


def km_vpc_plot(vpc, *, title: str | None = None, xlabel: str = "TIME", ylabel: str = "survival (no event)",
                show_censored: bool = True):
    """Draw a Kaplan-Meier VPC: the observed Kaplan-Meier curve (a step function, with
    ticks at censored times) over the band of the simulated curves, one panel per stratum.

    Args:
        vpc: ``pkmix.km_vpc``'s ``KMVPCResult``.
        title, xlabel, ylabel: labels.
        show_censored: ticks at the observed censoring times.

    Returns:
        A matplotlib ``Figure``.
    """
    curves = getattr(vpc, "curves", None)
    if not isinstance(curves, pd.DataFrame):
        raise TypeError("km_vpc_plot: expected pkmix.km_vpc's result (a 'curves' table)")
    subjects = getattr(vpc, "subjects", None)
    stratify = getattr(vpc, "stratify", None)
    strata = _strata(curves, stratify)
    fig, axes = new_figure(1, len(strata), width=max(6.5, 5.0 * len(strata)), height=4.6)
    ci = float(getattr(vpc, "ci", 0.95))
    n = getattr(vpc, "n", None)
    for j, st in enumerate(strata):
        ax = axes[0, j]
        c = curves[curves["stratum"] == st].sort_values("time")
        t = c["time"].to_numpy(dtype=float)
        ax.fill_between(t, c["sim_lower"], c["sim_upper"], step="post", color=_BAND_COLORS["outer"], alpha=0.3,
                        lw=0, label=f"simulated, {100 * ci:g} % interval")
        ax.step(t, c["sim_median"], where="post", color=_BAND_COLORS["outer"], lw=1.0, ls="--",
                label="simulated median")
        ax.step(t, c["observed"], where="post", color=OBS_COLOR, lw=1.8, label="observed (Kaplan-Meier)")
        if show_censored and isinstance(subjects, pd.DataFrame) and len(subjects):
            s = subjects[(subjects["stratum"] == st) & (subjects["EVENT"] == 0)]
            tc = s["TIME"].to_numpy(dtype=float)
            at = np.searchsorted(t, tc, side="right") - 1
            ax.plot(tc, c["observed"].to_numpy(dtype=float)[np.maximum(at, 0)], "|", color=OBS_COLOR, ms=6,
                    label="censored")
        ax.set_ylim(0.0, 1.02)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel if j == 0 else "")
        default = "Kaplan-Meier VPC" + (f" ({n} simulations)" if n else "")
        label = title or default
        st_label = _stratum_label(stratify, st) if stratify else None
        ax.set_title(label if st_label is None else f"{label}: {st_label}")
        if j == 0:
            ax.legend(fontsize="x-small", loc="best", frameon=False)
    return fig


__all__ = ["km_vpc_plot", "proportion_vpc_plot"]

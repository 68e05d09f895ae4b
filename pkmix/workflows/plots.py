"""Plots of the replicate workflows, in the style of ``pkmix.plots``: functions that
return a matplotlib ``Figure`` (matplotlib imported only when a plot is made)."""

from __future__ import annotations

import math

import numpy as np

from ..plots._common import OBS_COLOR, PRED_COLOR, REF_COLOR, SMOOTH_COLOR, new_figure


def _grid(k):
    ncols = min(4, max(1, k))
    return int(math.ceil(k / ncols)), ncols


def distributions(result, *, bins: int = 30):
    """Histograms of the parameters' bootstrap (or SIR) distributions: the original
    estimate (solid), the percentile interval (dashed) and, for a bootstrap, BCa (dotted)."""
    names = result.names
    samples = result.samples()
    nrows, ncols = _grid(len(names))
    fig, axes = new_figure(nrows, ncols, width=3.0 * ncols + 0.5, height=2.4 * nrows + 0.5)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        s = samples[name].to_numpy(dtype=float)
        s = s[np.isfinite(s)]
        ax.hist(s, bins=bins, color=OBS_COLOR, alpha=0.55)
        row = result.summary.loc[name]
        ax.axvline(row["estimate"], color=REF_COLOR, lw=1.5)
        for lo, hi, style, color in (("pct_lower", "pct_upper", "--", SMOOTH_COLOR),
                                     ("bca_lower", "bca_upper", ":", PRED_COLOR)):
            if lo in row.index:
                for c in (lo, hi):
                    if np.isfinite(row[c]):
                        ax.axvline(row[c], color=color, ls=style, lw=1.2)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{type(result).__name__.replace('Result', '')}: {len(samples)} samples; solid: estimate, "
                 f"dashed: percentile interval" + (", dotted: BCa" if "bca_lower" in result.summary else ""),
                 fontsize=9)
    return fig


def dofv_plot(result):
    """SIR's dOFV diagnostic (Dosne et al. 2016): the dOFV (OFV - OFV at the estimate)
    distribution of the proposals and of the resamples against the chi-square
    distribution with p degrees of freedom (quantile-quantile: the resamples lie near the
    line when the uncertainty is well described)."""
    from scipy.stats import chi2

    p = len(result.names)
    fig, axes = new_figure(1, 2, width=9.0, height=3.6)
    ax = axes[0, 0]
    prop = np.sort(result.proposals["dofv"].to_numpy(dtype=float))
    prop = prop[np.isfinite(prop)]
    res = np.sort(result.resamples["dofv"].to_numpy(dtype=float))
    for data, color, label in ((prop, REF_COLOR, "proposals"), (res, OBS_COLOR, "resamples")):
        if data.size:
            q = chi2.ppf((np.arange(1, data.size + 1) - 0.5) / data.size, p)
            ax.plot(q, data, ".", ms=3, color=color, label=label)
    hi = chi2.ppf(0.999, p)
    ax.plot([0, hi], [0, hi], color=SMOOTH_COLOR, lw=1.2, label=f"chi-square, {p} df")
    ax.set_xlabel(f"chi-square({p}) quantile")
    ax.set_ylabel("dOFV")
    ax.set_ylim(min(0, float(np.min(prop, initial=0))), 3 * hi)
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.hist(res, bins=30, density=True, color=OBS_COLOR, alpha=0.55, label="resamples")
    x = np.linspace(0, max(hi, float(np.max(res, initial=0))), 200)
    ax.plot(x, chi2.pdf(x, p), color=SMOOTH_COLOR, label=f"chi-square, {p} df")
    ax.set_xlabel("dOFV")
    ax.legend(fontsize=8)
    fig.suptitle(f"SIR: {len(result.proposals)} proposals ({len(prop)} in the parameter space), {len(res)} resamples",
                 fontsize=9)
    return fig


def power_curve(result):
    """SSE: power (or type I error) of the LRT against the number of subjects, with
    Wilson 95 % intervals."""
    table = result.power_table
    fig, axes = new_figure(1, 1, width=5.0, height=3.6)
    ax = axes[0, 0]
    x = table["n_subjects"].to_numpy(dtype=float)
    y = table["rate"].to_numpy(dtype=float)
    lo = table["rate_lower"].to_numpy(dtype=float)
    hi = table["rate_upper"].to_numpy(dtype=float)
    ax.errorbar(x, y, yerr=[y - lo, hi - y], fmt="o-", color=OBS_COLOR, capsize=3)
    ax.axhline(0.8 if result.test == "power" else result.alpha, color=REF_COLOR, ls="--", lw=1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("subjects")
    ax.set_ylabel("power" if result.test == "power" else "type I error")
    ax.set_title(f"LRT at alpha {result.alpha:g}, {result.settings['n']} replicates per point", fontsize=9)
    return fig

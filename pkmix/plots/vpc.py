"""Visual predictive check: the plot and the layout it draws (from ``pkmix.vpc``, the one VPC engine).

**The VPC data layout** ``vpc_plot`` draws (what ``vpc_summary`` returns) is a dict
(or any object with these attributes):

* ``"bins"`` -- a DataFrame, one row per time bin, with columns

  - ``time``: where the bin is drawn (the median observation time in the bin);
    ``time_lo``, ``time_hi``: its edges; ``n_obs``: observations in it;
  - for each percentile ``q`` (default 5, 50, 95; named with ``f"p{q:g}"``):
    ``obs_p{q}`` -- the observed percentile; ``sim_p{q}_lo``, ``sim_p{q}_med``,
    ``sim_p{q}_hi`` -- the lower CI bound, median and upper CI bound of that percentile
    across simulated replicates;
  - when there is a limit of quantification: ``obs_blq`` (observed fraction BLQ) and
    ``sim_blq_lo``, ``sim_blq_med``, ``sim_blq_hi`` (its simulated CI).

  Percentiles that fall below the LLOQ are NaN (censored: they are not drawn).
* ``"observed"`` -- a DataFrame of the observations (``TIME``, ``DV``, ``BLQ``), optional.
* ``"percentiles"`` -- the ``q`` values (inferred from the columns when absent);
  ``"ci"`` -- the CI level (e.g. 0.95); ``"lloq"`` -- a scalar LLOQ or None;
  ``"n_sim"`` -- number of replicates; ``"pred_corrected"`` -- a bool. All optional.

A bare ``bins`` DataFrame is accepted too.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .._simulate import _bin_edges, time_bins
from ._common import OBS_COLOR, REF_COLOR, new_figure

_BAND_COLORS = {"outer": "#4a90d9", "median": "#e06666"}
_LINE_COLORS = {"outer": "#1f4e79", "median": "#a61c00"}


def _pname(q: float) -> str:
    return f"p{q:g}"


# --------------------------------------------------------------------------- summary
def vpc_summary(time, dv, simulated, *, bins=10, percentiles=(5, 50, 95), ci: float = 0.95,
                lloq=None, blq=None, pred_corrected: bool = False) -> dict:
    """The binned VPC statistics from observations and simulated replicates (computed by
    ``pkmix._simulate.vpc_statistics``, the summary behind ``pkmix.vpc``).

    Args:
        time: observation times [n_obs].
        dv: observed values [n_obs] (BLQ ones may hold anything: see ``blq``).
        simulated: simulated values at the same records, [n_sim, n_obs].
        bins: the number of bins (edges by ``time_bins``) or the edges themselves.
        percentiles: percentiles to summarise (0-100).
        ci: level of the simulated percentiles' intervals.
        lloq: scalar or per-observation limit of quantification (None: no censoring).
        blq: per-observation flag that the observation was BLQ (default ``dv < lloq``).
        pred_corrected: record that the values were prediction-corrected (for labels).

    Returns:
        The VPC data layout documented in this module.
    """
    from .._simulate import VPCResult, vpc_statistics

    time = np.asarray(time, dtype=float)
    dv = np.asarray(dv, dtype=float)
    sim = np.asarray(simulated, dtype=float)
    if sim.ndim != 2 or sim.shape[1] != time.size or dv.size != time.size:
        raise ValueError(f"vpc_summary: simulated must be [n_sim, n_obs] with n_obs = {time.size}; got "
                         f"{sim.shape} (dv has {dv.size})")
    edges = _bin_edges(time, bins)
    has_lloq = lloq is not None and np.any(np.isfinite(np.broadcast_to(np.asarray(lloq, float), time.shape)))
    limit = np.broadcast_to(np.asarray(lloq if has_lloq else -np.inf, dtype=float), time.shape)
    limit = np.where(np.isfinite(limit), limit, -np.inf)
    obs_blq = np.asarray(blq, dtype=bool) if blq is not None else dv < limit
    levels = np.asarray(percentiles, dtype=float) / 100.0
    bins_table, pct_table, blq_table = vpc_statistics(time, dv, obs_blq, sim, sim < limit[None, :], edges, levels,
                                                      ci, has_lloq=bool(has_lloq))
    finite = limit[np.isfinite(limit)]
    observations = pd.DataFrame({"TIME": time, "DV": dv, "BLQ": obs_blq.astype(int), "stratum": "all"})
    result = VPCResult(bins=bins_table, percentiles=pct_table, blq=blq_table, observations=observations,
                       pi=tuple(levels.tolist()), ci=float(ci), n=int(sim.shape[0]), pred_corrected=bool(pred_corrected),
                       stratify=None, lloq=float(np.min(finite)) if has_lloq and finite.size else None, edges=edges)
    ((_, layout),) = _from_vpc_result(result)
    return layout


def vpc_from_result(result, *, n_sim: int = 200, bins=10, percentiles=(5, 50, 95), ci: float = 0.95,
                    seed: int = 0) -> dict:
    """VPC data for a fit: ``pkmix.vpc`` (``n_sim`` replicates of the data's design
    simulated with the estimates) on bins that follow the sampling design
    (``time_bins``), in this module's layout.

    Args:
        result: a ``FitResult`` (or any object with ``model``, ``dataset``, ``values``).
        n_sim: replicates.
        bins: number of bins (edges by ``time_bins``) or the edges.
        percentiles: percentiles (0-100).
        ci: level of the simulated percentiles' intervals.
        seed: random seed.

    Returns:
        The dict layout documented in this module.
    """
    from .._simulate import vpc

    model, dataset, values = (getattr(result, k, None) for k in ("model", "dataset", "values"))
    if model is None or dataset is None or values is None:
        raise ValueError("a VPC needs the model, the dataset and the estimates (result.model/.dataset/.values)")
    frame = dataset.frame
    times = frame.loc[((frame["EVID"] == 0) & (frame["MDV"] == 0)).to_numpy(), "TIME"].to_numpy(dtype=float)
    edges = _bin_edges(times, bins)
    v = vpc(model, dataset, values, n=n_sim, bins=edges, pi=tuple(q / 100.0 for q in percentiles), ci=ci, seed=seed)
    ((_, layout),) = vpc_layouts(v)
    return layout


# --------------------------------------------------------------------------- layouts
def _from_vpc_result(v) -> list[tuple[object, dict]]:
    """``pkmix.vpc``'s ``VPCResult`` (long tables with a stratum column) as one layout
    per stratum."""
    pct, bins, blq, obs = v.percentiles, v.bins, getattr(v, "blq", None), v.observations
    levels = [float(p) for p in v.pi]
    strata = list(pd.unique(bins["stratum"])) if "stratum" in bins.columns else [None]
    if getattr(v, "stratify", None) is None:
        strata = [None] if strata in ([None], ["all"]) else strata
    try:
        strata = sorted(strata)
    except TypeError:  # mixed kinds: keep the order of appearance
        pass
    out = []
    for st in strata:
        def pick(df):
            return df if st is None or df is None or "stratum" not in df.columns else df[df["stratum"] == st]

        b = pick(bins)
        wide = pd.DataFrame({"bin": b["bin"].to_numpy(), "time": b["time"].to_numpy(dtype=float),
                             "time_lo": b["lower"].to_numpy(dtype=float), "time_hi": b["upper"].to_numpy(dtype=float),
                             "n_obs": b["n_observed"].to_numpy()})
        p_st = pick(pct)
        qs = []
        for p in levels:
            q = round(100.0 * p, 9)  # 0.05 -> 5, not 5.000000000000001
            qs.append(q)
            rows = p_st[np.isclose(p_st["pi"].to_numpy(dtype=float), p)].set_index("bin")
            for src, dst in (("observed", f"obs_{_pname(q)}"), ("sim_lower", f"sim_{_pname(q)}_lo"),
                             ("sim_median", f"sim_{_pname(q)}_med"), ("sim_upper", f"sim_{_pname(q)}_hi")):
                wide[dst] = rows[src].reindex(wide["bin"]).to_numpy(dtype=float)
        if blq is not None and len(blq):
            rows = pick(blq).set_index("bin")
            for src, dst in (("observed", "obs_blq"), ("sim_lower", "sim_blq_lo"), ("sim_median", "sim_blq_med"),
                             ("sim_upper", "sim_blq_hi")):
                wide[dst] = rows[src].reindex(wide["bin"]).to_numpy(dtype=float)
        o = pick(obs)
        observed = pd.DataFrame({"TIME": o["TIME"].to_numpy(dtype=float), "DV": o["DV"].to_numpy(dtype=float),
                                 "BLQ": o["BLQ"].to_numpy(dtype=int)})
        out.append((st, {"stratum_label": _stratum_label(getattr(v, "stratify", None), st), "bins": wide,
                         "observed": observed, "percentiles": tuple(qs), "ci": float(v.ci),
                         "lloq": v.lloq, "n_sim": int(v.n), "pred_corrected": bool(v.pred_corrected)}))
    return out


def _stratum_label(column, value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    return f"{column} = {value}" if column else str(value)


def vpc_layouts(vpc) -> list[tuple[object, dict]]:
    """Any accepted VPC data as ``[(stratum or None, layout dict)]``: the dict layout of
    this module, a bare ``bins`` DataFrame, or ``pkmix.vpc``'s ``VPCResult`` (one entry
    per stratum)."""
    if isinstance(vpc, pd.DataFrame):
        return [(None, {"bins": vpc})]
    if isinstance(vpc, dict):
        return [(None, vpc)]
    pct = getattr(vpc, "percentiles", None)
    if isinstance(pct, pd.DataFrame) and "pi" in pct.columns:
        return _from_vpc_result(vpc)
    data = {k: getattr(vpc, k) for k in ("bins", "observed", "percentiles", "ci", "lloq", "n_sim", "pred_corrected")
            if hasattr(vpc, k)}
    return [(None, data)]


def _check(data):
    """(bins, observed, percentiles, meta) of one layout, checked."""
    bins = data.get("bins")
    if not isinstance(bins, pd.DataFrame):
        raise TypeError("VPC data: expected a 'bins' DataFrame (see pkmix.plots.vpc for the layout)")
    if "time" not in bins.columns:
        raise ValueError(f"VPC data: 'bins' needs a 'time' column; it has {list(bins.columns)}")
    percentiles = data.get("percentiles")
    if percentiles is None:
        found = sorted({float(m.group(1)) for c in bins.columns if (m := re.fullmatch(r"obs_p([0-9.]+)", c))})
        percentiles = tuple(found)
    for q in percentiles:
        need = [f"obs_{_pname(q)}", f"sim_{_pname(q)}_lo", f"sim_{_pname(q)}_hi"]
        missing = [c for c in need if c not in bins.columns]
        if missing:
            raise ValueError(f"VPC data: percentile {q:g} needs columns {missing}")
    return bins.sort_values("time"), data.get("observed"), tuple(percentiles), data


# --------------------------------------------------------------------------- plot
def vpc_plot(vpc, *, log_y: bool = False, blq_panel: bool | None = None, show_points: bool = True,
             title: str | None = None, xlabel: str = "TIME", ylabel: str | None = None):
    """Draw a VPC: observed points, observed percentile lines, simulated percentile bands.

    Args:
        vpc: VPC data: the layout documented in this module (``vpc_summary``,
            ``vpc_from_result``), or ``pkmix.vpc``'s result (a stratified one gets one
            column of panels per stratum).
        log_y: log-scaled y axis (non-positive values are left out).
        blq_panel: add a panel of the fraction BLQ per bin (observed line, simulated CI);
            default when the data have a limit of quantification.
        show_points: draw the observations.
        title, xlabel, ylabel: labels (``ylabel`` default "DV" or "prediction-corrected DV").

    Returns:
        A matplotlib ``Figure``: the VPC axes (one per stratum) first, then the BLQ axes.
    """
    layouts = [(st, _check(d)) for st, d in vpc_layouts(vpc)]
    has_blq = []
    for _, (bins, _, _, meta) in layouts:
        cols = {"obs_blq", "sim_blq_lo", "sim_blq_hi"} <= set(bins.columns)
        has_blq.append(cols)
    if blq_panel is None:
        blq_panel = all(has_blq) and any(meta.get("lloq") is not None for _, (_, _, _, meta) in layouts)
    if blq_panel and not all(has_blq):
        raise ValueError("VPC data: a BLQ panel needs columns obs_blq, sim_blq_lo, sim_blq_hi")
    n = len(layouts)
    if blq_panel:
        fig, axes = new_figure(2, n, width=max(8.0, 5.0 * n), height=7.0, gridspec_kw={"height_ratios": [3, 1]},
                               sharex="col")
    else:
        fig, axes = new_figure(1, n, width=max(8.0, 5.0 * n), height=5.2)
    for j, (stratum, (bins, observed, percentiles, meta)) in enumerate(layouts):
        ax = axes[0, j]
        ax_blq = axes[1, j] if blq_panel else None
        _draw(ax, ax_blq, bins, observed, percentiles, meta, log_y=log_y, show_points=show_points,
              xlabel=xlabel, ylabel=ylabel if j == 0 else "", legend=j == 0)
        pc = bool(meta.get("pred_corrected"))
        n_sim = meta.get("n_sim")
        default = ("Prediction-corrected VPC" if pc else "VPC") + (f" ({n_sim} simulations)" if n_sim else "")
        label = title or default
        st_label = meta.get("stratum_label") or (None if stratum is None else str(stratum))
        ax.set_title(label if st_label is None else f"{label}: {st_label}")
    return fig  # fig.axes is row-major: the VPC axes, then the BLQ axes


def _draw(ax, ax_blq, bins, observed, percentiles, meta, *, log_y, show_points, xlabel, ylabel, legend):
    t = bins["time"].to_numpy(dtype=float)

    def positive(y):
        y = np.asarray(y, dtype=float)
        return np.where(y > 0, y, np.nan) if log_y else y

    if show_points and isinstance(observed, pd.DataFrame) and len(observed):
        o = observed
        if "BLQ" in o.columns:
            o = o[o["BLQ"] != 1]
        ax.scatter(o["TIME"], positive(o["DV"]), s=9, color=OBS_COLOR, alpha=0.35, edgecolors="none",
                   label="observed", zorder=2)
    mid = min(percentiles, key=lambda q: abs(q - 50.0)) if percentiles else None
    ci = meta.get("ci")
    ci_txt = f"{100 * ci:g} % CI" if ci else "CI"
    outer = [q for q in percentiles if q != mid]
    names = {"median": f"{mid:g}th percentile" if mid is not None else "",
             "outer": " & ".join(f"{q:g}th" for q in outer) + " percentiles"}
    labelled = set()
    for q in percentiles:
        kind = "median" if q == mid else "outer"
        p = _pname(q)
        first = kind not in labelled
        labelled.add(kind)
        # One legend entry per kind: the outer percentiles share a colour.
        ax.fill_between(t, positive(bins[f"sim_{p}_lo"]), positive(bins[f"sim_{p}_hi"]),
                        color=_BAND_COLORS[kind], alpha=0.28, lw=0, zorder=1,
                        label=f"simulated {names[kind]}, {ci_txt}" if first else None)
        ax.plot(t, positive(bins[f"obs_{p}"]), color=_LINE_COLORS[kind], lw=2.0 if kind == "median" else 1.5,
                ls="-" if kind == "median" else "--", marker="o", ms=3, zorder=3,
                label=f"observed {names[kind]}" if first else None)
    lloq = meta.get("lloq")
    if lloq is not None and np.isfinite(lloq) and (not log_y or lloq > 0):
        ax.axhline(lloq, color=REF_COLOR, lw=0.9, ls=":", label="LLOQ")
    if log_y:
        ax.set_yscale("log")
    pc = bool(meta.get("pred_corrected"))
    ax.set_ylabel(ylabel if ylabel is not None else ("prediction-corrected DV" if pc else "DV"))
    if ax_blq is None:
        ax.set_xlabel(xlabel)
    if legend:
        ax.legend(fontsize="x-small", loc="best", frameon=False)
    if ax_blq is not None:
        ax_blq.fill_between(t, bins["sim_blq_lo"], bins["sim_blq_hi"], color=_BAND_COLORS["outer"], alpha=0.3, lw=0,
                            label=f"simulated, {ci_txt}")
        ax_blq.plot(t, bins["obs_blq"], color=_LINE_COLORS["outer"], marker="o", ms=3, label="observed")
        top = np.nanmax(bins[["obs_blq", "sim_blq_hi"]].to_numpy(dtype=float), initial=0.0)
        ax_blq.set_ylim(0, max(1e-3, float(top) * 1.1))
        ax_blq.set_ylabel("fraction BLQ" if legend else "")
        ax_blq.set_xlabel(xlabel)
        if legend:
            ax_blq.legend(fontsize="x-small", loc="best", frameon=False)


__all__ = ["time_bins", "vpc_from_result", "vpc_layouts", "vpc_plot", "vpc_summary"]

"""Individual fits: each subject's observations with its IPRED and PRED curves.

The curves come from the model itself on a fine time grid: prediction-only records
(EVID 2, MDV 1) are added to the dataset between its records and predicted with the
fit's estimates and EBEs through ``pkmix.predict``, so they are exact model predictions
between the observations, not lines joining the observed-time predictions.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from ._common import IPRED_COLOR, OBS_COLOR, PRED_COLOR, REF_COLOR, fig_title, new_figure


def _require_model(result, what: str):
    model = getattr(result, "model", None)
    dataset = getattr(result, "dataset", None)
    values = getattr(result, "values", None)
    if model is None or dataset is None or values is None:
        raise ValueError(
            f"{what} needs the model, the dataset and the estimates (result.model, result.dataset, "
            f"result.values); this result does not carry them (e.g. a run directory whose model "
            f"file could not be loaded)"
        )
    return model, dataset, values


def _subject_grid(times: np.ndarray, dose_times: np.ndarray, n_points: int) -> np.ndarray:
    lo, hi = float(np.min(times)), float(np.max(times))
    grid = np.linspace(lo, hi, n_points) if hi > lo else np.array([lo])
    # Dose times are on the grid so each peak after a bolus is drawn, not cut off.
    return np.unique(np.concatenate([grid, dose_times]))


def grid_dataset(dataset, n_points: int = 200):
    """The dataset with prediction-only records (EVID 2, MDV 1) on a fine grid.

    Each subject gets ``n_points`` evenly spaced times from its first to its last record,
    plus its dose times. Covariates (and OCC) of an added record are those of the next
    original record: under NONMEM's rule a record's values govern the interval ending at
    it, so the added record leaves every interval's covariates as they were. Subjects
    whose times decrease (a reset, EVID 3/4, restarting the clock) get no added records.

    Returns:
        A new ``pkmix.Dataset``.
    """
    from .. import read_nonmem

    frame = dataset.to_frame()
    obs_cmt = frame.loc[(frame["EVID"] == 0) & (frame["MDV"] == 0), "CMT"]
    default_cmt = int(obs_cmt.iloc[0]) if len(obs_cmt) else 1
    covariate_like = [c for c in frame.columns
                      if c not in ("ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "DUR", "II",
                                   "ADDL", "SS", "LLOQ", "BLQ")]
    pieces = []
    for _, sub in frame.groupby("ID", sort=False):
        t = sub["TIME"].to_numpy(dtype=float)
        if np.any(np.diff(t) < 0):
            pieces.append(sub.assign(_RANK=0, _ORDER=np.arange(len(sub))))
            continue
        doses = t[sub["EVID"].isin((1, 4)).to_numpy()]
        grid = _subject_grid(t, doses, n_points)
        sub_obs_cmt = sub.loc[(sub["EVID"] == 0) & (sub["MDV"] == 0), "CMT"]
        cmt = int(sub_obs_cmt.iloc[0]) if len(sub_obs_cmt) else default_cmt
        new = pd.DataFrame({
            "ID": sub["ID"].iloc[0], "TIME": grid, "DV": np.nan, "AMT": 0.0, "EVID": 2, "MDV": 1,
            "CMT": cmt, "RATE": 0.0, "DUR": 0.0, "II": 0.0, "ADDL": 0, "SS": 0, "LLOQ": np.nan, "BLQ": 0,
        })
        # An added record at a dose's time comes after the dose (rank 1), so the curve
        # shows the post-dose value there.
        both = pd.concat([sub.assign(_RANK=0, _ORDER=np.arange(len(sub))),
                          new.assign(_RANK=1, _ORDER=np.arange(len(new)))], ignore_index=True)
        both = both.sort_values(["TIME", "_RANK", "_ORDER"], kind="stable").reset_index(drop=True)
        if covariate_like:
            both[covariate_like] = both[covariate_like].bfill().ffill()
        pieces.append(both)
    out = pd.concat(pieces, ignore_index=True).drop(columns=["_RANK", "_ORDER"])
    out = out[frame.columns]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_nonmem(out)


def individual_predictions(result, *, n_points: int = 200) -> pd.DataFrame:
    """PRED and IPRED of every subject on a fine time grid (see ``grid_dataset``).

    Args:
        result: a ``FitResult`` carrying its model, dataset and values.
        n_points: grid points per subject.

    Returns:
        DataFrame with ID, TIME, PRED, IPRED (observation and prediction-only records).
    """
    from .. import predict

    model, dataset, values = _require_model(result, "individual_predictions")
    fine = grid_dataset(dataset, n_points)
    etas = result.etas.set_index("ID")
    eta_cols = [c for c in result.etas.columns if c != "ID"]
    eta_array = etas.loc[list(fine.ids), eta_cols].to_numpy(dtype=float)
    pred = predict(model, fine, values, eta_array)
    keep = pred["EVID"].isin((0, 2)).to_numpy()
    return pred.loc[keep, ["ID", "TIME", "PRED", "IPRED"]].reset_index(drop=True)


def individual_fits(result, *, per_page: int = 12, ncols: int = 4, log: bool = False, n_points: int = 200,
                    ids=None, sharey: bool = False, curves: pd.DataFrame | None = None):
    """Observations, IPRED and PRED curves and dose times, one panel per subject.

    Args:
        result: a ``FitResult`` carrying its model, dataset and values (a fit or an
            evaluation in this process, or ``pkmix.report.load_run`` of a run directory
            whose model loads).
        per_page: panels per figure (12 to 16 reads well).
        ncols: panels per row.
        log: log-scaled concentration axis (non-positive values are left out).
        n_points: grid points per subject for the curves.
        ids: the subjects to draw (default all, in dataset order).
        sharey: the same concentration axis on every panel of a page.
        curves: precomputed ``individual_predictions(result)`` (to reuse them).

    Returns:
        A list of matplotlib ``Figure``s, one per page. Each subject's axes is titled
        ``"ID <id>"``. Observations are filled circles, BLQ observations open circles at
        their LLOQ, doses triangles on the time axis.
    """
    if per_page < 1 or ncols < 1:
        raise ValueError(f"per_page and ncols must be at least 1, got {per_page}, {ncols}")
    _, dataset, _ = _require_model(result, "individual_fits")
    if curves is None:
        curves = individual_predictions(result, n_points=n_points)
    frame = dataset.frame
    all_ids = list(dataset.ids)
    if ids is None:
        ids = all_ids
    else:
        unknown = [i for i in ids if i not in set(all_ids)]
        if unknown:
            raise ValueError(f"individual_fits: IDs {unknown} are not in the dataset")
    by_id_frame = {k: g for k, g in frame.groupby("ID", sort=False)}
    by_id_curve = {k: g for k, g in curves.groupby("ID", sort=False)}
    title = fig_title(result)
    figures = []
    n_pages = math.ceil(len(ids) / per_page)
    for page in range(n_pages):
        page_ids = ids[page * per_page:(page + 1) * per_page]
        nrows = math.ceil(len(page_ids) / ncols)
        fig, axes = new_figure(nrows, ncols, width=3.2 * ncols + 0.6, height=2.6 * nrows + 0.9,
                               sharey=sharey)
        flat = axes.ravel()
        for ax, sid in zip(flat, page_ids):
            _draw_subject(ax, by_id_frame[sid], by_id_curve.get(sid), sid, log)
        for ax in flat[len(page_ids):]:
            fig.delaxes(ax)
        for ax in axes[:, 0]:
            if ax in fig.axes:
                ax.set_ylabel("DV")
        # Bottom-most panel in each column gets the x label even on a short last row.
        for col in range(ncols):
            present = [axes[r, col] for r in range(nrows) if axes[r, col] in fig.axes]
            if present:
                present[-1].set_xlabel("TIME")
        handles, labels = flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside upper right", ncols=len(labels), fontsize="small",
                   frameon=False)
        suffix = f" (page {page + 1} of {n_pages})" if n_pages > 1 else ""
        fig.suptitle(f"Individual fits{': ' + title if title else ''}{suffix}", x=0.02, ha="left")
        figures.append(fig)
    return figures


def _draw_subject(ax, sub: pd.DataFrame, curve: pd.DataFrame | None, sid, log: bool):
    obs = sub[(sub["EVID"] == 0) & (sub["MDV"] == 0)]
    blq = obs["BLQ"].to_numpy() == 1
    if curve is not None and len(curve):
        t = curve["TIME"].to_numpy(dtype=float)
        for col, color, ls, label in (("IPRED", IPRED_COLOR, "-", "IPRED"), ("PRED", PRED_COLOR, "--", "PRED")):
            y = curve[col].to_numpy(dtype=float)
            if log:
                y = np.where(y > 0, y, np.nan)
            ax.plot(t, y, color=color, ls=ls, lw=1.4, label=label)
    t_obs = obs["TIME"].to_numpy(dtype=float)
    dv = obs["DV"].to_numpy(dtype=float)
    show = ~blq & (dv > 0 if log else np.isfinite(dv))
    ax.scatter(t_obs[show], dv[show], s=16, color=OBS_COLOR, zorder=3, label="observed")
    if blq.any():
        lloq = obs["LLOQ"].to_numpy(dtype=float)[blq]
        ax.scatter(t_obs[blq], lloq, s=18, facecolors="none", edgecolors=OBS_COLOR, zorder=3, label="BLQ (at LLOQ)")
    doses = sub.loc[sub["EVID"].isin((1, 4)), "TIME"].to_numpy(dtype=float)
    if doses.size:
        # y in axes coordinates: the markers sit on the time axis whatever the scale.
        ax.plot(doses, np.zeros_like(doses), ls="none", marker="^", ms=5, color=REF_COLOR,
                transform=ax.get_xaxis_transform(), clip_on=False, label="dose")
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.set_title(f"ID {_fmt_id(sid)}", fontsize="medium")
    ax.tick_params(labelsize="small")


def _fmt_id(sid) -> str:
    if isinstance(sid, (float, np.floating)) and float(sid).is_integer():
        return str(int(sid))
    return str(sid)

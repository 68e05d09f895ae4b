"""Predictions that continue the patient's own history (earlier doses count): the
level after further doses, the time it falls below a threshold, and the exposure in
the first interval after a loading dose. Computed by the event engine at the MAP."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from .._data.dataset import padded_length
from .exposure import _gauss_legendre_pieces
from .map import CURVE_POINTS, MAPResult, model_fingerprint, simulate
from .targets import Target


# --------------------------------------------------------------------- continuation
def _extend_eta(fit: MAPResult, eta):
    """The MAP etas of the patient's occasions plus a new occasion (IOV etas 0) for the
    future records."""
    n_iov = len(fit.model.iov_names)
    if not n_iov:
        return jnp.asarray(eta)
    return jnp.concatenate([jnp.asarray(eta), jnp.zeros(n_iov)])


def _merged_positions(record_times, extra_times) -> np.ndarray:
    """Positions of the extra records in the merged order (see patient.merge_records)."""
    n, g = len(record_times), len(extra_times)
    times = np.r_[np.asarray(record_times, float), np.asarray(extra_times, float)]
    is_extra = np.r_[np.zeros(n, bool), np.ones(g, bool)]
    order = np.lexsort((np.arange(n + g), is_extra, times))
    pos = np.empty(n + g, dtype=np.int64)
    pos[order] = np.arange(n + g)
    return pos[n:]


def continue_history(fit: MAPResult, doses=(), queries=(), curve=()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IPRED (at the MAP) at ``queries`` and ``curve`` times after the patient's history
    with further ``doses`` [(time, amount, infusion hours, cmt)] (at most 16).

    The extra records form one fixed-size block (`CURVE_POINTS`), so every call for a
    patient reuses the compiled program of the MAP curve.
    """
    q, c = history_predictions(fit, [_extend_eta(fit, fit.eta)], doses, queries, curve)
    return q[0], c[0], np.asarray([float(t) for t in curve])


def history_predictions(fit: MAPResult, etas, doses=(), queries=(), curve=()) -> tuple[np.ndarray, np.ndarray]:
    """Predictions at ``queries`` and ``curve`` times after the patient's history with
    further ``doses`` [(time, amount, infusion hours, cmt)] (at most 16), for each row of
    ``etas`` (full eta vectors: BSV, the patient's occasions' IOV, then the new
    occasion's). Returns ``(at_queries [k, nq], at_curve [k, nc])``.

    The extra records form one fixed-size block (`CURVE_POINTS`) and the etas go two at
    a time, so every call for a patient reuses the compiled program of the MAP curve.
    """
    bound = fit.bound
    n_dose_slots = 16
    if len(doses) > n_dose_slots:
        raise ValueError(f"at most {n_dose_slots} future doses")
    q_times = [float(t) for t in queries]
    c_times = [float(t) for t in curve]
    n_fill = CURVE_POINTS - n_dose_slots - len(q_times) - len(c_times)
    if n_fill < 0:
        raise ValueError(f"too many query and curve points (at most {CURVE_POINTS - n_dose_slots})")
    end = max([0.0] + q_times + c_times + [t for t, *_ in doses] + list(bound.records["TIME"])) + 1.0
    # Order within the block matters at equal times: queries first (a trough is taken
    # before a dose at the same time), then doses, then curve points.
    time = q_times + [float(t) for t, *_ in doses] + [end] * (n_dose_slots - len(doses)) + c_times + [end] * n_fill
    k = len(time)
    amt = np.zeros(k)
    dur = np.zeros(k)
    evid = np.full(k, 2)
    cmt = np.zeros(k, dtype=np.int64)
    for i, (t, a, tinf, c) in enumerate(doses):
        j = len(q_times) + i
        amt[j], dur[j], evid[j], cmt[j] = a, tinf, 1, c
    extra = {"TIME": np.asarray(time), "AMT": amt, "DUR": dur, "EVID": evid, "CMT": cmt}
    n_occ = max(bound.n_occasions, 1)
    iov = bool(fit.model.iov_names)
    if iov:
        extra["OCC"] = np.full(k, n_occ)
    width = padded_length(bound.n_records + k, 64)
    subject = bound.subject(n_records=width, extra=extra, rule=fit.covariate_rule,
                            n_occasions=n_occ + 1 if iov else n_occ)
    etas = np.atleast_2d(np.asarray(etas, float))
    has_ss = bound.has_steady_state
    rows = []
    for i in range(0, etas.shape[0], 2):
        pair = etas[i:i + 2]
        if pair.shape[0] == 1:
            pair = np.concatenate([pair, pair])
        pred = np.asarray(simulate(fit.model, has_ss, fit.covariate_rule, fit.values, jnp.asarray(pair), subject,
                                   fingerprint=model_fingerprint(fit.info)))
        rows.append(pred[: min(2, etas.shape[0] - i)])
    pred = np.concatenate(rows, axis=0)
    pos = _merged_positions(bound.records["TIME"], np.asarray(time))
    nq = len(q_times)
    start_c = nq + n_dose_slots
    return pred[:, pos[:nq]], pred[:, pos[start_c:start_c + len(c_times)]]


def time_below(fit: MAPResult, threshold: float, *, horizon: float | None = None) -> dict:
    """When the level falls below ``threshold`` after the last dose (MAP prediction).

    Returns:
        ``{"threshold", "time", "hours_after_last_dose", "datetime", "status"}`` with
        status "found", "already below" (even the peak after the last dose is below the
        threshold), "not within" (the horizon), or "no dose".
    """
    last = fit.bound.last_dose
    if last is None:
        return {"threshold": threshold, "time": None, "hours_after_last_dose": None, "datetime": None,
                "status": "no dose"}
    horizon = horizon or max(72.0, 4.0 * (last.get("interval") or 12.0))
    n = 200
    grid = last["time"] + np.linspace(0.0, horizon, n)
    _, c, _ = continue_history(fit, curve=grid)
    # The fall after the last dose's peak (the end of an infusion, or the maximum after
    # an oral dose).
    peak = int(np.argmax(c))
    below = (c < threshold) & (np.arange(n) > peak)
    status = "found"
    if c[peak] < threshold:
        t = float(grid[peak])
        status = "already below"
    elif not below.any():
        t = None
        status = "not within"
    else:
        i = int(np.argmax(below))
        c0, c1 = c[i - 1], c[i]
        t0, t1 = grid[i - 1], grid[i]
        if c0 > 0 and c1 > 0:  # log-linear between the two points (exponential decline)
            frac = math.log(c0 / threshold) / math.log(c0 / c1)
        else:
            frac = (c0 - threshold) / (c0 - c1)
        t = float(t0 + frac * (t1 - t0))
    return {"threshold": float(threshold), "time": t,
            "hours_after_last_dose": None if t is None else t - last["time"],
            "datetime": None if t is None or fit.bound.patient.reference_time is None
            else fit.bound.patient.datetime_of(t).isoformat(timespec="minutes"),
            "status": status}


def _window_nodes(start, end, kinks, budget):
    """Gauss-Legendre nodes and weights on [start, end] split at ``kinks``."""
    edges = sorted({start, end, *[k for k in kinks if start < k < end]})
    pieces = len(edges) - 1
    per = max(budget // max(pieces, 1), 6)
    n_sub = 2 if per >= 12 else 1
    k = per // n_sub
    u, w = _gauss_legendre_pieces(pieces=n_sub, nodes=k, ratio=2.0)
    t, wt = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        t.append(a + u * (b - a))
        wt.append(w * (b - a))
    return np.concatenate(t), np.concatenate(wt)


def _loading_exposure(fit, target: Target, start, ld, ld_tinf, dose, tau, tinf, cmt, curve=()):
    """The first-interval exposure after a loading dose ``ld`` at ``start`` followed by
    the maintenance regimen; (value, curve concentrations)."""
    window = 24.0 if target.kind == "auc24" else tau
    n_doses = int(min(16, math.ceil((max(window, tau) + tau) / tau) + 1))
    # A continuous infusion runs alongside its loading dose; a maintenance dose follows it.
    first = 0 if tinf >= tau else 1
    doses = [(start, ld, ld_tinf, cmt)] + [(start + k * tau, dose, tinf, cmt) for k in range(first, n_doses)]
    if target.kind in ("auc24", "auc", "ft_mic"):
        kinks = [start + ld_tinf] + [t for t, *_ in doses] + [t + tinf for t, *_ in doses[1:]]
        lo, hi = (start, start + window)
        if target.kind == "auc" and target.start is not None:
            lo, hi = start + target.start, start + min(target.end, tau)
        nodes, weights = _window_nodes(lo, hi, kinks, 150)
        q, c, _ = continue_history(fit, doses, queries=list(nodes), curve=curve)
        if target.kind == "ft_mic":
            s = np.r_[nodes]
            l = np.log(np.maximum(q, 1e-300) / target.mic)
            above = 0.0
            for i in range(len(s) - 1):
                a, b, L = l[i], l[i + 1], s[i + 1] - s[i]
                if a > 0 and b > 0:
                    above += L
                elif a > 0 >= b:
                    above += L * a / (a - b)
                elif b > 0 >= a:
                    above += L * b / (b - a)
            return 100.0 * above / (hi - lo), c
        return float(np.sum(weights * q)), c
    if target.kind == "trough":
        t = start + tau
    elif target.kind == "peak":
        t = start + (target.time if target.time is not None else ld_tinf)
    else:
        t = start + target.time
    q, c, _ = continue_history(fit, doses, queries=[t], curve=curve)
    return float(q[0]), c

"""Time-to-event data: a hazard function in place of a residual error model.

A subject's time-to-event records (NONMEM's convention: DV = 1 an event at TIME, DV = 0
no event up to TIME) split its follow-up into intervals: record j covers (s_j, t_j],
where s_j is the time of the subject's previous time-to-event record, or the subject's
first record (the start of follow-up) for the first one. With H(a, b) the cumulative
hazard between a and b (the integral of h), the record's term of -2 log L is

    DV = 0 (no event, right-censored at t_j):      2 H(s_j, t_j)
    DV = 1, exact event at t_j:                    2 H(s_j, t_j) - 2 log h(t_j)
    DV = 1, event in (L_j, t_j] (interval-censored): 2 H(s_j, L_j) - 2 log(1 - exp(-H(L_j, t_j)))

so the terms of a subject's records add up to -2 log of its survival to the last record
(times the density or interval probability of its events): adding DV = 0 records in
between leaves the likelihood as it is. L_j is read from the data column named by
``interval_start`` (NONMEM has no standard item for it); on an event record L_j = t_j
means an exact time, L_j < t_j an interval; on a no-event record the column is not read.

The prediction f (what ``observe`` returns, at record j) enters the hazard over record
j's interval (s_j, t_j]: held at its value at t_j, as NONMEM's covariates govern the
interval ending at their record. For the built-in hazards f is a multiplier of the
hazard (proportional hazards), so a subject frailty is an eta in f's individual
parameter: ``"lam": jnp.exp(p.tlam + p.eta_frail)`` is a log-normal frailty:

* ``exponential``: h(t) = f; H(a, b) = f (b - a).
* ``weibull`` (theta: shape k): h(t) = f k t^(k-1); H(a, b) = f (b^k - a^k) (flexsurv's
  weibullPH).
* ``gompertz`` (theta: rate g): h(t) = f exp(g t); H(a, b) = f (exp(g b) - exp(g a)) / g.
* a user function ``h(t, f, p)`` (``p.<name>``: the thetas named in ``theta``): H by
  Gauss-Legendre quadrature with ``nodes`` points on each interval, differentiable. The
  rule is exact for polynomials in t of degree 2 nodes - 1 and converges geometrically
  for a hazard analytic on the interval; 16 nodes reproduce a Gompertz hazard's closed
  form to 1e-12 (tests/test_tte.py). A hazard that follows a varying prediction (a
  concentration) sees it piecewise constant between records: add DV = 0 records on a
  grid as fine as the prediction needs.

Time is the data's TIME (the hazard's clock starts at TIME = 0). Simulation draws event
times by inverting S: the event falls in the first record interval whose cumulative
hazard passes an Exp(1) draw, at the time solving H(s_j, T) = the remaining draw
(closed form for the built-ins, bisection on the quadrature for a user hazard); a
subject without an event by its last record is censored there.
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .likelihoods import AbstractLikelihood, _column

HAZARDS = ("exponential", "weibull", "gompertz")
# Bisection steps of the user hazard's inverse: the bracket shrinks by 2^-60, to the
# resolution of float64 on any interval.
_BISECTION_STEPS = 60


def _safe_log(x):
    return jnp.log(jnp.where(x > 0, x, 1.0)) + jnp.where(x > 0, 0.0, -jnp.inf)


def _power(t, k):
    """t^k for t >= 0, k > 0 (0 at t = 0, with finite derivatives in k)."""
    return jnp.where(t > 0, jnp.where(t > 0, t, 1.0) ** k, 0.0)


def _expm1_over(x, g):
    """expm1(g x) / g, continuous at g = 0 (x)."""
    small = jnp.abs(g) < 1e-10
    g_safe = jnp.where(small, 1.0, g)
    return jnp.where(small, x * (1.0 + 0.5 * g * x), jnp.expm1(g_safe * x) / g_safe)


class Hazard(eqx.Module):
    """A hazard h(t; f, thetas): its kind (``HAZARDS``) or a user function, with the
    cumulative hazard between two times and its inverse."""

    kind: str = eqx.field(static=True)
    function: Callable | None = eqx.field(static=True, default=None)
    theta: tuple[str, ...] = eqx.field(static=True, default=())
    nodes: int = eqx.field(static=True, default=16)

    def __check_init__(self):
        if self.kind == "user":
            if not callable(self.function):
                raise ValueError("time_to_event: a user hazard must be a function h(t, f, p)")
        elif self.kind not in HAZARDS:
            raise ValueError(f"time_to_event: hazard must be one of {HAZARDS} or a function h(t, f, p), "
                             f"got {self.kind!r}")
        need = {"exponential": 0, "weibull": 1, "gompertz": 1}.get(self.kind)
        if need is not None and len(self.theta) != need:
            what = {"weibull": "its shape", "gompertz": "its rate"}.get(self.kind, "none")
            raise ValueError(f"time_to_event: the {self.kind} hazard reads {need} theta ({what}); "
                             f"got theta={list(self.theta)}")
        if int(self.nodes) < 1:
            raise ValueError(f"time_to_event: nodes must be at least 1, got {self.nodes}")

    def _user(self, t, f, thetas):
        from .._pk.ode import Namespace

        p = Namespace({n: thetas[i] for i, n in enumerate(self.theta)}, "theta")
        return jnp.asarray(self.function(t, f, p), dtype=jnp.float64)

    def log_hazard(self, t, f, thetas):
        """log h(t) (the event density's hazard factor)."""
        if self.kind == "exponential":
            return _safe_log(f) + jnp.zeros_like(t)
        if self.kind == "weibull":
            k = thetas[0]
            return _safe_log(f) + jnp.log(k) + (k - 1.0) * _safe_log(t)
        if self.kind == "gompertz":
            return _safe_log(f) + thetas[0] * t
        return _safe_log(self._user(t, f, thetas))

    def cumulative(self, a, b, f, thetas):
        """H(a, b) = integral of h from a to b (a <= b), f held constant."""
        if self.kind == "exponential":
            return f * (b - a)
        if self.kind == "weibull":
            k = thetas[0]
            return f * (_power(b, k) - _power(a, k))
        if self.kind == "gompertz":
            g = thetas[0]
            return f * jnp.exp(g * a) * _expm1_over(b - a, g)
        a, b, f = jnp.broadcast_arrays(jnp.asarray(a, dtype=jnp.float64), jnp.asarray(b, dtype=jnp.float64),
                                       jnp.asarray(f, dtype=jnp.float64))
        x, w = gauss_legendre(self.nodes)
        lead = (1,) * a.ndim + (self.nodes,)
        half = 0.5 * (b - a)
        t = (0.5 * (a + b))[..., None] + half[..., None] * x.reshape(lead)  # [..., nodes]
        h = jnp.broadcast_to(self._user(t, jnp.broadcast_to(f[..., None], t.shape), thetas), t.shape)
        return half * jnp.sum(w.reshape(lead) * h, axis=-1)

    def inverse(self, a, r, f, thetas, b):
        """The time T in (a, b] with H(a, T) = r, or +inf when H(a, b) < r (no event by b)."""
        total = self.cumulative(a, b, f, thetas)
        if self.kind == "exponential":
            t = a + r / f
        elif self.kind == "weibull":
            k = thetas[0]
            t = (_power(a, k) + r / f) ** (1.0 / k)
        elif self.kind == "gompertz":
            g = thetas[0]
            # H(a, T) = r  <=>  exp(g (T - a)) = 1 + r g exp(-g a) / f; the log1p of it / g is
            # continuous at g = 0 (r / f).
            z = r * jnp.exp(-g * a) / f
            small = jnp.abs(g) < 1e-10
            g_safe = jnp.where(small, 1.0, g)
            arg = jnp.maximum(g_safe * z, -1.0 + 1e-300)
            t = a + jnp.where(small, z, jnp.log1p(arg) / g_safe)
        else:
            def step(_, bracket):
                lo, hi = bracket
                mid = 0.5 * (lo + hi)
                below = self.cumulative(a, mid, f, thetas) < r
                return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

            lo, hi = jax.lax.fori_loop(0, _BISECTION_STEPS, step, (a, b))
            t = 0.5 * (lo + hi)
        return jnp.where(total >= r, jnp.minimum(t, b), jnp.inf)


def gauss_legendre(n: int):
    """Gauss-Legendre nodes and weights on [-1, 1] (n points)."""
    x, w = np.polynomial.legendre.leggauss(int(n))
    return jnp.asarray(x), jnp.asarray(w)


def record_terms(hazard: Hazard, time, start, lower, dv, f, thetas):
    """Each time-to-event record's term of -2 log L (module docstring), elementwise.

    Args:
        time: the record's time t_j; start: s_j; lower: L_j (= t_j for an exact event).
        dv: 1 event, 0 none; f: the prediction at the record; thetas: the hazard's thetas.
    """
    event = dv > 0.5
    interval = event & (lower < time)
    # Interval-censored: survival to L_j, then an event in (L_j, t_j]. The other records
    # take survival to t_j. Both branches are evaluated on finite stand-ins (double where).
    to = jnp.where(interval, lower, time)
    h_before = hazard.cumulative(start, to, f, thetas)
    h_inside = hazard.cumulative(jnp.where(interval, lower, 0.0), jnp.where(interval, time, 1.0), f, thetas)
    h_inside = jnp.where(interval, h_inside, 1.0)
    log_p_inside = jnp.log(-jnp.expm1(-h_inside))
    log_h = hazard.log_hazard(jnp.where(event & ~interval, time, 1.0), f, thetas)
    return (2.0 * h_before
            - 2.0 * jnp.where(interval, log_p_inside, 0.0)
            - 2.0 * jnp.where(event & ~interval, log_h, 0.0))


def previous_times(time, mask):
    """s_j: the time of the previous record in ``mask`` before record j, else the
    subject's first record's time (the start of follow-up)."""
    idx = jnp.arange(time.shape[0])
    last = jax.lax.cummax(jnp.where(mask, idx, -1))
    prev = jnp.concatenate([jnp.full((1,), -1, dtype=last.dtype), last[:-1]])
    return jnp.where(prev >= 0, time[jnp.maximum(prev, 0)], time[0])


class TimeToEvent(AbstractLikelihood):
    """Time-to-event records (DV = 1 event, 0 none) with hazard ``hazard`` (the module
    docstring has the likelihood); the interval-censoring start in data column
    ``interval_start`` when given."""

    hazard: Hazard
    interval_start: str | None = eqx.field(static=True, default=None)

    @property
    def label(self):
        return "time-to-event"

    @property
    def theta_parameters(self):
        return tuple(self.hazard.theta)

    @property
    def data_columns(self):
        return () if self.interval_start is None else (self.interval_start,)

    # Finite at any record: a positive hazard multiplier, no event.
    safe_prediction = 1.0
    safe_observation = 0.0

    def _record_inputs(self, y, subject):
        """(mask, time, start, lower, dv) of the subject's records; records outside the
        mask become no-event records of zero length, so every term is finite."""
        mask = subject.obs_mask
        time = subject.time
        start = previous_times(time, mask)
        start = jnp.where(mask, start, time)
        lower = time if self.interval_start is None else jnp.where(mask, _column(subject, self.interval_start), time)
        lower = jnp.clip(lower, start, time)
        dv = jnp.where(mask, y, 0.0)
        return mask, time, start, lower, dv

    def m2ll_records(self, f, y, thetas, sds, subject):
        mask, time, start, lower, dv = self._record_inputs(y, subject)
        f = jnp.where(mask, f, self.safe_prediction)
        return jnp.where(mask, record_terms(self.hazard, time, start, lower, dv, f, thetas), 0.0)

    def simulate_records(self, key, f, thetas, subject):
        """One subject's first event by inverse transform: (dv, time, keep) per record.

        An Exp(1) draw E is spent along the subject's time-to-event records (the mask
        ``obs_mask``): the event falls in the first interval (s_j, t_j] whose cumulative
        hazard passes what is left of E, at the time T solving H(s_j, T) = the rest;
        that record gets DV = 1 and TIME = T, the later records of the kind are dropped
        (``keep`` False). Without an event by the last record, every record keeps DV = 0
        (censored at the end of follow-up)."""
        mask, time, start, _, _ = self._record_inputs(jnp.zeros_like(subject.time), subject)
        f = jnp.where(mask, f, self.safe_prediction)
        e = jax.random.exponential(key, dtype=jnp.float64)
        dh = jnp.where(mask, self.hazard.cumulative(start, time, f, thetas), 0.0)
        before = jnp.cumsum(dh) - dh  # cumulative hazard up to each interval's start
        inside = mask & (before < e) & (before + dh >= e)
        j = jnp.argmax(inside)
        has_event = jnp.any(inside)
        t_event = self.hazard.inverse(start[j], e - before[j], f[j], thetas, time[j])
        t_event = jnp.where(jnp.isfinite(t_event), t_event, time[j])
        idx = jnp.arange(time.shape[0])
        dv = jnp.where(has_event & (idx == j), 1.0, 0.0)
        new_time = jnp.where(has_event & (idx == j), t_event, time)
        keep = ~(mask & has_event & (idx > j))
        return dv, new_time, keep

    def data_violations(self, frame, rows):
        dv = frame["DV"].to_numpy(dtype=np.float64)
        out = self._dv_violations(frame, rows, lambda y: np.isin(y, (0, 1)), "DV in {0, 1} (1 event, 0 none)")
        time = frame["TIME"].to_numpy(dtype=np.float64)
        out += self._violations(frame, rows, time < 0, "TIME", "time-to-event: TIME >= 0 (the hazard's clock)",
                                lambda i: f"time-to-event record at TIME {time[i]:g}")
        if self.interval_start is None:
            return out
        col = next((c for c in frame.columns if str(c).upper() == self.interval_start.upper()), None)
        if col is None:
            return out  # reported as a missing covariate column
        low = frame[col].to_numpy(dtype=np.float64)
        ids = frame["ID"].to_numpy()
        # s_j: the previous time-to-event record's TIME in the subject, else its first record's.
        first = pd.Series(time).groupby(ids, sort=False).transform("first").to_numpy()
        prev = pd.Series(np.where(rows, time, np.nan)).groupby(ids, sort=False).transform(
            lambda s: s.shift(1).ffill()).to_numpy()
        start = np.where(np.isnan(prev), first, prev)
        column = self.interval_start.upper()
        event = rows & (dv == 1)
        with np.errstate(invalid="ignore"):
            out += self._violations(frame, event, ~(low <= time), column,
                                    f"time-to-event: {column} <= TIME (an event in ({column}, TIME])",
                                    lambda i: f"interval start {low[i]:g} after the event record's TIME {time[i]:g}")
            out += self._violations(frame, event, ~(low >= start), column,
                                    f"time-to-event: {column} >= the previous time-to-event record's TIME "
                                    "(or the subject's first TIME)",
                                    lambda i: f"interval start {low[i]:g} before {start[i]:g}, where the "
                                              "record's interval begins")
        return out


def time_to_event(hazard="exponential", *, theta=(), interval_start: str | None = None,
                  nodes: int = 16) -> TimeToEvent:
    """Time-to-event data (DV = 1 an event at TIME, DV = 0 no event up to TIME) with a
    hazard h(t) in place of a residual error model.

    Args:
        hazard: ``"exponential"`` (h = f), ``"weibull"`` (h = f k t^(k-1), theta: the
            shape k), ``"gompertz"`` (h = f exp(g t), theta: the rate g), or a function
            ``h(t, f, p)`` of time, the prediction and the thetas ``p.<name>`` named in
            ``theta`` (integrated by Gauss-Legendre quadrature with ``nodes`` points).
            ``f`` is what ``observe`` returns on the record, e.g. ``p.lam``, with a
            frailty as an eta in it.
        theta: the thetas the hazard reads.
        interval_start: a data column giving, on an event record, the start L of the
            interval (L, TIME] in which the event happened (interval censoring); L = TIME
            is an exact event time.
        nodes: Gauss-Legendre points per interval for a user hazard.

    Example (Weibull with a log-normal frailty)::

        pkmix.Model(theta={"tlam": -3.0, "k": 1.5}, omega={"eta_frail": 0.3}, sigma={},
                    individual=lambda p: {"lam": jnp.exp(p.tlam + p.eta_frail)},
                    structure=pkmix.one_compartment(), observe=lambda a, p: p.lam,
                    error=pkmix.time_to_event("weibull", theta=["k"]))
    """
    if callable(hazard):
        h = Hazard(kind="user", function=hazard, theta=tuple(theta), nodes=int(nodes))
    else:
        h = Hazard(kind=str(hazard), theta=tuple(theta), nodes=int(nodes))
    return TimeToEvent(hazard=h, interval_start=interval_start)

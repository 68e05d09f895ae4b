"""The event engine: NONMEM dosing semantics on top of any structural model.

For one subject, every record gives up to three events:

* the record itself (kind 0) at TIME: observations are read here; EVID 3/4 and SS=1
  doses reset the system; an SS dose sets (SS=1) or adds (SS=2) the steady-state
  amounts of its regimen at TIME;
* the dose's administration (kind 1) at TIME + ALAG: a bolus adds F*AMT, an infusion
  starts its rate;
* the end of an infusion (kind 2) at TIME + ALAG + duration.

Ties keep data order: a record's own event, then its administration, then its end,
then the next record; so an administration or an infusion end at the time of a later
record comes before it (NONMEM gives a dose before an observation at the same time). A
reset (EVID 3/4) starts a new segment: TIME may go back there, and every event of the
records before it belongs before it. A reset, or an SS=1 dose, also cancels running
infusions and lagged doses still to come.

Two engines implement these semantics, and the tests check each against the other:

* Linear structures (closed forms): a scan over the records, each closing the interval
  since the previous one, with the administrations after a lag and the infusion ends
  that fall inside an interval added by superposition (see
  ``_amounts_by_superposition``). No event list is sorted.
* Any structure (ODEs): the events sorted by (segment, time, data order) at run time
  (lag times and modelled durations depend on parameters; a permutation is piecewise
  constant, so gradients flow through the times), and the state carried from event to
  event by one adaptive solve that stops at every event (``ODE.solve_events``), or with
  the structure's ``propagate``, which never steps across a dose. Without lag times
  (no ``alagN`` among the individual parameters) a record and its administration are
  one event.

Individual parameters may change from record to record (time-varying covariates,
inter-occasion variability). NONMEM's rule is the default: the values on a record
govern the interval that ends at that record. ``covariate_rule="locf"`` uses the last
record at or before the start of the interval instead.

Steady state (NONMEM's SS dose record): the SS dose is the last of an infinite series
given every II. The amounts just before a dose of that series (the trough) are the
fixed point of one dosing interval; with a lag time NONMEM computes steady state as if
there were none and then advances by II - ALAG to the record's time, and so do we, so
records between TIME and TIME + ALAG see the tail of the implied doses. A constant
steady-state infusion (SS with AMT = 0, RATE > 0 and II = 0) sets the amounts to the
plateau of that infusion at TIME, and the infusion ends there: NONMEM's guide (SS dose
event record, AMT 0, RATE > 0, II 0) says "The infusion terminates at the event time of
the SS dose record", and mrgsolve does the same; afterwards the amounts decay from the
plateau (its lag, meaningless for an infusion that never started, is ignored). Not
supported: implied infusions that are still running at the record's time (ALAG +
duration > II) or a lag longer than II; their steady-state amounts are NaN, so the
predictions are NaN rather than silently wrong.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import _linalg as linalg
from .base import AbstractStructure

EVENT_RECORD, EVENT_ADMIN, EVENT_STOP = 0, 1, 2
STEADY_STATE_CONSTANT_INFUSION_WINDOW = 1.0  # any positive length: the state is a fixed point
STEADY_STATE_MAX_NEWTON = 20  # Newton steps for the steady state of a nonlinear structure


class DoseSchedule(NamedTuple):
    """Per-record dose quantities after F, ALAG, RATE/DUR and modelled rates are applied."""

    is_dose: jax.Array  # bool [R]
    is_infusion: jax.Array  # bool [R]
    cmt: jax.Array  # int [R], 0-based dose compartment
    amount: jax.Array  # F * AMT  [R]
    rate: jax.Array  # infusion rate (0 for a bolus) [R]
    duration: jax.Array  # infusion duration (0 for a bolus; inf for a constant SS infusion) [R]
    admin_time: jax.Array  # TIME + ALAG [R]


def _per_compartment(ip, prefix, n_cmt, default, cmt):
    """``ip[f"{prefix}{cmt + 1}"]`` for each record's dose compartment, ``default`` where
    the model does not define it (elementwise selects: no [R, n_cmt] stack to gather from)."""
    value = jnp.full(cmt.shape, default, dtype=jnp.result_type(float))
    for i in range(n_cmt):
        name = f"{prefix}{i + 1}"
        if name in ip:
            value = jnp.where(cmt == i, ip[name], value)
    return value


def has_lag_times(structure: AbstractStructure, ip) -> bool:
    """Whether the individual parameters define a lag time for any compartment (static)."""
    return any(f"alag{i + 1}" in ip for i in range(structure.n_compartments))


def dose_schedule(structure: AbstractStructure, subject, ip) -> DoseSchedule:
    n_cmt = structure.n_compartments
    time = subject.time
    is_dose = ((subject.evid == 1) | (subject.evid == 4)) & subject.record_mask
    cmt = jnp.where(subject.cmt > 0, subject.cmt - 1, structure.default_dose_compartment)
    cmt = jnp.clip(cmt, 0, n_cmt - 1)
    f = _per_compartment(ip, "f", n_cmt, 1.0, cmt)
    alag = _per_compartment(ip, "alag", n_cmt, 0.0, cmt)
    # RATE = -1/-2 into a compartment whose rN/dN the model does not define has no
    # meaning: NaN makes the predictions of that subject NaN instead of a made-up value.
    modelled_rate = _per_compartment(ip, "r", n_cmt, jnp.nan, cmt)
    modelled_duration = _per_compartment(ip, "d", n_cmt, jnp.nan, cmt)

    amount = f * subject.amt
    data_rate = subject.rate > 0
    data_duration = (subject.rate == 0) & (subject.dur > 0)
    rate_modelled = subject.rate == -1
    duration_modelled = subject.rate == -2
    is_infusion = is_dose & (data_rate | data_duration | rate_modelled | duration_modelled)

    # NONMEM: a rate (given or modelled) fixes the rate and F changes the duration; a
    # duration (given in DUR, or modelled with RATE = -2) fixes the duration and F
    # changes the rate. The divisors are made safe before dividing (double where), so
    # the branch not taken never produces inf/NaN or NaN gradients.
    rate = jnp.where(data_rate, subject.rate, jnp.where(rate_modelled, modelled_rate, 1.0))
    duration = jnp.where(data_duration, subject.dur, jnp.where(duration_modelled, modelled_duration, 1.0))
    rate_given = data_rate | rate_modelled
    safe_rate = jnp.where(rate_given & (rate > 0), rate, 1.0)
    safe_duration = jnp.where(~rate_given & (duration > 0), duration, 1.0)
    duration = jnp.where(rate_given, jnp.where(rate > 0, amount / safe_rate, jnp.nan), duration)
    rate = jnp.where(rate_given, rate, jnp.where(duration > 0, amount / safe_duration, jnp.nan))
    # SS with RATE > 0 and II = 0: a constant infusion at steady state, never ending. It
    # has been running forever, so a lag time does not apply to it.
    constant_infusion = is_infusion & (subject.ss > 0) & (subject.ii <= 0)
    duration = jnp.where(constant_infusion, jnp.inf, duration)
    rate = jnp.where(is_infusion, rate, 0.0)
    duration = jnp.where(is_infusion, duration, 0.0)
    # A negative lag would put a dose before its own record: NaN, not a guess.
    lag = jnp.where(is_dose & ~constant_infusion, jnp.where(alag >= 0, alag, jnp.nan), 0.0)
    return DoseSchedule(
        is_dose=is_dose,
        is_infusion=is_infusion,
        cmt=cmt,
        amount=jnp.where(is_dose, amount, 0.0),
        rate=rate,
        duration=duration,
        admin_time=time + lag,
    )


def cycle_fixed_point(structure: AbstractStructure, cycle):
    """The amounts ``a = cycle(a)``: the state at the same point of every dosing interval
    of a regimen given forever, ``cycle`` taking the amounts at that point to those one
    interval later.

    The cycle is affine for linear structures: b = cycle(0) and the columns of A from the
    unit vectors, in one vectorised call (a smaller program than a forward-mode
    Jacobian), then one solve. Other structures take Newton steps until the step is
    within the solver's accuracy (at most STEADY_STATE_MAX_NEWTON), in a loop rather than
    unrolled: each step holds ODE solves, which are large to compile.
    """
    n_cmt = structure.n_compartments
    zeros = jnp.zeros(n_cmt)
    if structure.is_linear:
        images = jax.vmap(cycle)(jnp.concatenate([zeros[None, :], jnp.eye(n_cmt)], axis=0))
        b = images[0]
        A = (images[1:] - b[None, :]).T
        return linalg.solve(jnp.eye(n_cmt) - A, b)

    def newton_step(a):
        jac, value = jax.jacfwd(lambda x: (cycle(x),) * 2, has_aux=True)(a)
        return a - linalg.solve(jac - jnp.eye(n_cmt), value - a)

    rtol = getattr(structure, "rtol", 1e-10)
    atol = getattr(structure, "atol", 1e-12)

    def going(state):
        i, _, more = state
        return (i < STEADY_STATE_MAX_NEWTON) & more

    def body(state):
        i, a, _ = state
        new = newton_step(a)
        err = jnp.max(jnp.abs(new - a) / (10.0 * (atol + rtol * jnp.abs(new))))
        return i + 1, new, err > 1.0  # NaN (a failed solve) stops, and stays

    _, a, _ = lax.while_loop(going, body, (jnp.zeros((), jnp.int32), zeros, jnp.ones((), dtype=bool)))
    return a


def _steady_state_at_record(structure, prepared_r, amount, rate, duration, ii, cmt, lag):
    """Steady-state amounts at the time of an SS dose record (before its own dose).

    The SS dose is the last of a series given every ``ii`` (at TIME + ALAG - k II). The
    state at TIME is the fixed point of one cycle from TIME to TIME + II: the lag, the
    dose (a bolus, or an infusion running for its duration), the rest of the interval.
    Without a lag that is the trough; with one it is NONMEM's "advance to the
    appropriate point in the steady-state cycle (II - ALAG)". For a constant infusion
    (``duration`` inf) the fixed point of any stretch of infusion is the plateau.

    The fixed point comes from ``cycle_fixed_point``.
    """
    n_cmt = structure.n_compartments
    unit = jnp.zeros(n_cmt).at[cmt].set(1.0)
    zeros = jnp.zeros(n_cmt)
    constant = jnp.isinf(duration)
    is_infusion = rate > 0
    lag = jnp.where(constant, 0.0, lag)
    rest = jnp.where(constant, STEADY_STATE_CONSTANT_INFUSION_WINDOW, jnp.maximum(ii - lag, 0.0))
    on = jnp.where(constant, rest, jnp.clip(jnp.where(is_infusion, duration, 0.0), 0.0, rest))
    off = jnp.maximum(rest - on, 0.0)
    bolus = jnp.where(is_infusion, 0.0, amount) * unit

    # The three stretches as one scan, so that an ODE solve appears once in the
    # compiled program rather than three times.
    stretches = (
        jnp.stack([zeros, bolus, zeros]),  # added at the start of the stretch
        jnp.stack([zeros, rate * unit, zeros]),  # rates during it
        jnp.stack([jnp.zeros(()), lag, lag + on]),  # its start
        jnp.stack([lag, on, off]),  # its length
    )

    def cycle(a):
        if hasattr(structure, "solve_events"):
            # An ODE: the cycle as four events of its own event solver (start, dose,
            # infusion end, end of the interval), the rates as changes.
            add, rates, t0, dt = stretches
            times = jnp.concatenate([t0, (t0 + dt)[-1:]])
            n = times.shape[0]
            changes = jnp.concatenate([jnp.diff(rates, axis=0, prepend=zeros[None]), -rates[-1:]])
            return structure.solve_events(
                times, jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n,) + jnp.shape(x)), prepared_r),
                jnp.zeros(n, dtype=bool), jnp.concatenate([add, zeros[None]]), changes, n, y0=a)[-1]

        def stretch(a, xs):
            add, rates, t0, dt = xs
            return structure.propagate(a + add, rates, t0, dt, prepared_r), None

        return lax.scan(stretch, a, stretches)[0]

    a = cycle_fixed_point(structure, cycle)
    # Implied infusions still running at TIME, or implied doses still to come, would need
    # events the engine does not have: say so with NaN.
    supported = constant | ((lag <= ii) & (jnp.where(is_infusion, duration, 0.0) + lag <= ii))
    return jnp.where(supported, a, jnp.nan)


def infusion_records(batch) -> np.ndarray:
    """Which dose records are infusions (RATE or DUR given, or RATE = -1/-2 for a
    modelled rate or duration), from concrete data (NumPy): the host-side check behind
    the static ``has_infusions`` flag of ``subject_amounts``."""
    evid = np.asarray(batch.evid)
    is_dose = ((evid == 1) | (evid == 4)) & np.asarray(batch.record_mask)
    return is_dose & ((np.asarray(batch.rate) != 0) | (np.asarray(batch.dur) > 0))


def subject_amounts(structure: AbstractStructure, subject, ip, *, has_steady_state: bool,
                    covariate_rule: str = "nonmem", has_infusions: bool = True):
    """Compartment amounts at each record of one subject.

    Args:
        structure: the structural model.
        subject: one subject's records (a ``SubjectBatch`` without the subject axis).
        ip: individual parameters per record, ``{lower-case name: [R]}``.
        has_steady_state: whether any record is an SS dose (a static flag so that data
            without SS skip the steady-state solve).
        has_infusions: whether any dose may be an infusion (``infusion_records``); with
            False (static) every dose is a bolus, and the engine leaves out infusion
            ends, which are half of a closed-form model's compiled prediction.
        covariate_rule: "nonmem" (a record's values govern the interval ending at it)
            or "locf" (the values at the start of the interval govern it).

    Returns:
        ``[R, n_cmt]`` amounts at each record, after every event that precedes it in
        time and data order.
    """
    if covariate_rule not in ("nonmem", "locf"):
        raise ValueError(f"covariate_rule must be 'nonmem' or 'locf', got {covariate_rule!r}")
    n_rec = subject.time.shape[0]
    n_cmt = structure.n_compartments
    dose = dose_schedule(structure, subject, ip)
    if not has_infusions:
        zeros = jnp.zeros(n_rec)
        dose = dose._replace(is_infusion=jnp.zeros(n_rec, dtype=bool), rate=zeros, duration=zeros)
    prepared = jax.vmap(structure.prepare)(ip)
    rows = jnp.arange(n_rec)

    resets_data = ((subject.evid == 3) | (subject.evid == 4)) & subject.record_mask
    if has_steady_state:
        is_ss = dose.is_dose & (subject.ss > 0)

        def at_record(r):
            # Under vmap the subjects without an SS dose at this record compute too; they
            # get a harmless regimen (no dose, a unit interval), since the slowest lane
            # sets the pace and an ODE solve over a nonsense interval could run to its
            # step limit.
            ss = is_ss[r]
            prepared_r = jax.tree_util.tree_map(lambda x: x[r], prepared)
            return _steady_state_at_record(
                structure, prepared_r,
                jnp.where(ss, dose.amount[r], 0.0), jnp.where(ss, dose.rate[r], 0.0),
                jnp.where(ss, dose.duration[r], 0.0), jnp.where(ss & (subject.ii[r] > 0), subject.ii[r], 1.0),
                dose.cmt[r], jnp.where(ss, dose.admin_time[r] - subject.time[r], 0.0),
            )

        def each_record(carry, r):
            # Only where some subject of the batch has an SS dose at this record (under
            # vmap over subjects the condition is taken over the batch): SS doses are
            # few, and an ODE steady state costs many solves.
            amounts = lax.cond(eqxi.unvmap_any(is_ss[r]), at_record, lambda _: jnp.zeros(n_cmt), r)
            return carry, amounts

        ss_amounts = jnp.where(is_ss[:, None], lax.scan(each_record, None, rows)[1], 0.0)
        # A constant steady-state infusion is over at its record (NONMEM: "the infusion
        # terminates at the event time of the SS dose record"): it set the plateau above,
        # and gives nothing after it.
        ended = is_ss & dose.is_infusion & jnp.isinf(dose.duration)
        dose = dose._replace(
            is_dose=dose.is_dose & ~ended, is_infusion=dose.is_infusion & ~ended,
            amount=jnp.where(ended, 0.0, dose.amount), rate=jnp.where(ended, 0.0, dose.rate),
            duration=jnp.where(ended, 0.0, dose.duration))
        # SS=1 replaces the state: like a reset, it cancels running infusions and
        # pending lagged doses.
        resets = resets_data | (is_ss & (subject.ss == 1))
    else:
        ss_amounts = None
        resets = resets_data

    lagged = has_lag_times(structure, ip)
    if structure.is_linear:
        return _amounts_by_superposition(structure, subject, prepared, dose, ss_amounts, resets, resets_data,
                                         lagged=lagged, locf=covariate_rule == "locf", has_infusions=has_infusions)
    return _amounts_by_events(structure, subject, dose, prepared, ss_amounts, resets, resets_data,
                              lagged=lagged, covariate_rule=covariate_rule, has_infusions=has_infusions)


def _segments(resets_data):
    """Reset segment of each record: TIME may go back at EVID 3/4, never inside one."""
    return jnp.cumsum(resets_data.astype(jnp.int32))


def _shift(tree, locf):
    """Values of the record at the start of each interval (LOCF), else unchanged."""
    if not locf:
        return tree
    return jax.tree_util.tree_map(lambda x: jnp.concatenate([x[:1], x[:-1]]), tree)


def _propagate_lists(structure, a, r, t0, dt, prepared):
    """``propagate`` on lists of per-compartment scalars (see ``_amounts_by_superposition``)."""
    if hasattr(structure, "propagate_components"):
        return structure.propagate_components(a, r, dt, prepared)
    out = structure.propagate(jnp.stack(a), jnp.stack(r), t0, dt, prepared)
    return [out[k] for k in range(structure.n_compartments)]


def _amounts_by_superposition(structure, subject, prepared, dose, ss_amounts, resets, resets_data, *,
                              lagged, locf, has_infusions):
    """Linear structures: a scan over records, with lagged doses and infusion ends that
    fall inside an interval added by superposition.

    Record j closes the interval (t_{j-1}, t_j]. The amounts after it are
    A_j a_{j-1} + B_j r_{j-1} (r: the running infusions), plus the contribution of
    every input that changes inside the interval: a bolus b at time s adds A(t_j - s) b,
    and a rate change d at time s adds B(t_j - s) d (an infusion ending at s is the same
    infusion carried on, minus one started at s). Which interval a lagged dose or an
    infusion end falls in is a binary search on the record times, so no event list is
    sorted, and the scan is over records only.

    Performance notes (CPU): every array over records is materialised for all subjects,
    and fresh memory costs page faults, so the work on each interval happens inside the
    scans (which see one record of every subject at a time), their inputs are few (the
    structure's prepared parameters; the record's additions pre-combined), and the
    structure works on per-compartment scalars rather than small arrays.
    """
    n_rec = subject.time.shape[0]
    n_cmt = structure.n_compartments
    rows = jnp.arange(n_rec)
    # As JAX arrays: the subject may hold NumPy arrays (a concrete patient), and they are
    # indexed with traced positions below.
    t = jnp.asarray(subject.time)
    # The parameters of interval j: record j's (NONMEM) or record j-1's (LOCF).
    prepared_j = _shift(prepared, locf)

    # Inputs inside intervals: infusion ends, and administrations after a lag.
    immediate = dose.is_dose & (dose.admin_time == t) if lagged else dose.is_dose
    ends = dose.is_infusion & (dose.duration != jnp.inf)  # NaN durations pass, to show
    inputs = [(dose.admin_time + jnp.where(ends, dose.duration, 0.0), ends,
               jnp.zeros(n_rec), -dose.rate)]
    if lagged:
        inputs.append((dose.admin_time, dose.is_dose & ~immediate,
                       jnp.where(dose.is_infusion, 0.0, dose.amount),
                       jnp.where(dose.is_infusion, dose.rate, 0.0)))
    s_time = jnp.concatenate([x[0] for x in inputs])
    s_valid = jnp.concatenate([x[1] for x in inputs])
    s_bolus = jnp.concatenate([x[2] for x in inputs])
    s_rate = jnp.concatenate([x[3] for x in inputs])
    owner = jnp.tile(rows, len(inputs))
    cmt = jnp.tile(dose.cmt, len(inputs))

    def inputs_inside_intervals(_):
        # The interval (t_{j-1}, t_j] that holds time s: the first record after the owner,
        # in the owner's reset segment, with t_j >= s (ties: the input comes first, as
        # NONMEM gives a dose before an observation at the same time). Segments are laid
        # end to end on one axis so that a single binary search finds it.
        segment = _segments(resets_data)
        span = 2.0 * jnp.max(jnp.abs(t)) + 1.0
        key = t + segment * span
        s_segment = jnp.tile(segment, len(inputs))
        j = jnp.searchsorted(key, s_time + s_segment * span, side="left")
        j = jnp.maximum(j, owner + 1)
        j = jnp.where(jnp.isnan(s_time), owner + 1, j)  # keep NaN visible
        j_safe = jnp.minimum(j, n_rec - 1)
        cum_resets = jnp.cumsum(resets.astype(jnp.int32))
        # Not after the owner's segment ends, and not cancelled by a reset or SS=1 dose
        # between the owner and the interval (a reset at j itself comes after the input,
        # and clears it with the rest of the state).
        live = (s_valid & (j < n_rec) & (segment[j_safe] == s_segment)
                & (cum_resets[jnp.maximum(j_safe - 1, 0)] == jnp.tile(cum_resets, len(inputs))))
        h = jnp.maximum(t[j_safe] - s_time, 0.0)
        prepared_s = jax.tree_util.tree_map(lambda v: jnp.asarray(v)[j_safe], prepared_j)

        # The contribution of each input at the end of its interval. A scan over inputs
        # rather than one vectorised expression: it materialises only its results, not the
        # dozens of intermediate [inputs] arrays of a transition (which cost page faults
        # for every subject on CPU).
        def contribution(carry, xs):
            t0, h_e, p_e, cmt_e, bolus_e, rate_e = xs
            bolus = [jnp.where(cmt_e == c, bolus_e, 0.0) for c in range(n_cmt)]
            rate = [jnp.where(cmt_e == c, rate_e, 0.0) for c in range(n_cmt)]
            return carry, _propagate_lists(structure, bolus, rate, t0, h_e, p_e)

        _, contributions = lax.scan(contribution, None, (s_time, h, prepared_s, cmt, s_bolus, s_rate))
        target = jnp.where(live, j, n_rec)
        extra_add = [jnp.zeros(n_rec).at[target].add(x, mode="drop") for x in contributions]
        extra_rate = [jnp.zeros(n_rec).at[target].add(jnp.where(cmt == c, s_rate, 0.0), mode="drop")
                      for c in range(n_cmt)]
        return extra_add, extra_rate

    def no_inputs(_):
        return [jnp.zeros(n_rec) for _ in range(n_cmt)], [jnp.zeros(n_rec) for _ in range(n_cmt)]

    if lagged or has_infusions:
        # Only when some subject of the batch has such an input (the condition is taken
        # over the batch under vmap).
        extra_add, extra_rate = lax.cond(eqxi.unvmap_any(jnp.any(s_valid)), inputs_inside_intervals, no_inputs,
                                         None)
    else:  # boluses without lag times (known before tracing): nothing to compile
        extra_add, extra_rate = no_inputs(None)

    # What record j adds after its interval (after a reset, which also clears what came
    # in during the interval): steady-state amounts and a dose given at its time.
    add = [jnp.where(resets, 0.0, extra) + jnp.where(immediate & ~dose.is_infusion & (dose.cmt == c), dose.amount, 0.0)
           for c, extra in enumerate(extra_add)]
    if ss_amounts is not None:
        add = [x + ss_amounts[:, c] for c, x in enumerate(add)]
    rate_change = [jnp.where(resets, 0.0, extra)
                   + jnp.where(immediate & dose.is_infusion & (dose.cmt == c), dose.rate, 0.0)
                   for c, extra in enumerate(extra_rate)]

    def step(carry, xs):
        t0, a, r = carry
        t_j, p_j, reset_j, add_j, rate_j = xs
        moved = _propagate_lists(structure, a, r, t0, jnp.maximum(t_j - t0, 0.0), p_j)
        # where, not a multiplication by 0: a reset clears NaN too.
        a = [jnp.where(reset_j, 0.0, m) + x for m, x in zip(moved, add_j)]
        r = [jnp.where(reset_j, 0.0, x) + d for x, d in zip(r, rate_j)]
        return (t_j, a, r), a

    zeros = [jnp.zeros(()) for _ in range(n_cmt)]
    _, states = lax.scan(step, (t[0], zeros, zeros), (t, prepared_j, resets, add, rate_change))
    return jnp.stack(states, axis=-1)


def _amounts_by_events(structure, subject, dose, prepared, ss_amounts, resets, resets_data, *,
                       lagged, covariate_rule, has_infusions):
    """Any structure: a sorted event list, the state carried from event to event with
    ``propagate``, or by the structure's own ``solve_events`` where it has one
    (``pkmix.ODE``: one adaptive solve through all the events)."""
    n_rec = subject.time.shape[0]
    n_cmt = structure.n_compartments
    rows = jnp.arange(n_rec)

    # The event list: records (with the administration folded in when nothing has a
    # lag), administrations (only with lag times), infusion ends (only with infusions).
    ends = dose.is_infusion & (dose.duration != jnp.inf)
    end_time = jnp.where(ends, dose.admin_time + jnp.where(ends, dose.duration, 0.0), subject.time)
    kind_list = (EVENT_RECORD,) + ((EVENT_ADMIN,) if lagged else ()) + ((EVENT_STOP,) if has_infusions else ())
    time_of = {EVENT_RECORD: subject.time, EVENT_ADMIN: dose.admin_time, EVENT_STOP: end_time}
    active_of = {EVENT_RECORD: jnp.ones(n_rec, dtype=bool), EVENT_ADMIN: dose.is_dose, EVENT_STOP: ends}
    times = jnp.concatenate([time_of[k] for k in kind_list])
    active = jnp.concatenate([active_of[k] for k in kind_list])
    kinds = jnp.repeat(jnp.asarray(kind_list, dtype=jnp.int32), n_rec)
    owners = jnp.tile(rows, len(kind_list))
    segment = _segments(resets_data)[owners]
    # Slots that are no event (the end of a bolus, the administration of an
    # observation) go last, as zero-length steps: under vmap each step of the scan costs
    # the most any subject needs, so every subject's real events come first.
    order = jnp.lexsort((3 * owners + kinds, times, segment, ~active))
    times, kinds, owners, active = times[order], kinds[order], owners[order], active[order]
    n_events = times.shape[0]
    last_active = lax.cummax(jnp.where(active, jnp.arange(n_events), 0), axis=0)
    times = times[last_active]

    # Which record's parameters govern the interval that ends at each event.
    at_record = kinds == EVENT_RECORD
    record_at = jnp.where(at_record, owners, n_rec)
    if covariate_rule == "nonmem":
        governing = lax.cummin(record_at, axis=0, reverse=True)
        governing = jnp.where(governing >= n_rec, n_rec - 1, governing)
    else:
        last = lax.cummax(jnp.where(at_record, owners, -1), axis=0)
        governing = jnp.clip(jnp.concatenate([jnp.zeros(1, dtype=last.dtype), last[:-1]]), 0, n_rec - 1)

    # What each event does, for all events at once. A reset zeroes the state and
    # cancels running infusions; a dose belongs to the reset epoch of its record, so a
    # later reset voids its pending administration and infusion end.
    reset = at_record & resets[owners]
    epoch = jnp.cumsum(reset.astype(jnp.int32))
    dose_epoch = jnp.zeros(n_rec, dtype=epoch.dtype).at[record_at].set(epoch, mode="drop")
    live = dose.is_dose[owners] & (epoch == dose_epoch[owners])
    admin = live & (kinds == (EVENT_ADMIN if lagged else EVENT_RECORD))
    stop = live & (kinds == EVENT_STOP) & ends[owners]
    unit = jax.nn.one_hot(dose.cmt[owners], n_cmt, dtype=times.dtype)
    infusion = dose.is_infusion[owners]
    add = jnp.where(admin & ~infusion, dose.amount[owners], 0.0)[:, None] * unit
    if ss_amounts is not None:
        add = add + jnp.where(at_record[:, None], ss_amounts[owners], 0.0)
    rate_change = (jnp.where(admin & infusion, dose.rate[owners], 0.0)
                   - jnp.where(stop, dose.rate[owners], 0.0))[:, None] * unit

    t_prev = jnp.concatenate([times[:1], times[:-1]])
    dt = jnp.maximum(times - t_prev, 0.0)
    prepared_e = jax.tree_util.tree_map(lambda x: x[governing], prepared)

    if hasattr(structure, "solve_events"):
        # One adaptive solve through all the events (ODEs).
        states = structure.solve_events(times, prepared_e, reset, add, rate_change, jnp.sum(active))
    else:
        def step(carry, e):
            a, r = carry
            t0, h, p, reset_e, add_e, dr_e = e
            a = structure.propagate(a, r, t0, h, p)
            a = jnp.where(reset_e, 0.0, a) + add_e
            r = jnp.where(reset_e, 0.0, r) + dr_e
            return (a, r), a

        zeros = jnp.zeros(n_cmt)
        _, states = lax.scan(step, (zeros, zeros), (t_prev, dt, prepared_e, reset, add, rate_change))

    # The state seen by each record is the one right after its own event; a dose record
    # without a lag shows the state after its administration (as NONMEM's tables do).
    def position_of(kind):
        return jnp.zeros(n_rec, dtype=jnp.int32).at[jnp.where(kinds == kind, owners, n_rec)].set(
            jnp.arange(n_events, dtype=jnp.int32), mode="drop"
        )

    position = position_of(EVENT_RECORD)
    if lagged:
        shows_dose = dose.is_dose & (dose.admin_time == subject.time)
        position = jnp.where(shows_dose, position_of(EVENT_ADMIN), position)
    return states[position]

"""The event engine: NONMEM dosing semantics on top of any structural model.

For one subject, every record gives up to three events:

* the record itself (kind 0) at TIME: observations are read here, EVID 3/4 and SS=1
  doses reset the system;
* the dose's administration (kind 1) at TIME + ALAG: a bolus adds F*AMT, an infusion
  starts its rate, an SS dose first adds the steady-state pre-dose amounts;
* the end of an infusion (kind 2) at TIME + ALAG + duration.

Lag times and modelled rates/durations (RATE = -1/-2) depend on parameters, so the
events are sorted at run time (a permutation is piecewise constant: gradients flow
through the times). Ties keep data order: the record's own event, then its
administration, then its end, then the next record. The state is then carried from
event to event with the structure's ``propagate``, which never steps across a dose.

Individual parameters may change from record to record (time-varying covariates,
inter-occasion variability). NONMEM's rule is the default: the values on a record
govern the interval that ends at that record. ``covariate_rule="locf"`` uses the last
record at or before the start of the interval instead.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .base import AbstractStructure

EVENT_RECORD, EVENT_ADMIN, EVENT_STOP = 0, 1, 2
STEADY_STATE_CONSTANT_INFUSION_WINDOW = 1.0  # any positive length: the state is a fixed point


class DoseSchedule(NamedTuple):
    """Per-record dose quantities after F, ALAG, RATE/DUR and modelled rates are applied."""

    is_dose: jax.Array  # bool [R]
    is_infusion: jax.Array  # bool [R]
    cmt: jax.Array  # int [R], 0-based dose compartment
    amount: jax.Array  # F * AMT  [R]
    rate: jax.Array  # infusion rate (0 for a bolus) [R]
    duration: jax.Array  # infusion duration (0 for a bolus; inf for a constant SS infusion) [R]
    admin_time: jax.Array  # TIME + ALAG [R]


def _per_compartment(ip, prefix, n_cmt, default, like):
    """Stack ip['f1'], ip['f2'], ... into [R, n_cmt], with a default where not defined."""
    cols = [ip.get(f"{prefix}{i + 1}", jnp.full_like(like, default)) for i in range(n_cmt)]
    return jnp.stack(cols, axis=-1)


def dose_schedule(structure: AbstractStructure, subject, ip) -> DoseSchedule:
    n_cmt = structure.n_compartments
    time = subject.time
    rows = jnp.arange(time.shape[0])
    is_dose = ((subject.evid == 1) | (subject.evid == 4)) & subject.record_mask
    cmt = jnp.where(subject.cmt > 0, subject.cmt - 1, structure.default_dose_compartment)
    cmt = jnp.clip(cmt, 0, n_cmt - 1)
    f = _per_compartment(ip, "f", n_cmt, 1.0, time)[rows, cmt]
    alag = _per_compartment(ip, "alag", n_cmt, 0.0, time)[rows, cmt]
    modelled_rate = _per_compartment(ip, "r", n_cmt, 1.0, time)[rows, cmt]
    modelled_duration = _per_compartment(ip, "d", n_cmt, 1.0, time)[rows, cmt]

    amount = f * subject.amt
    data_rate = subject.rate > 0
    data_duration = (subject.rate == 0) & (subject.dur > 0)
    rate_modelled = subject.rate == -1
    duration_modelled = subject.rate == -2
    is_infusion = is_dose & (data_rate | data_duration | rate_modelled | duration_modelled)

    # NONMEM: a rate (given or modelled) fixes the rate and F changes the duration; a
    # duration (given in DUR, or modelled with RATE = -2) fixes the duration and F
    # changes the rate.
    rate = jnp.where(data_rate, subject.rate, jnp.where(rate_modelled, modelled_rate, 1.0))
    duration = jnp.where(data_duration, subject.dur, jnp.where(duration_modelled, modelled_duration, 1.0))
    rate_given = data_rate | rate_modelled
    safe_rate = jnp.where(rate_given & (rate > 0), rate, 1.0)
    safe_duration = jnp.where(~rate_given & (duration > 0), duration, 1.0)
    duration = jnp.where(rate_given, amount / safe_rate, duration)
    rate = jnp.where(rate_given, rate, amount / safe_duration)
    # SS=1 with RATE > 0 and II = 0: a constant infusion at steady state, never ending.
    constant_infusion = is_infusion & (subject.ss > 0) & (subject.ii <= 0)
    duration = jnp.where(constant_infusion, jnp.inf, duration)
    rate = jnp.where(is_infusion, rate, 0.0)
    duration = jnp.where(is_infusion, duration, 0.0)
    return DoseSchedule(
        is_dose=is_dose,
        is_infusion=is_infusion,
        cmt=cmt,
        amount=jnp.where(is_dose, amount, 0.0),
        rate=rate,
        duration=duration,
        admin_time=time + jnp.where(is_dose, alag, 0.0),
    )


def _steady_state_trough(structure, prepared_r, amount, rate, duration, ii, cmt):
    """Amounts just before a dose of a regimen repeated every ``ii`` forever.

    The fixed point of the one-interval map C(A): dose at 0, then ``ii`` of decay (the
    infusion running for its duration). C is affine for linear structures, so one
    Newton step from 0 is exact; nonlinear (ODE) structures take several.
    """
    n_cmt = structure.n_compartments
    unit = jnp.zeros(n_cmt).at[cmt].set(1.0)
    zero_t = jnp.zeros(())
    constant = jnp.isinf(duration)
    is_infusion = rate > 0
    period = jnp.where(constant, STEADY_STATE_CONSTANT_INFUSION_WINDOW, ii)
    on = jnp.where(constant, period, jnp.minimum(jnp.where(is_infusion, duration, 0.0), period))
    off = period - on

    def cycle(a):
        a = a + jnp.where(is_infusion, 0.0, amount) * unit
        a = structure.propagate(a, rate * unit, zero_t, on, prepared_r)
        return structure.propagate(a, jnp.zeros(n_cmt), on, off, prepared_r)

    a = jnp.zeros(n_cmt)
    n_newton = 1 if structure.is_linear else 8
    for _ in range(n_newton):
        jac = jax.jacfwd(cycle)(a)
        a = a - jnp.linalg.solve(jac - jnp.eye(n_cmt), cycle(a) - a)
    return a


def subject_amounts(structure: AbstractStructure, subject, ip, *, has_steady_state: bool,
                    covariate_rule: str = "nonmem"):
    """Compartment amounts at each record of one subject.

    Args:
        structure: the structural model.
        subject: one subject's records (a ``SubjectBatch`` without the subject axis).
        ip: individual parameters per record, ``{lower-case name: [R]}``.
        has_steady_state: whether any record is an SS dose (a static flag so that data
            without SS skip the steady-state solve).
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
    prepared = jax.vmap(structure.prepare)(ip)
    rows = jnp.arange(n_rec)

    if has_steady_state:
        is_ss = dose.is_dose & (subject.ss > 0)

        def trough(r):
            prepared_r = jax.tree_util.tree_map(lambda x: x[r], prepared)
            safe_ii = jnp.where(subject.ii[r] > 0, subject.ii[r], 1.0)
            return _steady_state_trough(
                structure, prepared_r, dose.amount[r], dose.rate[r], dose.duration[r], safe_ii, dose.cmt[r]
            )

        ss_amounts = jnp.where(is_ss[:, None], jax.vmap(trough)(rows), 0.0)
    else:
        is_ss = jnp.zeros(n_rec, dtype=bool)
        ss_amounts = jnp.zeros((n_rec, n_cmt))

    # Build and sort the event list.
    stop_time = jnp.where(dose.is_infusion & jnp.isfinite(dose.duration),
                          dose.admin_time + dose.duration, subject.time)
    times = jnp.concatenate([subject.time, jnp.where(dose.is_dose, dose.admin_time, subject.time), stop_time])
    kinds = jnp.repeat(jnp.arange(3), n_rec)
    owners = jnp.tile(rows, 3)
    keys = 3 * owners + kinds
    order = jnp.lexsort((keys, times))
    times, kinds, owners = times[order], kinds[order], owners[order]

    # Which record's parameters govern the interval that ends at each event.
    n_events = 3 * n_rec
    record_at = jnp.where(kinds == EVENT_RECORD, owners, n_rec)
    if covariate_rule == "nonmem":
        governing = lax.cummin(record_at, axis=0, reverse=True)
        governing = jnp.where(governing >= n_rec, n_rec - 1, governing)
    else:
        last = lax.cummax(jnp.where(kinds == EVENT_RECORD, owners, -1), axis=0)
        governing = jnp.clip(jnp.concatenate([jnp.zeros(1, dtype=last.dtype), last[:-1]]), 0, n_rec - 1)
    resets = (subject.evid == 3) | (subject.evid == 4) | (is_ss & (subject.ss == 1))

    def step(carry, event):
        amounts, rates, t_prev, epoch, dose_epoch = carry
        t, kind, r, g = event
        prepared_g = jax.tree_util.tree_map(lambda x: x[g], prepared)
        amounts = structure.propagate(amounts, rates, t_prev, jnp.maximum(t - t_prev, 0.0), prepared_g)
        unit = jnp.zeros(n_cmt).at[dose.cmt[r]].set(1.0)

        # kind 0: the record. Resets zero the state and cancel running infusions; a
        # dose remembers the reset epoch it belongs to, so a later reset voids it.
        at_record = kind == EVENT_RECORD
        reset = at_record & resets[r]
        amounts = jnp.where(reset, 0.0, amounts)
        rates = jnp.where(reset, 0.0, rates)
        epoch = epoch + reset.astype(epoch.dtype)
        dose_epoch = jnp.where(at_record & dose.is_dose[r], dose_epoch.at[r].set(epoch), dose_epoch)
        live = dose_epoch[r] == epoch

        # kind 1: administration (after the SS pre-dose amounts, for an SS dose).
        admin = (kind == EVENT_ADMIN) & dose.is_dose[r] & live
        amounts = amounts + jnp.where(admin, 1.0, 0.0) * ss_amounts[r]
        bolus = admin & ~dose.is_infusion[r]
        amounts = amounts + jnp.where(bolus, dose.amount[r], 0.0) * unit
        start = admin & dose.is_infusion[r]
        rates = rates + jnp.where(start, dose.rate[r], 0.0) * unit

        # kind 2: the end of an infusion.
        stop = (kind == EVENT_STOP) & dose.is_infusion[r] & live
        rates = rates - jnp.where(stop, dose.rate[r], 0.0) * unit
        return (amounts, rates, t, epoch, dose_epoch), amounts

    init = (
        jnp.zeros(n_cmt),
        jnp.zeros(n_cmt),
        times[0],
        jnp.zeros((), dtype=jnp.int32),
        jnp.full(n_rec, -1, dtype=jnp.int32),
    )
    _, states = lax.scan(step, init, (times, kinds, owners, governing))
    # The state seen by each record is the one right after its own event; a dose record
    # without a lag shows the state after its administration (as NONMEM's tables do).
    def position_of(kind):
        return jnp.zeros(n_rec, dtype=jnp.int32).at[jnp.where(kinds == kind, owners, n_rec)].set(
            jnp.arange(n_events, dtype=jnp.int32), mode="drop"
        )

    shows_dose = dose.is_dose & (dose.admin_time == subject.time)
    position = jnp.where(shows_dose, position_of(EVENT_ADMIN), position_of(EVENT_RECORD))
    return states[position]

"""Structural models given as ODE right-hand sides.

The event engine hands ``ODE.solve_events`` a subject's sorted events (doses, infusion
starts and stops, records): one adaptive solve steps from event to event, landing on
each, so every discontinuity is a step end and the step-size control never steps
across one. The explicit solver is Tsit5 (diffrax's tableau, stages written out), the
implicit one diffrax's Kvaerno5. Everything is forward-mode differentiable (the
estimator needs d prediction / d eta and d theta); reverse mode is not supported.
``propagate`` (one interval, ``diffrax.diffeqsolve`` with ``ForwardMode``) remains for
the structure interface.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
from jax import lax

from .base import AbstractStructure


class Namespace:
    """Attribute access over a dict of values, with errors that name what exists."""

    __slots__ = ("_values", "_what")

    def __init__(self, values: dict[str, Any], what: str):
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_what", what)

    def __getattr__(self, name):
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        lower = {k.lower(): k for k in values}
        if name.lower() in lower:
            return values[lower[name.lower()]]
        what = object.__getattribute__(self, "_what")
        raise AttributeError(f"unknown {what} '{name}'; known: {', '.join(values)}")

    def __getitem__(self, name):
        return self.__getattr__(name)

    def __contains__(self, name):
        return name in self._values

    def keys(self):
        return self._values.keys()


class ODE(AbstractStructure):
    """A structural model written as the right-hand side of an ODE system.

    Example (one compartment, Michaelis-Menten elimination, oral)::

        def rhs(t, a, p):
            c = a.central / p.v
            return {"depot": -p.ka * a.depot,
                    "central": p.ka * a.depot - p.vmax * c / (p.km + c)}

        structure = pkmix.ODE(["depot", "central"], rhs)

    ``rhs(t, a, p)`` gets the time, the amounts by compartment name and the individual
    parameters of the interval (what ``individual()`` returns on the record that governs
    it; return a covariate from ``individual()`` to use it here); it returns the
    derivatives by compartment name (a missing compartment has derivative 0).
    Zero-order inputs (infusions) are added by the engine.

    Args:
        compartments: names in NONMEM order (the first is CMT 1).
        rhs: the right-hand side.
        parameters: the individual parameters ``rhs`` reads (for the definition check;
            read off the model's ``individual`` output when omitted).
        default_dose: the compartment a dose without CMT goes to (default the first).
        stiff: use the implicit Kvaerno5 solver (stiff systems: TMDD, long transit
            chains); the default is the explicit Tsit5.
        rtol, atol: step-size controller tolerances.
        max_steps: step limit per interval between events.
    """

    compartments: tuple[str, ...] = eqx.field(static=True)
    rhs: Callable = eqx.field(static=True)
    parameters: tuple[str, ...] = eqx.field(static=True, default=())
    default_dose: str | None = eqx.field(static=True, default=None)
    stiff: bool = eqx.field(static=True, default=False)
    rtol: float = eqx.field(static=True, default=1e-10)
    atol: float = eqx.field(static=True, default=1e-12)
    max_steps: int = eqx.field(static=True, default=4096)

    def __init__(self, compartments, rhs, *, parameters=(), default_dose=None, stiff=False,
                 rtol=1e-10, atol=1e-12, max_steps=4096):
        self.compartments = tuple(compartments)
        self.rhs = rhs
        self.parameters = tuple(p.lower() for p in parameters)
        self.default_dose = default_dose
        self.stiff = stiff
        self.rtol = rtol
        self.atol = atol
        self.max_steps = max_steps

    def __check_init__(self):
        if len(self.compartments) == 0:
            raise ValueError("an ODE model needs at least one compartment")
        if len(set(self.compartments)) != len(self.compartments):
            raise ValueError(f"compartment names repeat: {self.compartments}")
        if self.default_dose is not None and self.default_dose not in self.compartments:
            raise ValueError(
                f"default_dose '{self.default_dose}' is not a compartment ({', '.join(self.compartments)})"
            )

    @property
    def compartment_names(self):
        return self.compartments

    @property
    def default_dose_compartment(self) -> int:
        return 0 if self.default_dose is None else self.compartments.index(self.default_dose)

    @property
    def required_parameters(self):
        return self.parameters

    @property
    def is_linear(self) -> bool:
        return False

    def prepare(self, ip):
        return ip

    def _vector_field(self, t, y, args):
        rates, ip = args
        amounts = Namespace(dict(zip(self.compartments, y)), "compartment")
        params = Namespace(ip, "individual parameter")
        out = self.rhs(t, amounts, params)
        if isinstance(out, dict):
            unknown = set(out) - set(self.compartments)
            if unknown:
                raise ValueError(
                    f"rhs returned derivatives for unknown compartments {sorted(unknown)}; "
                    f"the model has {', '.join(self.compartments)}"
                )
            zero = jnp.zeros((), dtype=y.dtype)
            out = jnp.stack([jnp.asarray(out.get(c, zero), dtype=y.dtype) for c in self.compartments])
        else:
            out = jnp.asarray(out, dtype=y.dtype).reshape(y.shape)
        return out + rates

    def propagate(self, state, rates, t0, dt, prepared):
        import diffrax

        from ._stiff import kvaerno5

        solver = kvaerno5() if self.stiff else diffrax.Tsit5()
        # Zero-length intervals (several events at one time; the unused event slots of
        # records that are not infusions) are common: diffrax takes no step when
        # t0 == t1, so they cost only the solver's set-up.
        dt = jnp.maximum(dt, 0.0)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(self._vector_field),
            solver,
            t0=t0,
            t1=t0 + dt,
            dt0=None,
            y0=state,
            args=(rates, prepared),
            stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol),
            saveat=diffrax.SaveAt(t1=True),
            max_steps=self.max_steps,
            adjoint=diffrax.ForwardMode(),
            throw=False,
        )
        # A failed solve (too many steps, non-finite state) gives NaN, which the caller
        # reports per subject; it is never silently replaced by a number.
        ok = sol.result == diffrax.RESULTS.successful
        return jnp.where(ok, sol.ys[-1], jnp.nan)

    def solve_events(self, times, prepared, reset, add, rate_change, n_active, y0=None):
        """The amounts right after each of one subject's events, from one adaptive solve
        that runs through all of them (the event engine's path for ODEs).

        Solving interval by interval (``propagate``) restarts the step-size control at
        every record, and under ``vmap`` over subjects each interval costs the most
        steps any subject needs in it; one loop per subject costs the most steps any
        subject needs in total, and keeps its step size from interval to interval.

        The explicit solver is Tsit5 with its stages written out (diffrax's tableau),
        the implicit one diffrax's Kvaerno5; the step size follows diffrax's default
        controller (I-control on the RMS of the error scaled by atol + rtol |y|, safety
        0.9, factors 0.2 to 10).

        Args:
            times: ``[E]`` event times in processing order (TIME may go back at a reset).
            prepared: the parameters governing the interval that ends at each event
                (leaves ``[E]``).
            reset: ``[E]`` zero the amounts and the rates at the event.
            add: ``[E, n]`` amounts added at the event (after a reset).
            rate_change: ``[E, n]`` change of the zero-order input rates.
            n_active: how many leading events to process; the later ones change nothing.
            y0: the amounts at ``times[0]`` (default zero).

        Returns:
            ``[E, n]`` amounts after each event; NaN from the first interval whose solve
            fails (more than ``max_steps`` steps, or a non-finite state).
        """
        n_events = times.shape[0]
        zeros = jnp.zeros(self.n_compartments)
        y0 = zeros if y0 is None else y0
        t_first = times[0]
        span = times[jnp.maximum(n_active - 1, 0)] - t_first
        # Any first guess will do: the controller shrinks a step that is too long.
        h0 = lax.stop_gradient(jnp.maximum(span, 1.0) * 1e-3)
        args0 = (zeros, jax.tree_util.tree_map(lambda x: x[0], prepared))
        step, error_order, state0 = self._stepper(t_first, t_first + h0, y0, args0)

        def going(carry):
            e, failed = carry[0], carry[-1]
            return (e < n_active) & ~failed

        def body(carry):
            e, t, y, rates, h, state, jumped, steps, out, failed = carry
            target = times[e]
            p = jax.tree_util.tree_map(lambda x: x[e], prepared)
            args = (rates, p)
            # One step towards the next event (computed in every lane under vmap; used
            # where the event is still ahead).
            stepping = t < target
            t1 = jnp.where(stepping, jnp.minimum(t + h, target), t + h)
            clipped = t1 < t + h
            y1, y_error, state1 = step(t, t1, y, args, state, jumped)
            scale = self.atol + self.rtol * jnp.maximum(jnp.abs(y), jnp.abs(y1))
            error = jnp.sqrt(jnp.mean((y_error / scale) ** 2))
            keep = error <= 1.0
            safe_error = jnp.where(error > 0, error, 1.0)
            factor = jnp.where(error > 0, 0.9 * safe_error ** (-1.0 / error_order), 10.0)
            factor = jnp.clip(factor, jnp.where(keep, 1.0, 0.2), jnp.where(keep, 10.0, 0.9))
            accepted = stepping & keep
            h_next = (t1 - t) * factor
            # A step shortened to land on an event says little about the step size:
            # after it is accepted, keep the one before. And the step size is a choice
            # of grid, not a function of the parameters: the derivative is that of the
            # solution on a grid that moves with the event times (the last step before
            # an event takes up the change).
            h_next = lax.stop_gradient(jnp.where(accepted & clipped, jnp.maximum(h_next, h), h_next))
            t = jnp.where(accepted, t1, t)
            y = jnp.where(accepted, y1, y)
            state = jax.tree_util.tree_map(lambda a, b: jnp.where(accepted, a, b), state1, state)
            h = jnp.where(stepping, h_next, h)
            jumped = jnp.where(accepted, False, jumped)
            steps = steps + stepping.astype(steps.dtype)

            # The event, once reached (a reset may also be behind the current time).
            reached = t >= target
            y = jnp.where(reached, jnp.where(reset[e], 0.0, y) + add[e], y)
            rates = jnp.where(reached, jnp.where(reset[e], 0.0, rates) + rate_change[e], rates)
            t = jnp.where(reached, target, t)
            out = eqxi.buffer_at_set(out, e, y, pred=reached)
            jumped = jumped | reached  # new state or parameters: re-evaluate the rhs
            steps = jnp.where(reached, 0, steps)
            e = e + reached.astype(e.dtype)
            # (A NaN event time, e.g. from a modelled duration that is NaN, would never be
            # reached: it fails too, rather than looping forever.)
            failed = (steps > self.max_steps) | ~jnp.isfinite(h) | ~(h > 0) | ~jnp.all(jnp.isfinite(y)) \
                | jnp.isnan(target)
            return e, t, y, rates, h, state, jumped, steps, out, failed

        init = (jnp.zeros((), jnp.int32), t_first, y0, zeros, h0, state0, jnp.ones((), bool),
                jnp.zeros((), jnp.int32), jnp.zeros((n_events, self.n_compartments)), jnp.zeros((), bool))
        final = eqxi.while_loop(going, body, init, buffers=lambda c: c[8], kind="lax")
        e, y, out, failed = final[0], final[2], final[8], final[-1]
        # Events not processed: the inactive tail keeps the final state; after a failure
        # everything is NaN.
        later = (jnp.arange(n_events) >= e)[:, None]
        return jnp.where(later, jnp.where(failed, jnp.nan, y), out)

    def _stepper(self, t0, t1, y0, args):
        """``(step, error_order, state)``: one step ``step(t0, t1, y0, args, state,
        jumped) -> (y1, y_error, state)`` of the solver and its initial state."""
        import diffrax  # here, not at module level: see ._stiff

        if self.stiff:
            # diffeqsolve hands the step-size tolerances to the implicit solver's root
            # finder, and makes its stage loop forward-differentiable ("lax"); here that
            # is done by hand.
            from ._stiff import kvaerno5

            solver = kvaerno5(self.rtol, self.atol, scan_kind="lax")
            term = diffrax.ODETerm(self._vector_field)

            def step(t0, t1, y0, args, state, jumped):
                y1, y_error, _, state, _ = solver.step(term, t0, t1, y0, args, state, jumped)
                return y1, y_error, state

            return step, solver.error_order(term), solver.init(term, t0, t1, y0, args)

        # Tsit5, stages written out (no inner loop). The last stage is at t1 with the
        # solution's weights, so its derivative starts the next step (first same as last)
        # unless the state or the parameters jumped at an event.
        tableau = diffrax.Tsit5.tableau
        c = [float(x) for x in tableau.c]
        a = [[float(x) for x in row] for row in tableau.a_lower]
        b_error = [float(x) for x in tableau.b_error]

        def step(t0, t1, y0, args, f0, jumped):
            h = t1 - t0
            k = [jnp.where(jumped, self._vector_field(t0, y0, args), f0)]
            for c_i, a_i in zip(c, a):
                y_i = y0 + h * sum(a_ij * k_j for a_ij, k_j in zip(a_i, k))
                k.append(self._vector_field(t0 + c_i * h, y_i, args))
            # y_i of the last stage is the solution (FSAL); k[-1] its derivative.
            y_error = h * sum(b * k_j for b, k_j in zip(b_error, k))
            return y_i, y_error, k[-1]

        return step, 5.0, self._vector_field(t0, y0, args)

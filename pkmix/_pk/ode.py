"""Structural models given as ODE right-hand sides, solved with diffrax.

The event engine integrates only between events (doses, infusion starts and stops,
records), so every discontinuity is an interval end and the adaptive step controller
never steps across one. Solves use ``diffrax.ForwardMode`` so predictions can be
differentiated in forward mode (the estimator needs d prediction / d eta and d theta).
"""

from __future__ import annotations

from typing import Any, Callable

import diffrax
import equinox as eqx
import jax.numpy as jnp

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
        solver = diffrax.Kvaerno5() if self.stiff else diffrax.Tsit5()
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

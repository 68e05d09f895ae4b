"""The interface every structural model implements (closed forms and ODEs alike).

A structural model owns a state vector of compartment amounts. The event engine
(``pkmix._pk.events``) moves that state from one event to the next through
``propagate``; doses, infusion starts/stops and resets are applied by the engine, so
every structure gets the same NONMEM dosing semantics.
"""

from __future__ import annotations

import abc

import equinox as eqx
from jaxtyping import Array, Float, PyTree


class AbstractStructure(eqx.Module):
    """A structural PK model.

    Subclasses declare ``compartment_names`` (NONMEM's numbering: the first name is
    CMT 1), the default dose and observation compartments, and the individual
    parameters they need.
    """

    @property
    @abc.abstractmethod
    def compartment_names(self) -> tuple[str, ...]:
        ...

    @property
    @abc.abstractmethod
    def default_dose_compartment(self) -> int:
        """0-based index of the compartment a dose with CMT 0/missing goes to."""

    @property
    @abc.abstractmethod
    def required_parameters(self) -> tuple[str, ...]:
        """Lower-case names of the individual parameters the structure reads."""

    @property
    def n_compartments(self) -> int:
        return len(self.compartment_names)

    @property
    def is_linear(self) -> bool:
        """Linear structures allow superposition (SS=2) and one-step steady state."""
        return True

    @abc.abstractmethod
    def prepare(self, ip: dict[str, Float[Array, ""]]) -> PyTree:
        """Per-record work that depends only on the individual parameters
        (eigenvalues for closed forms). Called under vmap over records."""

    @abc.abstractmethod
    def propagate(
        self,
        state: Float[Array, " cmt"],
        rates: Float[Array, " cmt"],
        t0: Float[Array, ""],
        dt: Float[Array, ""],
        prepared: PyTree,
    ) -> Float[Array, " cmt"]:
        """Amounts after ``dt`` time units, starting at time ``t0`` from ``state``,
        with constant zero-order input ``rates`` into each compartment."""

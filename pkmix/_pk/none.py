"""The structure of a model without compartments (NONMEM's $PRED): nothing is dosed,
and ``observe`` computes the prediction from the individual parameters, the thetas,
the record's covariates and its TIME (``p.TIME``)."""

from __future__ import annotations

from .base import AbstractStructure


class NoStructure(AbstractStructure):
    """No compartments: a dose record doses nothing (NONMEM's $PRED passes it through
    with its covariates) and ``observe(a, p)`` gets an empty ``a``."""

    @property
    def compartment_names(self):
        return ()

    @property
    def default_dose_compartment(self):
        return 0

    @property
    def required_parameters(self):
        return ()

    def prepare(self, ip):
        return None

    def propagate(self, state, rates, t0, dt, prepared):
        return state

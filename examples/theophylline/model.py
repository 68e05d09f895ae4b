"""Theophylline: one compartment, first-order absorption, additive error (nlmixr2's theo_sd).

Fit it with ``pkmix fit examples/theophylline/model.py examples/theophylline/theo_sd.csv``.
nlmixr2 FOCE-I reaches OFV 116.804 (tka 0.4663, tcl 1.012, tv 3.460, add_sd 0.6947).
"""

import jax.numpy as jnp

import pkmix


def individual(p):
    return {
        "ka": jnp.exp(p.tka + p.eta_ka),
        "cl": jnp.exp(p.tcl + p.eta_cl),
        "v": jnp.exp(p.tv + p.eta_v),
    }


model = pkmix.Model(
    name="theophylline",
    theta={"tka": 0.45, "tcl": 1.0, "tv": 3.45},
    omega={"eta_ka": 0.6, "eta_cl": 0.3, "eta_v": 0.1},
    sigma={"add_sd": 0.7},
    individual=individual,
    structure=pkmix.one_compartment(depot=True),
    observe=lambda a, p: a.central / p.v,
    error=pkmix.additive("add_sd"),
)

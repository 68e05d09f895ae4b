"""Theophylline with a CL-V covariance: examples/theophylline/model.py with OMEGA BLOCK(2) on eta_cl, eta_v.

The full model of pkmix compare's likelihood-ratio test against the diagonal OMEGA (one
extra parameter, omega(eta_v,eta_cl)); see docs/nonmem_outputs.md.
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
    name="theophylline_clv_block",
    theta={"tka": 0.45, "tcl": 1.0, "tv": 3.45},
    omega=[{"eta_ka": 0.6}, pkmix.Block(["eta_cl", "eta_v"], [0.3, 0.01, 0.1])],
    sigma={"add_sd": 0.7},
    individual=individual,
    structure=pkmix.one_compartment(depot=True),
    observe=lambda a, p: a.central / p.v,
    error=pkmix.additive("add_sd"),
)

"""Phenobarbital in neonates (pheno_real, Grasela & Donn 1985): one compartment IV bolus,
weight on CL and V, Apgar score < 5 on V, proportional error (NONMEM SIGMA as a variance).

NONMEM 7.4/7.5 FOCE-I: OFV 586.27605628.
"""

import jax.numpy as jnp

import pkmix


def individual(p):
    tvcl = p.THETA1 * p.WT
    tvv = p.THETA2 * p.WT * jnp.where(p.APGR < 5, 1.0 + p.THETA3, 1.0)
    return {"cl": tvcl * jnp.exp(p.ETA1), "v": tvv * jnp.exp(p.ETA2)}


model = pkmix.Model(
    name="pheno_real",
    theta={
        "THETA1": pkmix.Theta(0.00469307, lower=0),
        "THETA2": pkmix.Theta(1.00916, lower=0),
        "THETA3": pkmix.Theta(0.1, lower=-0.99),
    },
    omega={"ETA1": 0.0309626, "ETA2": 0.031128},
    sigma={"SIGMA1": pkmix.Variance(0.013241)},
    covariates=["WT", "APGR"],
    individual=individual,
    structure=pkmix.one_compartment(),
    observe=lambda a, p: a.central / p.v,
    error=pkmix.proportional("SIGMA1"),
)

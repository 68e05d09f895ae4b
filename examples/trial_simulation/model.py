"""One compartment, first-order absorption, allometric weight on CL and V, and a
treatment effect on CL (e.g. an inducer co-medication: CL x exp(beta) when TRT = 1).

``model`` is the full model the trial is simulated from; ``reduced`` fixes beta at 0
(no effect) for the likelihood-ratio test. Either file works with the CLI::

    pkmix simulate examples/trial_simulation/model.py examples/trial_simulation/design.py --n 5 --out sim
"""

import math

import jax.numpy as jnp

import pkmix


def _individual(p):
    size = p.WT / 70.0
    return {
        "ka": jnp.exp(p.tka + p.eta_ka),
        "cl": jnp.exp(p.tcl + p.eta_cl + p.beta * p.TRT) * size**0.75,
        "v": jnp.exp(p.tv + p.eta_v) * size,
    }


def make(effect: float | None):
    """The model with beta estimated from ``effect`` (a log ratio), or fixed at 0."""
    beta = pkmix.Theta(0.0, fixed=True) if effect is None else effect
    return pkmix.Model(
        name="trial-1cmt-oral" + ("" if effect is not None else "-reduced"),
        theta={"tka": math.log(1.0), "tcl": math.log(4.0), "tv": math.log(50.0), "beta": beta},
        omega={"eta_ka": 0.2, "eta_cl": 0.09, "eta_v": 0.04},
        sigma={"add": 0.05, "prop": 0.15},
        individual=_individual,
        structure=pkmix.one_compartment(depot=True),
        observe=lambda a, p: a.central / p.v,
        error=pkmix.combined("add", "prop"),
        covariates=["WT", "TRT"],
    )


# The truth: treatment raises CL by 40 %.
model = make(math.log(1.4))
reduced = make(None)

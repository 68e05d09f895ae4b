"""Time to a first event (e.g. a seizure, a relapse) in a two-arm trial: a Weibull hazard
with proportional effects, h(t) = lam k t^(k-1), lam = exp(tlam + beta TRT + eta_frail),
with a log-normal subject frailty (eta_frail). No PK: the one-compartment structure is a
placeholder the model needs, with no doses.
"""

import jax.numpy as jnp

import pkmix

model = pkmix.Model(
    name="tte-weibull-frailty",
    theta={"tlam": -3.0, "k": pkmix.Theta(1.0, lower=0.1, upper=5.0), "beta": 0.0},
    omega={"eta_frail": 0.1},
    sigma={},
    covariates=["TRT"],
    individual=lambda p: {"lam": jnp.exp(p.tlam + p.beta * p.TRT + p.eta_frail), "cl": 1.0, "v": 1.0},
    structure=pkmix.one_compartment(),
    observe=lambda a, p: p.lam,
    error=pkmix.time_to_event("weibull", theta=["k"]),
)

# The values the example's trial is simulated from: a median time to event of about 9
# months in the control arm, a hazard ratio of exp(-0.7) = 0.5 on treatment.
TRUTH = {"tlam": -3.5, "k": 1.4, "beta": -0.7, "eta_frail": 0.3}

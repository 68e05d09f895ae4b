"""Simulate a two-arm time-to-event trial, fit the Weibull frailty model by Laplace and
draw its Kaplan-Meier VPC by arm.

    python examples/time_to_event/run.py        # writes km_vpc.png and estimates.csv here

Each subject is followed for 24 months with visits (DV = 0 records) at 6, 12 and 18;
``pkmix.simulate`` moves the visit that follows an event to the event time (DV = 1) and
drops the later ones.
"""

from pathlib import Path

import pandas as pd

import pkmix
import pkmix.plots as pp

HERE = Path(__file__).resolve().parent


def main(n_per_arm: int = 150, seed: int = 1):
    from model import TRUTH, model  # noqa: PLC0415 - the example's own module

    design = pkmix.TrialDesign(arms=[pkmix.Arm(n_per_arm, (), (0.0, 6.0, 12.0, 18.0, 24.0), {"TRT": 0}, "control"),
                                     pkmix.Arm(n_per_arm, (), (0.0, 6.0, 12.0, 18.0, 24.0), {"TRT": 1}, "treated")])
    data = pkmix.simulate(model, design, n=1, seed=seed, params=TRUTH).drop(columns="REP")
    fit = pkmix.fit(model, data, method="laplace")
    table = pd.DataFrame({"truth": pd.Series(TRUTH), "estimate": pd.Series({**fit.theta,
                          "eta_frail": float(fit.omega.loc["eta_frail", "eta_frail"])}),
                          "se": pd.Series({k: fit.se[k] for k in ("tlam", "k", "beta")}
                                          | {"eta_frail": fit.se["omega(eta_frail,eta_frail)"]})})
    print(table.round(4))
    table.to_csv(HERE / "estimates.csv")
    v = pkmix.km_vpc(fit, n=200, stratify="TRT", seed=seed)
    print(f"observed curve inside the simulated 95 % band at {100 * v.coverage():.0f} % of the times")
    pp.km_vpc_plot(v, xlabel="months").savefig(HERE / "km_vpc.png", dpi=100)
    return fit, v


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    main()

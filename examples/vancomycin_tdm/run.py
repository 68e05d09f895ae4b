"""Worked vancomycin TDM case (see README.md): MAP estimates, posterior, recommendation.

Run from the repository root:  python examples/vancomycin_tdm/run.py [--nuts] [--plot out.png]
The same from the command line:
    pkmix dose --model vancomycin_goti2018 --patient examples/vancomycin_tdm/patient.json \
        --target auc24=400:600 --threshold 15 --loading --plot vanco.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pkmix.dosing as dosing

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nuts", action="store_true", help="also sample the posterior with NUTS (slow to compile)")
    parser.add_argument("--plot", help="write the plot here")
    args = parser.parse_args()

    patient = dosing.load_patient(HERE / "patient.json", model="vancomycin_goti2018")

    # 1. Individual (MAP) estimates: the posterior mode given the population prior.
    t0 = time.perf_counter()
    fit = dosing.map_estimate("vancomycin_goti2018", patient)
    print(fit.summary())
    print(f"(MAP in {1000 * (time.perf_counter() - t0):.0f} ms, compile included on the first run)\n")
    print(fit.observations.to_string(index=False), "\n")

    # 2. Posterior draws (SIR is fast; NUTS is the exact alternative, with diagnostics).
    idata = dosing.sample_posterior("vancomycin_goti2018", fit, method="sir", n_samples=2000)
    print("SIR effective sample size of the weights:", round(idata.posterior.attrs["ess"]))
    if args.nuts:
        idata_nuts = dosing.sample_posterior("vancomycin_goti2018", fit, method="nuts")
        print(dosing.posterior_summary(idata_nuts))

    # 3. When does the level fall below 15 mg/L, and what regimen then hits AUC24 400-600?
    rec = dosing.recommend("vancomycin_goti2018", fit, "auc24=400:600", threshold=15.0, loading_dose=True)
    print()
    print(rec.summary())
    print()
    print(rec.alternatives[["interval", "dose", "infusion", "auc24", "trough", "peak", "pta"]].to_string(index=False))

    if args.plot:
        from pkmix.cli.dose import plot

        plot(rec, args.plot)
        print(f"\nplot written to {args.plot}")


if __name__ == "__main__":
    main()

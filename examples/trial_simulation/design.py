"""A parallel two-arm trial: 100 mg once daily for 5 days, sparse sampling on days 1 and
5 (6 samples a subject), body weight drawn log-normally (median 70 kg, 20 % CV),
LLOQ 0.05 mg/L."""

import pkmix

REGIMEN = [pkmix.Dose(100.0, time=0.0, ii=24.0, addl=4)]
SAMPLES = (1.0, 4.0, 12.0, 97.0, 100.0, 120.0)

design = pkmix.TrialDesign(
    arms=[pkmix.Arm(24, REGIMEN, SAMPLES, covariates={"TRT": 0}, name="control"),
          pkmix.Arm(24, REGIMEN, SAMPLES, covariates={"TRT": 1}, name="treated")],
    covariates={"WT": pkmix.LogNormal(70.0, 0.2, lower=40.0, upper=140.0)},
    lloq=0.05,
)

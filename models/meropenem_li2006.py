"""Meropenem in adult patients (Li et al. 2006), for intermittent, prolonged or continuous infusion.

Two-compartment IV model::

    CL = 14.6 * (CLCR/83)^0.62 * (AGE/35)^-0.34 * exp(eta_cl)    L/h
    V1 = 10.8 * (WT/70)^0.99 * exp(eta_v1)                        L
    V2 = 12.6 * exp(eta_v2)                                       L
    Q  = 18.6 * exp(eta_q)                                        L/h
    C  = A_central / V1   (mg/L; dose mg, time h)
    SD = sqrt(0.469^2 + (0.188 C)^2)

Data columns: CLCR (creatinine clearance, mL/min), AGE (years), WT (kg). Doses to CMT 1
(central). A continuous infusion is an infusion lasting the whole dosing interval
(e.g. 3000 mg over 24 h every 24 h); its steady-state level is Css = R / CL.

Every number is from Tucuxi's drug file ``ch.tucuxi.meropenem.li2006.tdd``
(sotalya/tucuxi-drugs @ 74b6ca66): typical values at CLCR 83 mL/min, 35 years, 70 kg,
covariate exponents, log-normal BSV SDs, the mixed residual error, the domain (18-93
years, 40-127 kg) and the target; TDM_MODELS.md section 8 lists the same values.

??? cite
    Li C, Kuti JL, Nightingale CH, Nicolau DP. Population pharmacokinetic analysis and
    dosing regimen optimization of meropenem in adult patients. J Clin Pharmacol.
    2006;46(10):1171-1178. doi:10.1177/0091270006291035.
"""

from __future__ import annotations

import jax.numpy as jnp

import pkmix

NAME = "meropenem_li2006"

#: Meropenem (anhydrous) molar mass, g/mol (Tucuxi drug file).
MOLAR_MASS = 383.463

#: Log-normal BSV as SDs (Tucuxi: CL 0.343, V1 0.378, V2 0.319, Q 0.539; no correlations).
BSV_SD = {"eta_cl": 0.343, "eta_v1": 0.378, "eta_v2": 0.319, "eta_q": 0.539}

BIBTEX = """@article{Li2006,
  author  = {Li, Chonghua and Kuti, Joseph L. and Nightingale, Charles H. and Nicolau, David P.},
  title   = {Population Pharmacokinetic Analysis and Dosing Regimen Optimization of Meropenem in Adult Patients},
  journal = {Journal of Clinical Pharmacology},
  year    = {2006},
  volume  = {46},
  number  = {10},
  pages   = {1171--1178},
  doi     = {10.1177/0091270006291035}
}"""


def build() -> pkmix.Model:
    """The Li 2006 model (one encoding: Tucuxi's)."""

    def individual(p):
        return {
            "cl": p.tvcl * (p.CLCR / 83.0) ** p.clcr_cl * (p.AGE / 35.0) ** p.age_cl * jnp.exp(p.eta_cl),
            "v1": p.tvv1 * (p.WT / 70.0) ** p.wt_v1 * jnp.exp(p.eta_v1),
            "v2": p.tvv2 * jnp.exp(p.eta_v2),
            "q": p.tvq * jnp.exp(p.eta_q),
        }

    return pkmix.Model(
        theta={
            "tvcl": pkmix.Theta(14.6, lower=0),
            "clcr_cl": 0.62,
            "age_cl": -0.34,
            "tvv1": pkmix.Theta(10.8, lower=0),
            "wt_v1": 0.99,
            "tvv2": pkmix.Theta(12.6, lower=0),
            "tvq": pkmix.Theta(18.6, lower=0),
        },
        omega={k: sd**2 for k, sd in BSV_SD.items()},
        sigma={"add_sd": 0.469, "prop_sd": 0.188},
        individual=individual,
        structure=pkmix.two_compartment(),
        observe=lambda a, p: a.central / p.v1,
        error=pkmix.combined("add_sd", "prop_sd"),
        covariates=["CLCR", "AGE", "WT"],
        name=NAME,
    )


model = build()

METADATA = {
    "name": NAME,
    "drug": "meropenem",
    "molar_mass": MOLAR_MASS,
    "citation": (
        "Li C, Kuti JL, Nightingale CH, Nicolau DP. Population pharmacokinetic analysis and dosing "
        "regimen optimization of meropenem in adult patients. J Clin Pharmacol. 2006;46(10):1171-1178."
    ),
    "doi": "10.1177/0091270006291035",
    "bibtex": BIBTEX,
    "population": (
        "79 adults (18-93 years, 40-127 kg) with intra-abdominal infection, community-acquired or "
        "ventilator-associated pneumonia; 0.5, 1 or 2 g over 0.5 or 3 h every 8 h"
    ),
    "structure": "two-compartment, IV infusion (intermittent, prolonged or continuous) into CMT 1 (central)",
    "route": "intravenous",
    "units": {"dose": "mg", "time": "h", "concentration": "mg/L", "cl": "L/h", "volume": "L",
              "auc": "mg*h/L"},
    "covariate_units": {"CLCR": "mL/min (creatinine clearance)", "AGE": "years", "WT": "kg (total body weight)"},
    "covariate_ranges": {"AGE": (18.0, 93.0), "WT": (40.0, 127.0)},
    "covariate_ranges_source": (
        "Tucuxi drug file domain (ch.tucuxi.meropenem.li2006.tdd): 18-93 years, 40-127 kg; the CLCR "
        "range is not given there"
    ),
    "conventions": {
        "omega": "Log-normal BSV SDs 0.343 (CL), 0.378 (V1), 0.319 (V2), 0.539 (Q); omega = SD^2, no correlation.",
        "error": "Mixed 0.469 mg/L + 18.8 %, SD = sqrt(a^2 + (b f)^2) (Tucuxi 'mixed').",
        "covariates": (
            "CL x (CLCR/83)^0.62 x (AGE/35)^-0.34 with CLCR a data column in mL/min (the paper's "
            "Cockcroft-Gault estimate); V1 x (WT/70)^0.99."
        ),
        "caps_floors": "none",
        "disagreements": "One public encoding (Tucuxi).",
        "bsv_form": "exponential, P = TV * exp(eta)",
    },
    "targets": {
        "trough": {"range": (2.0, 8.0), "best": 4.0, "unit": "mg/L",
                   "source": "Tucuxi drug file 'residual' target (for continuous infusion: the plateau)"},
        "ft_mic": {"range": (40.0, 100.0), "mic": 2.0, "unit": "%",
                   "source": "40 % fT>MIC for carbapenems (Li 2006 'bactericidal' exposure), MIC 2 mg/L"},
    },
    "dosing": {"dose_step_mg": 250.0, "dose_min_mg": 500.0, "dose_max_mg": 2000.0,
               "intervals_h": (6.0, 8.0, 12.0), "infusion_h": (0.5, 3.0),
               "daily_dose_max_mg": 6000.0,
               "source": "Tucuxi drug file (500-2000 mg by 250, intervals 4-24 h, infusions 0.5-3 h); "
                         "at most 6 g per 24 h (2 g every 8 h, the labelled maximum); continuous infusion: "
                         "recommend(..., continuous=True)"},
    "reference_implementations": {
        "tucuxi": "sotalya/tucuxi-drugs drugfiles/ch.tucuxi.meropenem.li2006.tdd",
    },
}

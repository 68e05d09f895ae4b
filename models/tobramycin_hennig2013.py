"""Tobramycin in children and adults with and without cystic fibrosis (Hennig et al. 2013).

Two-compartment IV model on fat-free mass (Janmahasatian)::

    FFM  = fat_free_mass(WT, HT, SEX)                                  kg
    CL   = theta_CL * (FFM/70)^0.952 * (1 + theta_age (AGE - 18)) * (37.2/SCR)^0.222 * exp(eta_cl)
           theta_CL = 9.4 (male) / 8.1 (female) L/h;
           theta_age = -0.021 (AGE <= 18 y) / -0.010 (AGE > 18 y); SCR in µmol/L
    V1   = (25.1 male / 20.1 female) * FFM/70 * exp(eta_v1)          L
    Q    = 1.5 * (FFM/70)^0.952 * exp(eta_q)                         L/h
    V2   = 10 * FFM/70 * exp(eta_v2)                                 L
    C    = A_central / V1   (mg/L; dose mg, time h);  SD = 0.204 C (proportional)

Data columns: WT (kg), HT (cm), AGE (years), SEX (1 male, 0 female), SCR (µmol/L).
Doses to CMT 1 (central). Having CF did not change the PK once these covariates were
accounted for (the paper's finding), so CF is not a covariate.

??? cite
    Hennig S, Standing JF, Staatz CE, Thomson AH. Population pharmacokinetics of
    tobramycin in patients with and without cystic fibrosis. Clin Pharmacokinet.
    2013;52(4):289-301. doi:10.1007/s40262-013-0036-y.
"""

from __future__ import annotations

import jax.numpy as jnp

import pkmix
from pkmix.dosing.covariates import fat_free_mass

from ._conventions import covariance_from_sd_correlation

NAME = "tobramycin_hennig2013"

#: $OMEGA STANDARD CORRELATION BLOCK(3) for CL, V1, Q, and V2 alone (Tucuxi's NONMEM file).
BSV_SD = {"eta_cl": 0.259, "eta_v1": 0.152, "eta_q": 0.418, "eta_v2": 0.585}
BSV_CORRELATION = [[1.0, 0.658, 0.711],
                   [0.658, 1.0, 0.475],
                   [0.711, 0.475, 1.0]]

BIBTEX = """@article{Hennig2013,
  author  = {Hennig, Stefanie and Standing, Joseph F. and Staatz, Christine E. and Thomson, Alison H.},
  title   = {Population Pharmacokinetics of Tobramycin in Patients With and Without Cystic Fibrosis},
  journal = {Clinical Pharmacokinetics},
  year    = {2013},
  volume  = {52},
  number  = {4},
  pages   = {289--301},
  doi     = {10.1007/s40262-013-0036-y}
}"""


def build() -> pkmix.Model:
    """The Hennig 2013 model (one encoding: Tucuxi's)."""

    def individual(p):
        ffm = fat_free_mass(p.WT, p.HT, p.SEX)
        male = p.SEX >= 0.5
        size_cl = (ffm / 70.0) ** p.ffm_cl
        theta_age = jnp.where(p.AGE > 18.0, p.age_cl_adult, p.age_cl_child)
        return {
            "cl": (jnp.where(male, p.tvcl_male, p.tvcl_female) * size_cl
                   * (1.0 + theta_age * (p.AGE - 18.0)) * (37.2 / p.SCR) ** p.scr_cl * jnp.exp(p.eta_cl)),
            "v1": jnp.where(male, p.tvv1_male, p.tvv1_female) * ffm / 70.0 * jnp.exp(p.eta_v1),
            "q": p.tvq * size_cl * jnp.exp(p.eta_q),
            "v2": p.tvv2 * ffm / 70.0 * jnp.exp(p.eta_v2),
            "ffm": ffm,
        }

    sds = [BSV_SD["eta_cl"], BSV_SD["eta_v1"], BSV_SD["eta_q"]]
    return pkmix.Model(
        theta={
            "tvcl_male": pkmix.Theta(9.4, lower=0),
            "tvcl_female": pkmix.Theta(8.1, lower=0),
            "ffm_cl": 0.952,
            "age_cl_child": -0.021,
            "age_cl_adult": -0.010,
            "scr_cl": 0.222,
            "tvv1_male": pkmix.Theta(25.1, lower=0),
            "tvv1_female": pkmix.Theta(20.1, lower=0),
            "tvq": pkmix.Theta(1.5, lower=0),
            "tvv2": pkmix.Theta(10.0, lower=0),
        },
        omega=[pkmix.Block(["eta_cl", "eta_v1", "eta_q"], covariance_from_sd_correlation(sds, BSV_CORRELATION)),
               {"eta_v2": BSV_SD["eta_v2"] ** 2}],
        sigma={"prop_sd": 0.204},
        individual=individual,
        structure=pkmix.two_compartment(),
        observe=lambda a, p: a.central / p.v1,
        error=pkmix.proportional("prop_sd"),
        covariates=["WT", "HT", "AGE", "SEX", "SCR"],
        name=NAME,
    )


model = build()


def derived_covariates(WT, HT, SEX, **_):
    """Covariates the model derives from the data columns, for display and range checks."""
    return {"FFM": float(fat_free_mass(WT, HT, SEX))}


METADATA = {
    "name": NAME,
    "drug": "tobramycin",
    "citation": (
        "Hennig S, Standing JF, Staatz CE, Thomson AH. Population pharmacokinetics of tobramycin in "
        "patients with and without cystic fibrosis. Clin Pharmacokinet. 2013;52(4):289-301."
    ),
    "doi": "10.1007/s40262-013-0036-y",
    "bibtex": BIBTEX,
    "population": "Children and adults with and without cystic fibrosis receiving IV tobramycin (UK)",
    "structure": "two-compartment, IV infusion into CMT 1 (central)",
    "route": "intravenous",
    "units": {"dose": "mg", "time": "h", "concentration": "mg/L", "cl": "L/h", "volume": "L",
              "auc": "mg*h/L"},
    "covariate_units": {"WT": "kg (total body weight)", "HT": "cm", "AGE": "years",
                        "SEX": "1 = male, 0 = female", "SCR": "umol/L"},
    "covariate_ranges": {"WT": (3.3, 120.0), "AGE": (0.01, 85.0), "SEX": (0, 1)},
    "population_ranges": {"CRCL": (23.0, 145.0)},
    "covariate_ranges_source": "Tucuxi drug file domain (ch.tucuxi.tobramycin.hennig2013.tdd): "
                               "0.01-85 years, 3.3-120 kg, CrCL 23-145 mL/min; HT and SCR ranges not given",
    "conventions": {
        "omega": (
            "Given as SD and correlations (NONMEM $OMEGA STANDARD CORRELATION): CL 0.259, V1 0.152, "
            "Q 0.418 with correlations CL-V1 0.658, CL-Q 0.711, V1-Q 0.475; V2 0.585 separate. "
            "Converted to covariances cov_ij = sd_i sd_j r_ij (exponential etas)."
        ),
        "error": "Proportional 20.4 % (SD = 0.204 f).",
        "covariates": (
            "FFM by Janmahasatian (2005) from WT, HT, SEX, computed in individual(); CL and Q scale "
            "with (FFM/70)^0.952, V1 and V2 with FFM/70; CL x (1 + theta_age (AGE - 18)) with "
            "theta_age -0.021 up to 18 y and -0.010 above; CL x (37.2/SCR[umol/L])^0.222; sex-specific "
            "typical CL and V1."
        ),
        "caps_floors": "none (F_AGE becomes <= 0 above 118 years: outside the validated range)",
        "disagreements": (
            "One public encoding (Tucuxi; its history records two corrections: the SCR effect and a "
            "correlation value). The age switch at exactly 18 y is immaterial (AGE - 18 = 0)."
        ),
        "bsv_form": "exponential, P = TV * exp(eta)",
    },
    "targets": {
        "auc24": {"range": (70.0, 110.0), "best": 100.0, "unit": "mg*h/L",
                  "source": "Tucuxi drug file (targets suggested by P. Drennan), not from the paper"},
    },
    "dosing": {"dose_step_mg": 20.0, "intervals_h": (24.0,), "infusion_h": (0.5,),
               "source": "once-daily tobramycin (usual CF practice), not from the paper"},
    "reference_implementations": {
        "tucuxi": "sotalya/tucuxi-drugs drugfiles/ch.tucuxi.tobramycin.hennig2013.tdd and "
                  "validation/comparative/data/nonmem_models/ch.tucuxi.tobramycin.hennig2013.*",
    },
}

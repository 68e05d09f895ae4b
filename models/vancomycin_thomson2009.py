"""Vancomycin in adults: the Thomson et al. 2009 model behind the Scottish/UK guidelines.

Two-compartment IV model::

    CrCL = Cockcroft-Gault(SCR, AGE, WT, SEX)              mL/min (total body weight)
    CL = 2.99 * (1 + 0.0154 * (CrCL - 66)) * exp(eta_cl)   L/h
    V1 = 0.675 * WT * exp(eta_v1)                          L
    Q  = 2.28 * exp(eta_q)                                 L/h
    V2 = 0.732 * WT * exp(eta_v2)                          L
    C  = A_central / V1   (mg/L; dose mg, time h)
    SD = sqrt(1.6^2 + (0.15 C)^2)

Data columns: WT (kg), SCR (µmol/L), AGE (years), SEX (1 male, 0 female). Doses to
CMT 1 (central).

??? cite
    Thomson AH, Staatz CE, Tobin CM, Gall M, Lovering AM. Development and evaluation
    of vancomycin dosage guidelines designed to achieve new target concentrations.
    J Antimicrob Chemother. 2009;63(5):1050-1057. doi:10.1093/jac/dkp085.
"""

from __future__ import annotations

import jax.numpy as jnp

import pkmix
from pkmix.dosing.covariates import array_module, cockcroft_gault

from ._conventions import check_error_form

NAME = "vancomycin_thomson2009"

BIBTEX = """@article{Thomson2009,
  author  = {Thomson, Alison H. and Staatz, Christine E. and Tobin, Claire M. and Gall, Mairi and Lovering, Andrew M.},
  title   = {Development and evaluation of vancomycin dosage guidelines designed to achieve new target concentrations},
  journal = {Journal of Antimicrobial Chemotherapy},
  year    = {2009},
  volume  = {63},
  number  = {5},
  pages   = {1050--1057},
  doi     = {10.1093/jac/dkp085}
}"""


def creatinine_clearance(scr, age, wt, sex, *, cap=None):
    """Cockcroft-Gault CrCL (mL/min) on total body weight, SCR in µmol/L; optional cap."""
    crcl = cockcroft_gault(scr, age, wt, sex, scr_unit="umol/L")
    return crcl if cap is None else array_module(crcl).minimum(crcl, cap)


def build(*, error_form: str = "variance", cl_v1_covariance: bool = True,
          crcl_cap: float | None = None) -> pkmix.Model:
    """The Thomson 2009 model.

    Args:
        error_form: "variance" (default, SD = sqrt(a^2 + (b f)^2): PKPDsim, Tucuxi) or "sd".
        cl_v1_covariance: include the CL-V1 covariance 0.01 (PKPDsim; default) or not
            (Tucuxi).
        crcl_cap: cap on CrCL in mL/min (PKPDsim's ``pk_vanco_thomson_capped`` uses
            150); default None, the published model has no cap.
    """
    check_error_form(error_form)

    def individual(p):
        crcl = creatinine_clearance(p.SCR, p.AGE, p.WT, p.SEX, cap=crcl_cap)
        return {
            "cl": p.tvcl * (1.0 + p.crcl_cl * (crcl - 66.0)) * jnp.exp(p.eta_cl),
            "v1": p.tvv1 * p.WT * jnp.exp(p.eta_v1),
            "q": p.tvq * jnp.exp(p.eta_q),
            "v2": p.tvv2 * p.WT * jnp.exp(p.eta_v2),
            "crcl": crcl,
        }

    cov = 0.01 if cl_v1_covariance else 0.0
    return pkmix.Model(
        theta={
            "tvcl": pkmix.Theta(2.99, lower=0),
            "crcl_cl": 0.0154,
            "tvv1": pkmix.Theta(0.675, lower=0),
            "tvq": pkmix.Theta(2.28, lower=0),
            "tvv2": pkmix.Theta(0.732, lower=0),
        },
        omega=[pkmix.Block(["eta_cl", "eta_v1"], [0.0729, cov, 0.0225]), {"eta_q": 0.2401, "eta_v2": 1.69}],
        sigma={"add_sd": 1.6, "prop_sd": 0.15},
        individual=individual,
        structure=pkmix.two_compartment(),
        observe=lambda a, p: a.central / p.v1,
        error=pkmix.combined("add_sd", "prop_sd", form=error_form),
        covariates=["WT", "SCR", "AGE", "SEX"],
        name=NAME,
    )


model = build()


def derived_covariates(WT, SCR, AGE, SEX, **_):
    """Covariates the model derives from the data columns, for display and range checks."""
    return {"CRCL": float(creatinine_clearance(SCR, AGE, WT, SEX))}


METADATA = {
    "name": NAME,
    "drug": "vancomycin",
    "citation": (
        "Thomson AH, Staatz CE, Tobin CM, Gall M, Lovering AM. Development and evaluation of "
        "vancomycin dosage guidelines designed to achieve new target concentrations. "
        "J Antimicrob Chemother. 2009;63(5):1050-1057."
    ),
    "doi": "10.1093/jac/dkp085",
    "bibtex": BIBTEX,
    "population": "398 adult hospital patients (Glasgow and Bristol, UK) with routine TDM data",
    "structure": "two-compartment, IV infusion into CMT 1 (central)",
    "route": "intravenous",
    "units": {"dose": "mg", "time": "h", "concentration": "mg/L", "cl": "L/h", "volume": "L",
              "auc": "mg*h/L"},
    "covariate_units": {"WT": "kg (total body weight)", "SCR": "umol/L", "AGE": "years",
                        "SEX": "1 = male, 0 = female"},
    # The paper's Table 1 was not available to this encoding: these bounds are the
    # adult TDM population the model was built for, NOT the published min/max.
    "covariate_ranges": {"WT": (35.0, 150.0), "AGE": (18.0, 100.0), "SEX": (0, 1)},
    "derived_covariate_ranges": {"CRCL": (5.0, 150.0)},
    "covariate_ranges_source": (
        "APPROXIMATE: adult population and the CrCL span of the paper's dosing bands "
        "(<20 to >110 mL/min); not checked against the paper's Table 1. CL becomes "
        "non-positive for CrCL < 1.1 mL/min (linear CrCL model)."
    ),
    "conventions": {
        "omega": (
            "Paper gives BSV as CV%: CL 27, V1 15, Q 49, V2 130. Encoded as omega^2 = CV^2 "
            "(0.0729, 0.0225, 0.2401, 1.69), as both PKPDsim and Tucuxi do (NONMEM's CV ~ "
            "sqrt(omega^2)). CL-V1 covariance 0.01 (correlation 0.25) from PKPDsim; Tucuxi "
            "omits it: build(cl_v1_covariance=False)."
        ),
        "error": "Combined 1.6 mg/L + 15 %, SD = sqrt(1.6^2 + (0.15 f)^2) (variance form; PKPDsim, Tucuxi).",
        "covariates": (
            "CrCL (mL/min) by Cockcroft-Gault on total body weight from SCR (umol/L), AGE, WT, SEX, "
            "computed in individual(); no cap (PKPDsim's capped variant: build(crcl_cap=150)). "
            "V1 and V2 proportional to total body weight."
        ),
        "caps_floors": "none in the published model",
        "disagreements": (
            "CL: paper/PKPDsim 2.99*(1 + 0.0154*(CrCL - 66)) (followed); Tucuxi 2.99*0.0154*CrCL "
            "(drops the intercept, 1.6 % lower CL). PKPDsim reads CRCL in L/h and converts "
            "(x16.667); Tucuxi computes CG with 1.23/1.04 per umol/L (same as 0.85 female factor "
            "within 0.3 %). PKPDsim adds an optional CL_HEMO (not included)."
        ),
        "bsv_form": "exponential, P = TV * exp(eta)",
    },
    "targets": {
        "trough": {"range": (10.0, 20.0), "unit": "mg/L",
                   "source": "Thomson 2009 guideline targets (trough 10-15 or 15-20 mg/L by indication)"},
        "auc24": {"range": (400.0, 600.0), "unit": "mg*h/L",
                  "source": "2020 ASHP/IDSA consensus (not from the paper)"},
    },
    "dosing": {"dose_step_mg": 250.0, "dose_min_mg": 250.0, "dose_max_mg": 4000.0,
               "intervals_h": (12.0, 24.0, 48.0), "infusion_rate_max_mg_per_h": 1000.0,
               "source": "usual practice (the paper's guideline uses 12-48 h intervals by CrCL band)"},
    "reference_implementations": {
        "pkpdsim": "InsightRX/PKPDsim inst/models/pk_vanco_thomson.json5 (and _capped)",
        "tucuxi": "sotalya/tucuxi-drugs validation/comparative/data/nonmem_models/ch.tucuxi.vancomycin.thomson2009.*",
    },
}

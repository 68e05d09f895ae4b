"""Vancomycin in hospitalised adults with and without haemodialysis (Goti et al. 2018).

Two-compartment IV model::

    CrCL = min(Cockcroft-Gault(SCR', AGE, WT, SEX), 150) mL/min,
           SCR' = max(SCR, 1 mg/dL) when AGE > 65 (erratum; the article says 60)
    CL = 4.5 * (CrCL/120)^0.8 * 0.7^DIAL * exp(eta_cl)      L/h
    V1 = 58.4 * (WT/70) * 0.5^DIAL * exp(eta_v1)             L
    V2 = 38.4 * exp(eta_v2)                                  L
    Q  = 6.5                                                 L/h (no BSV)
    C  = A_central / V1   (mg/L; dose mg, time h)
    SD = sqrt(3.4^2 + (0.227 C)^2)   (combined, variance form)

Data columns (covariates): WT (kg), SCR (µmol/L), AGE (years), SEX (1 male, 0
female), DIAL (1 on intermittent haemodialysis, 0 not). Doses go to CMT 1 (central).

Three public encodings and nlmixr2lib disagree on four points; ``build()`` makes
each choice an argument so the others can be reproduced (``METADATA["conventions"]``).

??? cite
    Goti V, Chaturvedula A, Fossler MJ, Mok S, Jacob JT. Hospitalized patients with and
    without hemodialysis have markedly different vancomycin pharmacokinetics: a
    population pharmacokinetic model-based analysis. Ther Drug Monit.
    2018;40(2):212-221. doi:10.1097/FTD.0000000000000490. Erratum: PMID 31306395.
"""

from __future__ import annotations

import jax.numpy as jnp

import pkmix
from pkmix.dosing.covariates import SCR_UMOL_PER_MGDL, array_module, cockcroft_gault

from ._conventions import check_error_form, omega_from_cv

NAME = "vancomycin_goti2018"

#: Published between-subject variability (Table 2), CV as a fraction.
BSV_CV = {"eta_cl": 0.398, "eta_v1": 0.816, "eta_v2": 0.571}

BIBTEX = """@article{Goti2018,
  author  = {Goti, Vineet and Chaturvedula, Ayyappa and Fossler, Michael J. and Mok, Steven and Jacob, Jesse T.},
  title   = {Hospitalized Patients With and Without Hemodialysis Have Markedly Different Vancomycin Pharmacokinetics: A Population Pharmacokinetic Model-Based Analysis},
  journal = {Therapeutic Drug Monitoring},
  year    = {2018},
  volume  = {40},
  number  = {2},
  pages   = {212--221},
  doi     = {10.1097/FTD.0000000000000490}
}"""


def creatinine_clearance(scr, age, wt, sex, *, floor_age=65.0, cap=150.0):
    """Goti's CrCL (mL/min): Cockcroft-Gault on total body weight with SCR in µmol/L,
    SCR raised to 1 mg/dL (88.42 µmol/L) when AGE > ``floor_age``, capped at ``cap``.
    Traceable (jax.numpy), NumPy on concrete values."""
    xp = array_module(scr, age, wt, sex)
    scr = xp.asarray(scr, dtype=xp.float64)
    age = xp.asarray(age, dtype=xp.float64)
    floored = xp.where((age > floor_age) & (scr < SCR_UMOL_PER_MGDL), SCR_UMOL_PER_MGDL, scr)
    return xp.minimum(cockcroft_gault(floored, age, wt, sex, scr_unit="umol/L"), cap)


def build(*, error_form: str = "variance", omega_convention: str = "log", scr_floor_age: float = 65.0,
          v2_scaled_by_weight: bool = False) -> pkmix.Model:
    """The Goti 2018 model with the encoding choices as arguments.

    Args:
        error_form: "variance" (default: SD = sqrt(a^2 + (b f)^2), NONMEM's two-EPS form,
            as Tucuxi and nlmixr2lib) or "sd" (SD = a + b f, as posologyr).
        omega_convention: "log" (default: omega^2 = log(1 + CV^2), as posologyr and
            nlmixr2lib) or "square" (omega^2 = CV^2, as Tucuxi and PKPDsim).
        scr_floor_age: SCR is floored at 1 mg/dL above this age: 65 (erratum, default,
            as PKPDsim) or 60 (the article, as nlmixr2lib).
        v2_scaled_by_weight: multiply V2 by WT/70 (nlmixr2lib's reading of the Methods);
            default False (Table 2's equations, as posologyr, Tucuxi and PKPDsim).
    """
    check_error_form(error_form)

    def individual(p):
        crcl = creatinine_clearance(p.SCR, p.AGE, p.WT, p.SEX, floor_age=scr_floor_age)
        v2 = p.tvv2 * (p.WT / 70.0 if v2_scaled_by_weight else 1.0)
        return {
            "cl": p.tvcl * (crcl / 120.0) ** p.crcl_cl * p.dial_cl ** p.DIAL * jnp.exp(p.eta_cl),
            "v1": p.tvv1 * (p.WT / 70.0) * p.dial_v1 ** p.DIAL * jnp.exp(p.eta_v1),
            "v2": v2 * jnp.exp(p.eta_v2),
            "q": p.tvq,
            "crcl": crcl,
        }

    return pkmix.Model(
        theta={
            "tvcl": pkmix.Theta(4.5, lower=0),
            "crcl_cl": 0.8,
            "dial_cl": pkmix.Theta(0.7, lower=0),
            "tvv1": pkmix.Theta(58.4, lower=0),
            "dial_v1": pkmix.Theta(0.5, lower=0),
            "tvv2": pkmix.Theta(38.4, lower=0),
            "tvq": pkmix.Theta(6.5, lower=0),
        },
        omega={k: omega_from_cv(cv, omega_convention) for k, cv in BSV_CV.items()},
        sigma={"add_sd": 3.4, "prop_sd": 0.227},
        individual=individual,
        structure=pkmix.two_compartment(),
        observe=lambda a, p: a.central / p.v1,
        error=pkmix.combined("add_sd", "prop_sd", form=error_form),
        covariates=["WT", "SCR", "AGE", "SEX", "DIAL"],
        name=NAME,
    )


model = build()


def derived_covariates(WT, SCR, AGE, SEX, DIAL=0, **_):
    """Covariates the model derives from the data columns, for display and range checks."""
    return {"CRCL": float(creatinine_clearance(SCR, AGE, WT, SEX))}


METADATA = {
    "name": NAME,
    "drug": "vancomycin",
    "citation": (
        "Goti V, Chaturvedula A, Fossler MJ, Mok S, Jacob JT. Hospitalized patients with and "
        "without hemodialysis have markedly different vancomycin pharmacokinetics: a population "
        "pharmacokinetic model-based analysis. Ther Drug Monit. 2018;40(2):212-221. "
        "Erratum: Ther Drug Monit 2019 (PMID 31306395)."
    ),
    "doi": "10.1097/FTD.0000000000000490",
    "bibtex": BIBTEX,
    "population": (
        "1812 hospitalised adults (2 academic centres, Atlanta, 2011-2012), 336 (18.5%) on "
        "intermittent high-flux haemodialysis, 64.7% with an ICU stay; 2765 routine TDM levels, "
        "mostly troughs (Table 1)."
    ),
    "structure": "two-compartment, IV infusion or bolus into CMT 1 (central)",
    "route": "intravenous",
    "units": {"dose": "mg", "time": "h", "concentration": "mg/L", "cl": "L/h", "volume": "L",
              "auc": "mg*h/L"},
    "covariate_units": {"WT": "kg (total body weight)", "SCR": "umol/L", "AGE": "years",
                        "SEX": "1 = male, 0 = female", "DIAL": "1 = intermittent haemodialysis, 0 = none"},
    "covariate_ranges": {"WT": (33.0, 255.0), "AGE": (17.0, 101.0), "SEX": (0, 1), "DIAL": (0, 1)},
    "derived_covariate_ranges": {"CRCL": (4.0, 150.0)},
    "covariate_ranges_source": "Goti 2018 Table 1 (ranges as reported by nlmixr2lib's source trace); "
                               "SCR range not reported, checked through CrCL",
    "conventions": {
        "omega": (
            "Paper gives BSV as CV% (CL 39.8, V1 81.6, V2 57.1; none on Q). Converted as "
            "omega^2 = log(1 + CV^2) = 0.1471 / 0.5102 / 0.2823 (posologyr, nlmixr2lib). Tucuxi and "
            "PKPDsim use omega^2 = CV^2 (0.1584 / 0.6659 / 0.3260): build(omega_convention='square')."
        ),
        "error": (
            "Combined 3.4 mg/L + 22.7 %. Encoded as SD = sqrt(3.4^2 + (0.227 f)^2) "
            "(pkmix.combined(form='variance'); NONMEM two-EPS form, Tucuxi, nlmixr2lib). posologyr "
            "uses SD = 3.4 + 0.227 f: build(error_form='sd'). PKPDsim deliberately changed it to "
            "1.42 mg/L + 19.7 % (not followed)."
        ),
        "covariates": (
            "CrCL = Cockcroft-Gault (mL/min) on total body weight, computed in individual() from SCR "
            "(umol/L; /88.42 to mg/dL), AGE, WT, SEX (x0.85 female); SCR < 1 mg/dL raised to 1 mg/dL "
            "when AGE > 65 (erratum; the article says 60: build(scr_floor_age=60)); CrCL capped at "
            "150 mL/min. Tucuxi uses (140-age)*WT*1.23(M)/1.04(F)/SCR[umol/L] without floor or cap; "
            "posologyr takes CrCL as a data column."
        ),
        "caps_floors": "CrCL <= 150 mL/min; SCR >= 1 mg/dL (88.42 umol/L) if AGE > 65",
        "disagreements": (
            "V2: Table 2 has no covariate on V2 (posologyr, Tucuxi, PKPDsim); nlmixr2lib scales V2 by "
            "WT/70 from the Methods text: build(v2_scaled_by_weight=True). Followed Table 2. "
            "PKPDsim adds an optional additive CL_HEMO; not included."
        ),
        "bsv_form": "exponential, P = TV * exp(eta)",
    },
    "targets": {
        "auc24": {"range": (400.0, 600.0), "unit": "mg*h/L",
                  "source": "ASHP/IDSA/PIDS/SIDP 2020 vancomycin consensus (Rybak et al., Am J Health "
                            "Syst Pharm 2020;77:835-864), MIC 1 mg/L; not from Goti 2018"},
        "trough": {"range": (10.0, 20.0), "unit": "mg/L", "source": "2009 consensus (older practice)"},
    },
    "dosing": {"dose_step_mg": 250.0, "dose_min_mg": 250.0, "dose_max_mg": 4000.0,
               "intervals_h": (8.0, 12.0, 24.0, 48.0), "infusion_rate_max_mg_per_h": 1000.0,
               "source": "usual clinical practice (infusion at most 1 g/h), not from the paper"},
    "reference_implementations": {
        "posologyr": "levenc/posologyr vignettes/articles/auc_based_dosing.Rmd, tests/testthat/test_doseoptim.R",
        "tucuxi": "sotalya/tucuxi-drugs validation/comparative/data/nonmem_models/ch.tucuxi.vancomycin.goti2018.*",
        "pkpdsim": "InsightRX/PKPDsim inst/models/pk_vanco_goti.json5",
        "nlmixr2lib": "nlmixr2/nlmixr2lib inst/modeldb/specificDrugs/Goti_2018_vancomycin.R",
    },
}

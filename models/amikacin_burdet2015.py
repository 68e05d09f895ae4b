"""Amikacin in ICU patients with suspected ventilator-associated pneumonia (Burdet et al. 2015).

Two-compartment IV model::

    CL = 4.3 * (CRCL4H/82)^0.7 * exp(eta_cl)                           L/h
    V1 = 15.9 * (WT/78)^0.9 * (PFRATIO/169)^0.4 * exp(eta_v1)          L
    V2 = 21.4 * exp(eta_v2)                                            L
    Q  = 12.1 * exp(eta_q)                                             L/h
    C  = A_central / V1   (mg/L; dose mg, time h)
    SD = sqrt(0.2^2 + (0.1 C)^2)
    OMEGA: full 4x4 block (variances), as published.

Data columns: CRCL4H (measured 4-hour urinary creatinine clearance, mL/min), WT (total
body weight, kg), PFRATIO (PaO2/FiO2, mmHg). Doses to CMT 1 (central).

??? cite
    Burdet C, Pajot O, Couffignal C, Armand-Lefèvre L, Foucrier A, Laouénan C, Wolff M,
    Massias L, Mentré F. Population pharmacokinetics of single-dose amikacin in
    critically ill patients with suspected ventilator-associated pneumonia.
    Eur J Clin Pharmacol. 2015;71(1):75-83. doi:10.1007/s00228-014-1766-y.
"""

from __future__ import annotations

import jax.numpy as jnp

import pkmix

from ._conventions import check_error_form

NAME = "amikacin_burdet2015"

#: Published OMEGA (variances), order CL, V1, V2, Q, lower triangle by rows.
OMEGA_LOWER = [0.10,
               0.01, 0.05,
               0.01, 0.02, 0.20,
               -0.06, 0.004, 0.003, 0.08]

BIBTEX = """@article{Burdet2015,
  author  = {Burdet, Charles and Pajot, Olivier and Couffignal, Camille and Armand-Lef{\\`e}vre, Laurence and Foucrier, Arnaud and Laou{\\'e}nan, C{\\'e}dric and Wolff, Michel and Massias, Laurent and Mentr{\\'e}, France},
  title   = {Population pharmacokinetics of single-dose amikacin in critically ill patients with suspected ventilator-associated pneumonia},
  journal = {European Journal of Clinical Pharmacology},
  year    = {2015},
  volume  = {71},
  number  = {1},
  pages   = {75--83},
  doi     = {10.1007/s00228-014-1766-y}
}"""


def build(*, error_form: str = "variance") -> pkmix.Model:
    """The Burdet 2015 model.

    Args:
        error_form: "variance" (default; SD = sqrt(0.2^2 + (0.1 f)^2), the form posologyr
            runs and tests against nlmixr) or "sd" (SD = 0.2 + 0.1 f, the form written in
            posologyr's nlmixr2-style vignette text and its older case study).
    """
    check_error_form(error_form)

    def individual(p):
        return {
            "cl": p.tvcl * (p.CRCL4H / 82.0) ** p.crcl_cl * jnp.exp(p.eta_cl),
            "v1": p.tvv1 * (p.WT / 78.0) ** p.wt_v1 * (p.PFRATIO / 169.0) ** p.pf_v1 * jnp.exp(p.eta_v1),
            "v2": p.tvv2 * jnp.exp(p.eta_v2),
            "q": p.tvq * jnp.exp(p.eta_q),
        }

    return pkmix.Model(
        theta={
            "tvcl": pkmix.Theta(4.3, lower=0),
            "crcl_cl": 0.7,
            "tvv1": pkmix.Theta(15.9, lower=0),
            "wt_v1": 0.9,
            "pf_v1": 0.4,
            "tvv2": pkmix.Theta(21.4, lower=0),
            "tvq": pkmix.Theta(12.1, lower=0),
        },
        omega=pkmix.Block(["eta_cl", "eta_v1", "eta_v2", "eta_q"], OMEGA_LOWER),
        sigma={"add_sd": 0.2, "prop_sd": 0.1},
        individual=individual,
        structure=pkmix.two_compartment(),
        observe=lambda a, p: a.central / p.v1,
        error=pkmix.combined("add_sd", "prop_sd", form=error_form),
        covariates=["CRCL4H", "WT", "PFRATIO"],
        name=NAME,
    )


model = build()

METADATA = {
    "name": NAME,
    "drug": "amikacin",
    "citation": (
        "Burdet C, Pajot O, Couffignal C, Armand-Lefevre L, Foucrier A, Laouenan C, Wolff M, "
        "Massias L, Mentre F. Population pharmacokinetics of single-dose amikacin in critically "
        "ill patients with suspected ventilator-associated pneumonia. Eur J Clin Pharmacol. "
        "2015;71(1):75-83."
    ),
    "doi": "10.1007/s00228-014-1766-y",
    "bibtex": BIBTEX,
    "population": "Mechanically ventilated ICU adults with suspected ventilator-associated pneumonia, "
                  "single amikacin dose (France)",
    "structure": "two-compartment, IV infusion into CMT 1 (central)",
    "route": "intravenous",
    "units": {"dose": "mg", "time": "h", "concentration": "mg/L", "cl": "L/h", "volume": "L",
              "auc": "mg*h/L"},
    "covariate_units": {"CRCL4H": "mL/min (measured 4-h urinary creatinine clearance, not an estimate)",
                        "WT": "kg (total body weight)", "PFRATIO": "mmHg (PaO2/FiO2)"},
    "covariate_ranges": {"CRCL4H": (10.0, 250.0), "WT": (40.0, 150.0), "PFRATIO": (50.0, 500.0)},
    "covariate_ranges_source": (
        "APPROXIMATE: the paper's Table 1 was not available to this encoding; the reference values "
        "(CRCL4H 82 mL/min, WT 78 kg, PaO2/FiO2 169 mmHg) are the population medians. Check before use."
    ),
    "conventions": {
        "omega": "Published as a full 4x4 variance-covariance matrix (CL, V1, V2, Q); used as is.",
        "error": (
            "Combined 0.2 mg/L + 10 %. Encoded SD = sqrt(0.2^2 + (0.1 f)^2) (variance form), the form "
            "posologyr executes in its vignettes and its nlmixr comparison test; the nlmixr2-style text "
            "in the vignette (combined1) and posologyr's older case study use SD = 0.2 + 0.1 f: "
            "build(error_form='sd')."
        ),
        "covariates": (
            "CL on measured 4-h creatinine clearance (reference 82 mL/min, exponent 0.7); V1 on total "
            "body weight (78 kg, 0.9) and PaO2/FiO2 (169 mmHg, 0.4). All are data columns; nothing derived."
        ),
        "caps_floors": "none",
        "disagreements": "Only the residual error form differs between public encodings (see error).",
        "bsv_form": "exponential, P = TV * exp(eta)",
    },
    "targets": {
        "peak": {"value": 80.0, "range": (60.0, 80.0), "unit": "mg/L",
                 "time_after_start_h": 1.0, "infusion_h": 0.5,
                 "source": "posologyr vignettes (peak 1 h after the start of a 30-min infusion; "
                           "< 60 mg/L is too low)"},
        "trough": {"max": 2.5, "unit": "mg/L", "source": "posologyr vignettes (Cmin before redosing)"},
    },
    "dosing": {"dose_step_mg": 100.0, "dose_min_mg": 250.0, "dose_max_mg": 4000.0,
               "infusion_h": (0.5,), "usual": "25-30 mg/kg total body weight once daily in ICU",
               "source": "usual French ICU practice, not from the paper"},
    "reference_implementations": {
        "posologyr": "levenc/posologyr vignettes/articles/a_priori_dosing.Rmd, a_posteriori_dosing.Rmd, "
                     "tests/testthat/test_map_nlmixr.R",
    },
}

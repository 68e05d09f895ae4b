"""Intravenous busulfan in children before HSCT (Paci et al. 2012).

One-compartment IV model with *proportional* between-subject variability::

    CL = 2.18 * (WT/9)^theta * (1 + eta_cl),  theta = 1.25 if WT < 9 kg else 0.76   L/h
    V  = WT^0.86 * (1 + eta_v)                                                       L
    C  = A_central / V   (mg/L; dose mg, time h)
    SD = sqrt(0.057^2 + (0.11 C)^2)

Data column: WT (kg). Doses to CMT 1 (central).

??? cite
    Paci A, Vassal G, Moshous D, Dalle JH, Bleyzac N, Neven B, Galambrun C, Kemmel V,
    Abdi ZD, Broutin S, Pétain A, Nguyen L. Pharmacokinetic behavior and appraisal of
    intravenous busulfan dosing in infants and older children: the results of a
    population pharmacokinetic study from a large pediatric cohort undergoing
    hematopoietic stem-cell transplantation. Ther Drug Monit. 2012;34(2):198-208.
    doi:10.1097/FTD.0b013e31824c2f60.
"""

from __future__ import annotations

import jax.numpy as jnp

import pkmix

from ._conventions import check_error_form

NAME = "busulfan_paci2012"

#: Busulfan molar mass (g/mol), for µmol·min/L <-> mg·h/L.
MOLAR_MASS = 246.292

BIBTEX = """@article{Paci2012,
  author  = {Paci, Angelo and Vassal, Gilles and Moshous, Despina and Dalle, Jean-Hugues and Bleyzac, Nathalie and Neven, B{\\'e}n{\\'e}dicte and Galambrun, Claire and Kemmel, V{\\'e}ronique and Abdi, Zeinab D. and Broutin, Sophie and P{\\'e}tain, Aur{\\'e}lie and Nguyen, Laurent},
  title   = {Pharmacokinetic Behavior and Appraisal of Intravenous Busulfan Dosing in Infants and Older Children: The Results of a Population Pharmacokinetic Study From a Large Pediatric Cohort Undergoing Hematopoietic Stem-Cell Transplantation},
  journal = {Therapeutic Drug Monitoring},
  year    = {2012},
  volume  = {34},
  number  = {2},
  pages   = {198--208},
  doi     = {10.1097/FTD.0b013e31824c2f60}
}"""


def auc_umol_min_to_mg_h(auc):
    """Busulfan AUC from µmol·min/L to mg·h/L (molar mass 246.292 g/mol)."""
    return auc * MOLAR_MASS / 1000.0 / 60.0


def build(*, error_form: str = "variance") -> pkmix.Model:
    """The Paci 2012 model.

    Args:
        error_form: "variance" (default; SD = sqrt(a^2 + (b f)^2), Tucuxi's NONMEM file
            and its "mixed" error model) or "sd".
    """
    check_error_form(error_form)

    def individual(p):
        exponent = jnp.where(p.WT < 9.0, p.cl_wt_lt9, p.cl_wt_ge9)
        # Proportional BSV, P = TV * (1 + eta) as published (not exp(eta)).
        return {
            "cl": p.tvcl * (p.WT / 9.0) ** exponent * (1.0 + p.eta_cl),
            "v": p.WT ** p.v_wt * (1.0 + p.eta_v),
        }

    return pkmix.Model(
        theta={
            "tvcl": pkmix.Theta(2.18, lower=0),
            "cl_wt_lt9": 1.25,
            "cl_wt_ge9": 0.76,
            "v_wt": 0.86,
        },
        omega={"eta_cl": 0.23**2, "eta_v": 0.22**2},
        sigma={"add_sd": 0.057, "prop_sd": 0.11},
        individual=individual,
        structure=pkmix.one_compartment(),
        observe=lambda a, p: a.central / p.v,
        error=pkmix.combined("add_sd", "prop_sd", form=error_form),
        covariates=["WT"],
        name=NAME,
    )


model = build()

METADATA = {
    "name": NAME,
    "drug": "busulfan",
    "citation": (
        "Paci A, Vassal G, Moshous D, Dalle JH, Bleyzac N, Neven B, Galambrun C, Kemmel V, Abdi ZD, "
        "Broutin S, Petain A, Nguyen L. Pharmacokinetic behavior and appraisal of intravenous busulfan "
        "dosing in infants and older children: the results of a population pharmacokinetic study from "
        "a large pediatric cohort undergoing hematopoietic stem-cell transplantation. Ther Drug Monit. "
        "2012;34(2):198-208."
    ),
    "doi": "10.1097/FTD.0b013e31824c2f60",
    "bibtex": BIBTEX,
    "population": "205 children (10 days to 15 years, 3.5-62.5 kg) receiving IV busulfan before HSCT",
    "structure": "one-compartment, IV infusion into CMT 1 (central)",
    "route": "intravenous",
    "units": {"dose": "mg", "time": "h", "concentration": "mg/L", "cl": "L/h", "volume": "L",
              "auc": "mg*h/L"},
    "covariate_units": {"WT": "kg"},
    "covariate_ranges": {"WT": (3.5, 62.5)},
    "population_ranges": {"AGE": (0.01, 15.0)},
    "covariate_ranges_source": "Tucuxi drug file domain (ch.tucuxi.busulfan.paci2012.tdd): 0.01-15 years, "
                               "3.5-62.5 kg (soft limits 3-63 kg)",
    "conventions": {
        "omega": (
            "Proportional BSV, P = TV * (1 + eta), SD 23 % (CL) and 22 % (V) as in Tucuxi's drug file "
            "and NONMEM file ($OMEGA STANDARD 0.23, 0.22); omega = SD^2 = 0.0529, 0.0484, no "
            "correlation. Note 1 + eta < 0 (non-physical) for eta < -1, i.e. 4.3 SD below the mean."
        ),
        "error": "Combined 0.057 mg/L + 11 %, SD = sqrt(0.057^2 + (0.11 f)^2) (Tucuxi's NONMEM file).",
        "covariates": (
            "CL = 2.18 L/h at 9 kg, allometric exponent 1.25 below 9 kg and 0.76 from 9 kg (continuous "
            "at 9 kg); V = WT^0.86 L (no separate typical value: 6.62 L at 9 kg)."
        ),
        "caps_floors": "none",
        "disagreements": (
            "Only one public encoding (Tucuxi). V = WT^0.86 is as Tucuxi writes it; check against the "
            "paper's Table before clinical use."
        ),
        "bsv_form": "proportional, P = TV * (1 + eta)",
    },
    "targets": {
        "cumulative_auc": {"range": (59.0, 99.0), "best": 72.0, "unit": "mg*h/L", "n_doses": 16,
                           "interval_h": 6.0,
                           "source": "Tucuxi drug file: 16 doses q6h over 4 days; = 900-1500 umol*min/L "
                                     "per dose (Paci 2012 abstract) x 16"},
        "auc_per_dose": {"range": (auc_umol_min_to_mg_h(900.0), auc_umol_min_to_mg_h(1500.0)),
                         "unit": "mg*h/L", "source": "Paci 2012 abstract: 900-1500 umol*min/L (q6h dosing)"},
        "peak": {"range": (1.0, 1.4), "best": 1.2, "unit": "mg/L", "source": "Tucuxi drug file"},
    },
    "dosing": {"dose_step_mg": 1.0, "dose_min_mg": 1.0, "dose_max_mg": 400.0, "intervals_h": (6.0, 24.0),
               "infusion_h": (1.0, 2.0, 3.0), "default_infusion_h": 2.0, "source": "Tucuxi drug file"},
    "reference_implementations": {
        "tucuxi": "sotalya/tucuxi-drugs drugfiles/ch.tucuxi.busulfan.paci2012.tdd and "
                  "validation/comparative/data/nonmem_models/ch.tucuxi.busulfan.paci2012.*",
    },
}

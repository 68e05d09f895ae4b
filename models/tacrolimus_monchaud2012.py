"""Oral tacrolimus after lung transplantation (Monchaud et al. 2012).

Five transit compartments (an Erlang absorption: the dose enters the first, all pass on
at Ktr) feeding a two-compartment disposition; all parameters are apparent (/F)::

    Ktr  = 7.06 * 0.47^CF * exp(eta_ktr)        1/h
    V1/F = 136 * exp(eta_v1)                    L
    Q/F  = 41.1 * exp(eta_q)                    L/h
    V2/F = 529 * exp(eta_v2)                    L
    CL/F = 17.5 * 1.4^CYP3A5 * exp(eta_cl)      L/h
    C    = 1000 * A_central / V1   (µg/L = ng/mL whole blood; dose mg, time h)
    SD   = sqrt(1.6^2 + (0.069 C)^2)

Compartments (NONMEM numbering): transit1..transit5 (CMT 1-5, dose into CMT 1),
central (CMT 6), peripheral (CMT 7). Data columns: CF (1 cystic fibrosis), CYP3A5
(1 CYP3A5*1 carrier = expresser).

??? cite
    Monchaud C, de Winter BC, Knoop C, Estenne M, Reynaud-Gaubert M, Pison C, Stern M,
    Kessler R, Guillemain R, Marquet P, Rousseau A. Population pharmacokinetic modelling
    and design of a Bayesian estimator for therapeutic drug monitoring of tacrolimus in
    lung transplantation. Clin Pharmacokinet. 2012;51(3):175-186.
    doi:10.2165/11594760-000000000-00000.
"""

from __future__ import annotations

import jax.numpy as jnp

import pkmix

from ._conventions import check_error_form

NAME = "tacrolimus_monchaud2012"

N_TRANSIT = 5
COMPARTMENTS = tuple(f"transit{i}" for i in range(1, N_TRANSIT + 1)) + ("central", "peripheral")

#: Published BSV as SD of exponential etas (Tucuxi: $OMEGA STANDARD).
BSV_SD = {"eta_ktr": 0.427, "eta_v1": 0.41, "eta_q": 0.717, "eta_v2": 1.26, "eta_cl": 0.537}

BIBTEX = """@article{Monchaud2012,
  author  = {Monchaud, Caroline and de Winter, Brenda C. and Knoop, Christiane and Estenne, Marc and Reynaud-Gaubert, Martine and Pison, Christophe and Stern, Marc and Kessler, Romain and Guillemain, Romain and Marquet, Pierre and Rousseau, Annick},
  title   = {Population Pharmacokinetic Modelling and Design of a Bayesian Estimator for Therapeutic Drug Monitoring of Tacrolimus in Lung Transplantation},
  journal = {Clinical Pharmacokinetics},
  year    = {2012},
  volume  = {51},
  number  = {3},
  pages   = {175--186},
  doi     = {10.2165/11594760-000000000-00000}
}"""


def rhs(t, a, p):
    """Transit chain into a two-compartment disposition (amounts in mg)."""
    del t
    out = {"transit1": -p.ktr * a.transit1}
    for i in range(2, N_TRANSIT + 1):
        out[f"transit{i}"] = p.ktr * (a[f"transit{i - 1}"] - a[f"transit{i}"])
    k10, k12, k21 = p.cl / p.v1, p.q / p.v1, p.q / p.v2
    out["central"] = p.ktr * a[f"transit{N_TRANSIT}"] - (k10 + k12) * a.central + k21 * a.peripheral
    out["peripheral"] = k12 * a.central - k21 * a.peripheral
    return out


def build(*, error_form: str = "variance", rtol: float = 1e-8, atol: float = 1e-10) -> pkmix.Model:
    """The Monchaud 2012 model.

    Args:
        error_form: "variance" (default; SD = sqrt(1.6^2 + (0.069 f)^2), Tucuxi) or "sd".
        rtol, atol: ODE tolerances (amounts in mg; 1e-10 mg is far below any level).
    """
    check_error_form(error_form)

    def individual(p):
        return {
            "ktr": p.tvktr * p.cf_ktr ** p.CF * jnp.exp(p.eta_ktr),
            "v1": p.tvv1 * jnp.exp(p.eta_v1),
            "q": p.tvq * jnp.exp(p.eta_q),
            "v2": p.tvv2 * jnp.exp(p.eta_v2),
            "cl": p.tvcl * p.cyp_cl ** p.CYP3A5 * jnp.exp(p.eta_cl),
        }

    return pkmix.Model(
        theta={
            "tvktr": pkmix.Theta(7.06, lower=0),
            "cf_ktr": pkmix.Theta(0.47, lower=0),
            "tvv1": pkmix.Theta(136.0, lower=0),
            "tvq": pkmix.Theta(41.1, lower=0),
            "tvv2": pkmix.Theta(529.0, lower=0),
            "tvcl": pkmix.Theta(17.5, lower=0),
            "cyp_cl": pkmix.Theta(1.4, lower=0),
        },
        omega={k: sd**2 for k, sd in BSV_SD.items()},
        sigma={"add_sd": 1.6, "prop_sd": 0.069},
        individual=individual,
        structure=pkmix.ODE(COMPARTMENTS, rhs, parameters=("ktr", "cl", "v1", "q", "v2"),
                            rtol=rtol, atol=atol),
        observe=lambda a, p: 1000.0 * a.central / p.v1,
        error=pkmix.combined("add_sd", "prop_sd", form=error_form),
        covariates=["CF", "CYP3A5"],
        name=NAME,
    )


model = build()

METADATA = {
    "name": NAME,
    "drug": "tacrolimus",
    "citation": (
        "Monchaud C, de Winter BC, Knoop C, Estenne M, Reynaud-Gaubert M, Pison C, Stern M, Kessler R, "
        "Guillemain R, Marquet P, Rousseau A. Population pharmacokinetic modelling and design of a "
        "Bayesian estimator for therapeutic drug monitoring of tacrolimus in lung transplantation. "
        "Clin Pharmacokinet. 2012;51(3):175-186."
    ),
    "doi": "10.2165/11594760-000000000-00000",
    "bibtex": BIBTEX,
    "population": "Adult lung transplant recipients on oral twice-daily tacrolimus (France, Belgium)",
    "structure": "5 transit compartments (Erlang absorption, dose into CMT 1) -> two-compartment "
                 "disposition; central = CMT 6, peripheral = CMT 7; apparent parameters (/F)",
    "route": "oral",
    "units": {"dose": "mg", "time": "h", "concentration": "ug/L (= ng/mL, whole blood)",
              "cl": "L/h (apparent, CL/F)", "volume": "L (apparent, V/F)", "auc": "ug*h/L"},
    "covariate_units": {"CF": "1 = cystic fibrosis, 0 = not",
                        "CYP3A5": "1 = CYP3A5*1 carrier (expresser), 0 = non-expresser (*3/*3)"},
    "covariate_ranges": {"CF": (0, 1), "CYP3A5": (0, 1)},
    "population_ranges": {"AGE": (18.0, 70.0), "WT": (32.0, 95.0)},
    "covariate_ranges_source": "Tucuxi drug file domain (ch.tucuxi.tacrolimus.monchaud2012.tdd): adults "
                               "18-70 years, 32-95 kg",
    "conventions": {
        "omega": (
            "Given as SD of exponential etas (Tucuxi $OMEGA STANDARD; the paper's CV% read as omega): "
            "Ktr 0.427, V1 0.41, Q 0.717, V2 1.26, CL 0.537; omega^2 = SD^2, no correlations."
        ),
        "error": "Combined 1.6 ug/L + 6.9 %, SD = sqrt(1.6^2 + (0.069 f)^2) (Tucuxi's NONMEM file).",
        "covariates": "Ktr x 0.47 with cystic fibrosis; CL/F x 1.4 for CYP3A5 expressers (0/1 indicators).",
        "caps_floors": "none",
        "disagreements": (
            "One public encoding (Tucuxi). Its NONMEM file has 5 chain compartments with the dose in the "
            "first (followed); its drug file names the model 'erlang4' (4 transfers between the 5). "
            "Tucuxi's drug-file dose grid (100-800 'mg') is not usable for tacrolimus and is not copied."
        ),
        "bsv_form": "exponential, P = TV * exp(eta)",
    },
    "targets": {},
    "targets_note": "No target in the paper's drug file; trough targets are centre-specific.",
    "dosing": {"dose_step_mg": 0.5, "intervals_h": (12.0,), "route": "oral",
               "source": "twice-daily capsules (0.5, 1, 5 mg), usual practice; not from the paper"},
    "reference_implementations": {
        "tucuxi": "sotalya/tucuxi-drugs drugfiles/ch.tucuxi.tacrolimus.monchaud2012.tdd and "
                  "validation/comparative/data/nonmem_models/ch.tucuxi.tacrolimus.monchaud2012.*",
    },
}

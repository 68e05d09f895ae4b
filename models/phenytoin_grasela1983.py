"""Phenytoin with Michaelis-Menten elimination (Grasela et al. 1983), as an ODE model.

One-compartment IV model with saturable elimination::

    VM = 415 * (WT/70)^0.6 * exp(eta_vm)            mg/day  (/24: mg/h)
    KM = 5.7 * 0.57^(AGE < 15) * exp(eta_km)        mg/L
    V  = 0.7 * WT                                   L        (not from the paper, see below)
    dA/dt = -VM * C / (KM + C),  C = A / V           (mg/L; dose mg, time h)
    SD = sqrt(1^2 + (0.1 C)^2)                      (ASSUMED, see below)

Data columns: WT (kg), AGE (years). Doses to CMT 1 (central).

Where each number comes from:

* VM 415 mg/day for a 70-kg adult, VM proportional to WT^0.6, KM 5.7 mg/L, KM 43 %
  lower below 15 years (x 0.57), KM 23 % lower in Japanese patients
  (``build(japanese=True)``, x 0.77), BSV "CV 10 to 20 %" on VM (15 % taken) and
  "approximately 50 %" on KM: the paper's abstract (PubMed 6617043).
* V: the paper analysed steady-state levels only and does not estimate a volume;
  0.7 L/kg is the usual adult value of clinical pharmacokinetics texts (Bauer, Applied
  Clinical Pharmacokinetics, ch. "Phenytoin"). It only shapes the approach to steady
  state, not the steady-state level Css = KM R / (VM - R).
* Residual error: not published on the concentration scale (the paper's error is on
  the dosing rate); 1 mg/L + 10 % is ASSUMED here, a phenytoin assay's usual precision.

??? cite
    Grasela TH, Sheiner LB, Rambeck B, Boenigk HE, Dunlop A, Mullen PW, Wadsworth J,
    Richens A, Ishizaki T, Chiba K, Miura H, Minagawa K, Blain PG, Mucklow JC, Bacon CT,
    Rawlins M. Steady-state pharmacokinetics of phenytoin from routinely collected patient
    data. Clin Pharmacokinet. 1983;8(4):355-364. doi:10.2165/00003088-198308040-00006.
"""

from __future__ import annotations

import jax.numpy as jnp

import pkmix

from ._conventions import omega_from_cv

NAME = "phenytoin_grasela1983"

#: Phenytoin (free acid) molar mass, g/mol.
MOLAR_MASS = 252.27

#: ODE tolerances: 1e-7 relative is far below the assay and residual error (10 %), and
#: the regimen search integrates this ODE for every posterior draw and candidate regimen
#: (the engine's default 1e-10 makes a 2000-draw recommendation take minutes on a CPU).
ODE_RTOL = 1e-7
ODE_ATOL = 1e-9

#: Between-subject CVs from the abstract: VM "10 to 20 %" (the middle taken), KM "approximately 50 %".
BSV_CV = {"eta_vm": 0.15, "eta_km": 0.50}

BIBTEX = """@article{Grasela1983,
  author  = {Grasela, Thaddeus H. and Sheiner, Lewis B. and Rambeck, Bernhard and Boenigk, H. E. and Dunlop, A. and Mullen, P. W. and Wadsworth, J. and Richens, A. and Ishizaki, T. and Chiba, K. and Miura, H. and Minagawa, K. and Blain, P. G. and Mucklow, J. C. and Bacon, C. T. and Rawlins, M.},
  title   = {Steady-state pharmacokinetics of phenytoin from routinely collected patient data},
  journal = {Clinical Pharmacokinetics},
  year    = {1983},
  volume  = {8},
  number  = {4},
  pages   = {355--364},
  doi     = {10.2165/00003088-198308040-00006}
}"""


def mm_rhs(t, a, p):
    """Saturable elimination from the central compartment (amounts in mg, time in h)."""
    c = a.central / p.v
    return {"central": -p.vm * c / (p.km + c)}


def build(*, japanese: bool = False) -> pkmix.Model:
    """The Grasela 1983 model.

    Args:
        japanese: KM x 0.77 (the paper's estimate for Japanese patients).
    """

    def individual(p):
        child = p.AGE < 15.0
        km = p.tvkm * jnp.where(child, p.km_child, 1.0) * (p.km_japanese if japanese else 1.0)
        return {
            "vm": p.tvvm / 24.0 * (p.WT / 70.0) ** p.vm_wt * jnp.exp(p.eta_vm),
            "km": km * jnp.exp(p.eta_km),
            "v": p.v_per_kg * p.WT,
        }

    return pkmix.Model(
        theta={
            "tvvm": pkmix.Theta(415.0, lower=0),
            "vm_wt": 0.6,
            "tvkm": pkmix.Theta(5.7, lower=0),
            "km_child": 0.57,
            "km_japanese": 0.77,
            "v_per_kg": pkmix.Theta(0.7, lower=0),
        },
        omega={k: omega_from_cv(cv) for k, cv in BSV_CV.items()},
        sigma={"add_sd": 1.0, "prop_sd": 0.10},
        individual=individual,
        structure=pkmix.ODE(["central"], mm_rhs, parameters=("vm", "km", "v"), rtol=ODE_RTOL, atol=ODE_ATOL),
        observe=lambda a, p: a.central / p.v,
        error=pkmix.combined("add_sd", "prop_sd"),
        covariates=["WT", "AGE"],
        name=NAME,
    )


model = build()


def steady_state_concentration(daily_dose, wt=70.0, age=40.0, *, japanese=False):
    """The paper's steady-state relation Css = KM R / (VM - R) (mg/L) at the typical
    values, R the daily dose (mg/day); infinite when R >= VM (no steady state)."""
    vm = 415.0 * (wt / 70.0) ** 0.6
    km = 5.7 * (0.57 if age < 15 else 1.0) * (0.77 if japanese else 1.0)
    return km * daily_dose / (vm - daily_dose) if daily_dose < vm else float("inf")


METADATA = {
    "name": NAME,
    "drug": "phenytoin",
    "molar_mass": MOLAR_MASS,
    "citation": (
        "Grasela TH, Sheiner LB, Rambeck B, Boenigk HE, Dunlop A, Mullen PW, Wadsworth J, Richens A, "
        "Ishizaki T, Chiba K, Miura H, Minagawa K, Blain PG, Mucklow JC, Bacon CT, Rawlins M. "
        "Steady-state pharmacokinetics of phenytoin from routinely collected patient data. "
        "Clin Pharmacokinet. 1983;8(4):355-364."
    ),
    "doi": "10.2165/00003088-198308040-00006",
    "bibtex": BIBTEX,
    "population": (
        "322 patients (paediatric and adult, mean age 18.4 +/- 17.3 years, 53 % male) from Japan, "
        "England and Germany; 780 routine steady-state levels with their dosing rates"
    ),
    "structure": "one-compartment with Michaelis-Menten elimination (ODE), IV dose into CMT 1 (central)",
    "route": "intravenous",
    "units": {"dose": "mg", "time": "h", "concentration": "mg/L", "vm": "mg/h", "km": "mg/L",
              "volume": "L", "auc": "mg*h/L"},
    "covariate_units": {"WT": "kg (total body weight)", "AGE": "years"},
    # Mean age 18.4 +/- 17.3 y: children and adults; the abstract gives no min/max.
    "covariate_ranges": {"WT": (10.0, 120.0), "AGE": (1.0, 80.0)},
    "covariate_ranges_source": (
        "APPROXIMATE: the abstract reports mean age 18.4 +/- 17.3 years (children and adults) "
        "and no ranges; these bounds are the population it describes, not published limits"
    ),
    "conventions": {
        "omega": (
            "Abstract: CV 10-20 % on VM (15 % taken) and about 50 % on KM; omega^2 = log(1 + CV^2) "
            "= 0.0223 and 0.2231 (exponential etas)."
        ),
        "error": (
            "Not published on the concentration scale (steady-state dosing-rate model); "
            "SD = sqrt(1^2 + (0.10 f)^2) mg/L ASSUMED."
        ),
        "covariates": (
            "VM scales with (WT/70)^0.6; KM x 0.57 below 15 years; KM x 0.77 for Japanese patients "
            "(build(japanese=True)); V = 0.7 L/kg x WT (textbook value, the paper has no V)."
        ),
        "caps_floors": "none",
        "disagreements": (
            "One source (the abstract). V and the residual error are not the paper's (see above). "
            "No steady state exists for a daily dose >= VM: the level rises without bound."
        ),
        "bsv_form": "exponential, P = TV * exp(eta)",
    },
    "targets": {
        "trough": {"range": (10.0, 20.0), "unit": "mg/L",
                   "source": "usual total phenytoin range 10-20 mg/L (clinical texts), not from the paper"},
    },
    "dosing": {"dose_step_mg": 25.0, "dose_min_mg": 50.0, "dose_max_mg": 1000.0,
               "intervals_h": (8.0, 12.0, 24.0), "default_infusion_h": 0.5,
               "infusion_rate_max_mg_per_h": 3000.0,
               "source": "usual IV practice (at most 50 mg/min), not from the paper"},
    "reference_implementations": {
        "abstract": "PubMed 6617043 (Clin Pharmacokinet 1983;8:355): VM, KM, covariates and BSV",
    },
}

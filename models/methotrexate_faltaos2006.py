"""High-dose methotrexate in adults (Faltaos et al. 2006), levels in µmol/L.

Two-compartment IV model with inter-occasion (per cycle) variability on CL::

    CL = 7.1 * (SCR/67)^-0.43 * (AGE/62)^-0.22 * exp(eta_cl + kappa_cl)   L/h
    VC = 25.1 * exp(eta_vc)                                                L
    Q  = 0.15 * exp(eta_q)                                                 L/h
    VP = 2.7 * exp(eta_vp)                                                 L
    C  = A_central / VC * 1000 / 454.44   (µmol/L; dose mg, time h)
    SD = sqrt(0.015^2 + (0.46 C)^2)        (µmol/L)

Data columns: SCR (µmol/L), AGE (years); the occasion (course of treatment) is the
patient file's ``occasion`` of each dose and level. Doses to CMT 1 (central).

Every number is from mapbayr's encoding of the paper in the mapbayr validation study
(FelicienLL/mapbayr-CPTPSP-2021 @ 09fa67e7, ``mapbayr code/mrg_951.cpp``, the model also
listed in TDM_MODELS.md section 9): typical values, exponents, the OMEGA blocks
(CL-VC and Q-VP), IOV 0.027225 on CL, and the residual error (proportional variance
0.2116, additive variance 225 nmol^2/L^2). That encoding works in µg and nmol/L (its
factor 2.2 = 1000/454.44 nmol per µg); here doses are in mg and levels in µmol/L, so
the additive SD 15 nmol/L is 0.015 µmol/L.

??? cite
    Faltaos DW, Hulot JS, Urien S, Morel V, Kaloshi G, Fernandez C, Xuan KH, Leblond V,
    Lechat P. Population pharmacokinetic study of methotrexate in patients with lymphoid
    malignancy. Cancer Chemother Pharmacol. 2006;58(5):626-633. doi:10.1007/s00280-006-0202-x.
"""

from __future__ import annotations

import jax.numpy as jnp

import pkmix

NAME = "methotrexate_faltaos2006"

#: Methotrexate molar mass (g/mol): 1 mg/L = 1000/454.44 = 2.2005 µmol/L.
MOLAR_MASS = 454.44

BIBTEX = """@article{Faltaos2006,
  author  = {Faltaos, Demiana W. and Hulot, Jean S. and Urien, Saik and Morel, V{\\'e}ronique and Kaloshi, Gentian and Fernandez, Christine and Xuan, Khoa Hoang and Leblond, V{\\'e}ronique and Lechat, Philippe},
  title   = {Population pharmacokinetic study of methotrexate in patients with lymphoid malignancy},
  journal = {Cancer Chemotherapy and Pharmacology},
  year    = {2006},
  volume  = {58},
  number  = {5},
  pages   = {626--633},
  doi     = {10.1007/s00280-006-0202-x}
}"""


def build() -> pkmix.Model:
    """The Faltaos 2006 model (mapbayr's encoding, converted to mg and µmol/L)."""

    def individual(p):
        return {
            "cl": (p.tvcl * (p.SCR / 67.0) ** p.scr_cl * (p.AGE / 62.0) ** p.age_cl
                   * jnp.exp(p.eta_cl + p.kappa_cl)),
            "v1": p.tvv1 * jnp.exp(p.eta_v1),
            "q": p.tvq * jnp.exp(p.eta_q),
            "v2": p.tvv2 * jnp.exp(p.eta_v2),
        }

    return pkmix.Model(
        theta={
            "tvcl": pkmix.Theta(7.1, lower=0),
            "scr_cl": -0.43,
            "age_cl": -0.22,
            "tvv1": pkmix.Theta(25.1, lower=0),
            "tvq": pkmix.Theta(0.15, lower=0),
            "tvv2": pkmix.Theta(2.7, lower=0),
        },
        omega=[pkmix.Block(["eta_cl", "eta_v1"], [0.266256, 0.002401, 0.233289]),
               pkmix.Block(["eta_q", "eta_v2"], [0.430336, 0.084164, 0.4096])],
        iov=pkmix.IOV(occasion="OCC", kappa_cl=0.027225),
        sigma={"add_sd": 0.015, "prop_sd": 0.46},
        individual=individual,
        structure=pkmix.two_compartment(),
        observe=lambda a, p: a.central / p.v1 * (1000.0 / MOLAR_MASS),
        error=pkmix.combined("add_sd", "prop_sd"),
        covariates=["SCR", "AGE"],
        name=NAME,
    )


model = build()

METADATA = {
    "name": NAME,
    "drug": "methotrexate",
    "molar_mass": MOLAR_MASS,
    "citation": (
        "Faltaos DW, Hulot JS, Urien S, Morel V, Kaloshi G, Fernandez C, Xuan KH, Leblond V, Lechat P. "
        "Population pharmacokinetic study of methotrexate in patients with lymphoid malignancy. "
        "Cancer Chemother Pharmacol. 2006;58(5):626-633."
    ),
    "doi": "10.1007/s00280-006-0202-x",
    "bibtex": BIBTEX,
    "population": "Adults with lymphoid malignancy receiving high-dose IV methotrexate (Paris); median SCR "
                  "67 umol/L and age 62 years (the reference values of the covariate model)",
    "structure": "two-compartment, IV infusion into CMT 1 (central); IOV on CL between courses",
    "route": "intravenous",
    "units": {"dose": "mg", "time": "h", "concentration": "umol/L", "cl": "L/h", "volume": "L",
              "auc": "umol*h/L"},
    "covariate_units": {"SCR": "umol/L", "AGE": "years"},
    "covariate_ranges": {"AGE": (18.0, 85.0)},
    "covariate_ranges_source": (
        "APPROXIMATE: adults; the encoding gives only the reference values (SCR 67 umol/L, 62 years), "
        "not the published ranges"
    ),
    "conventions": {
        "omega": (
            "OMEGA BLOCK(CL, VC) 0.266256, 0.002401, 0.233289; BLOCK(Q, VP) 0.430336, 0.084164, 0.4096 "
            "(variances of exponential etas); IOV on CL 0.027225 per course (OCC)."
        ),
        "error": (
            "Proportional variance 0.2116 (SD 46 %) + additive variance 225 (nmol/L)^2 (SD 15 nmol/L = "
            "0.015 umol/L), two EPS: SD = sqrt(a^2 + (b f)^2)."
        ),
        "covariates": "CL x (SCR/67)^-0.43 x (AGE/62)^-0.22, SCR in umol/L.",
        "caps_floors": "none",
        "disagreements": (
            "One public encoding (mapbayr-CPTPSP-2021, simulated validation study). Units converted: "
            "doses mg (not ug), levels umol/L (not nmol/L); molar mass 454.44 g/mol."
        ),
        "bsv_form": "exponential, P = TV * exp(eta + kappa)",
    },
    "targets": {
        "conc": {"high": 1.0, "time": 48.0, "unit": "umol/L", "text": "conc=:1,time=48",
                 "source": "usual HD-MTX rescue threshold (< 1 umol/L at 48 h after the start of the "
                           "infusion), not from the paper; a timed target, so recommend needs it given "
                           "explicitly (target='conc=:1,time=48')"},
    },
    "dosing": {"dose_step_mg": 100.0, "dose_min_mg": 500.0, "dose_max_mg": 12000.0, "intervals_h": (168.0,),
               "default_infusion_h": 4.0,
               "source": "high-dose courses (e.g. 3 g/m2 over 4 h), not from the paper"},
    "reference_implementations": {
        "mapbayr": "FelicienLL/mapbayr-CPTPSP-2021 'mapbayr code/mrg_951.cpp' and 'nonmem code/run951.mod'",
    },
}

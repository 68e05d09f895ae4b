"""Gentamicin in preterm and term neonates (Fuchs et al. 2014).

Two-compartment IV model on birth-size and maturation covariates::

    CL = 0.0886 * (BW/2.17)^0.75 * (1 + 1.87561 (GA - 34)/34) * (1 + 0.0553356 (PNA - 1)/1)
         * exp(eta_cl)                                                         L/h
    V1 = 0.905 * (BW/2.17) * (1 - 0.920913 (GA - 34)/34) * exp(eta_v1)         L
    Q  = 0.161 * (BW/2.17)^0.75                                                L/h
    V2 = 0.558 * (BW/2.17)                                                     L
    C  = A_central / V1   (mg/L; dose mg, time h)
    SD = sqrt(0.0999^2 + (0.178 C)^2)

Data columns: BW (current body weight, kg), GA (gestational age at birth, weeks), PNA
(postnatal age, days; time-varying). Doses to CMT 1 (central). Each factor is floored
at 1e-3 L or L/h as the source encoding does (it never binds in the validated ranges).

Every number is from Tucuxi's encoding of the paper (the drug file
``ch.tucuxi.gentamicin.fuchs2014`` in Tucuxi-core's unit tests,
``BuildGentamicinFuchs2014``): typical values at the median neonate (BW 2.17 kg, GA 34
weeks, PNA 1 day), covariate effects, BSV and the residual error. The paper itself was
not available to this encoding: check the BSV of CL (see METADATA) against it.

??? cite
    Fuchs A, Guidi M, Giannoni E, Werner D, Buclin T, Widmer N, Csajka C. Population
    pharmacokinetic study of gentamicin in a large cohort of premature and term
    neonates. Br J Clin Pharmacol. 2014;78(5):1090-1101. doi:10.1111/bcp.12444.
"""

from __future__ import annotations

import jax.numpy as jnp

import pkmix

from ._conventions import covariance_from_sd_correlation

NAME = "gentamicin_fuchs2014"

#: Gentamicin C1 molar mass used by the source encoding (g/mol).
MOLAR_MASS = 477.596

#: Exponential BSV as SDs (Tucuxi: CL 0.893, V1 0.184, correlation 0.275; Q and V2 none).
BSV_SD = {"eta_cl": 0.893, "eta_v1": 0.184}
BSV_CORRELATION = [[1.0, 0.275], [0.275, 1.0]]

BIBTEX = """@article{Fuchs2014,
  author  = {Fuchs, Aline and Guidi, Monia and Giannoni, Eric and Werner, Dominique and Buclin, Thierry and Widmer, Nicolas and Csajka, Chantal},
  title   = {Population pharmacokinetic study of gentamicin in a large cohort of premature and term neonates},
  journal = {British Journal of Clinical Pharmacology},
  year    = {2014},
  volume  = {78},
  number  = {5},
  pages   = {1090--1101},
  doi     = {10.1111/bcp.12444}
}"""

#: The median neonate of the study, where the typical values hold.
REFERENCE = {"BW": 2.17, "GA": 34.0, "PNA": 1.0}


def build(*, cl_bsv_sd: float = BSV_SD["eta_cl"]) -> pkmix.Model:
    """The Fuchs 2014 model.

    Args:
        cl_bsv_sd: SD of eta_cl (default Tucuxi's 0.893; see METADATA conventions).
    """

    def individual(p):
        size = p.BW / REFERENCE["BW"]
        floor = 1e-3
        cl = (p.tvcl * size ** p.bw_cl * (1.0 + p.ga_cl * (p.GA - REFERENCE["GA"]) / REFERENCE["GA"])
              * (1.0 + p.pna_cl * (p.PNA - REFERENCE["PNA"]) / REFERENCE["PNA"]))
        v1 = p.tvv1 * size * (1.0 + p.ga_v1 * (p.GA - REFERENCE["GA"]) / REFERENCE["GA"])
        return {
            "cl": jnp.maximum(cl, floor) * jnp.exp(p.eta_cl),
            "v1": jnp.maximum(v1, floor) * jnp.exp(p.eta_v1),
            "q": p.tvq * size ** p.bw_cl,
            "v2": p.tvv2 * size,
        }

    sds = [cl_bsv_sd, BSV_SD["eta_v1"]]
    return pkmix.Model(
        theta={
            "tvcl": pkmix.Theta(0.0886, lower=0),
            "bw_cl": 0.75,
            "ga_cl": 1.87561,
            "pna_cl": 0.0553356,
            "tvv1": pkmix.Theta(0.905, lower=0),
            "ga_v1": -0.920913,
            "tvq": pkmix.Theta(0.161, lower=0),
            "tvv2": pkmix.Theta(0.558, lower=0),
        },
        omega=[pkmix.Block(["eta_cl", "eta_v1"], covariance_from_sd_correlation(sds, BSV_CORRELATION))],
        sigma={"add_sd": 0.0999, "prop_sd": 0.178},
        individual=individual,
        structure=pkmix.two_compartment(),
        observe=lambda a, p: a.central / p.v1,
        error=pkmix.combined("add_sd", "prop_sd"),
        covariates=["BW", "GA", "PNA"],
        name=NAME,
    )


model = build()

METADATA = {
    "name": NAME,
    "drug": "gentamicin",
    "molar_mass": MOLAR_MASS,
    "citation": (
        "Fuchs A, Guidi M, Giannoni E, Werner D, Buclin T, Widmer N, Csajka C. Population "
        "pharmacokinetic study of gentamicin in a large cohort of premature and term neonates. "
        "Br J Clin Pharmacol. 2014;78(5):1090-1101."
    ),
    "doi": "10.1111/bcp.12444",
    "bibtex": BIBTEX,
    "population": (
        "Preterm and term neonates (Lausanne university hospital NICU) receiving IV gentamicin; "
        "median birth weight 2.17 kg, gestational age 34 weeks, postnatal age 1 day"
    ),
    "structure": "two-compartment, IV infusion into CMT 1 (central)",
    "route": "intravenous",
    "units": {"dose": "mg", "time": "h", "concentration": "mg/L", "cl": "L/h", "volume": "L",
              "auc": "mg*h/L"},
    "covariate_units": {"BW": "kg (current body weight)", "GA": "weeks (gestational age at birth)",
                        "PNA": "days (postnatal age)"},
    "covariate_ranges": {"BW": (0.44, 4.8), "GA": (24.0, 42.0), "PNA": (0.0, 30.0)},
    "covariate_ranges_source": (
        "APPROXIMATE: a NICU population of preterm (from 24 weeks) and term neonates in their first "
        "month; the encoding's own domain text is a copy from an adult model, so these bounds are "
        "the population the paper describes, not its published min/max"
    ),
    "conventions": {
        "omega": (
            "Tucuxi gives exponential BSV as SDs: CL 0.893, V1 0.184, correlation 0.275 (no BSV on Q, V2); "
            "cov = 0.893 * 0.184 * 0.275. The CL SD is much larger than usual for neonatal "
            "gentamicin (~0.3): build(cl_bsv_sd=...) to use another value; check against the paper."
        ),
        "error": "Combined 0.0999 mg/L + 17.8 % (Tucuxi 'mixed': SD = sqrt(a^2 + (b f)^2)).",
        "covariates": (
            "CL x (BW/2.17)^0.75 x (1 + 1.87561 (GA - 34)/34) x (1 + 0.0553356 (PNA - 1)); "
            "V1 x (BW/2.17) x (1 - 0.920913 (GA - 34)/34); Q x (BW/2.17)^0.75; V2 x BW/2.17."
        ),
        "caps_floors": "CL and V1 floored at 0.001 (as the encoding; linear GA/PNA terms)",
        "disagreements": "One public encoding (Tucuxi-core's test drug file); domain text in it is wrong (adult).",
        "bsv_form": "exponential, P = TV * exp(eta)",
    },
    "targets": {
        "peak": {"range": (6.0, 10.0), "best": 8.0, "unit": "mg/L",
                 "source": "Tucuxi drug file (peak 0.5-3 h after the start of the dose; the default "
                           "target is the level at the end of the infusion: 'peak=6:10,time=1' for 1 h)"},
        "trough": {"range": (0.5, 1.5), "best": 1.0, "unit": "mg/L", "source": "Tucuxi drug file"},
    },
    "dosing": {"dose_step_mg": 0.5, "dose_min_mg": 1.0, "dose_max_mg": 25.0,
               "intervals_h": (24.0, 36.0, 48.0), "default_infusion_h": 0.5,
               "source": "Tucuxi drug file (1-25 mg by 0.5 mg; 30-min infusion; intervals 8-72 h)"},
    "reference_implementations": {
        "tucuxi": "Tucuxi-core unit test drug file BuildGentamicinFuchs2014 (ch.tucuxi.gentamicin.fuchs2014)",
    },
}

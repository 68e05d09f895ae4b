"""Units of the patient record: conversion tables, plausibility limits, and the
errors every reader and binder raises (`PatientError`, `PatientWarning`)."""

from __future__ import annotations

import math
import re
from typing import Mapping

class PatientError(ValueError):
    """A fault in a patient's record. ``field`` names where (``doses[2].duration``)."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class PatientWarning(UserWarning):
    """The patient is usable but outside what the model was built on."""


# ----------------------------------------------------------------------------- units
# Factors to a reference unit, per dimension. A value v in unit u is v * f[u] in the
# reference unit; conversion between two units of one dimension is v * f[src] / f[dst].
_MASS = {"mg": 1.0, "g": 1000.0, "ug": 1e-3, "mcg": 1e-3, "ng": 1e-6, "kg": 1e6}
_CONCENTRATION = {
    "mg/l": 1.0, "ug/ml": 1.0, "mcg/ml": 1.0, "g/l": 1000.0, "mg/ml": 1000.0,
    "ug/l": 1e-3, "mcg/l": 1e-3, "ng/ml": 1e-3, "ng/l": 1e-6, "pg/ml": 1e-6, "mg/dl": 10.0,
}
_TIME = {"h": 1.0, "hr": 1.0, "hrs": 1.0, "hour": 1.0, "hours": 1.0, "min": 1 / 60, "minute": 1 / 60,
         "minutes": 1 / 60, "d": 24.0, "day": 24.0, "days": 24.0, "week": 168.0, "weeks": 168.0}
_WEIGHT = {"kg": 1.0, "g": 1e-3, "lb": 0.45359237, "lbs": 0.45359237}
_HEIGHT = {"cm": 1.0, "m": 100.0, "mm": 0.1, "in": 2.54, "inch": 2.54, "inches": 2.54}
_AGE = {"years": 1.0, "year": 1.0, "y": 1.0, "yr": 1.0, "yrs": 1.0, "months": 1 / 12, "month": 1 / 12,
        "weeks": 7 / 365.25, "week": 7 / 365.25, "wk": 7 / 365.25, "days": 1 / 365.25, "day": 1 / 365.25}
# Serum creatinine: 1 mg/dL = 88.42 umol/L (the factor of pkmix.dosing.covariates).
_CREATININE = {"mg/dl": 1.0, "umol/l": 1 / 88.42, "mmol/l": 1000 / 88.42, "mg/l": 0.1}
_CLEARANCE = {"ml/min": 1.0, "l/h": 1000 / 60, "ml/h": 1 / 60, "l/min": 1000.0, "l/d": 1000 / 1440}
_PRESSURE = {"mmhg": 1.0, "kpa": 7.50062}
_DIMENSIONS = (_WEIGHT, _HEIGHT, _AGE, _CREATININE, _CLEARANCE, _PRESSURE)

# Plausibility limits (in kg, years, cm, mg/dL): beyond them a value is a typing error,
# not an unusual patient. Applied to covariates whose unit says what they are.
_IMPOSSIBLE = {
    id(_WEIGHT): ("weight", 0.2, 700.0, "kg"),
    id(_AGE): ("age", 0.0, 125.0, "years"),
    id(_HEIGHT): ("height", 20.0, 280.0, "cm"),
    id(_CREATININE): ("serum creatinine", 0.0, 30.0, "mg/dl"),
}
# Covariate names that are known to be body weight, age, height or creatinine even when
# the model does not state a unit.
_NAME_DIMENSION = {
    "WT": _WEIGHT, "BW": _WEIGHT, "TBW": _WEIGHT, "WEIGHT": _WEIGHT, "AGE": _AGE,
    "HT": _HEIGHT, "HEIGHT": _HEIGHT, "SCR": _CREATININE, "CREAT": _CREATININE,
}


def _norm_unit(unit: str) -> str:
    """'µmol/L (serum)' -> 'umol/l': the first word, lower case, micro signs spelt out."""
    text = str(unit).strip()
    text = re.split(r"\s|\(", text, maxsplit=1)[0] if text else text
    return text.replace("µ", "u").replace("μ", "u").replace("·", "*").lower()


def _dimension_of(unit: str | None):
    if unit is None:
        return None
    u = _norm_unit(unit)
    for table in _DIMENSIONS:
        if u in table:
            return table
    return None


def convert(value: float, unit: str, to: str, table: Mapping[str, float], field: str) -> float:
    """``value`` from ``unit`` to ``to`` within one dimension ``table``.

    Raises:
        PatientError: ``unit`` is not one of the table's units.
    """
    src, dst = _norm_unit(unit), _norm_unit(to)
    if src not in table:
        raise PatientError(field, f"unit '{unit}' is not a known unit here; expected one of "
                                  f"{', '.join(sorted(table))} (the model uses {to})")
    if dst not in table:
        raise PatientError(field, f"the model's unit '{to}' is not one pkmix can convert to")
    return float(value) * table[src] / table[dst]


def _categories(description: str) -> dict[str, float] | None:
    """'1 = male, 0 = female' -> {'male': 1, 'female': 0}; None when not of that form."""
    pairs = re.findall(r"(-?\d+(?:\.\d+)?)\s*=\s*([A-Za-z][^,;]*)", str(description))
    if not pairs:
        return None
    out: dict[str, float] = {}
    for number, label in pairs:
        label = label.strip().lower()
        out[label] = float(number)
        first = re.split(r"[\s(]", label)[0]
        out.setdefault(first, float(number))
    return out


_SYNONYMS = {"m": "male", "man": "male", "f": "female", "woman": "female", "yes": "1", "no": "0",
             "true": "1", "false": "0"}



_REFERENCE_UNIT = {id(_WEIGHT): "kg", id(_AGE): "years", id(_HEIGHT): "cm"}


# Molar concentrations, in umol/L. 1 umol/L of a drug of molar mass M g/mol is M ug/L,
# i.e. M / 1000 mg/L.
_MOLAR = {"mol/l": 1e6, "mmol/l": 1e3, "umol/l": 1.0, "nmol/l": 1e-3, "pmol/l": 1e-6, "mm": 1e3, "um": 1.0,
          "nm": 1e-3}


def convert_concentration(value: float, unit: str, to: str, field: str, molar_mass: float | None = None) -> float:
    """A concentration from ``unit`` to ``to``; mass (mg/L, ...) and molar (umol/L, ...)
    units convert through ``molar_mass`` (g/mol, the model's METADATA['molar_mass']).

    Raises:
        PatientError: an unknown unit, or a molar unit against a mass unit without a molar mass.
    """
    src, dst = _norm_unit(unit), _norm_unit(to)
    if src in _CONCENTRATION and dst in _CONCENTRATION:
        return convert(value, unit, to, _CONCENTRATION, field)
    if src in _MOLAR and dst in _MOLAR:
        return float(value) * _MOLAR[src] / _MOLAR[dst]
    known = sorted(set(_CONCENTRATION) | set(_MOLAR))
    if src not in _MOLAR and src not in _CONCENTRATION:
        raise PatientError(field, f"unit '{unit}' is not a known unit here; expected one of "
                                  f"{', '.join(known)} (the model uses {to})")
    if dst not in _MOLAR and dst not in _CONCENTRATION:
        raise PatientError(field, f"the model's concentration unit '{to}' is not one pkmix can convert to")
    if molar_mass is None:
        raise PatientError(field, f"'{unit}' to the model's '{to}' needs the drug's molar mass, and the model's "
                                  "METADATA has no 'molar_mass' (g/mol): give the level in the model's unit")
    m = float(molar_mass)
    if not (math.isfinite(m) and m > 0):
        raise PatientError("model", f"METADATA['molar_mass'] must be a positive number of g/mol, got {molar_mass!r}")
    if src in _MOLAR:  # molar -> mass
        mg_per_l = float(value) * _MOLAR[src] * m / 1000.0
        return mg_per_l / _CONCENTRATION[dst]
    umol_per_l = float(value) * _CONCENTRATION[src] * 1000.0 / m
    return umol_per_l / _MOLAR[dst]

"""Derived covariates used by published population PK models (body size, renal function).

Every function is written with ``jax.numpy`` so it can be called inside a model's
``individual`` function (traced, vmapped, differentiated). Called with concrete values
(Python numbers, NumPy or concrete JAX arrays) the inputs are checked first and an
impossible value (a negative weight, a zero creatinine, a sex code other than 0/1)
raises ``ValueError`` naming the argument; under ``jit``/``vmap`` the values are
tracers and are not checked (the patient-input layer validates them before).

Conventions (the same for all functions):

* weight in kg, height in cm, age in years;
* ``sex``: 1 = male, 0 = female (NONMEM's usual coding, also PKPDsim's and Tucuxi's);
* serum creatinine with an explicit unit, ``"mg/dL"`` or ``"umol/L"``
  (1 mg/dL = 88.42 µmol/L, the factor used by clinPK and Tucuxi).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

#: µmol/L of creatinine in 1 mg/dL (molar mass 113.12 g/mol: 10 000 / 113.12 = 88.40;
#: 88.42 is the value clinPK and most clinical references use).
SCR_UMOL_PER_MGDL = 88.42

_INCH_CM = 2.54

_SCR_UNITS = {"mg/dl": "mg/dL", "umol/l": "umol/L", "µmol/l": "umol/L", "micromol/l": "umol/L"}

__all__ = [
    "array_module",
    "SCR_UMOL_PER_MGDL",
    "scr_to_mgdl",
    "cockcroft_gault",
    "bmi",
    "bsa",
    "ideal_body_weight",
    "adjusted_body_weight",
    "lean_body_weight",
    "fat_free_mass",
]


# ----------------------------------------------------------------------------- checks
def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check(name: str, value, *, lower=None, upper=None, lower_inclusive=False, what=""):
    """Raise ValueError when a concrete ``value`` is outside (lower, upper)."""
    if not _is_concrete(value):
        return
    arr = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} = {value!r} is not a finite number")
    if lower is not None:
        bad = arr < lower if lower_inclusive else arr <= lower
        if np.any(bad):
            rel = ">=" if lower_inclusive else ">"
            raise ValueError(f"{name} = {value!r} is impossible: must be {rel} {lower}{what}")
    if upper is not None and np.any(arr > upper):
        raise ValueError(f"{name} = {value!r} is impossible: must be <= {upper}{what}")


def _check_sex(sex):
    if not _is_concrete(sex):
        return
    arr = np.asarray(sex, dtype=float)
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"sex = {sex!r}: expected 1 (male) or 0 (female)")


def _unit(scr_unit: str) -> str:
    if not isinstance(scr_unit, str) or scr_unit.strip().lower() not in _SCR_UNITS:
        raise ValueError(f"scr_unit = {scr_unit!r}: expected 'mg/dL' or 'umol/L'")
    return _SCR_UNITS[scr_unit.strip().lower()]


def array_module(*values):
    """NumPy for concrete values (a patient's covariates: nothing is dispatched to JAX,
    so nothing compiles), jax.numpy when any is traced (inside a model's
    ``individual`` function). For covariate arithmetic that serves both."""
    return jnp if any(isinstance(v, jax.core.Tracer) for v in values) else np


def _f64(*values):
    """(xp, values as float64 arrays of ``array_module(*values)``)."""
    xp = array_module(*values)
    return (xp, *(xp.asarray(v, dtype=xp.float64) for v in values))


# ------------------------------------------------------------------------ renal function
def scr_to_mgdl(scr, scr_unit: str):
    """Serum creatinine in mg/dL from a value in ``scr_unit`` ("mg/dL" or "umol/L").

    Raises:
        ValueError: unknown unit, or (concrete input) a creatinine that is not positive.
    """
    unit = _unit(scr_unit)
    _check("scr", scr, lower=0, what=f" {unit}")
    _, scr = _f64(scr)
    return scr if unit == "mg/dL" else scr / SCR_UMOL_PER_MGDL


def cockcroft_gault(scr, age, weight, sex, *, scr_unit: str):
    """Creatinine clearance (mL/min) by the Cockcroft-Gault equation.

    CrCL = (140 - age) * weight / (72 * SCR[mg/dL]), times 0.85 for women.

    With SCR in µmol/L this is (140 - age) * weight * 1.23 / SCR for men (1.04 for
    women), the form Tucuxi and UK sources write (88.42/72 = 1.228).

    Source: Cockcroft DW, Gault MH. Prediction of creatinine clearance from serum
    creatinine. Nephron 1976;16(1):31-41. doi:10.1159/000180580. Checked against
    InsightRX/clinPK ``calc_egfr(method = "cockcroft_gault")``.

    No cap or floor is applied: models that cap CrCL (e.g. at 150 mL/min) or floor
    SCR (e.g. at 1 mg/dL in the elderly) do so themselves, as their papers say.

    Args:
        scr: serum creatinine, in ``scr_unit``.
        age: years (the equation was derived in adults, 18-92 years).
        weight: kg (total body weight unless the model says otherwise; pass IBW or
            adjusted weight for the "ideal"/"adjusted" variants).
        sex: 1 male, 0 female.
        scr_unit: "mg/dL" or "umol/L" (required: a wrong unit changes CrCL 88-fold).

    Returns:
        CrCL in mL/min (negative only if age > 140, which is rejected for concrete input).

    Raises:
        ValueError: unknown unit; concrete SCR <= 0, weight <= 0, age < 0 or >= 140, sex not 0/1.
    """
    scr_mgdl = scr_to_mgdl(scr, scr_unit)
    _check("age", age, lower=0, upper=139.999, lower_inclusive=True, what=" years")
    _check("weight", weight, lower=0, upper=700, what=" kg")
    _check_sex(sex)
    xp, age, weight, sex = _f64(age, weight, sex)
    female_factor = xp.where(sex >= 0.5, 1.0, 0.85)
    return (140.0 - age) * weight / (72.0 * scr_mgdl) * female_factor


# ----------------------------------------------------------------------------- body size
def _check_body(weight, height):
    _check("weight", weight, lower=0, upper=700, what=" kg")
    _check("height", height, lower=0, upper=300, what=" cm")


def bmi(weight, height):
    """Body-mass index (kg/m²) = weight / (height/100)².

    Source: Quetelet's index (Keys A et al., J Chronic Dis 1972;25:329-343).
    Checked against clinPK ``calc_bmi``.

    Args:
        weight: kg.
        height: cm.
    """
    _check_body(weight, height)
    _, weight, height = _f64(weight, height)
    return weight / (height / 100.0) ** 2


def bsa(weight, height, *, method: str = "mosteller"):
    """Body surface area (m²).

    * ``"mosteller"``: sqrt(height[cm] * weight[kg] / 3600). Mosteller RD, Simplified
      calculation of body-surface area. N Engl J Med 1987;317(17):1098.
      doi:10.1056/NEJM198710223171717.
    * ``"dubois"``: 0.007184 * weight^0.425 * height^0.725. Du Bois D, Du Bois EF, A
      formula to estimate the approximate surface area if height and weight be known.
      Arch Intern Med 1916;17:863-871.

    Args:
        weight: kg.
        height: cm.
        method: "mosteller" (default) or "dubois".

    Raises:
        ValueError: unknown method; impossible concrete weight or height.
    """
    m = method.lower().replace(" ", "").replace("_", "")
    if m not in ("mosteller", "dubois"):
        raise ValueError(f"bsa method {method!r}: expected 'mosteller' or 'dubois'")
    _check_body(weight, height)
    xp, weight, height = _f64(weight, height)
    if m == "mosteller":
        return xp.sqrt(height * weight / 3600.0)
    return 0.007184 * weight**0.425 * height**0.725


def ideal_body_weight(height, sex):
    """Ideal body weight (kg) by Devine: 50 kg (men) or 45.5 kg (women) + 2.3 kg per
    inch over 5 feet (extrapolated linearly below 5 feet, as clinPK's ``ibw_devine``).

    Source: Devine BJ. Gentamicin therapy. Drug Intell Clin Pharm 1974;8:650-655.
    Defined for adults.

    Args:
        height: cm.
        sex: 1 male, 0 female.
    """
    _check("height", height, lower=0, upper=300, what=" cm")
    _check_sex(sex)
    xp, height, sex = _f64(height, sex)
    base = xp.where(sex >= 0.5, 50.0, 45.5)
    return base + 2.3 * (height / _INCH_CM - 60.0)


def adjusted_body_weight(weight, ibw, *, factor: float = 0.4):
    """Adjusted body weight (kg) = IBW + factor * (weight - IBW), the dosing weight of
    obese patients (factor 0.4 for aminoglycosides: Bauer LA, Edwards WA, Dellinger EP,
    Simonowitz DA. Eur J Clin Pharmacol 1983;24:643-647).

    Args:
        weight: total body weight, kg.
        ibw: ideal body weight, kg (``ideal_body_weight``).
        factor: fraction of the excess weight counted (0-1).
    """
    if not 0.0 <= float(factor) <= 1.0:
        raise ValueError(f"factor = {factor!r}: expected a fraction between 0 and 1")
    _check("weight", weight, lower=0, upper=700, what=" kg")
    _check("ibw", ibw, lower=0, upper=700, what=" kg")
    _, weight, ibw = _f64(weight, ibw)
    return ibw + factor * (weight - ibw)


def lean_body_weight(weight, height, sex, *, method: str = "james"):
    """Lean body weight (kg).

    * ``"james"``: men 1.1 W - 128 (W/H)², women 1.07 W - 148 (W/H)² (H in cm).
      James WPT, Research on obesity. London: HMSO; 1976. (Known to fall at high BMI.)
    * ``"boer"``: men 0.407 W + 0.267 H - 19.2, women 0.252 W + 0.473 H - 48.3.
      Boer P. Estimated lean body mass as an index for normalization of body fluid
      volumes in humans. Am J Physiol 1984;247:F632-F636.

    Checked against clinPK ``calc_lbw``.

    Args:
        weight: kg.
        height: cm.
        sex: 1 male, 0 female.
        method: "james" (default) or "boer".
    """
    m = method.lower()
    if m not in ("james", "boer"):
        raise ValueError(f"lean_body_weight method {method!r}: expected 'james' or 'boer'")
    _check_body(weight, height)
    _check_sex(sex)
    xp, w, h, sex = _f64(weight, height, sex)
    male = sex >= 0.5
    if m == "james":
        return xp.where(male, 1.1 * w - 128.0 * (w / h) ** 2, 1.07 * w - 148.0 * (w / h) ** 2)
    return xp.where(male, 0.407 * w + 0.267 * h - 19.2, 0.252 * w + 0.473 * h - 48.3)


def fat_free_mass(weight, height, sex):
    """Fat-free mass (kg) by Janmahasatian et al.

    FFM = 9270 W / (6680 + 216 BMI) for men, 9270 W / (8780 + 244 BMI) for women,
    with BMI = W / (H/100)².

    Source: Janmahasatian S, Duffull SB, Ash S, Ward LC, Byrne NM, Green B.
    Quantification of lean bodyweight. Clin Pharmacokinet 2005;44(10):1051-1065.
    doi:10.2165/00003088-200544100-00004. Checked against clinPK ``calc_ffm`` /
    ``ffm_janmahasatian_green``. Used by Hennig 2013 (tobramycin).

    Args:
        weight: kg.
        height: cm.
        sex: 1 male, 0 female.
    """
    _check_sex(sex)
    b = bmi(weight, height)
    xp, w, sex = _f64(weight, sex)
    male = sex >= 0.5
    return xp.where(male, 9270.0 * w / (6680.0 + 216.0 * b), 9270.0 * w / (8780.0 + 244.0 * b))

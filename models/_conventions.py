"""Conversions between the ways papers and public encodings report variability.

Kept in one place so every model file states its conversion by name and the tests can
check the numbers it produces.
"""

from __future__ import annotations

import math

#: How a published between-subject CV% is turned into the variance of an exponential eta.
#: "log": omega^2 = log(1 + CV^2), exact for a log-normal parameter (its CV is then the
#: published CV); "square": omega^2 = CV^2, the first-order approximation (NONMEM output
#: often reports CV% as 100*sqrt(omega^2), which this inverts).
OMEGA_CONVENTIONS = ("log", "square")


def omega_from_cv(cv: float, convention: str = "log") -> float:
    """Variance of an exponential eta from a between-subject CV given as a fraction."""
    if convention == "log":
        return math.log1p(cv * cv)
    if convention == "square":
        return cv * cv
    raise ValueError(f"omega convention {convention!r}: expected one of {OMEGA_CONVENTIONS}")


def covariance_from_sd_correlation(sds, correlation):
    """Full covariance matrix (nested lists) from SDs and a correlation matrix
    (NONMEM's ``$OMEGA STANDARD CORRELATION BLOCK``)."""
    n = len(sds)
    return [[sds[i] * sds[j] * correlation[i][j] for j in range(n)] for i in range(n)]


def check_error_form(form: str) -> str:
    if form not in ("variance", "sd"):
        raise ValueError(f"error form {form!r}: expected 'variance' (SD = sqrt(a^2 + (b f)^2)) "
                         "or 'sd' (SD = a + b f)")
    return form

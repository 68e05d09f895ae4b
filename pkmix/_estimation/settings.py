"""What a fit is asked to do (``FitSettings``) and why it stopped (``RESULTS``).

One settings object travels from ``pkmix.fit``/``evaluate``/``fit_batch`` through the
compiled loop (``engine.fit_program``) to the optimiser's step (``outer.step``) and
the inner eta solve. The stopping reasons and their messages are written here once:
the compiled loop returns a code, ``verdict`` turns it into the user's answer.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from . import inner

COVARIANCE_KINDS = ("sandwich", "r", "s", "none")

# A line search stopped at the OFV's rounding noise (about 1e-9 with inner.polish) is at
# a minimum when the quadratic models predict a gain below this (OFV units).
NEGLIGIBLE_OFV_GAIN = 1e-4


class RESULTS(enum.IntEnum):
    """Why the fit's loop stopped (as in diffrax's ``RESULTS``: a code the compiled
    program returns, with its message beside it)."""

    def __new__(cls, code: int, message: str):
        member = int.__new__(cls, code)
        member._value_ = code
        member.message = message
        return member

    running = (-1, "running")
    gradient = (0, "converged: gradient below tolerance")
    no_progress = (1, "converged: objective no longer changes")
    max_iter = (2, "not converged: iteration limit reached")
    nonfinite = (3, "not converged: objective or gradient not finite at the initial estimates")
    no_descent = (4, "stopped: the line search found no lower objective")


class FitSettings(NamedTuple):
    """Tolerances and limits of the outer (L-BFGS) and inner (eta mode) problems, and
    the covariance step. ``max_iter`` and ``covariance`` are run-time inputs of the
    compiled loop (changing them compiles nothing); the other fields are compiled in
    (``compiled``)."""

    max_iter: int = 500
    gtol: float = 1e-3  # on the unconstrained scale, in OFV units
    ftol: float = 1e-10  # relative change of OFV regarded as no change
    patience: int = 5
    inner_max_iter: int = inner.MAX_ITER
    inner_tol: float = inner.TOL
    memory_size: int = 10
    armijo: float = 1e-4
    min_step: float = 1e-12
    # The first direction (L-BFGS without memory: the metric's Newton step, or the
    # negative gradient where there is no metric) is scaled so no entry moves more than
    # this on the unconstrained scale: an unscaled first trial of a 2-cmt fit moved V1
    # twelve-fold and the inner solve spent 100-200 passes on modes out there
    # (benchmarks/README.md has the measurements).
    first_step: float = 0.1
    # Later trials move no entry more than this many times the longest entry of the
    # step just accepted: early L-BFGS steps overshoot (benchmarks/README.md).
    max_growth: float = 10.0
    # Precondition L-BFGS by the per-subject gradients' information estimate (see
    # ``outer.information_metric``); False: L-BFGS on the plain unconstrained scale.
    precondition: bool = True
    # "sandwich" (R^-1 S R^-1, NONMEM's default), "r", "s" or "none".
    covariance: str = "sandwich"
    # Rows of the iteration history the loop keeps (OFV and x at the start and after each
    # accepted iteration, NONMEM's .ext; the last row holds the latest once they are
    # used up). 0 in batch fits, where every replicate would carry them.
    history: int = 0

    def compiled(self) -> "FitSettings":
        """The fields compiled into the loop (the run-time ones set to their defaults),
        the key under which its program is cached."""
        return self._replace(max_iter=FitSettings.max_iter, covariance=FitSettings.covariance)

    def check(self) -> "FitSettings":
        covariance = self.covariance.lower()
        if covariance not in COVARIANCE_KINDS:
            raise ValueError(f"covariance must be one of {COVARIANCE_KINDS}, got {self.covariance!r}")
        return self._replace(covariance=covariance)


def verdict(status: int, predicted_gain: float, finite: bool, gmax: float) -> tuple[bool, str]:
    """(converged, message) of a fit that stopped with ``status``. A line search that
    failed where the quadratic models predict a gain below NEGLIGIBLE_OFV_GAIN stopped at
    the OFV's rounding noise: a minimum (``outer.OuterState.predicted_gain``)."""
    status = RESULTS(int(status))
    at_noise_floor = status == RESULTS.no_descent and 0.0 <= predicted_gain < NEGLIGIBLE_OFV_GAIN
    converged = finite and (status in (RESULTS.gradient, RESULTS.no_progress) or at_noise_floor)
    if at_noise_floor and finite:
        return converged, (f"converged: the OFV is within {predicted_gain:.1g} of a minimum (line search at the "
                           f"objective's rounding noise), max |gradient| {gmax:.2g}")
    return converged, status.message

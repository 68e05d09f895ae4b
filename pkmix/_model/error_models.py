"""Residual error models: the variance of an observation given its prediction.

Every error model reads residual standard deviations (a Sigma declared on the
variance scale is converted before it gets here) and returns the variance R of each
observation, on the scale the likelihood compares (log scale for log-transform-both-sides).
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp

# Residual variances are floored so a zero prediction under proportional error gives a
# huge, finite objective (which the optimiser leaves) rather than log(0).
MIN_VARIANCE = 1e-30


class AbstractErrorModel(eqx.Module):
    @property
    @abc.abstractmethod
    def parameters(self) -> tuple[str, ...]:
        """Names of the sigma parameters read, in order."""

    @abc.abstractmethod
    def _variance(self, f, sds):
        ...

    def variance(self, f, sds):
        """Residual variance for predictions ``f`` (original scale) and SDs (in the order
        of ``parameters``)."""
        return jnp.maximum(self._variance(f, sds), MIN_VARIANCE)

    def transform(self, x):
        """The scale on which observations and predictions are compared."""
        if self.log_transform:
            return jnp.log(jnp.maximum(x, 1e-300))
        return x


class Additive(AbstractErrorModel):
    """y = f + eps, Var = sd^2."""

    sd: str = eqx.field(static=True)
    log_transform: bool = eqx.field(static=True, default=False)

    @property
    def parameters(self):
        return (self.sd,)

    def _variance(self, f, sds):
        return jnp.broadcast_to(sds[0] ** 2, jnp.shape(f))


class Proportional(AbstractErrorModel):
    """y = f (1 + eps), Var = (sd f)^2 (NONMEM's Y = F + F*EPS(1))."""

    sd: str = eqx.field(static=True)
    log_transform = False

    @property
    def parameters(self):
        return (self.sd,)

    def _variance(self, f, sds):
        return (sds[0] * f) ** 2


class Combined(AbstractErrorModel):
    """Additive plus proportional.

    ``form="variance"`` (default, nlmixr2's combined2 / NONMEM's two EPS):
    Var = add^2 + (prop f)^2. ``form="sd"`` (combined1): SD = add + prop |f|.
    """

    add: str = eqx.field(static=True)
    prop: str = eqx.field(static=True)
    form: str = eqx.field(static=True, default="variance")
    log_transform = False

    def __check_init__(self):
        if self.form not in ("variance", "sd"):
            raise ValueError(f"combined error form must be 'variance' or 'sd', got {self.form!r}")

    @property
    def parameters(self):
        return (self.add, self.prop)

    def _variance(self, f, sds):
        if self.form == "sd":
            return (sds[0] + sds[1] * jnp.abs(f)) ** 2
        return sds[0] ** 2 + (sds[1] * f) ** 2


def additive(sd: str) -> Additive:
    """Additive error with residual SD parameter ``sd``."""
    return Additive(sd=sd)


def proportional(sd: str) -> Proportional:
    """Proportional error with residual SD (or NONMEM SIGMA variance) parameter ``sd``."""
    return Proportional(sd=sd)


def combined(add: str, prop: str, *, form: str = "variance") -> Combined:
    """Combined error: Var = add^2 + (prop f)^2, or SD = add + prop f with form='sd'."""
    return Combined(add=add, prop=prop, form=form)


def log_additive(sd: str) -> Additive:
    """Log-transform-both-sides: log(y) = log(f) + eps, Var(eps) = sd^2."""
    return Additive(sd=sd, log_transform=True)

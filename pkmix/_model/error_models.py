"""Residual error models: the variance of an observation given its prediction.

Every error model reads residual standard deviations (a Sigma declared on the
variance scale is converted before it gets here) and returns the variance R of each
observation, on the scale the likelihood compares (log scale for log-transform-both-sides).
An error model may also read thetas (``theta_parameters``): ``EpsError`` writes the
observation as NONMEM's ``Y = f(F, THETA, EPS)``.
"""

from __future__ import annotations

import abc
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

# Residual variances are floored so a zero prediction under proportional error gives a
# huge, finite objective (which the optimiser leaves) rather than log(0).
MIN_VARIANCE = 1e-30


class AbstractErrorModel(eqx.Module):
    # False: a Gaussian residual (the variance below); True: a per-record log-likelihood
    # (``likelihoods.AbstractLikelihood``), which the estimation methods dispatch on.
    non_gaussian = False

    @property
    @abc.abstractmethod
    def parameters(self) -> tuple[str, ...]:
        """Names of the sigma parameters read, in order."""

    @property
    def theta_parameters(self) -> tuple[str, ...]:
        """Names of the thetas read, in order (none for the classic error models)."""
        return ()

    @property
    def individual_parameters(self) -> tuple[str, ...]:
        """Names of the individual parameters (what ``individual`` returns) read, in order
        (none for the classic error models): an ETA on the residual error."""
        return ()

    @property
    def data_columns(self) -> tuple[str, ...]:
        """Per-record data columns read besides DV (none for the residual error models;
        a binomial's number of trials, a multi-endpoint model's DVID): the model carries
        them in its batch like covariates."""
        return ()

    @abc.abstractmethod
    def _variance(self, f, sds):
        ...

    def variance(self, f, sds, thetas=None, individual=None):
        """Residual variance for predictions ``f`` (original scale), SDs (in the order
        of ``parameters``), theta values (in the order of ``theta_parameters``) and the
        individual parameters ``individual_parameters`` names (``{name: [R]}``)."""
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


class EpsError(AbstractErrorModel):
    """The observation as NONMEM writes it in $ERROR: ``Y = y(f, p, eps)``.

    ``f`` is the prediction (Y at EPS = 0), ``p`` the thetas named in ``theta`` and the
    individual parameters named in ``individual`` (by name; an ETA on the residual error
    is an individual parameter that ``individual()`` returns), ``eps`` the residual errors
    named in ``eps`` (by name), each with variance SIGMA. The residual variance is what NONMEM's FOCE-I uses:
    R = sum_k (dY/dEPS_k)^2 SIGMA_kk at EPS = 0, so ``Y = F + F*THETA(3)*EPS(1)`` with
    ``$SIGMA 1 FIX`` is R = (THETA3 F)^2, and ``Y = F + W*EPS(1)`` is R = W^2 SIGMA.
    """

    function: Callable = eqx.field(static=True)
    eps: tuple[str, ...] = eqx.field(static=True)
    theta: tuple[str, ...] = eqx.field(static=True, default=())
    individual: tuple[str, ...] = eqx.field(static=True, default=())
    # Correlated EPS (NONMEM's $SIGMA BLOCK(2)): (eps_i, eps_j, theta) with the theta the
    # correlation of eps_i and eps_j.
    correlations: tuple[tuple[str, str, str], ...] = eqx.field(static=True, default=())
    log_transform = False

    def __check_init__(self):
        if not self.eps:
            raise ValueError("eps_error: name at least one EPS (a sigma parameter)")
        for i, j, _ in self.correlations:
            if i not in self.eps or j not in self.eps or i == j:
                raise ValueError(f"eps_error: correlation of {i!r} and {j!r}: name two different EPS of "
                                 f"eps={list(self.eps)}")
        if not callable(self.function):
            raise ValueError("eps_error: the first argument must be a function y(f, p, eps)")

    @property
    def parameters(self):
        return tuple(self.eps)

    @property
    def theta_parameters(self):
        return tuple(self.theta) + tuple(dict.fromkeys(r for _, _, r in self.correlations if r not in self.theta))

    @property
    def individual_parameters(self):
        return tuple(self.individual)

    def _variance(self, f, sds, thetas=None, individual=None):
        from .._pk.ode import Namespace

        f = jnp.asarray(f, dtype=jnp.float64)
        values = thetas if thetas is not None else jnp.zeros(len(self.theta_parameters))
        d = {n: values[i] for i, n in enumerate(self.theta_parameters)}
        if self.individual:
            if individual is None:
                raise ValueError(f"eps_error reads the individual parameters {list(self.individual)}, which this "
                                 "computation does not provide (simulation and pkmix.endpoints do not support "
                                 "an error model that reads individual parameters)")
            d.update({n: jnp.broadcast_to(individual[n], jnp.shape(f)) for n in self.individual})
        p = Namespace(d, "theta or individual parameter")
        zeros = tuple(jnp.zeros_like(f) for _ in self.eps)

        def y(*e):
            return jnp.asarray(self.function(f, p, Namespace(dict(zip(self.eps, e)), "eps")), dtype=jnp.float64)

        # R = g' SIGMA g with g = dY/dEPS at EPS = 0; SIGMA_ij = rho_ij sd_i sd_j.
        g = []
        for k in range(len(self.eps)):
            tangent = tuple(jnp.ones_like(f) if j == k else jnp.zeros_like(f) for j in range(len(self.eps)))
            g.append(jax.jvp(y, zeros, tangent)[1])
        r = sum((g[k] * sds[k]) ** 2 for k in range(len(self.eps)))
        for a, b, rho in self.correlations:
            i, j = self.eps.index(a), self.eps.index(b)
            r = r + 2.0 * d[rho] * sds[i] * sds[j] * g[i] * g[j]
        return jnp.broadcast_to(r, jnp.shape(f))

    def variance(self, f, sds, thetas=None, individual=None):
        return jnp.maximum(self._variance(f, sds, thetas, individual), MIN_VARIANCE)


def eps_error(y: Callable, *, eps, theta=(), individual=(), correlations=None) -> EpsError:
    """A residual error written as NONMEM's $ERROR: ``y(f, p, eps)`` returns the
    observation from the prediction ``f``, thetas and individual parameters ``p.<name>``
    (those in ``theta`` and ``individual``) and residual errors ``eps.<name>`` (the
    sigmas in ``eps``, declared as ``pkmix.Variance``); e.g. ``Y = F + F*THETA(3)*EPS(1)``
    with ``$SIGMA 1 FIX``::

        error=eps_error(lambda f, p, eps: f + f * p.tprop * eps.eps1, eps=["eps1"], theta=["tprop"])

    and an ETA on the residual error (``W = THETA(3)*EXP(ETA(3))``, ``Y = F + W*EPS(1)``),
    with ``individual()`` returning ``"w"``::

        error=eps_error(lambda f, p, eps: f + p.w * eps.eps1, eps=["eps1"], individual=["w"])

    The variance then depends on the etas: FOCE-I and Laplace evaluate it at the EBEs
    (and differentiate it in eta), FO and FOCE at eta = 0.

    ``correlations={("eps1", "eps2"): "rho"}`` correlates two EPS (NONMEM's ``$SIGMA
    BLOCK(2)``) through a theta, their correlation (declare it ``pkmix.Theta(r, lower=-1,
    upper=1)``): R = g' SIGMA g with g = dY/dEPS at EPS = 0 and SIGMA_12 = rho sd_1 sd_2.
    """
    corr = tuple((a, b, r) for (a, b), r in (correlations or {}).items())
    return EpsError(function=y, eps=tuple(eps), theta=tuple(theta), individual=tuple(individual), correlations=corr)


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

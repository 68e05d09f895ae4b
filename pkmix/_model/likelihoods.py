"""Observation models given by a per-record log-likelihood (non-Gaussian data).

In place of a residual error model (NONMEM's ``$ERROR`` with ``-2LL`` / ``LIKELIHOOD``)
an ``AbstractLikelihood`` gives each observed record's -2 log p(y_j | f_j), where f_j is
the model's prediction on that record (what ``observe`` returns). The conditional -2 log
joint density of a subject is then

    l(eta) = sum_obs m2ll_records(f, y, ...)_j + eta' Omega^-1 eta + log|Omega|

(``pkmix._estimation.likelihood.m2ll``), estimated by Laplace, AGQ, IMP and SAEM; FO,
FOCE and FOCE-I, which linearise a Gaussian residual, refuse these models.

The interface (``AbstractLikelihood``):

- ``parameters``: the sigma-like parameters read, in order (usually none);
  ``theta_parameters``: the thetas read, in order (a negative binomial's dispersion,
  ordinal cut-points, a user density's parameters); ``data_columns``: per-record data
  columns read besides DV (a binomial's number of trials, a multi-endpoint model's DVID),
  which the model adds to its covariates so they travel in the batch.
- ``m2ll_records(f, y, thetas, sds, subject) -> [R]``: each record's -2 log p(y_j | f_j)
  for the predictions ``f`` [R], observations ``y`` [R] (the DV column), theta values in
  the order of ``theta_parameters``, sigma SDs in the order of ``parameters`` and the
  subject's ``SubjectBatch`` (its times, masks and covariates; a time-to-event density
  reads the record times from it). The caller sums the observed records (``obs_mask``)
  and passes, at every other record, the f and y of the subject's first observation, so
  a density need only be finite at values the data can take; it must be finite there,
  because a masked NaN still spoils the gradient.
- ``dv_violations(frame, rows) -> [Violation]``: the rules the DV (and the data
  columns) break on the observation rows ``rows`` of the read dataset (a Bernoulli DV
  that is not 0/1, a negative count), checked when data meet the model
  (``data_violations`` adds that censored records are refused).

Conventions of the built-ins: ``f`` is the linear predictor on the link's scale
(logit or probit of the probability, log of the mean for counts) unless
``link="identity"`` (the probability, the mean). Every term is the full -2 log
probability mass (binomial coefficients and log y! included): for a model made only of
such records the OFV is -2 log L with no constant left out (the etas' (2 pi)^(q/2)
cancels in Laplace, AGQ and IMP), unlike a Gaussian record's term, which leaves out
log 2 pi as NONMEM does.
"""

from __future__ import annotations

import abc
import math
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln
from jax.scipy.stats import norm

from .error_models import AbstractErrorModel

LINKS = ("logit", "probit", "identity")
COUNT_LINKS = ("log", "identity")
# A probability or mean at or below this counts as this (a log of zero would be -inf
# and a NaN gradient): the objective is then huge but finite, and the optimiser leaves.
TINY = 1e-300
# -2 log p of a record whose probability is not defined (ordinal cut-points out of
# order): huge but finite, for the same reason.
IMPOSSIBLE = 1e10


def _log_cdf(x, link):
    """log F(x) for the link's inverse (logistic or standard normal CDF)."""
    if link == "logit":
        return -jax.nn.softplus(-x)
    return norm.logcdf(x)


def _log1mexp(x):
    """log(1 - exp(x)) for x < 0, accurate at both ends (Maechler 2012)."""
    x = jnp.minimum(x, -1e-300)
    return jnp.where(x > -math.log(2.0), jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def _log_interval(a, b, link):
    """log(F(b) - F(a)) for a < b, using F(-x) = 1 - F(x) to stay in the lower tail."""
    upper = a > 0
    lo, hi = jnp.where(upper, -b, a), jnp.where(upper, -a, b)
    return _log_cdf(hi, link) + _log1mexp(_log_cdf(lo, link) - _log_cdf(hi, link))


def _integer_rows(x):
    return np.isfinite(x) & (x == np.round(x))


class AbstractLikelihood(AbstractErrorModel):
    """A per-record log-likelihood in place of a residual error model (see the module
    docstring for the interface). Subclasses define ``m2ll_records`` and usually
    ``dv_violations``."""

    non_gaussian = True
    log_transform = False
    # The prediction and observation a density is surely finite at: used (by
    # ``Endpoints``) on a subject that has no record of this kind.
    safe_prediction = 0.0
    safe_observation = 0.0

    @property
    def parameters(self) -> tuple[str, ...]:
        return ()

    @abc.abstractmethod
    def m2ll_records(self, f, y, thetas, sds, subject):
        """Each record's -2 log p(y_j | f_j), [R]."""

    def dv_violations(self, frame, rows) -> list:
        """The ``Violation``s of the observation rows ``rows`` (a boolean mask over the
        frame's rows) of the read dataset ``frame`` (DV, ID, REC and the data columns)."""
        return []

    def data_violations(self, frame, rows) -> list:
        """``dv_violations`` and censored (BLQ) records, which only Gaussian endpoints take."""
        out = self.dv_violations(frame, rows)
        if "BLQ" in frame.columns:
            out += self._violations(frame, rows, frame["BLQ"].to_numpy() == 1, "BLQ",
                                    "BLQ only on Gaussian endpoints (M3)", f"censored {self.label} record")
        return out

    def gaussian_observations(self, frame) -> int:
        """How many observations of the read dataset ``frame`` have a Gaussian term (whose
        OFV term leaves out log 2 pi): none."""
        return 0

    def _variance(self, f, sds):
        # No residual variance: Gaussian-only code (FO/FOCE/FOCE-I, weighted residuals)
        # sees a unit variance, and the estimators refuse or skip these models.
        return jnp.ones_like(f)

    @property
    def label(self) -> str:
        return type(self).__name__.lower()

    def _violations(self, frame, rows, bad, column, rule, message):
        from .._data.errors import Violation

        rec, ids = frame["REC"].to_numpy(), frame["ID"].to_numpy()
        return [Violation(int(rec[i]), ids[i], column, rule, message(i) if callable(message) else message)
                for i in np.flatnonzero(rows & bad)]

    def _dv_violations(self, frame, rows, ok, rule):
        dv = frame["DV"].to_numpy(dtype=np.float64)
        return self._violations(frame, rows, ~ok(dv), "DV", f"{self.label}: {rule}",
                                lambda i: f"DV {dv[i]:g} is not a valid {self.label} observation")


def _column(subject, name):
    """A data column carried among the subject's covariates ([R])."""
    return subject.covariates[:, subject.covariate_names.index(name)]


def _pick(values, names, wanted):
    """The entries of ``values`` (ordered as ``names``) named in ``wanted``, in that order."""
    if not wanted:
        return jnp.zeros(0)
    return jnp.stack([values[names.index(n)] for n in wanted])


class Binomial(AbstractLikelihood):
    """y successes of n trials (n = 1: Bernoulli), success probability link^-1(f)."""

    link: str = eqx.field(static=True, default="logit")
    trials: str | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.link not in LINKS:
            raise ValueError(f"binomial link must be one of {LINKS}, got {self.link!r}")

    @property
    def safe_prediction(self):
        return 0.5 if self.link == "identity" else 0.0

    @property
    def label(self):
        return "bernoulli" if self.trials is None else "binomial"

    @property
    def data_columns(self):
        return () if self.trials is None else (self.trials,)

    def log_probabilities(self, f):
        """(log p, log(1 - p)) of success."""
        if self.link == "identity":
            p = jnp.clip(f, TINY, 1.0 - 1e-16)
            return jnp.log(p), jnp.log1p(-p)
        return _log_cdf(f, self.link), _log_cdf(-f, self.link)

    def m2ll_records(self, f, y, thetas, sds, subject):
        log_p, log_q = self.log_probabilities(f)
        if self.trials is None:
            return -2.0 * jnp.where(y > 0.5, log_p, log_q)
        n = _column(subject, self.trials)
        log_choose = gammaln(n + 1.0) - gammaln(y + 1.0) - gammaln(jnp.maximum(n - y, 0.0) + 1.0)
        return -2.0 * (log_choose + y * log_p + (n - y) * log_q)

    def dv_violations(self, frame, rows):
        if self.trials is None:
            return self._dv_violations(frame, rows, lambda y: np.isin(y, (0, 1)), "DV in {0, 1}")
        out = []
        col = next((c for c in frame.columns if str(c).upper() == self.trials.upper()), None)
        if col is None:
            return out  # reported as a missing covariate column
        n = frame[col].to_numpy(dtype=np.float64)
        out += self._violations(frame, rows, ~(_integer_rows(n) & (n >= 1)), self.trials.upper(),
                                f"binomial: {self.trials} (number of trials) is an integer >= 1",
                                lambda i: f"{n[i]:g} trials")
        dv = frame["DV"].to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            ok = _integer_rows(dv) & (dv >= 0) & ~(dv > n)
        out += self._violations(frame, rows, ~ok, "DV", f"binomial: DV is an integer in 0..{self.trials}",
                                lambda i: f"DV {dv[i]:g} is not a count of successes of {n[i]:g} trials")
        return out


class _Counts(AbstractLikelihood):
    """What the count likelihoods share: the mean exp(f) (``link="log"``) or f
    (``link="identity"``), and the rule that DV is a count. Subclasses declare ``link``."""

    def __check_init__(self):
        if self.link not in COUNT_LINKS:
            raise ValueError(f"{self.label} link must be one of {COUNT_LINKS}, got {self.link!r}")

    @property
    def safe_prediction(self):
        return 1.0 if self.link == "identity" else 0.0

    def _log_mean(self, f):
        return f if self.link == "log" else jnp.log(jnp.maximum(f, TINY))

    def dv_violations(self, frame, rows):
        return self._dv_violations(frame, rows, lambda y: _integer_rows(y) & (y >= 0), "DV is an integer >= 0")


class Poisson(_Counts):
    """Counts with mean exp(f) (``link="log"``) or f (``link="identity"``)."""

    link: str = eqx.field(static=True, default="log")

    def m2ll_records(self, f, y, thetas, sds, subject):
        log_mu = self._log_mean(f)
        return -2.0 * (y * log_mu - jnp.exp(log_mu) - gammaln(y + 1.0))


class NegativeBinomial(_Counts):
    """Counts with mean mu = exp(f) (or f) and variance mu + alpha mu^2 (NB2), alpha the
    theta named by ``dispersion`` (alpha > 0; glmmTMB's nbinom2 size theta is 1/alpha)."""

    dispersion: str = eqx.field(static=True)
    link: str = eqx.field(static=True, default="log")

    @property
    def label(self):
        return "negative binomial"

    @property
    def theta_parameters(self):
        return (self.dispersion,)

    def m2ll_records(self, f, y, thetas, sds, subject):
        log_mu = self._log_mean(f)
        alpha = jnp.maximum(thetas[0], TINY)
        r = 1.0 / alpha
        log_r = -jnp.log(alpha)
        log_total = jnp.logaddexp(log_r, log_mu)  # log(r + mu)
        lp = (gammaln(y + r) - gammaln(r) - gammaln(y + 1.0)
              + r * (log_r - log_total) + y * (log_mu - log_total))
        return -2.0 * lp


class Ordinal(AbstractLikelihood):
    """Ordered categories 0..K-1 by proportional odds: P(Y <= k) = F(c_k - f), with the
    K-1 increasing cut-points c_0 < ... < c_{K-2} the thetas named in ``cutpoints``
    (ordinal::clmm's parameterisation; F logistic or normal). Cut-points out of order
    give a huge objective."""

    cutpoints: tuple[str, ...] = eqx.field(static=True)
    link: str = eqx.field(static=True, default="logit")

    def __check_init__(self):
        if len(self.cutpoints) < 1:
            raise ValueError("ordinal: name at least one cut-point theta (K categories need K-1)")
        if self.link not in ("logit", "probit"):
            raise ValueError(f"ordinal link must be 'logit' or 'probit', got {self.link!r}")

    @property
    def theta_parameters(self):
        return tuple(self.cutpoints)

    @property
    def n_categories(self) -> int:
        return len(self.cutpoints) + 1

    def m2ll_records(self, f, y, thetas, sds, subject):
        k = jnp.clip(jnp.round(y).astype(jnp.int32), 0, self.n_categories - 1)
        c = jnp.asarray(thetas)
        b = c[jnp.minimum(k, self.n_categories - 2)] - f  # upper limit (unused for the top category)
        a = c[jnp.maximum(k - 1, 0)] - f  # lower limit (unused for category 0)
        bottom, top = k == 0, k == self.n_categories - 1
        # Each branch gets inputs at which it is finite (a masked NaN spoils the gradient).
        middle_ok = ~bottom & ~top & (b > a)
        a_safe = jnp.where(middle_ok, a, b - 1.0)
        middle = _log_interval(a_safe, b, self.link)
        lp = jnp.where(bottom, _log_cdf(b, self.link),
                       jnp.where(top, _log_cdf(-a, self.link),
                                 jnp.where(middle_ok, middle, -0.5 * IMPOSSIBLE)))
        return -2.0 * lp

    def dv_violations(self, frame, rows):
        K = self.n_categories
        return self._dv_violations(frame, rows, lambda y: _integer_rows(y) & (y >= 0) & (y <= K - 1),
                                   f"DV is a category 0..{K - 1} ({K - 1} cut-points)")


class LogLikelihood(AbstractLikelihood):
    """A user-supplied log-density ``fn(f, y, p)`` of one record (scalars), thetas
    ``p.<name>`` for the names in ``theta``."""

    function: Callable = eqx.field(static=True)
    theta: tuple[str, ...] = eqx.field(static=True, default=())
    safe: tuple[float, float] = eqx.field(static=True, default=(0.0, 0.0))

    def __check_init__(self):
        if not callable(self.function):
            raise ValueError("loglik: the first argument must be a function fn(f, y, p) -> log density")

    @property
    def safe_prediction(self):
        return self.safe[0]

    @property
    def safe_observation(self):
        return self.safe[1]

    @property
    def theta_parameters(self):
        return tuple(self.theta)

    def m2ll_records(self, f, y, thetas, sds, subject):
        from .._pk.ode import Namespace

        p = Namespace({n: thetas[i] for i, n in enumerate(self.theta)}, "theta")

        def one(fj, yj):
            return jnp.asarray(self.function(fj, yj, p), dtype=jnp.float64)

        lp = jax.vmap(one)(f, y)
        if lp.shape != f.shape:
            raise ValueError(f"loglik: fn(f, y, p) must return a scalar per record, got shape {lp.shape[1:]}")
        return -2.0 * lp


def gaussian_m2ll_records(error: AbstractErrorModel, f, y, thetas, sds, subject):
    """A residual error model's records as likelihood terms (for ``Endpoints``): log R +
    (y - f)^2 / R on the compared scale (log 2 pi left out, as NONMEM's OFV does), and
    -2 log Phi((LLOQ - f) / sqrt(R)) on BLQ records (M3)."""
    ft = error.transform(f)
    var = error.variance(f, sds, thetas)
    yt = error.transform(jnp.maximum(y, TINY) if error.log_transform else y)
    lloq = error.transform(jnp.where(subject.blq, subject.lloq, 1.0))
    z = (lloq - ft) / jnp.sqrt(var)
    return jnp.where(subject.blq, -2.0 * norm.logcdf(z), jnp.log(var) + (yt - ft) ** 2 / var)


class Endpoints(AbstractLikelihood):
    """Several endpoints in one model: record j follows the observation model of its
    value in the data column ``column`` (NONMEM's DVID), a residual error model
    (Gaussian, with M3 for BLQ records) or a likelihood. ``observe`` returns each
    record's prediction on that model's scale (it can read the column: ``p.DVID``)."""

    values: tuple[int, ...] = eqx.field(static=True)
    models: tuple[AbstractErrorModel, ...]
    column: str = eqx.field(static=True, default="DVID")

    def __check_init__(self):
        if len(self.values) != len(self.models) or not self.values:
            raise ValueError("endpoints: give one observation model per DVID value")
        for v, m in zip(self.values, self.models):
            if not isinstance(m, AbstractErrorModel):
                raise ValueError(f"endpoints: DVID {v}'s model must be an error model or a likelihood, got {m!r}")
            if isinstance(m, Endpoints):
                raise ValueError("endpoints: an endpoint cannot itself hold endpoints")

    @property
    def parameters(self):
        return tuple(dict.fromkeys(n for m in self.models for n in m.parameters))

    @property
    def theta_parameters(self):
        return tuple(dict.fromkeys(n for m in self.models for n in m.theta_parameters))

    @property
    def data_columns(self):
        return tuple(dict.fromkeys((self.column,) + tuple(c for m in self.models for c in m.data_columns)))

    @property
    def gaussian_values(self) -> tuple[int, ...]:
        """The DVID values whose records are Gaussian (their OFV terms leave out log 2 pi)."""
        return tuple(v for v, m in zip(self.values, self.models) if not m.non_gaussian)

    def gaussian_observations(self, frame) -> int:
        obs = (frame["EVID"].to_numpy() == 0) & (frame["MDV"].to_numpy() == 0)
        col = next(c for c in frame.columns if str(c).upper() == self.column.upper())
        return int(np.sum(obs & np.isin(frame[col].to_numpy(), self.gaussian_values)))

    def model_for(self, value):
        return self.models[self.values.index(value)]

    def m2ll_records(self, f, y, thetas, sds, subject):
        dvid = _column(subject, self.column)
        obs = subject.obs_mask
        total = jnp.zeros_like(f)
        for v, m in zip(self.values, self.models):
            sel = dvid == v
            mine = sel & obs
            first = jnp.argmax(mine)
            has = jnp.any(mine)
            safe_f = 1.0 if not m.non_gaussian else m.safe_prediction
            safe_y = 1.0 if not m.non_gaussian else m.safe_observation
            fk = jnp.where(mine, f, jnp.where(has, f[first], safe_f))
            yk = jnp.where(mine, y, jnp.where(has, y[first], safe_y))
            th = _pick(thetas, self.theta_parameters, m.theta_parameters)
            sd = _pick(sds, self.parameters, m.parameters)
            if m.non_gaussian:
                # The endpoint sees its own records as the subject's observations (a
                # time-to-event record's interval starts at the previous record of its kind).
                terms = m.m2ll_records(fk, yk, th, sd, eqx.tree_at(lambda s: s.obs_mask, subject, mine))
            else:
                terms = gaussian_m2ll_records(m, fk, yk, th, sd, subject)
            total = total + jnp.where(sel, terms, 0.0)
        return total

    def data_violations(self, frame, rows):
        col = next((c for c in frame.columns if str(c).upper() == self.column.upper()), None)
        if col is None:
            from .._data.errors import Violation

            return [Violation(None, None, self.column.upper(), "a multi-endpoint model's data have its DVID column",
                              f"the model has endpoints by {self.column} but the dataset has no such column")]
        dvid = frame[col].to_numpy(dtype=np.float64)
        known = np.isin(dvid, self.values) | np.isnan(dvid)  # a missing one is reported as missing
        out = self._violations(frame, rows, ~known, self.column.upper(),
                               f"{self.column} in {{{', '.join(map(str, self.values))}}} on observations "
                               "(one observation model per value)",
                               lambda i: f"unknown endpoint {self.column} {dvid[i]:g}")
        for v, m in zip(self.values, self.models):
            sub = rows & (dvid == v)
            if m.non_gaussian:
                out += m.data_violations(frame, sub)
        return out


def bernoulli(*, link: str = "logit") -> Binomial:
    """A 0/1 response with P(y = 1) = link^-1(f): ``f`` is the linear predictor (logit or
    probit scale), or the probability itself with ``link="identity"``."""
    return Binomial(link=link)


def binomial(trials: str, *, link: str = "logit") -> Binomial:
    """DV successes out of the number of trials in data column ``trials``, success
    probability link^-1(f) (``bernoulli`` for the links)."""
    return Binomial(link=link, trials=trials)


def poisson(*, link: str = "log") -> Poisson:
    """Counts with mean exp(f) (``link="log"``: f is the log mean) or f (``"identity"``)."""
    return Poisson(link=link)


def negative_binomial(dispersion: str, *, link: str = "log") -> NegativeBinomial:
    """Overdispersed counts (NB2): mean mu = exp(f) (or f), variance mu + alpha mu^2, with
    alpha > 0 the theta named ``dispersion``."""
    return NegativeBinomial(dispersion=dispersion, link=link)


def ordinal(cutpoints, *, link: str = "logit") -> Ordinal:
    """Ordered categories 0..K-1 (proportional odds): P(y <= k) = F(c_k - f) with the
    K-1 cut-point thetas named in ``cutpoints`` (increasing)."""
    return Ordinal(cutpoints=tuple(cutpoints), link=link)


def loglik(fn: Callable, *, theta=(), safe=(0.0, 0.0)) -> LogLikelihood:
    """A log-density of your own: ``fn(f, y, p)`` returns log p(y | f) for one record
    (scalars; ``p.<name>`` the thetas named in ``theta``), e.g. a Beta response::

        pkmix.loglik(lambda f, y, p: jax.scipy.stats.beta.logpdf(y, f * p.phi, (1 - f) * p.phi), theta=["phi"])

    ``safe``: an (f, y) at which fn is finite, used in a multi-endpoint model for a
    subject without records of this kind."""
    return LogLikelihood(function=fn, theta=tuple(theta), safe=tuple(float(s) for s in safe))


def endpoints(models: dict, *, column: str = "DVID") -> Endpoints:
    """One observation model per value of the data column ``column`` (NONMEM's DVID),
    e.g. concentrations with additive error and a binary response::

        pkmix.endpoints({1: pkmix.additive("add_sd"), 2: pkmix.bernoulli()})

    Every observation's DVID must be one of the keys."""
    if not isinstance(models, dict) or not models:
        raise ValueError("endpoints: give a dict {DVID value: error model or likelihood}")
    values = []
    for k in models:
        if isinstance(k, bool) or not float(k).is_integer():
            raise ValueError(f"endpoints: DVID values are integers, got {k!r}")
        values.append(int(k))
    return Endpoints(values=tuple(values), models=tuple(models.values()), column=str(column))

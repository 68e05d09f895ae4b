"""The model definition: parameters, individual parameters, structure, observation, error.

A model reads like nlmixr2's ``ini({}) / model({})``::

    def individual(p):
        return {"ka": jnp.exp(p.tka + p.eta_ka),
                "cl": jnp.exp(p.tcl + p.eta_cl),
                "v": jnp.exp(p.tv + p.eta_v)}

    model = pkmix.Model(
        theta={"tka": 0.45, "tcl": 1.0, "tv": 3.45},
        omega={"eta_ka": 0.6, "eta_cl": 0.3, "eta_v": 0.1},
        sigma={"add_sd": 0.7},
        individual=individual,
        structure=pkmix.one_compartment(depot=True),
        observe=lambda a, p: a.central / p.v,
        error=pkmix.additive("add_sd"),
    )

Everything is checked when the model is created: names used by ``individual`` and
``observe`` must be declared, the structure's parameters must be produced, OMEGA must
be positive definite and each initial value inside its bounds.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .._pk.base import AbstractStructure
from .._pk.events import subject_amounts
from .._pk.none import NoStructure
from .._pk.ode import Namespace
from .error_models import AbstractErrorModel
from .errors import ModelError
from .parameters import ParameterSpec, ParameterValues, parse_parameters

DOSING_PREFIXES = ("f", "alag", "r", "d")
# The name under which ``individual`` and ``observe`` read a record's time.
TIME = "TIME"


class Model:
    """A population PK model.

    Args:
        theta: ``{name: initial value or pkmix.Theta}`` (fixed effects).
        omega: between-subject variability: ``{eta name: variance}`` for a diagonal
            OMEGA, a ``pkmix.Block``, or a list of both; ``pkmix.Eta(v, fixed=True)``
            fixes one.
        sigma: ``{name: SD}`` or ``{name: pkmix.Variance(v)}`` residual parameters.
        individual: ``individual(p) -> {name: value}``. ``p`` holds thetas, etas and
            covariates by name, and the record's time as ``p.TIME`` (scalars: the values
            on one record; parameters that change with TIME govern the interval that
            ends at their record, as a time-varying covariate does). The result must
            hold the structure's parameters (e.g. ``cl``, ``v``, ``ka``) and may hold
            NONMEM's dose modifiers per compartment number: ``f1`` (bioavailability),
            ``alag1`` (lag time), ``r1`` (modelled rate, RATE=-1), ``d1`` (modelled
            duration, RATE=-2), and anything ``observe`` uses.
        structure: a closed form (``pkmix.one_compartment`` ...) or ``pkmix.ODE``; None
            (the default) for a model without compartments (NONMEM's $PRED, a GLMM):
            nothing is dosed and ``observe`` computes the prediction from ``p``.
        observe: ``observe(a, p) -> prediction``; ``a`` holds amounts by compartment
            name (empty without a structure), ``p`` the individual parameters, thetas,
            covariates and the record's time ``p.TIME``.
        error: ``pkmix.additive``, ``proportional``, ``combined``, ``log_additive``, or
            ``pkmix.eps_error`` (NONMEM's ``Y = F + W*EPS(1)``; may read thetas and individual
            parameters, and correlate EPS);
            or a per-record likelihood for non-Gaussian data (``pkmix.bernoulli``,
            ``binomial``, ``poisson``, ``negative_binomial``, ``ordinal``, ``loglik``), or
            ``pkmix.endpoints({dvid: ...})`` for several endpoints (docs/nongaussian.md).
        covariates: names of the data columns ``individual`` reads.
        iov: ``pkmix.IOV(...)`` inter-occasion variability.
        name: a label for output.

    Raises:
        ModelError: naming the parameter at fault.
    """

    def __init__(
        self,
        *,
        theta,
        omega,
        sigma,
        individual: Callable,
        structure: AbstractStructure | None = None,
        observe: Callable,
        error: AbstractErrorModel,
        covariates: Sequence[str] = (),
        iov=None,
        name: str | None = None,
    ):
        self.name = name or "model"
        self.spec: ParameterSpec = parse_parameters(theta, omega, sigma, iov)
        if structure is None:
            structure = NoStructure()
        if not isinstance(structure, AbstractStructure):
            raise ModelError(
                f"structure: expected a pkmix structural model (one_compartment(), ODE(...)), "
                f"got {type(structure).__name__}; leave it out for a model without compartments"
            )
        if not isinstance(error, AbstractErrorModel):
            raise ModelError(f"error: expected pkmix.additive/proportional/combined/log_additive or a likelihood "
                             f"(pkmix.bernoulli, poisson, ...), got {error!r}")
        if not callable(individual) or not callable(observe):
            raise ModelError("individual and observe must be functions")
        self.structure = structure
        self.error = error
        self.individual = individual
        self.observe = observe
        # A likelihood's per-record data columns (binomial trials, DVID) travel in the
        # batch as covariates: ``individual`` and ``observe`` may read them too.
        self.covariates = tuple(covariates) + tuple(
            c for c in error.data_columns if c.upper() not in {n.upper() for n in covariates})
        for n in self.covariates:
            if n in self._declared_names():
                raise ModelError(f"covariate '{n}' has the name of a model parameter")
            if n.upper() == TIME:
                raise ModelError(f"covariate '{n}': the record's time is always there as p.{TIME}; "
                                 f"remove it from covariates")
        for n in self._declared_names():
            if n.upper() == TIME:
                raise ModelError(f"parameter '{n}': {TIME} is the record's time (p.{TIME}); rename it")
        for n in error.parameters:
            if n not in self.spec.sigma_names:
                raise ModelError(
                    f"error model uses sigma '{n}', which is not declared; sigma has "
                    f"{', '.join(self.spec.sigma_names) or 'nothing'}"
                )
        for n in error.theta_parameters:
            if n not in self.spec.theta_names:
                raise ModelError(
                    f"error model uses theta '{n}', which is not declared; theta has "
                    f"{', '.join(self.spec.theta_names) or 'nothing'}"
                )
        unused = set(self.spec.sigma_names) - set(error.parameters)
        if unused:
            raise ModelError(f"sigma {sorted(unused)} declared but not used by the error model")
        self._check_functions()
        # A theta that nothing reads is allowed in the model (an imported control stream may
        # carry one, and evaluate/predict do not mind it), but pkmix.fit refuses to estimate
        # it (check_estimable): its estimate would be undetermined and the covariance step
        # would only say "R matrix is not positive definite".
        self.unused_thetas = self._unused_thetas()

    # ----------------------------------------------------------------- metadata
    @property
    def theta_names(self):
        return self.spec.theta_names

    @property
    def eta_names(self):
        return self.spec.eta_names

    @property
    def sigma_names(self):
        return self.spec.sigma_names

    @property
    def iov_names(self):
        return self.spec.iov_names

    @property
    def occasion_column(self):
        return self.spec.occasion_column

    @property
    def compartment_names(self):
        return self.structure.compartment_names

    @property
    def n_compartments(self):
        return self.structure.n_compartments

    @property
    def data_columns(self) -> tuple[str, ...]:
        """Covariate columns the batch must carry (covariates, then the occasion column)."""
        return self.covariates

    def initial_values(self) -> ParameterValues:
        return self.spec.initial_values()

    def _declared_names(self):
        s = self.spec
        return set(s.theta_names) | set(s.eta_names) | set(s.iov_names) | set(s.sigma_names)

    def __repr__(self):
        return (
            f"pkmix.Model({self.name!r}: {type(self.structure).__name__} {self.compartment_names}, "
            f"thetas {list(self.theta_names)}, etas {list(self.eta_names)}"
            + (f", iov {list(self.iov_names)} by {self.occasion_column}" if self.iov_names else "")
            + f", error {type(self.error).__name__}{self.error.parameters})"
        )

    # ------------------------------------------------------------ definition check
    def _check_functions(self):
        values = self.initial_values()
        # NumPy placeholders: eval_shape traces with them, nothing is dispatched eagerly.
        dummy_cov = np.ones(len(self.covariates))
        try:
            ip = jax.eval_shape(lambda v, c: self._individual_one(v, jnp.zeros(self.spec.n_eta),
                                                                   jnp.zeros(len(self.iov_names)), c),
                                values, dummy_cov)
        except AttributeError as e:
            raise ModelError(f"individual(): {e}. Declare it in theta/omega/iov or in covariates=") from None
        except ModelError:
            raise
        except Exception as e:  # a user function failing at definition time
            raise ModelError(f"individual() failed on the initial values: {type(e).__name__}: {e}") from e
        for k, v in ip.items():
            if v.shape != ():
                raise ModelError(f"individual() returned '{k}' with shape {v.shape}; expected a scalar")
        have = set(ip)
        missing = [n for n in self.structure.required_parameters if n not in have]
        if missing:
            raise ModelError(
                f"structure {type(self.structure).__name__} needs individual parameter(s) {missing}; "
                f"individual() returns {sorted(have)}"
            )
        n_cmt = self.n_compartments
        for k in have:
            for prefix in DOSING_PREFIXES:
                number = k[len(prefix):]
                if k.startswith(prefix) and number.isdigit() and not 1 <= int(number) <= n_cmt:
                    raise ModelError(
                        f"individual parameter '{k}' refers to compartment {number}; the model has "
                        f"{n_cmt} ({', '.join(self.compartment_names)})"
                    )
        amounts = np.ones(n_cmt)
        try:
            out = jax.eval_shape(lambda a, v, c: self._observe_one(a, self._individual_one(
                v, jnp.zeros(self.spec.n_eta), jnp.zeros(len(self.iov_names)), c), v, c),
                amounts, values, dummy_cov)
        except AttributeError as e:
            raise ModelError(f"observe(): {e}") from None
        except Exception as e:
            raise ModelError(f"observe() failed on the initial values: {type(e).__name__}: {e}") from e
        if out.shape != ():
            raise ModelError(f"observe() returned shape {out.shape}; expected a scalar")
        self._individual_keys = tuple(sorted(have))
        missing = [n for n in self.error.individual_parameters if n not in have]
        if missing:
            raise ModelError(f"error model reads individual parameter(s) {missing}; individual() returns "
                             f"{sorted(have)}")

    def _unused_thetas(self) -> tuple[str, ...]:
        """Thetas that neither ``individual``, ``observe`` nor the error model reads: the
        inputs of the traced program (one scalar per theta) that no output depends on.
        An operation counts as reading all its inputs, so a theta under a branch that
        is never taken counts as read (the check errs on the side of accepting)."""
        s = self.spec
        if not s.theta_names:
            return ()
        base = self.initial_values()
        cov = np.ones(len(self.covariates))

        def program(*thetas):
            # A tuple of scalars, not one array: reading a theta is then reading its own input.
            values = base._replace(theta=thetas)
            ip = self._individual_one(values, jnp.zeros(s.n_eta), jnp.zeros(len(self.iov_names)), cov)
            f = self._observe_one(jnp.ones(self.n_compartments), ip, values, cov)
            return ip, f, self.residual_variance(values, f, ip)

        from jax.extend.core import Var

        try:
            closed = jax.make_jaxpr(program)(*[np.float64(v) for v in np.asarray(base.theta)])
        except Exception:  # noqa: BLE001 - code that cannot take scalar thetas: no claim, the fit decides
            return ()
        jaxpr = closed.jaxpr
        live = {v for v in jaxpr.outvars if isinstance(v, Var)}
        for eqn in reversed(jaxpr.eqns):
            if any(v in live for v in eqn.outvars):
                live.update(v for v in eqn.invars if isinstance(v, Var))
        # A likelihood's thetas are read by its density, which this program leaves out.
        return tuple(n for n, v in zip(s.theta_names, jaxpr.invars)
                     if v not in live and n not in self.error.theta_parameters)

    def check_estimable(self) -> None:
        """Refuse a fit of a model with an estimated theta that nothing reads (its
        estimate is undetermined), as a sigma that the error model does not use is
        refused when the model is made.

        Raises:
            ModelError: naming the thetas.
        """
        unused = [n for n in self.unused_thetas
                  if not self.spec.thetas[self.spec.theta_names.index(n)].fixed]
        if unused:
            raise ModelError(
                f"theta {unused} declared but not used by individual(), observe() or the error model: "
                "its estimate would be undetermined; remove it, or fix it (pkmix.Theta(value, fixed=True))")

    # ---------------------------------------------------------------- evaluation
    def _namespace(self, values: ParameterValues, eta, iov_eta, cov, time, extra=None):
        s = self.spec
        d = {TIME: jnp.asarray(time, dtype=jnp.float64)}
        d.update({n: values.theta[i] for i, n in enumerate(s.theta_names)})
        d.update({n: eta[i] for i, n in enumerate(s.eta_names)})
        d.update({n: iov_eta[i] for i, n in enumerate(s.iov_names)})
        d.update({n: cov[i] for i, n in enumerate(self.covariates)})
        if extra:
            d.update(extra)
        return Namespace(d, "name")

    def _individual_one(self, values, eta, iov_eta, cov, time=0.0):
        out = self.individual(self._namespace(values, eta, iov_eta, cov, time))
        if not isinstance(out, dict):
            raise ModelError(f"individual() must return a dict of named parameters, got {type(out).__name__}")
        return {k.lower(): jnp.asarray(v, dtype=jnp.float64) for k, v in out.items()}

    def _observe_one(self, amounts, ip, values, cov, time=0.0):
        a = Namespace(dict(zip(self.compartment_names, amounts)), "compartment")
        p = self._namespace(values, jnp.zeros(self.spec.n_eta), jnp.zeros(len(self.iov_names)), cov, time,
                            extra=ip)
        return jnp.asarray(self.observe(a, p), dtype=jnp.float64)

    def split_eta(self, eta, n_occasions: int):
        """A subject's eta vector -> (between-subject etas [n_eta], IOV etas [n_occ, n_iov])."""
        n_eta, n_iov = self.spec.n_eta, len(self.iov_names)
        return eta[:n_eta], eta[n_eta:].reshape(n_occasions, n_iov)

    def n_eta_total(self, n_occasions: int) -> int:
        return self.spec.n_eta + n_occasions * len(self.iov_names)

    def subject_covariates(self, subject):
        """Covariates per record, with padding records given the last real record's values
        so no parameter is computed from a dummy 0 (e.g. CL = THETA*WT)."""
        cov = subject.covariates
        last = jnp.maximum(jnp.sum(subject.record_mask) - 1, 0)
        return jnp.where(subject.record_mask[:, None], cov, cov[last])

    def subject_times(self, subject):
        """TIME per record, padding records given the last real record's (as covariates)."""
        last = jnp.maximum(jnp.sum(subject.record_mask) - 1, 0)
        return jnp.where(subject.record_mask, subject.time, subject.time[last])

    def individual_parameters(self, values: ParameterValues, eta, subject):
        """Individual parameters per record, ``{lower-case name: [R]}``."""
        n_occ = max(int(subject.n_occasions), 1) if self.iov_names else 1
        eta_bsv, eta_iov = self.split_eta(eta, n_occ) if self.iov_names else (eta, jnp.zeros((1, 0)))
        cov = self.subject_covariates(subject)
        iov_per_record = eta_iov[jnp.clip(subject.occ, 0, eta_iov.shape[0] - 1)]
        return jax.vmap(lambda c, k, t: self._individual_one(values, eta_bsv, k, c, t))(
            cov, iov_per_record, self.subject_times(subject))

    def subject_predict(self, values: ParameterValues, eta, subject, *, covariate_rule="nonmem",
                        has_steady_state=True, has_infusions=True):
        """Predictions (original scale) at every record of one subject: ``f [R]``."""
        ip = self.individual_parameters(values, eta, subject)
        if self.n_compartments:
            amounts = subject_amounts(self.structure, subject, ip, has_steady_state=has_steady_state,
                                      covariate_rule=covariate_rule, has_infusions=has_infusions)
        else:
            amounts = jnp.zeros((subject.time.shape[0], 0))
        cov = self.subject_covariates(subject)
        return jax.vmap(lambda a, p, c, t: self._observe_one(a, p, values, c, t))(
            amounts, ip, cov, self.subject_times(subject))

    def sigma_sds(self, values: ParameterValues):
        """Residual SDs in the order of ``error.parameters``."""
        if not self.error.parameters:
            return jnp.zeros(0)
        sds = []
        for n in self.error.parameters:
            i = self.spec.sigma_names.index(n)
            v = values.sigma[i]
            sds.append(jnp.sqrt(v) if self.spec.sigmas[i].scale == "variance" else v)
        return jnp.stack(sds)

    def error_thetas(self, values: ParameterValues):
        """The values of the thetas the error model reads, in its ``theta_parameters``
        order ([0] when none)."""
        names = self.error.theta_parameters
        if not names:
            return jnp.zeros(0)
        return jnp.stack([values.theta[self.spec.theta_names.index(n)] for n in names])

    def residual_variance(self, values: ParameterValues, f, ip=None):
        """The residual variance at predictions ``f``; ``ip`` (``{name: value}``, per
        record) holds the individual parameters for an error model that reads them."""
        if self.error.individual_parameters:
            if ip is None:
                raise ModelError(f"the error model reads individual parameters {list(self.error.individual_parameters)}"
                                 ", which this computation does not provide")
            return self.error.variance(f, self.sigma_sds(values), self.error_thetas(values),
                                       {n: ip[n] for n in self.error.individual_parameters})
        if not self.error.theta_parameters:
            return self.error.variance(f, self.sigma_sds(values))
        return self.error.variance(f, self.sigma_sds(values), self.error_thetas(values))

    @property
    def non_gaussian(self) -> bool:
        """Whether the observations follow a likelihood (``pkmix.bernoulli``, ...) rather
        than a Gaussian residual error model."""
        return self.error.non_gaussian

    def observation_m2ll(self, values: ParameterValues, f, y, subject):
        """A likelihood model's per-record -2 log p(y_j | f_j) at predictions ``f`` and
        observations ``y`` [R] (every record; the caller masks the observed ones)."""
        return self.error.m2ll_records(f, y, self.error_thetas(values), self.sigma_sds(values), subject)

    def omega_full(self, values: ParameterValues, n_occasions: int):
        """The OMEGA of a subject's full eta vector (BSV block, then IOV per occasion)."""
        if not self.iov_names:
            return values.omega
        n_occ = max(int(n_occasions), 1)
        iov_block = jnp.diag(jnp.tile(values.iov, n_occ))
        n1, n2 = values.omega.shape[0], iov_block.shape[0]
        top = jnp.concatenate([values.omega, jnp.zeros((n1, n2))], axis=1)
        bottom = jnp.concatenate([jnp.zeros((n2, n1)), iov_block], axis=1)
        return jnp.concatenate([top, bottom], axis=0)

    def check_values(self, values: ParameterValues):
        """Check user-given parameter values (shapes, bounds, positive definiteness)."""
        s = self.spec
        theta = np.asarray(values.theta, dtype=float)
        if theta.shape != (len(s.theta_names),):
            raise ModelError(f"theta has shape {theta.shape}, expected ({len(s.theta_names)},)")
        for n, t, v in zip(s.theta_names, s.thetas, theta):
            if not np.isfinite(v):
                raise ModelError(f"theta '{n}' = {v} is not finite")
            if not t.lower <= v <= t.upper:
                raise ModelError(f"theta '{n}' = {v} is outside its bounds ({t.lower}, {t.upper})")
        om = np.asarray(values.omega, dtype=float)
        if om.shape != (s.n_eta, s.n_eta):
            raise ModelError(f"omega has shape {om.shape}, expected {(s.n_eta, s.n_eta)}")
        if s.n_eta and np.linalg.eigvalsh((om + om.T) / 2).min() <= 0:
            raise ModelError("omega is not positive definite")
        for n, sg, v in zip(s.sigma_names, s.sigmas, np.asarray(values.sigma)):
            if not v > 0:
                raise ModelError(f"sigma '{n}' = {v} must be positive")
            if not sg.lower <= v <= sg.upper:
                raise ModelError(f"sigma '{n}' = {v} is outside its bounds ({sg.lower}, {sg.upper})")

"""MAP individualisation: the posterior mode of a patient's etas and its uncertainty.

The MAP estimate is the estimator's inner problem with interaction (FOCE-I's eta mode):
the minimum of

    l(eta) = sum_obs [log R + (y - f)^2 / R] + sum_blq -2 log Phi((LLOQ - f)/sqrt(R))
             + eta' Omega^-1 eta + log|Omega|,

-2 log of the posterior density up to a constant. It is found by the estimator's own
solver (`pkmix._estimation.inner.solve_eta`: Newton on the positive-definite
Gauss-Newton matrix, with a secant correction where that stays positive definite, and a
line search that backtracks, or lengthens the next step where l falls almost linearly,
started at eta = 0), so a level
taken at steady state only cannot send it astray, and the estimate is the EBE NONMEM's
POSTHOC step would report.

The posterior covariance of the etas is the inverse of the expected information
H~ = Omega^-1 + sum_obs [a'a/R + 1/2 dR'dR/R^2] (a = df/deta), the matrix NONMEM's
FOCE-I uses at the mode (l is -2 log posterior, so Cov = (1/2 d2l/deta2)^-1 ~ H~^-1).
A BLQ level adds 1/4 of the outer product of its gradient of l (the same identity that
makes H~ the expected information of the Gaussian terms), so a censored level still
counts as information.

Everything numerical for one patient runs in one jitted program per model and padded
record count (`_map_core`), and the prediction curve in another (`simulate`), so a
second patient with the same padded shape compiles nothing. For library models the
traced programs are also kept on disk (`call_program`), so a new process neither
traces nor compiles them again.
"""

from __future__ import annotations

import collections
import dataclasses
import weakref
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import _compile
from .._data.dataset import padded_length
from .. import _linalg as linalg
from .._estimation.inner import solve_eta
from .._estimation.likelihood import Options
from .._estimation.objective import omega_terms
from .patient import BoundPatient, ModelInfo, Patient, bind, load_patient, model_info

# Times each jitted entry was traced (a retrace is a recompile): the no-recompile tests
# read these.
TRACES: collections.Counter = collections.Counter()

# The prediction curve's grid and the padding of the curve's records.
CURVE_POINTS = 320
CURVE_BUCKET = 64


def _map_core_impl(model, opts: Options, max_iter: int, tol: float | None, values, subject, eta0):
    TRACES["map"] += 1
    omega_inv, logdet = omega_terms(model, values, subject.n_occasions)
    extra = {} if tol is None else {"tol": tol}
    res = solve_eta(model, values, eta0, subject, opts, omega_inv, logdet, max_iter=max_iter, **extra)
    p, gn = res.pieces, res.gauss_newton  # at the mode (see InnerResult)
    info = 0.25 * (gn + gn.T)  # H~ = (1/2) Gauss-Newton, symmetrised
    cov = linalg.spd_inv(info)
    cov = 0.5 * (cov + cov.T)
    last = jnp.maximum(jnp.sum(subject.record_mask) - 1, 0)

    def ip_last(eta):
        ip = model.individual_parameters(values, eta, subject)
        return {k: v[last] for k, v in ip.items()}

    jac = jax.jacfwd(ip_last)(res.eta)
    ip = model.individual_parameters(values, res.eta, subject)
    ip0 = model.individual_parameters(values, jnp.zeros_like(res.eta), subject)
    prior_cov = linalg.spd_inv(omega_inv)
    return {
        "eta": res.eta, "converged": res.converged, "iterations": res.iterations, "objective": res.m2ll,
        "grad_norm": res.grad_norm, "information": info, "covariance": cov, "prior_covariance": prior_cov,
        "ip": ip, "ip_typical": ip0, "jacobian": jac, "ipred": p.f, "variance": p.var,
    }


_map_core = eqx.filter_jit(_map_core_impl)


def _simulate_impl(model, has_steady_state: bool, covariate_rule: str, values, etas, subject):
    TRACES["simulate"] += 1
    return jax.vmap(lambda e: model.subject_predict(values, e, subject, has_steady_state=has_steady_state,
                                                    covariate_rule=covariate_rule))(etas)


_simulate = eqx.filter_jit(_simulate_impl)


def simulate(model, has_steady_state: bool, covariate_rule: str, values, etas, subject, *, fingerprint=None):
    """Predictions at every record of ``subject`` for each row of ``etas`` ([k, q] -> [k, R])."""
    return call_program("simulate", _simulate_impl, _simulate, (model, has_steady_state, covariate_rule),
                        (values, etas, subject), fingerprint)


# ------------------------------------------------------------------ program cache
# The exported-program cache (`call_program`) lives in pkmix._compile, which the fit
# engine shares without importing pkmix.dosing; the names stay importable from here.
from .._compile import (  # noqa: E402
    PROGRAM_FORMAT as PROGRAM_FORMAT, _PROGRAMS as _PROGRAMS, _program_dir as _program_dir,
    _source_hash as _source_hash, call_program as call_program,
    library_fingerprint as model_fingerprint,
)


@dataclasses.dataclass
class MAPResult:
    """A patient's MAP estimate (see `map_estimate`).

    Attributes:
        eta: the posterior mode of the etas ([n_eta] or, with IOV, BSV etas then one
            block per occasion); ``eta_names`` labels them.
        covariance: posterior covariance of the etas, inv(H~).
        prior_covariance: OMEGA (the prior), for comparison.
        parameters: the individual parameters on every record (a DataFrame: TIME, EVID,
            one column per parameter).
        current: ``{name: value}`` at the patient's last record (MAP).
        typical: ``{name: value}`` at the last record with every eta 0 (a priori).
        se: ``{name: SE}`` by the delta method; ``ci``: ``{name: (low, high)}`` 95 %,
            on the log scale for positive parameters (exponential etas are log-normal).
        curve: the individual (IPRED) and population (PRED) prediction on a fine grid.
        observations: the levels with IPRED, PRED and weighted residuals.
        objective: l at the mode (-2 log posterior density without constants).
        converged, iterations: the solver's report.
        warnings: covariates outside the validated range, non-convergence.
    """

    model_name: str
    patient_id: str
    eta: np.ndarray
    eta_names: list
    covariance: np.ndarray
    prior_covariance: np.ndarray
    parameters: Any
    current: dict
    typical: dict
    se: dict
    ci: dict
    curve: Any
    observations: Any
    objective: float
    converged: bool
    iterations: int
    warnings: list
    covariate_rule: str
    # Internals reused by the posterior and the regimen optimiser.
    bound: BoundPatient = dataclasses.field(repr=False, default=None)
    values: Any = dataclasses.field(repr=False, default=None)
    opts: Options = dataclasses.field(repr=False, default=None)
    jacobian: dict = dataclasses.field(repr=False, default=None)

    @property
    def info(self) -> ModelInfo:
        return self.bound.info

    @property
    def model(self):
        return self.bound.info.model

    @property
    def eta_se(self) -> np.ndarray:
        return np.sqrt(np.diag(self.covariance))

    @property
    def n_bsv(self) -> int:
        return self.model.spec.n_eta

    def subject(self):
        return self.bound.subject()

    def summary(self) -> str:
        """The individual estimates with their uncertainty, as text."""
        lines = [f"MAP estimate: model {self.model_name}, patient {self.patient_id}"
                 f" ({self.bound.n_observations} level{'s' if self.bound.n_observations != 1 else ''})"]
        width = max([len(k) for k in self.current] + [len(n) for n in self.eta_names] + [9])
        lines.append(f"  {'parameter':<{width}}  {'typical':>10}  {'individual':>10}  {'SE':>9}  95% CI")
        for k, v in self.current.items():
            lo, hi = self.ci[k]
            lines.append(f"  {k:<{width}}  {self.typical[k]:>10.4g}  {v:>10.4g}  {self.se[k]:>9.3g}  "
                         f"{lo:.4g} to {hi:.4g}")
        prior_sd = np.sqrt(np.diag(self.prior_covariance))
        post_sd = self.eta_se
        lines.append(f"  {'eta':<{width}}  {'value':>10}  {'post. SD':>10}  {'prior SD':>9}")
        for i, name in enumerate(self.eta_names):
            lines.append(f"  {name:<{width}}  {self.eta[i]:>10.4f}  {post_sd[i]:>10.4f}  {prior_sd[i]:>9.4f}")
        lines.append(f"  objective (-2 log posterior) {self.objective:.4f}; "
                     f"{'converged' if self.converged else 'NOT converged'} in {self.iterations} iterations")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """A JSON-ready summary."""
        return {
            "model": self.model_name, "patient": self.patient_id,
            "eta": {n: float(v) for n, v in zip(self.eta_names, self.eta)},
            "eta_covariance": {"names": list(self.eta_names), "matrix": self.covariance.tolist()},
            "parameters": {k: {"individual": self.current[k], "typical": self.typical[k], "se": self.se[k],
                               "ci95": list(self.ci[k])} for k in self.current},
            "objective": self.objective, "converged": self.converged, "iterations": self.iterations,
            "covariate_rule": self.covariate_rule,
            "observations": [{k: (None if (isinstance(v, float) and not np.isfinite(v)) else v)
                              for k, v in row.items()} for row in self.observations.to_dict("records")],
            "warnings": list(self.warnings),
        }


def _eta_names(model, bound: BoundPatient) -> list:
    names = list(model.eta_names)
    if model.iov_names:
        for label in bound.occasions:
            lab = f"{label:g}"
            names += [f"{k}[occ {lab}]" for k in model.iov_names]
    return names


_DEFAULT_VALUES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def parameter_values(model, params=None):
    """The population parameter values (the model's own unless ``params`` overrides);
    the model's own are cached, since a dosing session reuses them for every patient."""
    from .._predict import parameter_values as from_params

    if params is not None:
        return from_params(model, params)
    values = _DEFAULT_VALUES.get(model)
    if values is None:
        values = from_params(model, None)
        _DEFAULT_VALUES[model] = values
    return values


def map_estimate(model, patient, *, covariate_rule: str = "nonmem", params=None, metadata=None,
                 max_iter: int = 100, tol: float | None = None, curve_points: int | None = CURVE_POINTS,
                 curve_end: float | None = None) -> MAPResult:
    """The MAP (posterior mode) individual estimates of one patient.

    Args:
        model: a ``pkmix.Model``, a library module, or a library model name
            (``"vancomycin_goti2018"``).
        patient: a `Patient`, a JSON dict, or a path (JSON or one-patient NONMEM CSV).
        covariate_rule: "nonmem" (a record's covariates govern the interval that ends at
            it) or "locf" (the values at the start of the interval).
        params: population parameter values (default: the model's, i.e. as published).
        metadata: the model's METADATA when ``model`` is a bare ``Model`` not from the
            library (units, validated ranges).
        max_iter, tol: the eta solver's iteration limit and stopping tolerance (default:
            the estimator's, see `pkmix._estimation.inner.solve_eta`).
        curve_points: points of the prediction curve (0: no curve, and no PRED).
        curve_end: last time of the curve (default: the last record plus a dosing interval).

    Returns:
        A `MAPResult`. With no levels it is the a priori estimate (etas 0, covariance
        OMEGA).

    Raises:
        PatientError: a fault in the patient's record (see `load_patient`).
    """
    import pandas as pd

    if curve_points is None:
        curve_points = CURVE_POINTS
    if covariate_rule not in ("nonmem", "locf"):
        raise ValueError(f"covariate_rule must be 'nonmem' or 'locf', got {covariate_rule!r}")
    info = model_info(model, metadata)
    if isinstance(patient, BoundPatient):
        bound = patient
    else:
        patient = patient if isinstance(patient, Patient) else load_patient(patient)
        bound = bind(info, patient)
    m = info.model
    values = parameter_values(m, params)
    opts = Options(interaction=True, has_steady_state=bound.has_steady_state, covariate_rule=covariate_rule,
                   has_blq=bound.has_blq)
    n_occ = max(bound.n_occasions, 1)
    q = m.n_eta_total(n_occ)
    subject = bound.subject(rule=covariate_rule)
    fingerprint = model_fingerprint(info)
    out = call_program("map", _map_core_impl, _map_core, (m, opts, int(max_iter), None if tol is None else float(tol)),
                       (values, subject, np.zeros(q)), fingerprint)

    # The prediction curve (IPRED and PRED) on a grid, in one call.
    rec = bound.records
    n = bound.n_records
    t0 = float(min(0.0, rec["TIME"].min())) if n else 0.0
    if curve_end is None:
        last_t = float(rec["TIME"].max()) if n else 0.0
        step = (bound.last_dose or {}).get("interval") or 12.0
        curve_end = max(last_t + step, t0 + 24.0)
    grid = np.linspace(t0, float(curve_end), int(curve_points)) if curve_points else np.zeros(0)
    if curve_points:
        width = padded_length(n + len(grid), CURVE_BUCKET)
        curve_subject = bound.subject(n_records=width, extra={"TIME": grid}, rule=covariate_rule)
        etas = jnp.stack([out["eta"], jnp.zeros(q)])
        preds = np.asarray(simulate(m, bound.has_steady_state, covariate_rule, values, etas, curve_subject,
                                    fingerprint=fingerprint))
        is_grid = _grid_positions(rec["TIME"], grid)
        grid_at = np.flatnonzero(is_grid)
        curve = pd.DataFrame({"TIME": grid, "IPRED": preds[0][grid_at], "PRED": preds[1][grid_at]})
        pred_rec = preds[1][np.flatnonzero(~is_grid)]
    else:  # no curve asked for: PRED is not computed either
        curve = pd.DataFrame({"TIME": grid, "IPRED": grid, "PRED": grid})
        pred_rec = np.full(n, np.nan)

    # Host-side summaries.
    eta = np.asarray(out["eta"])
    cov = np.asarray(out["covariance"])
    ip = {k: np.asarray(v)[:n] for k, v in out["ip"].items()}
    ip0 = {k: np.asarray(v)[:n] for k, v in out["ip_typical"].items()}
    params_frame = pd.DataFrame({"TIME": rec["TIME"], "EVID": rec["EVID"], **ip})
    current = {k: float(v[-1]) for k, v in ip.items()} if n else {}
    typical = {k: float(v[-1]) for k, v in ip0.items()} if n else {}
    se, ci = {}, {}
    jac = {k: np.asarray(v) for k, v in out["jacobian"].items()}
    for k, v in current.items():
        J = jac[k]
        se[k] = float(np.sqrt(max(J @ cov @ J, 0.0)))
        if v > 0:
            s_log = float(np.sqrt(max((J / v) @ cov @ (J / v), 0.0)))
            ci[k] = (float(v * np.exp(-1.959964 * s_log)), float(v * np.exp(1.959964 * s_log)))
        else:
            ci[k] = (v - 1.959964 * se[k], v + 1.959964 * se[k])
    ipred = np.asarray(out["ipred"])[:n]
    var = np.asarray(out["variance"])[:n]
    obs = rec["OBS"]
    tr = m.error.transform
    dv = rec["DV"]
    iwres = (np.asarray(tr(jnp.asarray(np.where(obs, dv, 1.0)))) - np.asarray(tr(jnp.asarray(ipred)))) / np.sqrt(var)
    observations = pd.DataFrame({
        "TIME": rec["TIME"][obs], "DV": dv[obs], "BLQ": rec["BLQ"][obs], "LLOQ": rec["LLOQ"][obs],
        "IPRED": ipred[obs], "PRED": pred_rec[obs], "IWRES": np.where(rec["BLQ"][obs], np.nan, iwres[obs]),
    })
    warnings_list = list(bound.warnings)
    converged = bool(out["converged"])
    if not converged:
        warnings_list.append(f"the MAP search did not converge (stopping criterion {float(out['grad_norm']):.2g} after "
                             f"{int(out['iterations'])} iterations): treat the estimates with caution")
    if not np.all(np.isfinite(eta)):
        warnings_list.append("the MAP estimate is not finite: the model cannot describe these levels")
    return MAPResult(
        model_name=info.name, patient_id=bound.patient.id, eta=eta, eta_names=_eta_names(m, bound),
        covariance=cov, prior_covariance=np.asarray(out["prior_covariance"]), parameters=params_frame,
        current=current, typical=typical, se=se, ci=ci, curve=curve, observations=observations,
        objective=float(out["objective"]), converged=converged, iterations=int(out["iterations"]),
        warnings=warnings_list, covariate_rule=covariate_rule, bound=bound, values=values, opts=opts,
        jacobian=jac,
    )


def _grid_positions(record_times, grid) -> np.ndarray:
    """Which positions of the merged (records + grid, padded) subject are grid points.

    Mirrors `merge_records`: sorted by time, the patient's records first at equal times.
    """
    n, g = len(record_times), len(grid)
    times = np.r_[np.asarray(record_times, float), np.asarray(grid, float)]
    is_extra = np.r_[np.zeros(n, bool), np.ones(g, bool)]
    order = np.lexsort((np.arange(n + g), is_extra, times))
    return is_extra[order]

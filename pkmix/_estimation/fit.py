"""``pkmix.fit`` and ``pkmix.evaluate``: the estimation entry points."""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .. import _compile
from .._config import require_x64
from .._data.errors import _format_id
from .._diagnostics import batch_diagnostics
from .._model.errors import ModelError
from .._model.transforms import ParameterTransform
from .._pk.events import infusion_records
from .._predict import bind, parameter_values
from .._progress import wanted, while_running
from .covariance import gradient_program, hessian_by_differences, natural_names, summarize, user_scale
from .methods import get_method
from . import inner
from .inner import InnerResult
from .objective import solve_modes, subject_ofvs
from .outer import PROGRESS, STATUS_GRADIENT, STATUS_MESSAGES, STATUS_NO_DESCENT, STATUS_NO_PROGRESS, \
    STATUS_NONFINITE, OuterSettings, minimize_in_graph

COVARIANCE_KINDS = ("sandwich", "r", "s", "none")
NEGLIGIBLE_OFV_GAIN = 1e-4  # OFV units


def transform_for(model) -> ParameterTransform:
    """One transform per model (it depends only on the declarations), so repeated fits
    of the same model reuse the compiled programs."""
    t = getattr(model, "_transform", None)
    if t is None:
        t = ParameterTransform(model.spec)
        model._transform = t
    return t


def _options(method, batch, covariate_rule):
    """The static settings of the likelihood programs, from the data's flags (a program
    compiled for data without steady state, BLQ records or infusions leaves them out)."""
    has_ss = bool(np.any(np.asarray(batch.ss) > 0))
    has_infusions = bool(np.any(infusion_records(batch)))
    has_blq = bool(np.any(np.asarray(batch.blq) & np.asarray(batch.obs_mask)))
    if has_blq and not method.supports_blq:
        raise ModelError(
            f"the data have BLQ records, which need the M3 likelihood: use method='focei' or "
            f"'laplace' (got '{method.name}'), or drop the BLQ records"
        )
    return method.options(has_ss, covariate_rule, has_blq, has_infusions)


def _program_minimize(model, method, opts, transform, settings, report, x0, base, etas0, batch, max_iter):
    """The optimiser's final state, and the parameters there on the user's scale
    (``covariance.user_scale``: one program, not two to compile)."""
    state = minimize_in_graph(model, method, opts, transform, settings, x0, base, etas0, batch, max_iter,
                              report_progress=report)
    return state, user_scale(transform, state.x, base)


# An OMEGA correlation this close to +-1 makes OMEGA near singular (NONMEM's boundary
# test flags correlations beyond 0.99 too).
BOUNDARY_CORRELATION = 0.99


def _omega_near_boundary(model, values) -> str | None:
    """A message when estimated etas are correlated beyond BOUNDARY_CORRELATION: the
    data then pull OMEGA towards a singular matrix, where the fit cannot settle (the
    modes grow ill-conditioned) and the estimates mean little."""
    omega = np.asarray(values.omega, dtype=float)
    sd = np.sqrt(np.clip(np.diag(omega), 1e-300, None))
    corr = omega / np.outer(sd, sd)
    names = model.spec.eta_names
    worst = [(abs(corr[i, j]), i, j) for i in range(len(names)) for j in range(i)
             if abs(corr[i, j]) > BOUNDARY_CORRELATION]
    if not worst:
        return None
    _, i, j = max(worst)
    return (f"estimate near its boundary: the correlation of {names[j]} and {names[i]} is {corr[i, j]:.4f} "
            f"(OMEGA near singular; the data do not support it)")


def _require_observations(dataset) -> None:
    """A fit needs observations: without them the OFV is 0 at any parameter values."""
    from .._data import DatasetError
    from .._data.errors import Violation

    if dataset.n_observations == 0:
        raise DatasetError([Violation(
            None, None, "EVID", "at least one observation (EVID 0, MDV 0) to fit",
            f"the dataset has no observations ({dataset.n_records} records, all doses or other events): "
            "there is nothing to estimate from")], source=dataset.source)


def _program_pieces(model, covariate_rule, has_ss, has_infusions, n_eta, values, batch):
    def one(subject):
        eta = jnp.zeros(n_eta)
        ip = model.individual_parameters(values, eta, subject)
        f = model.subject_predict(values, eta, subject, covariate_rule=covariate_rule,
                                  has_steady_state=has_ss, has_infusions=has_infusions)
        return ip, f, model.residual_variance(values, f)

    return jax.vmap(one)(batch)


def _explain_nonfinite(model, values, dataset, batch, covariate_rule) -> str:
    """Where the objective stops being finite at ``values`` (etas 0), found by
    evaluating the pieces once on the host: the first individual parameter, prediction
    or residual variance that is not finite, with its subject, record and time."""
    has_ss = bool(np.any(np.asarray(batch.ss) > 0))
    has_infusions = bool(np.any(infusion_records(batch)))
    n_eta = model.n_eta_total(batch.n_occasions)
    try:
        (ip, f, var), _, _ = _compile.run(
            _program_pieces, (model, covariate_rule, has_ss, has_infusions, n_eta), values, batch)
    except Exception as e:  # noqa: BLE001 - the explanation must not hide the original problem
        return f"(the pieces could not be evaluated: {type(e).__name__}: {e})"
    record = np.asarray(batch.record_mask)
    obs = np.asarray(batch.obs_mask)
    frame = dataset.frame
    subj, _ = pd.factorize(frame["ID"], sort=False)
    starts = np.concatenate([[0], np.flatnonzero(subj[1:] != subj[:-1]) + 1])

    def first(bad):
        s, r = np.argwhere(bad)[0]
        row = frame.iloc[starts[s] + r]
        n_subjects = int(np.any(bad, axis=1).sum())
        others = f"; {n_subjects - 1} other subject(s) too" if n_subjects > 1 else ""
        return s, r, (f"subject ID {_format_id(row['ID'])}, record {int(row['REC'])} (TIME {row['TIME']:g})",
                      others)

    for name in sorted(ip):
        value = np.asarray(ip[name])
        bad = record & ~np.isfinite(value)
        if bad.any():
            s, r, (where, others) = first(bad)
            row = frame.iloc[starts[s] + r]
            covs = ", ".join(f"{c}={row[c.upper()]:g}" for c in model.covariates if c.upper() in row.index)
            return (f"individual parameter '{name}' = {value[s, r]} at {where}{others}: "
                    f"check individual() {f'and the covariates there ({covs})' if covs else 'and the thetas'}")
    f = np.asarray(f)
    bad = obs & ~np.isfinite(f)
    if bad.any():
        s, r, (where, others) = first(bad)
        finite_ip = ", ".join(f"{k}={float(np.asarray(v)[s, r]):.4g}" for k, v in sorted(ip.items()))
        ss_dose = (np.isin(np.asarray(batch.evid[s]), (1, 4)) & (np.asarray(batch.ss[s]) > 0)
                   & (np.asarray(batch.ii[s]) > 0) & record[s])
        ss_dose[r + 1:] = False
        hint = "check observe() and the structure's equations"
        if ss_dose.any():
            k = int(np.flatnonzero(ss_dose)[-1])
            hint = (f"the steady-state dose at record {int(frame.iloc[starts[s] + k]['REC'])} may be one pkmix "
                    "does not support (a lag longer than II, or ALAG + infusion duration longer than II); "
                    "else " + hint)
        return (f"the prediction is {f[s, r]} at {where}{others} (individual parameters there: {finite_ip}): "
                + hint)
    var = np.asarray(var)
    bad = obs & ~(np.isfinite(var) & (var > 0))
    if bad.any():
        s, r, (where, others) = first(bad)
        return (f"the residual variance is {var[s, r]} at {where}{others} (prediction {f[s, r]:.4g}): "
                "check the error model's parameters (a proportional error needs predictions other than 0)")
    return ("every individual parameter, prediction and residual variance is finite at etas 0, so the eta "
            "modes ran to values where they are not: check the OMEGA initial values (too large?) and that "
            "individual() stays finite for etas of a few standard deviations")


def _program_evaluate(model, method, opts, transform, inner_max_iter, inner_tol, values, etas0, batch):
    modes = solve_modes(model, method, opts, values, etas0, batch, max_iter=inner_max_iter, tol=inner_tol)
    return modes, subject_ofvs(model, method, opts, values, modes.eta, batch)


def _program_diagnostics(model, opts, n_sim, values, etas, batch, key):
    return batch_diagnostics(model, opts, values, etas, batch, key, n_sim)


def _diagnostics(model, opts, npde, npde_samples, values, etas, batch, seed, progress):
    """The diagnostics table's columns (compiled once per model and data shape), with a
    progress display while they run. NPDE (``npde_samples`` simulated datasets per
    subject) only when asked for: it would otherwise compile and run longer than the
    CWRES the table is read for."""
    n_sim = int(npde_samples) if npde else 0
    what = f"diagnostics (NPDE from {n_sim:,} simulations per subject)" if n_sim else "diagnostics (CWRES)"
    with while_running(what, progress):
        return _compile.run(_program_diagnostics, (model, opts, n_sim), values, etas, batch,
                            jax.random.PRNGKey(seed))


def evaluate(model, data, method: str = "focei", params=None, *, etas=None, covariate_rule="nonmem",
             diagnostics: bool = True, npde: bool = False, npde_samples: int = 1000, seed: int = 0,
             progress: bool | None = None):
    """The OFV at given parameter values, without estimation (NONMEM's MAXEVAL=0), with
    the EBEs and (by default) the diagnostics table (with NPDE when ``npde``; ``progress``:
    a progress line while the diagnostics run longer than 2 s; default when standard
    output is a terminal).

    Returns:
        A ``FitResult`` with ``iterations = 0`` (no standard errors).

    Raises:
        DatasetError: the data have no observations.
        ModelError: the objective is not finite at the given values; the message names
            the subject, record and the individual parameter, prediction or residual
            variance that is not finite.
    """
    from .._results import build_result

    require_x64()
    method = get_method(method)
    dataset, batch = bind(model, data)
    _require_observations(dataset)
    values = parameter_values(model, params)
    opts = _options(method, batch, covariate_rule)
    transform = transform_for(model)
    n_eta = model.n_eta_total(batch.n_occasions)
    etas0 = jnp.zeros((dataset.n_subjects, n_eta)) if etas is None else jnp.asarray(etas, dtype=jnp.float64)
    t0 = time.perf_counter()
    (modes, ofvs), compile_s, run_s = _compile.run(
        _program_evaluate, (model, method, opts, transform, inner.MAX_ITER, inner.TOL), values, etas0, batch)
    if not np.all(np.isfinite(np.asarray(ofvs))):
        raise ModelError("the objective is not finite at the given parameter values: "
                         + _explain_nonfinite(model, values, dataset, batch, covariate_rule))
    diag, diag_compile, diag_s = ({}, 0.0, 0.0)
    if diagnostics:
        diag, diag_compile, diag_s = _diagnostics(model, opts, npde, npde_samples, values, modes.eta, batch,
                                                  seed, progress)
    ofv = float(np.sum(np.asarray(ofvs)))
    status_message = "evaluation at the given parameters (no estimation)"
    return build_result(
        model=model, method=method, dataset=dataset, batch=batch, values=values, transform=transform,
        ofv=ofv, subject_ofvs=np.asarray(ofvs), modes=modes, diagnostics=diag, converged=bool(np.isfinite(ofv)),
        message=status_message, iterations=0, covariance=None,
        timing={"total_s": time.perf_counter() - t0, "compile_s": compile_s + diag_compile,
                "estimation_s": run_s, "covariance_s": 0.0, "diagnostics_s": diag_s},
    )


def fit(model, data, method: str = "focei", *, params=None, max_iter: int = 500, gtol: float = 1e-3,
        covariance: str = "sandwich", covariate_rule: str = "nonmem", progress: bool | None = None,
        diagnostics: bool = True, npde: bool = False, npde_samples: int = 1000, seed: int = 0):
    """Estimate a population model.

    Args:
        model: a ``pkmix.Model``.
        data: a ``Dataset``, a NONMEM-format CSV path or a DataFrame.
        method: "fo", "foce", "focei" (default) or "laplace".
        params: initial values (default the model's).
        max_iter: outer iteration limit.
        gtol: convergence when every |dOFV/dx| on the unconstrained scale is below it.
        covariance: "sandwich" (R^-1 S R^-1, NONMEM's default), "r", "s" or "none".
        covariate_rule: "nonmem" or "locf" (see ``pkmix.predict``).
        progress: print iteration, OFV and gradient norm for fits that run longer than
            2 s, and a line while the diagnostics run (default: when stdout is a
            terminal). The display is a host callback in
            the compiled program, which keeps that program out of the persistent
            compilation cache: pass ``progress=False`` in scripts run again and again.
        diagnostics: compute the per-record table (PRED, IPRED, WRES, CWRES, IWRES).
        npde: add NPDE to the table (simulation based: compiled and run only when asked for).
        npde_samples: simulations per subject for NPDE.
        seed: random seed for NPDE.

    Returns:
        A ``FitResult``. A fit that fails says why in ``.message`` and ``.converged``, and
        still returns its last estimates.

    Raises:
        DatasetError: the data have no observations (or break a rule, see ``read_nonmem``).
        ModelError: the objective or its gradient is not finite at the initial estimates:
            nothing can be estimated; the message names the subject, record and the
            individual parameter, prediction or residual variance that is not finite.
    """
    from .._results import build_result

    require_x64()
    covariance = covariance.lower()
    if covariance not in COVARIANCE_KINDS:
        raise ValueError(f"covariance must be one of {COVARIANCE_KINDS}, got {covariance!r}")
    method = get_method(method)
    dataset, batch = bind(model, data)
    _require_observations(dataset)
    values0 = parameter_values(model, params)
    opts = _options(method, batch, covariate_rule)
    transform = transform_for(model)
    if transform.size == 0:
        raise ModelError("every parameter is fixed: use pkmix.evaluate for the OFV at fixed values")
    base = values0
    x0 = transform.to_vector(values0, base)
    n_eta = model.n_eta_total(batch.n_occasions)
    etas0 = jnp.zeros((dataset.n_subjects, n_eta))
    # max_iter is a run-time argument of the compiled loop (changing it compiles nothing).
    settings = OuterSettings(gtol=float(gtol))
    report = wanted(progress)

    # One compiled program runs the whole optimisation; with max_iter = 0 it evaluates
    # the OFV, per-subject gradients and modes at a point, which the covariance step uses.
    t_start = time.perf_counter()
    # Progress reporting is compiled in only when asked for: a program with a host
    # callback is never written to JAX's persistent compilation cache, so a fit without
    # progress is the one a second process finds compiled.
    static = (model, method, opts, transform, settings, report)
    limit = jnp.asarray(int(max_iter), jnp.int32)
    executable, compile_s = _compile.compiled(_program_minimize, static, x0, base, etas0, batch, limit)

    def evaluate_at(x):
        # The modes start from their first-order prediction at x (computed on the host
        # copy of the state: NumPy, nothing to compile).
        return executable(np.asarray(x), base, host_state.etas_at(x), batch, np.zeros((), np.int32))[0]

    PROGRESS.reset(report)
    t_est = time.perf_counter()
    state, (values, natural, J) = jax.block_until_ready(executable(x0, base, etas0, batch, limit))
    estimation_s = time.perf_counter() - t_est
    host_state = jax.tree_util.tree_map(np.asarray, state)
    status = int(state.status)
    if status == STATUS_NONFINITE:
        # Nothing was estimated: a problem of the model, the data or the initial values.
        raise ModelError("the objective or its gradient is not finite at the initial estimates: "
                         + _explain_nonfinite(model, values0, dataset, batch, covariate_rule))
    x_hat = state.x
    grad = host_state.grad
    gmax = float(np.max(np.abs(grad), initial=0.0))
    ofvs = np.asarray(state.ofvs)
    ofv = float(np.sum(ofvs))
    finite = np.isfinite(ofv) and bool(np.all(np.isfinite(np.asarray(x_hat))))
    # The line search stops finding lower values when the OFV's rounding noise (from the
    # eta modes; about 1e-9 with inner.polish) exceeds what the step can gain: that is a
    # minimum when the quadratic models predict a gain below NEGLIGIBLE_OFV_GAIN
    # (outer.OuterState.predicted_gain).
    predicted_gain = float(host_state.predicted_gain)
    at_noise_floor = status == STATUS_NO_DESCENT and 0.0 <= predicted_gain < NEGLIGIBLE_OFV_GAIN
    converged = finite and (status in (STATUS_GRADIENT, STATUS_NO_PROGRESS) or at_noise_floor)
    message = STATUS_MESSAGES.get(status, f"status {status}")
    if at_noise_floor and finite:
        message = (f"converged: the OFV is within {predicted_gain:.1g} of a minimum (line search at the "
                   f"objective's rounding noise), max |gradient| {gmax:.2g}")
    modes = InnerResult(state.etas, state.etas_converged, None, None, None)
    n_bad = int(np.sum(~np.asarray(modes.converged)))
    if n_bad:
        message += f"; eta modes did not converge for {n_bad} subject(s)"
        warnings.warn(f"inner eta optimisation did not converge for {n_bad} subject(s)", stacklevel=2)
    boundary = _omega_near_boundary(model, values)
    if boundary:
        message += f"; {boundary}"
        warnings.warn(boundary, stacklevel=2)

    cov_result, cov_s = None, 0.0
    if covariance != "none" and finite:
        t_cov = time.perf_counter()
        G = np.asarray(state.jac)

        def gradient_at(x):
            return np.asarray(evaluate_at(x).grad)

        R = hessian_by_differences(gradient_at, np.asarray(x_hat))
        cov_result = summarize(G, R, np.asarray(J), np.asarray(natural), natural_names(transform), covariance)
        cov_s = time.perf_counter() - t_cov
    diag, diag_compile, diag_s = ({}, 0.0, 0.0)
    if diagnostics and finite:
        diag, diag_compile, diag_s = _diagnostics(model, opts, npde, npde_samples, values, modes.eta, batch,
                                                  seed, report)
    timing = {
        "total_s": time.perf_counter() - t_start,
        "compile_s": compile_s + diag_compile,
        "estimation_s": estimation_s,
        "covariance_s": cov_s,
        "diagnostics_s": diag_s,
    }
    return build_result(
        model=model, method=method, dataset=dataset, batch=batch, values=values, transform=transform,
        ofv=ofv, subject_ofvs=ofvs, modes=modes, diagnostics=diag, converged=bool(converged),
        message=message, iterations=int(state.iterations), covariance=cov_result, timing=timing,
        gradient=np.asarray(state.grad),
    )


__all__ = ["fit", "evaluate", "transform_for"]

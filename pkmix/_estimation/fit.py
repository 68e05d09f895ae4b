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
from .._pk.events import infusion_records
from .._predict import bind, parameter_values
from .._progress import wanted, while_running
from .covariance import natural_names, summarize
from .engine import fit_program, transform_for
from .inner import InnerResult
from .methods import IMP, get_method
from .methods.imp import mc_standard_errors
from .settings import RESULTS, FitSettings, verdict


def likelihood_options(method, batch, covariate_rule):
    """The static settings of the likelihood programs, from the data's flags (a program
    compiled for data without steady state, BLQ records or infusions leaves them out).
    ``batch``: a ``SubjectBatch``, or one whose fields have a leading replicate axis."""
    has_ss = bool(np.any(np.asarray(batch.ss) > 0))
    has_infusions = bool(np.any(infusion_records(batch)))
    has_blq = bool(np.any(np.asarray(batch.blq) & np.asarray(batch.obs_mask)))
    if has_blq and not method.supports_blq:
        raise ModelError(
            f"the data have BLQ records, which need the M3 likelihood: use method='focei' or "
            f"'laplace' (got '{method.name}'), or drop the BLQ records"
        )
    return method.options(has_ss, covariate_rule, has_blq, has_infusions)


def _problem(model, data, method, params, covariate_rule):
    """What fit and evaluate start from: the method, the data bound to the model (it
    must have observations: without them the OFV is 0 at any parameter values), the
    parameter values, the likelihood's static options and the parameter transform."""
    require_x64()
    method = get_method(method)
    dataset, batch = bind(model, data)
    _require_observations(dataset)
    method.check_etas(model.n_eta_total(batch.n_occasions))  # AGQ: at most 3 etas a subject
    method.check_model(model)  # FO/FOCE/FOCE-I refuse a likelihood (non-Gaussian) model
    values = parameter_values(model, params)
    return method, dataset, batch, values, likelihood_options(method, batch, covariate_rule), transform_for(model)


def compiled_fit(model, method, opts, settings: FitSettings, x0, base, etas0, batch):
    """(executable, compile seconds) of ``engine.fit_program`` for this model and data
    shape, called as executable(x0, base, etas0, batch, max_iter, with_covariance); one
    program per process serves fit and evaluate. A fingerprinted model's program comes
    from the exported-program cache: a second process neither traces nor compiles it."""
    static = (model, method, opts, settings.compiled())
    return _compile.compiled(fit_program, static, x0, base, etas0, batch, np.zeros((), np.int32),
                             np.zeros((), bool), fingerprint=_compile.model_fingerprint(model))


# Iterations whose OFV and estimates a fit keeps (FitResult.history, the .ext file); one
# value for fit and evaluate, which share one compiled program.
HISTORY_ROWS = 1000


def _history_values(transform, base, xs):
    return jax.vmap(lambda x: transform.from_vector(x, base))(xs)


def _history(transform, base, rows, iterations) -> pd.DataFrame:
    """The kept iteration history on the user's scale: iteration, OFV and every parameter
    (OMEGA elements as omega(A,B), the SE keys' names)."""
    rows = np.asarray(rows)
    # Every row in one small compiled program of a fixed shape (NaN rows unused), not a
    # vmap dispatched eagerly, which compiles (or reads from the cache) one-operation
    # programs in every new process: 26 of them in a theophylline `pkmix fit`.
    all_values, _, _ = _compile.run(_history_values, (transform,), base, rows[:, 1:])
    kept = np.arange(len(rows)) < min(int(iterations) + 1, len(rows))
    kept &= np.isfinite(rows[:, 0])
    rows = rows[kept]
    values = jax.tree_util.tree_map(lambda a: np.asarray(a)[kept], all_values)
    s = transform.spec
    table = {"iteration": np.arange(len(rows)), "ofv": rows[:, 0]}
    if int(iterations) + 1 > len(rows) and len(rows):
        table["iteration"][-1] = int(iterations)  # the last row holds the latest iteration
    for i, n in enumerate(s.theta_names):
        table[n] = np.asarray(values.theta[:, i])
    for i, a in enumerate(s.eta_names):
        for j, b in enumerate(s.eta_names[: i + 1]):
            table[f"omega({a},{b})"] = np.asarray(values.omega[:, i, j])
    for i, n in enumerate(s.iov_names):
        table[f"omega({n},{n})"] = np.asarray(values.iov[:, i])
    for i, n in enumerate(s.sigma_names):
        table[n] = np.asarray(values.sigma[:, i])
    return pd.DataFrame(table)


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
        return ip, f, model.residual_variance(values, f, ip)

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


def _program_diagnostics(model, opts, n_sim, values, etas, batch, key):
    return batch_diagnostics(model, opts, values, etas, batch, key, n_sim)


def _diagnostics_call(model, opts, npde, npde_samples, values, etas, batch, seed):
    """The diagnostics program's function, statics and arguments. NPDE
    (``npde_samples`` simulated datasets per subject) only when asked for: it would
    otherwise compile and run longer than the CWRES the table is read for."""
    n_sim = int(npde_samples) if npde else 0
    return (_program_diagnostics, (model, opts, n_sim), values, np.asarray(etas, np.float64), batch,
            jax.random.PRNGKey(seed))


def _prefetch_diagnostics(model, opts, npde, npde_samples, values, etas, batch, seed):
    """Start building the diagnostics program (for the shapes of the fit's parameter
    values and modes) on a background thread, while the fit's program is built."""
    _compile.prefetch(*_diagnostics_call(model, opts, npde, npde_samples, values, etas, batch, seed),
                      fingerprint=_compile.model_fingerprint(model), quick=not npde)


def _diagnostics(model, opts, npde, npde_samples, values, etas, batch, seed, progress):
    """The diagnostics table's columns (compiled once per model and data shape), with a
    progress display while they run."""
    call = _diagnostics_call(model, opts, npde, npde_samples, values, etas, batch, seed)
    n_sim = call[1][2]
    what = f"diagnostics (NPDE from {n_sim:,} simulations per subject)" if n_sim else "diagnostics (CWRES)"
    # Without NPDE the program runs once, in milliseconds: compiled quick (a third of
    # the compile time; 120 x 19 two-compartment: run 12 -> 19 ms).
    with while_running(what, progress):
        return _compile.run(*call, fingerprint=_compile.model_fingerprint(model), quick=not n_sim)


def evaluate(model, data, method: str = "focei", params=None, *, etas=None, covariate_rule="nonmem",
             diagnostics: bool = True, npde: bool = False, npde_samples: int = 1000, seed: int = 0,
             progress: bool | None = None):
    """The OFV at given parameter values, without estimation (NONMEM's MAXEVAL=0), with
    the EBEs and (by default) the diagnostics table (with NPDE when ``npde``; ``progress``:
    a progress line while the diagnostics run longer than 2 s; default when standard
    output is a terminal).

    Returns:
        A ``FitResult`` with ``iterations = 0`` (no standard errors). With
        ``method="imp"`` its ``ofv_mc_se`` is the Monte Carlo standard error of ``.ofv``
        (also in ``.message``); None for the other methods.

    Raises:
        DatasetError: the data have no observations.
        ModelError: the objective is not finite at the given values; the message names
            the subject, record and the individual parameter, prediction or residual
            variance that is not finite.
    """
    from .._results import build_result

    method, dataset, batch, values, opts, transform = _problem(model, data, method, params, covariate_rule)
    n_eta = model.n_eta_total(batch.n_occasions)
    etas0 = np.zeros((dataset.n_subjects, n_eta)) if etas is None else np.asarray(etas, dtype=np.float64)
    t0 = time.perf_counter()
    if diagnostics:
        _prefetch_diagnostics(model, opts, npde, npde_samples, values, etas0, batch, seed)
    # The fit's own program, stopped after its first evaluation (max_iter 0, no covariance
    # step): a fit of the same model and data after this compiles nothing.
    x = transform.to_vector(values, values)
    executable, compile_s = compiled_fit(model, method, opts, FitSettings(history=HISTORY_ROWS), x, values,
                                         etas0, batch)
    t_run = time.perf_counter()
    out = jax.block_until_ready(executable(x, values, etas0, batch, np.zeros((), np.int32), np.zeros((), bool)))
    run_s = time.perf_counter() - t_run
    ofvs = np.asarray(out.ofvs)
    if not np.all(np.isfinite(ofvs)):
        raise ModelError("the objective is not finite at the given parameter values: "
                         + _explain_nonfinite(model, values, dataset, batch, covariate_rule))
    modes = InnerResult(out.etas, out.etas_converged, None, None, None)
    diag, diag_compile, diag_s = ({}, 0.0, 0.0)
    if diagnostics:
        diag, diag_compile, diag_s = _diagnostics(model, opts, npde, npde_samples, values, modes.eta, batch,
                                                  seed, progress)
    ofv = float(np.sum(ofvs))
    status_message = "evaluation at the given parameters (no estimation)"
    mc_se = _imp_standard_error(model, method, opts, values, modes.eta, batch)
    if mc_se is not None:
        status_message += f"; IMP: Monte Carlo SE of the OFV {mc_se:.3g} ({method.samples} draws a subject)"
    result = build_result(
        model=model, method=method, dataset=dataset, batch=batch, values=values, transform=transform,
        ofv=ofv, subject_ofvs=ofvs, modes=modes, diagnostics=diag, converged=bool(np.isfinite(ofv)),
        message=status_message, iterations=0, covariance=None,
        timing={"total_s": time.perf_counter() - t0, "compile_s": compile_s + diag_compile,
                "estimation_s": run_s, "covariance_s": 0.0, "diagnostics_s": diag_s},
    )
    result.ofv_mc_se = mc_se  # IMP's Monte Carlo standard error of .ofv; None for the other methods
    return result


def _imp_standard_error(model, method, opts, values, etas, batch):
    """IMP's Monte Carlo standard error of the total OFV (the subjects' in quadrature,
    ``methods.imp.mc_standard_errors``); None for the deterministic methods."""
    if not isinstance(method, IMP):
        return None
    se, _, _ = _compile.run(mc_standard_errors, (model, method, opts), values, jnp.asarray(etas), batch)
    return float(np.sqrt(np.sum(np.asarray(se) ** 2)))


def fit(model, data, method: str = "focei", *, params=None, max_iter: int = 500, gtol: float = 1e-3,
        covariance: str = "sandwich", covariate_rule: str = "nonmem", progress: bool | None = None,
        diagnostics: bool = True, npde: bool = False, npde_samples: int = 1000, seed: int = 0):
    """Estimate a population model.

    Args:
        model: a ``pkmix.Model``.
        data: a ``Dataset``, a NONMEM-format CSV path or a DataFrame.
        method: "fo", "foce", "focei" (default), "laplace", "agq" (adaptive Gauss-Hermite
            quadrature, 5 nodes per eta, at most 3 etas; ``methods.AGQ(nodes=n)`` for
            others) or "imp" (importance sampling, 1024 Sobol draws a subject;
            ``methods.IMP(samples=, seed=, proposal=)``) or "saem" (stochastic approximation EM,
            ``pkmix.SAEM(...)``; ``max_iter`` and ``gtol`` do not apply). See
            docs/estimation_methods.md.
        params: initial values (default the model's).
        max_iter: outer iteration limit.
        gtol: convergence when every |dOFV/dx| on the unconstrained scale is below it.
        covariance: "sandwich" (R^-1 S R^-1, NONMEM's default), "r", "s" or "none".
        covariate_rule: "nonmem" or "locf" (see ``pkmix.predict``).
        progress: a line with the elapsed time while the fit's program compiles, while
            it runs and while the diagnostics run, for work that takes longer than 2 s
            (default: when stdout is a terminal). It is printed from the host, not from
            inside the compiled loop, so the program can be cached on disk (the iterations'
            OFVs are in ``FitResult.history`` afterwards).
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
    from .methods.saem import SAEM, fit_saem

    if isinstance(get_method(method), SAEM):  # an EM loop of its own (methods/saem.py), not the L-BFGS program
        return fit_saem(model, data, get_method(method), params=params, covariance=covariance,
                        covariate_rule=covariate_rule, progress=progress, diagnostics=diagnostics, npde=npde,
                        npde_samples=npde_samples, seed=seed)
    settings = FitSettings(max_iter=int(max_iter), gtol=float(gtol), covariance=covariance,
                           history=HISTORY_ROWS).check()
    model.check_estimable()  # an estimated theta that nothing reads: refused, named
    method, dataset, batch, values0, opts, transform = _problem(model, data, method, params, covariate_rule)
    if transform.size == 0:
        raise ModelError("every parameter is fixed: use pkmix.evaluate for the OFV at fixed values")
    base = values0
    x0 = transform.to_vector(values0, base)
    etas0 = np.zeros((dataset.n_subjects, model.n_eta_total(batch.n_occasions)))
    report = wanted(progress)

    t_start = time.perf_counter()
    if diagnostics:
        _prefetch_diagnostics(model, opts, npde, npde_samples, values0, etas0, batch, seed)
    with while_running("preparing the fit's program (once per model and data shape)", report):
        executable, compile_s = compiled_fit(model, method, opts, settings, x0, base, etas0, batch)
    with_covariance = settings.covariance != "none"
    t_run = time.perf_counter()
    what = f"estimating ({method.name}, {dataset.n_subjects} subjects, {transform.size} parameters)"
    with while_running(what, report):
        out = jax.block_until_ready(executable(x0, base, etas0, batch, np.asarray(settings.max_iter, np.int32),
                                               np.asarray(with_covariance)))
    run_s = time.perf_counter() - t_run
    out = jax.tree_util.tree_map(np.asarray, out)
    status = int(out.status)
    if status == RESULTS.nonfinite:
        # Nothing was estimated: a problem of the model, the data or the initial values.
        raise ModelError("the objective or its gradient is not finite at the initial estimates: "
                         + _explain_nonfinite(model, values0, dataset, batch, covariate_rule))
    values = jax.tree_util.tree_map(jnp.asarray, out.values)
    ofv = float(np.sum(out.ofvs))
    gmax = float(np.max(np.abs(out.grad), initial=0.0))
    finite = bool(np.isfinite(ofv) and np.all(np.isfinite(out.x)))
    converged, message = verdict(status, float(out.predicted_gain), finite, gmax)
    modes = InnerResult(out.etas, out.etas_converged, None, None, None)
    n_bad = int(np.sum(~out.etas_converged))
    if n_bad:
        message += f"; eta modes did not converge for {n_bad} subject(s)"
        warnings.warn(f"inner eta optimisation did not converge for {n_bad} subject(s)", stacklevel=2)
    boundary = _omega_near_boundary(model, values)
    if boundary:
        message += f"; {boundary}"
        warnings.warn(boundary, stacklevel=2)

    # The covariance step's 2p evaluations ran in the same loop as the optimisation's;
    # its share of the run time is estimated by the evaluations' count.
    cov_result, cov_s = None, 0.0
    if with_covariance and finite:
        n_cov = 2 * transform.size
        cov_s = run_s * n_cov / (int(out.evaluations) + n_cov)
        cov_result = summarize(out.jac, out.R, out.J, out.natural, natural_names(transform), settings.covariance)
    posthoc_s = 0.0
    if not method.estimates_eta and finite:
        # POSTHOC (NONMEM's $EST ... POSTHOC): FO estimates with etas 0, so each subject's
        # EBE (the mode of its conditional density at the estimates) is found afterwards;
        # without it the etas, IPRED and shrinkage (100 %) would say nothing.
        t_posthoc = time.perf_counter()
        ebe = evaluate(model, dataset, method="foce", params=values, covariate_rule=covariate_rule,
                       diagnostics=False, progress=False)
        modes = InnerResult(ebe.etas.drop(columns="ID").to_numpy(), ebe.inner_converged, None, None, None)
        posthoc_s = time.perf_counter() - t_posthoc
    diag, diag_compile, diag_s = ({}, 0.0, 0.0)
    if diagnostics and finite:
        diag, diag_compile, diag_s = _diagnostics(model, opts, npde, npde_samples, values, modes.eta, batch,
                                                  seed, report)
    timing = {
        "total_s": time.perf_counter() - t_start,
        "compile_s": compile_s + diag_compile,
        "estimation_s": run_s - cov_s,
        "covariance_s": cov_s,
        "diagnostics_s": diag_s,
        "posthoc_s": posthoc_s,
    }
    mc_se = _imp_standard_error(model, method, opts, values, modes.eta, batch) if finite else None
    if mc_se is not None:
        message += f"; IMP: Monte Carlo SE of the OFV {mc_se:.3g} ({method.samples} draws a subject)"
    result = build_result(
        model=model, method=method, dataset=dataset, batch=batch, values=values, transform=transform,
        ofv=ofv, subject_ofvs=out.ofvs, modes=modes, diagnostics=diag, converged=bool(converged),
        message=message, iterations=int(out.iterations), covariance=cov_result, timing=timing,
        gradient=out.grad, history=_history(transform, base, out.history, out.iterations),
    )
    result.ofv_mc_se = mc_se  # as in evaluate
    return result


__all__ = ["compiled_fit", "evaluate", "fit", "likelihood_options", "transform_for"]

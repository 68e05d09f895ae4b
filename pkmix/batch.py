"""``pkmix.fit_batch``: many replicate datasets fitted by one compiled program.

The program is the fit of one replicate, applied to a chunk of replicates split over
every visible device along the replicate axis (``jax.shard_map`` over a 1-D mesh;
inputs placed with ``NamedSharding``). Each device runs its own bounded
``lax.while_loop``s, so a device never waits for another device's replicates. On a
device the replicates are vmapped in groups of ``vmap_width``, the groups one after
another (``lax.scan``): the whole share on a GPU, where vmapped members run in parallel, and
1 on a CPU, where they would not and every member would wait for the slowest (in both
the outer loop and the vmapped inner eta solves: ``benchmarks/bench_batch.py --R 20
--models 1cmt --vmap-width 20`` runs 1.27x as long as at width 1; 4.9x before the inner
solve's secant correction and step expansion cut the slowest subjects' passes).

One replicate's fit is ``pkmix.fit``'s: the engine's program (``engine.fit_program``:
the optimisation, then the covariance step's 2p evaluations in the same bounded loop),
so a replicate takes the steps ``pkmix.fit`` takes on that dataset, up to the rounding
of a differently vectorised program, and ``settings.verdict`` reads both. A vmapped
loop runs until its slowest member stops, so the engine's bounds bound the whole chunk.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from . import _compile
from ._config import require_x64
from ._progress import ProgressLine
from ._data import Dataset, SubjectBatch, read_nonmem
from ._data.dataset import padded_length
from ._estimation.covariance import natural_names, natural_parameters, summarize
from ._estimation.engine import FitOutput, fit_program, transform_for
from ._estimation.fit import BOUNDARY_CORRELATION, likelihood_options
from ._estimation.methods import get_method
from ._estimation.settings import FitSettings, verdict
from ._model.errors import ModelError
from ._model.parameters import ParameterValues
from ._predict import parameter_values
from ._simulate import Replicates

Z95 = 1.959963984540054


# ------------------------------------------------------------------ the program
def _chunk_program(model, method, opts, settings, varying_names, width, x0, base, etas0, shared,
                   varying, limit, with_covariance):
    """``engine.fit_program`` over the replicates of one device's share of a chunk:
    vmapped in groups of ``width`` replicates, the groups one after another (``lax.map``)."""

    def one(args):
        x0_r, etas_r, fields, limit_r = args
        fields = dict(zip(varying_names, fields))
        if SUBJECTS in fields:
            # Replicate r is the shared dataset's subjects at these indices (a bootstrap
            # draw): gathered here, so the data are held once, not once per replicate.
            idx = fields.pop(SUBJECTS)
            batch = jax.tree_util.tree_map(lambda a: a[idx], shared)
        else:
            batch = dataclasses.replace(shared, **fields)
        return fit_program(model, method, opts, settings, x0_r, base, etas_r, batch, limit_r,
                           with_covariance)

    xs = (x0, etas0, varying, limit)
    n = x0.shape[0]
    if width >= n:
        return jax.vmap(one)(xs)
    if width == 1:
        return jax.lax.map(one, xs)
    return _grouped(one, xs, n, width)


def _grouped(f, xs, n, width):
    """``f`` vmapped over groups of ``width`` of the n leading entries, the groups one
    after another (``lax.scan``). As ``lax.map(f, xs, batch_size=width)`` for n a
    multiple of width, but with every reshape's shape written out: lax.map reshapes with
    -1, which divides by zero on an array with no elements (unused covariates, no IOV,
    no kept history)."""
    groups = n // width
    assert groups * width == n, (n, width)
    grouped = jax.tree_util.tree_map(lambda a: a.reshape((groups, width) + a.shape[1:]), xs)
    _, ys = jax.lax.scan(lambda carry, x: (carry, jax.vmap(f)(x)), (), grouped)
    return jax.tree_util.tree_map(lambda a: a.reshape((n,) + a.shape[2:]), ys)


_PROGRAMS: dict = {}
# The varying field of replicates given as subject indices into one dataset (fit_batch's
# ``subjects``): [R, N] int32.
SUBJECTS = "subjects"


def _planned_bytes(executable):
    """XLA's planned memory of a compiled program (arguments, outputs, temporaries), or
    None where the backend does not report it. Grows linearly with the chunk: what to
    size ``chunk_size`` by before a run."""
    try:
        m = executable.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)
    except (AttributeError, NotImplementedError, RuntimeError):  # a backend without the report
        return None


def _compiled(static, mesh, args):
    """The sharded chunk program for these shapes, compiled once per process (and cached
    on disk by JAX's persistent cache). Returns (executable, compile seconds)."""
    key = (static, tuple(mesh.devices.flat), _compile.signature(args))
    hit = _PROGRAMS.get(key)
    if hit is not None:
        return hit, 0.0
    rep = P("rep")
    in_specs = (rep, P(), rep, P(), rep, rep, P())  # x0, base, etas0, shared, varying, max_iter, with_covariance

    def program(x0, base, etas0, shared, varying, limit, with_covariance):
        return _chunk_program(*static, x0, base, etas0, shared, varying, limit, with_covariance)

    sharded = jax.shard_map(program, mesh=mesh, in_specs=in_specs, out_specs=rep, check_vma=False)
    t0 = time.perf_counter()
    executable = _compile.compile_lowered(jax.jit(sharded).lower(*args))
    seconds = time.perf_counter() - t0
    _PROGRAMS[key] = executable
    return executable, seconds


# ------------------------------------------------------------------ the data
@dataclass
class _Stack:
    """Replicates as one shared batch plus stacked per-replicate fields."""

    shared: SubjectBatch
    varying: dict  # name -> np.ndarray [R, ...]
    truth: tuple | None  # (model, values) the data were simulated from
    n: int


_FIELDS = ("time", "amt", "rate", "dur", "ii", "dv", "lloq", "evid", "cmt", "ss", "occ", "obs_mask", "blq",
           "record_mask", "covariates")


def _select_covariates(batch: SubjectBatch, model, varying=None):
    """The batch's covariates restricted to (and ordered as) the model's, by name."""
    names = [n.upper() for n in batch.covariate_names]
    missing = [c for c in model.covariates if c.upper() not in names]
    if missing:
        raise ModelError(f"the model uses covariate(s) {missing}; the replicate data have {list(batch.covariate_names)}")
    idx = np.asarray([names.index(c.upper()) for c in model.covariates], dtype=int)
    shared = dataclasses.replace(batch, covariates=jnp.asarray(batch.covariates)[..., idx],
                                 covariate_names=tuple(model.covariates))
    if varying is not None and "covariates" in varying:
        varying = dict(varying, covariates=np.asarray(varying["covariates"])[..., idx])
    return shared, varying


def _stack_subjects(model, data, subjects) -> _Stack:
    """Replicates as rows of subject indices into one dataset: the dataset is bound once
    and each replicate gathers its subjects inside the program."""
    if isinstance(data, (Replicates, list, tuple)) or (isinstance(data, pd.DataFrame) and "REP" in
                                                         [c.upper() for c in data.columns]):
        raise TypeError("with subjects=, datasets must be one dataset (a Dataset, a DataFrame without a REP "
                        "column, or a path) whose subjects the indices pick")
    ds = data if isinstance(data, Dataset) else read_nonmem(data, model=model)
    ds.check(model)
    idx = np.asarray(subjects)
    if idx.ndim != 2 or idx.shape[0] < 1 or idx.shape[1] < 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"subjects: expected an [R, N] array of integer subject indices, got shape {idx.shape} "
                         f"of {idx.dtype}")
    n = ds.n_subjects
    bad = np.argwhere((idx < 0) | (idx >= n))
    if bad.size:
        r, c = bad[0]
        raise ValueError(f"subjects[{r}, {c}] = {idx[r, c]}: the dataset's subjects are indexed 0..{n - 1}")
    shared = ds.batch(model.covariates, occasion_column=model.occasion_column)
    return _Stack(shared, {SUBJECTS: idx.astype(np.int32)}, None, idx.shape[0])


def _stack(model, datasets) -> _Stack:
    if isinstance(datasets, Replicates):
        shared, varying = _select_covariates(datasets.template, model, datasets.varying_fields())
        if model.occasion_column is not None and shared.n_occasions < 1:
            raise ModelError("the model has IOV but the replicates have no occasions")
        return _Stack(shared, {k: np.asarray(v) for k, v in varying.items()},
                      (datasets.model, datasets.values), datasets.n_replicates)
    if isinstance(datasets, pd.DataFrame):
        if "REP" not in [c.upper() for c in datasets.columns]:
            raise ValueError("a DataFrame of replicates needs a REP column (one value per replicate)")
        rep_col = next(c for c in datasets.columns if c.upper() == "REP")
        return _stack_frame(model, datasets, rep_col)
    if isinstance(datasets, (Dataset, str)) or not isinstance(datasets, Sequence):
        raise TypeError("datasets: expected Replicates (pkmix.simulate(..., output='arrays')), a DataFrame with a "
                        f"REP column, or a list of datasets; got {type(datasets).__name__}")
    sets = [d if isinstance(d, Dataset) else read_nonmem(d, model=model) for d in datasets]
    if not sets:
        raise ValueError("datasets is empty")
    counts = {d.n_subjects for d in sets}
    if len(counts) > 1:
        raise ValueError(f"every replicate must have the same number of subjects (got {sorted(counts)}): a padded "
                         "subject would still add its eta prior to the OFV")
    for d in sets:
        d.check(model)
    width = padded_length(max(max(d.frame.groupby("ID", sort=False).size()) for d in sets))
    batches = [d.batch(model.covariates, n_records=width, occasion_column=model.occasion_column) for d in sets]
    occ = {b.n_occasions for b in batches}
    if len(occ) > 1:
        raise ValueError(f"replicates have different numbers of occasions {sorted(occ)}")
    varying = {f: np.stack([np.asarray(getattr(b, f)) for b in batches]) for f in _FIELDS}
    return _Stack(batches[0], varying, None, len(batches))


def _stack_frame(model, frame, rep_col) -> _Stack:
    """A long frame (REP, ID, ...) read once: (REP, ID) pairs become subjects, and the
    subject axis is cut into replicates."""
    frame = frame.copy()
    reps = frame[rep_col].to_numpy()
    id_col = next(c for c in frame.columns if c.upper() == "ID")
    codes, _ = pd.factorize(pd.MultiIndex.from_arrays([reps, frame[id_col].to_numpy()]), sort=False)
    rep_codes, rep_levels = pd.factorize(reps, sort=False)
    per_rep = pd.Series(codes).groupby(rep_codes).nunique().to_numpy()
    if len(set(per_rep)) > 1:
        raise ValueError(f"every replicate must have the same number of subjects (got {sorted(set(per_rep))})")
    frame[id_col] = codes + 1
    frame = frame.drop(columns=rep_col)
    ds = read_nonmem(frame, model=model)
    ds.check(model)
    batch = ds.batch(model.covariates, occasion_column=model.occasion_column)
    n_rep, n_subj = len(rep_levels), int(per_rep[0])
    varying = {f: np.asarray(getattr(batch, f)).reshape((n_rep, n_subj) + tuple(getattr(batch, f).shape[1:]))
               for f in _FIELDS}
    shared = jax.tree_util.tree_map(lambda a: a[:n_subj], batch)
    return _Stack(shared, varying, None, n_rep)


# ------------------------------------------------------------------ the result
@dataclass
class BatchFitResult:
    """Estimates of every replicate and their summary.

    Attributes:
        estimates: one row per replicate: ``REP`` (1-based), ``converged``, ``status``
            (a ``pkmix._estimation.settings.RESULTS`` code), ``message``,
            ``iterations``, ``evaluations``, ``ofv``, ``max_gradient``,
            ``eta_failures`` (subjects whose eta mode did not converge), ``boundary``
            (an estimate at a boundary of the parameter space, ``boundary_flags``), then every
            estimated parameter on the user's scale (thetas by name, OMEGA elements as
            ``omega(ETA_A,ETA_B)`` variances/covariances, sigmas as declared), then
            ``se(NAME)`` per parameter (sandwich, NaN without a covariance step) and
            ``covariance`` (what was computed: sandwich, r, s or none).
        names: the estimated parameters' names.
        truth: {name: value} the data were simulated from (None when unknown).
        timing: compile_s, run_s (all chunks), total_s, fits_per_second, devices,
            planned_bytes (XLA's memory plan of the compiled chunk program, per device:
            arguments, outputs and temporaries; None where the backend gives none).
        method, model_name, n_subjects.
    """

    estimates: pd.DataFrame
    names: list
    truth: dict | None
    timing: dict
    method: str
    model_name: str
    n_subjects: int
    n_estimated: int

    @property
    def ofv(self) -> np.ndarray:
        return self.estimates["ofv"].to_numpy()

    @property
    def converged(self) -> np.ndarray:
        return self.estimates["converged"].to_numpy()

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.converged))

    def summary(self, truth=None, *, converged_only: bool = True, level: float = 0.95) -> pd.DataFrame:
        """Bias and precision per parameter over the (converged) replicates.

        Args:
            truth: {name: true value}; default the values simulated from.
            converged_only: leave out replicates that did not converge.
            level: confidence level of the Wald intervals for coverage.

        Returns:
            One row per parameter: ``true``, ``mean``, ``sd`` (across replicates),
            ``bias`` (mean - true), ``bias_mcse`` (its Monte-Carlo SE, sd/sqrt(n)),
            ``relative_bias_percent``, ``rmse``, ``relative_rmse_percent``,
            ``mean_se`` (the mean sandwich SE, to compare with ``sd``), ``coverage``
            (fraction of the replicates whose ``level`` Wald interval est +- z SE holds
            the truth, among those with an SE), ``n`` replicates used; and the
            attribute ``success_rate`` in ``.attrs``.
        """
        from scipy.stats import norm

        truth = self.truth if truth is None else dict(truth)
        rows = self.estimates[self.estimates["converged"]] if converged_only else self.estimates
        z = float(norm.ppf(0.5 + level / 2.0))
        out = []
        for name in self.names:
            est = rows[name].to_numpy(dtype=float)
            se = rows[f"se({name})"].to_numpy(dtype=float)
            t = np.nan if truth is None or name not in truth else float(truth[name])
            ok = np.isfinite(est)
            e = est[ok]
            n = int(e.size)
            mean = float(np.mean(e)) if n else np.nan
            sd = float(np.std(e, ddof=1)) if n > 1 else np.nan
            bias = mean - t
            rmse = float(np.sqrt(np.mean((e - t) ** 2))) if n else np.nan
            has_se = ok & np.isfinite(se)
            cover = float(np.mean(np.abs(est[has_se] - t) <= z * se[has_se])) if has_se.any() and np.isfinite(t) \
                else np.nan
            out.append({
                "parameter": name, "true": t, "mean": mean, "sd": sd, "bias": bias,
                "bias_mcse": sd / math.sqrt(n) if n > 1 else np.nan,
                "relative_bias_percent": 100.0 * bias / t if t not in (0.0,) and np.isfinite(t) else np.nan,
                "rmse": rmse, "relative_rmse_percent": 100.0 * rmse / abs(t) if t and np.isfinite(t) else np.nan,
                "mean_se": float(np.nanmean(se[has_se])) if has_se.any() else np.nan,
                "coverage": cover, "n": n,
            })
        table = pd.DataFrame(out).set_index("parameter")
        table.attrs["success_rate"] = self.success_rate
        return table

    def __str__(self):
        t = self.timing
        lines = [f"fit_batch: {len(self.estimates)} replicates of {self.n_subjects} subjects, {self.method}, "
                 f"model {self.model_name}",
                 f"  converged {self.success_rate:.1%}; compile {t['compile_s']:.1f} s, run {t['run_s']:.1f} s "
                 f"({t['fits_per_second']:.2f} fits/s on {t['devices']} device(s))"]
        with pd.option_context("display.width", 120, "display.precision", 4):
            lines.append(str(self.summary()))
        return "\n".join(lines)


@dataclass
class PowerResult:
    """A likelihood-ratio test per replicate (full vs reduced model).

    Attributes:
        table: one row per replicate: ``REP``, ``ofv_full``, ``ofv_reduced``, ``dofv``
            (reduced - full), ``significant`` (dofv > critical), ``both_converged``.
        power: fraction significant among replicates where both fits converged.
        power_ci: Wilson 95 % interval of ``power``.
        critical: the chi-square critical value (3.84 for 1 df at alpha 0.05).
        df, alpha, n: degrees of freedom, level, replicates counted.
    """

    table: pd.DataFrame
    power: float
    power_ci: tuple
    critical: float
    df: int
    alpha: float
    n: int


def likelihood_ratio_test(full: BatchFitResult, reduced: BatchFitResult, df: int | None = None,
                          alpha: float = 0.05) -> PowerResult:
    """Power of a design to detect an effect: the fraction of replicates where the
    reduced model's OFV exceeds the full model's by more than the chi-square critical
    value (both models batch-fitted to the same replicates).

    Args:
        full, reduced: ``fit_batch`` results on the same replicates.
        df: degrees of freedom (default: the difference in estimated parameters).
        alpha: the test's level.
    """
    from scipy.stats import chi2

    if len(full.estimates) != len(reduced.estimates):
        raise ValueError("full and reduced fits have different numbers of replicates")
    df = int(full.n_estimated - reduced.n_estimated) if df is None else int(df)
    if df < 1:
        raise ValueError(f"df must be at least 1 (full model estimates {full.n_estimated}, reduced "
                         f"{reduced.n_estimated} parameters)")
    critical = float(chi2.ppf(1.0 - alpha, df))
    dofv = reduced.ofv - full.ofv
    both = full.converged & reduced.converged
    sig = dofv > critical
    n = int(both.sum())
    power = float(np.mean(sig[both])) if n else float("nan")
    table = pd.DataFrame({"REP": full.estimates["REP"].to_numpy(), "ofv_full": full.ofv,
                          "ofv_reduced": reduced.ofv, "dofv": dofv, "significant": sig, "both_converged": both})
    return PowerResult(table, power, _wilson(power, n), critical, df, float(alpha), n)


def _wilson(p, n, z=Z95):
    if not n or not np.isfinite(p):
        return (float("nan"), float("nan"))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


# ------------------------------------------------------------------ entry point
def _put(tree, sharding):
    """Host arrays (the same on every process) as global arrays laid out by ``sharding``.
    Each process fills only the shards of its own devices, so this serves one host and
    several (``jax.distributed``) alike."""
    def one(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree_util.tree_map(one, tree)


def _fetch(a):
    """A global array's values on this host (gathered from the other hosts if any)."""
    if jax.process_count() > 1 and not a.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)


def _mesh(devices):
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("no devices")
    return Mesh(np.asarray(devices), ("rep",))


def fit_batch(model, datasets, method: str = "focei", *, params=None, max_iter: int = 500, gtol: float = 1e-3,
              covariance: str = "sandwich", covariate_rule: str = "nonmem", chunk_size: int | None = None,
              devices=None, vmap_width: int | None = None, truth=None, subjects=None, etas=None,
              progress: bool | None = None) -> BatchFitResult:
    """Fit every replicate dataset in one compiled program, sharded over devices.

    Args:
        model: a ``pkmix.Model``.
        datasets: ``Replicates`` (``pkmix.simulate(..., output="arrays")``), a DataFrame
            with a REP column (e.g. ``pkmix.simulate``'s default output), or a list of
            datasets (``Dataset``, DataFrames or paths) with equal numbers of subjects;
            with ``subjects``, one dataset.
        method: "fo", "foce", "focei" (default), "laplace", "agq" or "imp" (or a
            method object, e.g. ``pkmix.IMP(samples=256)``).
        params: initial values (default the model's): one set for every replicate, or a
            sequence of R sets (``ParameterValues`` or dicts by name), one a replicate.
            Fixed parameters take the first set's values (the others must agree).
        subjects: an [R, N] integer array: replicate r is the subjects
            ``subjects[r]`` (0-based, in the dataset's order; repeats allowed, each
            copy a subject of its own) of the one dataset ``datasets``. The data are
            bound once and gathered inside the program (a bootstrap without building
            R datasets).
        etas: the eta modes' starting values, [R, N, q] (default 0): e.g. the original
            fit's modes of the subjects a bootstrap replicate drew.
        max_iter: outer iteration limit per replicate; a replicate also stops after
            20 max_iter + 100 objective evaluations (a line search that never ends).
            A run-time value: changing it compiles nothing.
        gtol: convergence when every |dOFV/dx| (unconstrained scale) is below it.
        covariance: "sandwich" (standard errors R^-1 S R^-1 per replicate, needed for
            coverage; 2p + 1 extra evaluations each) or "none".
        covariate_rule: "nonmem" or "locf".
        chunk_size: replicates per call of the compiled program (rounded up to a
            multiple of the device count); smaller chunks use less memory. Default:
            all replicates, at most 1024 per device.
        devices: the devices to shard over (default every visible device: with
            ``jax.distributed`` initialised, those of every host; each process then
            passes the same replicates and gets every result).
        vmap_width: replicates a device fits side by side (vmapped); its share of a
            chunk runs in groups of this many, one group after another. A vmapped loop
            runs until its slowest member stops, so wider groups waste the work done
            for finished members; they pay where the device computes them in parallel
            (GPU). Default: the device's whole share on GPU/TPU, 1 on CPU (one
            replicate at a time per device; use several CPU devices, e.g.
            ``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>``, for parallelism).
        truth: {name: value} for the summary (default: the values the replicates were
            simulated from, when they come from ``pkmix.simulate`` with matching names).
        progress: a line per chunk (replicates done, elapsed time) once the work has
            run 2 s; default when standard output is a terminal.

    Returns:
        A ``BatchFitResult``.
    """
    require_x64()
    covariance = covariance.lower()
    if covariance not in ("sandwich", "none"):
        raise ValueError(f"covariance must be 'sandwich' or 'none' for batch fits, got {covariance!r}")
    model.check_estimable()  # an estimated theta that nothing reads: refused, named (as by pkmix.fit)
    t_start = time.perf_counter()
    method = get_method(method)
    stack = _stack(model, datasets) if subjects is None else _stack_subjects(model, datasets, subjects)
    opts = _likelihood_options(method, stack, covariate_rule)
    transform = transform_for(model)
    if transform.size == 0:
        raise ModelError("every parameter is fixed: nothing to estimate")
    R = stack.n
    base, x0, starts = _starts(model, transform, params, R)
    n_eta = model.n_eta_total(stack.shared.n_occasions)
    method.check_etas(n_eta)  # as pkmix.evaluate: AGQ takes at most 3 etas a subject; SAEM is refused
    method.check_model(model)
    n_subj = int(stack.varying[SUBJECTS].shape[1] if SUBJECTS in stack.varying else stack.shared.time.shape[0])
    etas0 = _etas(etas, R, n_subj, n_eta)
    # As in pkmix.fit: max_iter is a run-time argument (changing it compiles nothing).
    settings = FitSettings(max_iter=int(max_iter), gtol=float(gtol), covariance=covariance)
    mesh = _mesh(devices)
    n_dev = mesh.devices.size
    if chunk_size is None:
        chunk = min(-(-R // n_dev) * n_dev, 1024 * n_dev)
    else:
        chunk = max(1, int(chunk_size))
    chunk = -(-chunk // n_dev) * n_dev
    if vmap_width is not None and chunk // n_dev > int(vmap_width):
        # Whole groups only: a remainder group would compile the fit a second time.
        chunk = -(-chunk // (n_dev * int(vmap_width))) * n_dev * int(vmap_width)
    names_v = tuple(sorted(stack.varying))
    width = _width(vmap_width, mesh, chunk // n_dev)
    static = (model, method, opts, settings.compiled(), names_v, width)
    rep_sharding = NamedSharding(mesh, P("rep"))
    replicated = NamedSharding(mesh, P())
    shared = _put(stack.shared, replicated)
    base_d = _put(base, replicated)
    with_covariance = _put(np.asarray(covariance != "none"), replicated)

    outs, compile_s, run_s, planned = [], 0.0, 0.0, None
    line = ProgressLine(progress)
    for start in range(0, R, chunk):
        idx = np.arange(start, min(start + chunk, R))
        real = idx.size
        # Pad with copies of the chunk's first replicate, given 0 iterations (dropped).
        limits = np.full(chunk, int(max_iter), np.int32)
        limits[real:] = 0
        if real < chunk:
            idx = np.concatenate([idx, np.full(chunk - real, idx[0])])
        varying = tuple(_put(stack.varying[k][idx], rep_sharding) for k in names_v)
        args = (_put(x0[idx], rep_sharding), base_d, _put(etas0[idx], rep_sharding), shared, varying,
                _put(limits, rep_sharding), with_covariance)
        executable, c_s = _compiled(static, mesh, args)
        compile_s += c_s
        planned = _planned_bytes(executable) if planned is None else planned
        t0 = time.perf_counter()
        out = jax.block_until_ready(executable(*args))
        run_s += time.perf_counter() - t0
        outs.append(jax.tree_util.tree_map(lambda a: _fetch(a)[:real], out))
        line.report(f"replicates {start + 1}-{start + real} of {R} fitted", force=True)
    out = jax.tree_util.tree_map(lambda *parts: np.concatenate(parts), *outs)
    estimates = _table(out, transform, covariance)
    names = natural_names(transform)
    estimates.insert(list(estimates.columns).index("eta_failures") + 1, "boundary",
                     boundary_flags(model, estimates, names, _named_values(model, starts, names)))
    total_s = time.perf_counter() - t_start
    timing = {"compile_s": compile_s, "run_s": run_s, "total_s": total_s,
              "fits_per_second": R / run_s if run_s > 0 else float("inf"), "devices": n_dev, "chunk_size": chunk,
              "vmap_width": width, "planned_bytes": planned}
    if truth is None and stack.truth is not None:
        truth = _truth_from(stack.truth, names)
    return BatchFitResult(estimates=estimates, names=names, truth=truth, timing=timing, method=method.name,
                          model_name=model.name, n_subjects=n_subj, n_estimated=transform.size)


def _starts(model, transform, params, R):
    """(base, x0 [R, p], the sets): the starting values on the unconstrained scale, one set for
    every replicate or one a replicate; fixed parameters (and the scale of unbounded
    thetas) from the first set."""
    if params is None or isinstance(params, (ParameterValues, Mapping)):
        base = parameter_values(model, params)
        x = np.asarray(transform.to_vector(base, base))
        return base, np.broadcast_to(x, (R, x.size)), [base]
    sets = [parameter_values(model, p) for p in params]
    if len(sets) != R:
        raise ValueError(f"params: {len(sets)} parameter sets for {R} replicates (one set, or one a replicate)")
    base = sets[0]
    s = model.spec
    fixed = [("theta", i, s.theta_names[i]) for i, t in enumerate(s.thetas) if t.fixed] + \
        [("sigma", i, s.sigma_names[i]) for i, g in enumerate(s.sigmas) if g.fixed]
    for r, v in enumerate(sets):
        for field, i, name in fixed:
            if float(np.asarray(getattr(v, field))[i]) != float(np.asarray(getattr(base, field))[i]):
                raise ValueError(f"params[{r}]: the fixed parameter {name} differs from params[0]'s; fixed values "
                                 "are the same in every replicate")
    return base, np.stack([np.asarray(transform.to_vector(v, base)) for v in sets]), sets


def _etas(etas, R, n_subj, n_eta):
    if etas is None:
        return np.zeros((R, n_subj, n_eta))
    e = np.asarray(etas, dtype=float)
    if e.shape != (R, n_subj, n_eta):
        raise ValueError(f"etas: expected shape {(R, n_subj, n_eta)} (replicates, subjects, etas), got {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("etas: every starting mode must be finite")
    return e


def _width(vmap_width, mesh, per_device):
    if vmap_width is not None:
        w = int(vmap_width)
        if w < 1:
            raise ValueError(f"vmap_width must be at least 1, got {vmap_width}")
        return min(w, per_device)
    platform = mesh.devices.flat[0].platform
    return 1 if platform == "cpu" else per_device


def _likelihood_options(method, stack: _Stack, covariate_rule):
    """``fit``'s options, from the flags of every replicate (steady state, BLQ, infusions)."""
    if SUBJECTS in stack.varying:  # every replicate draws from the one dataset: its flags
        return likelihood_options(method, stack.shared, covariate_rule)

    def stacked(name):
        shared = np.asarray(getattr(stack.shared, name))
        return np.asarray(stack.varying[name]) if name in stack.varying else np.broadcast_to(
            shared, (stack.n,) + shared.shape)

    every = dataclasses.replace(stack.shared, **{name: stacked(name) for name in _FIELDS})
    return likelihood_options(method, every, covariate_rule)


def _truth_from(truth, names):
    sim_model, sim_values = truth
    t = transform_for(sim_model)
    base = sim_values
    try:
        x = t.to_vector(sim_values, base)
        nat = np.asarray(natural_parameters(t, x, base))
        sim_names = natural_names(t)
    except Exception:  # a truth on a scale the transform cannot express (e.g. a zero variance)
        return None
    full = dict(zip(sim_names, nat))
    # Parameters fixed in the simulation model are not in its vector; take them too.
    s = sim_model.spec
    for i, n in enumerate(s.theta_names):
        full.setdefault(n, float(np.asarray(sim_values.theta)[i]))
    for i, n in enumerate(s.sigma_names):
        full.setdefault(n, float(np.asarray(sim_values.sigma)[i]))
    om = np.asarray(sim_values.omega)
    for r, a in enumerate(s.eta_names):
        for c, b in enumerate(s.eta_names):
            full.setdefault(f"omega({a},{b})", float(om[r, c]))
    for i, n in enumerate(s.iov_names):
        full.setdefault(f"omega({n},{n})", float(np.asarray(sim_values.iov)[i]))
    return {n: float(full[n]) for n in names if n in full}


# A replicate is at a boundary when an estimate sits this close to where the parameter
# space ends: a theta within this fraction of its bounded range (or of its distance from
# the bound at the start, for a one-sided bound), a variance below this fraction of its
# starting value, or an OMEGA correlation beyond pkmix.fit's boundary test.
BOUNDARY_RELATIVE = 1e-3


def _named_values(model, sets, names) -> np.ndarray:
    """[len(sets), len(names)]: parameter sets on the user's scale, by the names of the
    estimate table (thetas, sigmas, ``omega(A,B)`` elements, IOV variances)."""
    s = model.spec
    eta = list(s.eta_names)
    out = np.empty((len(sets), len(names)))
    for r, v in enumerate(sets):
        for k, n in enumerate(names):
            if n in s.theta_names:
                out[r, k] = np.asarray(v.theta)[s.theta_names.index(n)]
            elif n in s.sigma_names:
                out[r, k] = np.asarray(v.sigma)[s.sigma_names.index(n)]
            else:
                a, b = n[6:-1].split(",")
                out[r, k] = (np.asarray(v.omega)[eta.index(a), eta.index(b)] if a in eta
                             else np.asarray(v.iov)[list(s.iov_names).index(a)])
    return out


def boundary_flags(model, estimates: pd.DataFrame, names, reference) -> np.ndarray:
    """Per row of an estimate table: an estimate at a boundary of the parameter space
    (see BOUNDARY_RELATIVE). ``reference``: [1 or rows, len(names)] values on the user's
    scale that say what "near 0" is for a variance (the starting values)."""
    s = model.spec
    flags = np.zeros(len(estimates), dtype=bool)
    ref = np.broadcast_to(np.asarray(reference, dtype=float), (len(estimates), len(names)))
    for k, n in enumerate(names):
        v = estimates[n].to_numpy(dtype=float)
        if n in s.theta_names:
            t = s.thetas[list(s.theta_names).index(n)]
            lo, hi = t.lower, t.upper
            if np.isfinite(lo) and np.isfinite(hi):
                flags |= np.minimum(v - lo, hi - v) < BOUNDARY_RELATIVE * (hi - lo)
            elif np.isfinite(lo):
                flags |= (v - lo) < BOUNDARY_RELATIVE * np.maximum(np.abs(ref[:, k] - lo), 1e-12)
            elif np.isfinite(hi):
                flags |= (hi - v) < BOUNDARY_RELATIVE * np.maximum(np.abs(hi - ref[:, k]), 1e-12)
        elif n.startswith("omega("):
            a, b = n[6:-1].split(",")
            if a == b:
                flags |= v < BOUNDARY_RELATIVE * np.abs(ref[:, k])
            else:
                va = estimates[f"omega({a},{a})"].to_numpy(dtype=float)
                vb = estimates[f"omega({b},{b})"].to_numpy(dtype=float)
                with np.errstate(invalid="ignore", divide="ignore"):
                    flags |= np.abs(v / np.sqrt(va * vb)) > BOUNDARY_CORRELATION
    return flags


def _table(out: FitOutput, transform, covariance) -> pd.DataFrame:
    names = natural_names(transform)
    rows = []
    for r in range(out.x.shape[0]):
        status = int(out.status[r])
        ofv = float(np.sum(out.ofvs[r]))
        finite = bool(np.isfinite(ofv) and np.all(np.isfinite(out.x[r])))
        gmax = float(np.max(np.abs(out.grad[r]), initial=0.0))
        converged, message = verdict(status, float(out.predicted_gain[r]), finite, gmax)
        row = {"REP": r + 1, "converged": converged, "status": status, "message": message,
               "iterations": int(out.iterations[r]), "evaluations": int(out.evaluations[r]),
               "ofv": ofv, "max_gradient": gmax, "eta_failures": int(np.sum(~out.etas_converged[r]))}
        row.update(dict(zip(names, (float(v) for v in out.natural[r]))))
        se = np.full(len(names), np.nan)
        kind = "none"
        if covariance != "none" and finite:
            res = summarize(out.jac[r], out.R[r], out.J[r], out.natural[r], names, covariance)
            if res.se is not None:
                se = res.se
            kind = res.kind
        row.update({f"se({n})": float(v) for n, v in zip(names, se)})
        row["covariance"] = kind
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["fit_batch", "BatchFitResult", "likelihood_ratio_test", "PowerResult"]

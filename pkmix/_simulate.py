"""Trial simulation (``pkmix.simulate``) and visual predictive checks (``pkmix.vpc``).

A design is either a dataset (its dosing and sampling records and covariates are kept;
only DV is simulated) or a ``TrialDesign`` (arms of regimens and sampling schedules,
covariates drawn from distributions or resampled from a dataset). The design becomes
one padded template ``SubjectBatch`` on the host, once; everything random happens in
one compiled program, vmapped over replicates and subjects:

    key(seed) -> split into one key per replicate -> (covariate key, subject keys)
    subject key -> (eta key, epsilon key)

so no key is used twice, and replicate r's data do not depend on how many replicates
are simulated or how they are chunked. Per subject: eta ~ N(0, OMEGA) (OMEGA with its
IOV blocks, one eta per occasion), f = model.subject_predict(...), and the observation
y = h^-1(h(f) + sqrt(R(f)) eps) with h the error model's transform (identity, or log
for log-transform-both-sides) and R its residual variance on that scale, the same
quantities the likelihood compares, so simulation and estimation share one definition
of the model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import _compile
from ._config import require_x64
from ._progress import while_running
from ._data import Dataset, SubjectBatch, read_nonmem
from . import _linalg as linalg
from ._model.errors import ModelError
from ._model.parameters import ParameterValues
from ._predict import parameter_values

# Values below the LLOQ are replaced by this in percentile computations so that they
# sort below every real value while keeping the arithmetic of interpolation finite.
_CENSORED = -1e300


# ------------------------------------------------------------------ covariate draws
@dataclass(frozen=True)
class Normal:
    """Normal covariate distribution, optionally truncated (by rejection-free clipping
    of the draw into ``[lower, upper]``, so the bounds get the tails' mass)."""

    mean: float
    sd: float
    lower: float = -math.inf
    upper: float = math.inf

    def sample(self, key, shape):
        x = self.mean + self.sd * jax.random.normal(key, shape)
        return jnp.clip(x, self.lower, self.upper)

    def typical(self):
        return float(np.clip(self.mean, self.lower, self.upper))


@dataclass(frozen=True)
class LogNormal:
    """Log-normal covariate: ``median * exp(sd_log * z)``, optionally clipped."""

    median: float
    sd_log: float
    lower: float = 0.0
    upper: float = math.inf

    def sample(self, key, shape):
        x = self.median * jnp.exp(self.sd_log * jax.random.normal(key, shape))
        return jnp.clip(x, self.lower, self.upper)

    def typical(self):
        return float(np.clip(self.median, self.lower, self.upper))


@dataclass(frozen=True)
class Uniform:
    """Uniform covariate on ``[low, high)``."""

    low: float
    high: float

    def sample(self, key, shape):
        return jax.random.uniform(key, shape, minval=self.low, maxval=self.high)

    def typical(self):
        return 0.5 * (self.low + self.high)


@dataclass(frozen=True)
class Categorical:
    """Categorical covariate: ``values`` with probabilities ``probs`` (default equal)."""

    values: tuple
    probs: tuple | None = None

    def __post_init__(self):
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        if self.probs is not None:
            p = tuple(float(q) for q in self.probs)
            if len(p) != len(self.values) or any(q < 0 for q in p) or not math.isclose(sum(p), 1.0, rel_tol=1e-9):
                raise ValueError(f"Categorical: probs {p} must be {len(self.values)} non-negative numbers summing to 1")
            object.__setattr__(self, "probs", p)

    def sample(self, key, shape):
        p = None if self.probs is None else jnp.asarray(self.probs)
        return jax.random.choice(key, jnp.asarray(self.values), shape, p=p)

    def typical(self):
        return self.values[0]


# ------------------------------------------------------------------------ designs
@dataclass(frozen=True)
class Dose:
    """One dose record (NONMEM items): ``Dose(100)``, ``Dose(500, time=0, cmt=2, dur=1)``,
    ``Dose(100, ii=12, addl=9)`` for ten doses every 12 h, ``ss=1`` for steady state."""

    amt: float
    time: float = 0.0
    cmt: int = 0
    rate: float = 0.0
    dur: float = 0.0
    ii: float = 0.0
    addl: int = 0
    ss: int = 0


@dataclass(frozen=True)
class Arm:
    """A group of subjects sharing a regimen and a sampling schedule.

    Args:
        n_subjects: subjects in the arm.
        doses: ``Dose`` records (or dicts of their fields; a number is a dose at time 0).
        times: observation times.
        covariates: covariates fixed in this arm, e.g. ``{"TRT": 1}``.
        name: a label (kept in the ARM column of simulated frames).
    """

    n_subjects: int
    doses: Sequence = ()
    times: Sequence[float] = ()
    covariates: Mapping[str, float] = field(default_factory=dict)
    name: str | None = None


@dataclass(frozen=True)
class TrialDesign:
    """A trial to simulate: arms, covariate distributions, LLOQ.

    Either give ``arms`` or the fields of a single arm (``n_subjects``, ``doses``,
    ``times``)::

        design = pkmix.TrialDesign(
            arms=[pkmix.Arm(50, [pkmix.Dose(100, ii=24, addl=6)], times=[1, 4, 24, 145, 148, 168],
                            covariates={"TRT": 0}),
                  pkmix.Arm(50, [pkmix.Dose(100, ii=24, addl=6)], times=[1, 4, 24, 145, 148, 168],
                            covariates={"TRT": 1})],
            covariates={"WT": pkmix.LogNormal(70, 0.2), "SEX": pkmix.Categorical([0, 1])},
            lloq=0.05)

    Args:
        arms: the arms.
        n_subjects, doses, times: a single arm, instead of ``arms``.
        covariates: ``{name: distribution}`` drawn per subject and replicate (any object
            with ``sample(key, shape)`` and ``typical()``; see ``Normal``, ``LogNormal``,
            ``Uniform``, ``Categorical``). Drawn covariates are constant within a subject.
        resample: a ``Dataset``/DataFrame/path whose subjects' (first-record) covariate
            rows are resampled with replacement, per subject and replicate, keeping the
            covariates' joint distribution.
        resample_columns: which columns to resample (default: every covariate column
            of ``resample``).
        lloq: lower limit of quantification of every observation (for ``censor_blq``).
        obs_cmt: CMT of observation records (0: the model's default).
        occasion_starts: times at which occasions 1, 2, ... start (an OCC column for
            IOV models); records before the second start are occasion 1.
    """

    arms: Sequence[Arm] = ()
    n_subjects: int | None = None
    doses: Sequence = ()
    times: Sequence[float] = ()
    covariates: Mapping[str, Any] = field(default_factory=dict)
    resample: Any = None
    resample_columns: Sequence[str] | None = None
    lloq: float | None = None
    obs_cmt: int = 0
    occasion_starts: Sequence[float] | None = None

    def all_arms(self) -> list[Arm]:
        arms = list(self.arms)
        if self.n_subjects is not None:
            if arms:
                raise ValueError("TrialDesign: give either arms= or n_subjects/doses/times, not both")
            arms = [Arm(int(self.n_subjects), tuple(self.doses), tuple(self.times))]
        if not arms:
            raise ValueError("TrialDesign: no subjects (give arms= or n_subjects=)")
        for k, a in enumerate(arms):
            if a.n_subjects < 1:
                raise ValueError(f"TrialDesign: arm {a.name or k + 1} has {a.n_subjects} subjects")
            if len(a.times) == 0:
                raise ValueError(f"TrialDesign: arm {a.name or k + 1} has no observation times")
        return arms

    def resample_table(self) -> tuple[list[str], np.ndarray]:
        """(column names, one row per subject of ``resample``)."""
        if self.resample is None:
            return [], np.zeros((0, 0))
        ds = self.resample if isinstance(self.resample, Dataset) else read_nonmem(self.resample)
        columns = [str(c).upper() for c in (self.resample_columns or ds.covariates)]
        missing = [c for c in columns if c not in ds.frame.columns]
        if missing:
            raise ValueError(f"TrialDesign.resample: columns {missing} not in the dataset "
                             f"(covariates: {ds.covariates})")
        first = ds.frame.groupby("ID", sort=False).first()
        table = first[columns].to_numpy(dtype=float)
        if np.isnan(table).any():
            raise ValueError("TrialDesign.resample: missing covariate values on a subject's first record")
        return columns, table

    def frame(self) -> pd.DataFrame:
        """The template records in NONMEM layout (drawn covariates at their typical values)."""
        drawn = {str(k).upper(): v for k, v in self.covariates.items()}
        res_cols, res_table = self.resample_table()
        rows = []
        subject = 0
        arm_cov_names = sorted({str(k).upper() for a in self.all_arms() for k in a.covariates})
        for k, arm in enumerate(self.all_arms()):
            fixed = {str(c).upper(): float(v) for c, v in arm.covariates.items()}
            clash = (set(fixed) & set(drawn)) | (set(fixed) & set(res_cols)) | (set(drawn) & set(res_cols))
            if clash:
                raise ValueError(f"TrialDesign: covariate(s) {sorted(clash)} given more than once "
                                 "(arm value, distribution, resampled)")
            missing_in_arm = [c for c in arm_cov_names if c not in fixed]
            if missing_in_arm:
                raise ValueError(f"TrialDesign: arm {arm.name or k + 1} does not set {missing_in_arm}, "
                                 "which another arm sets")
            cov = dict(fixed)
            cov.update({c: float(d.typical()) for c, d in drawn.items()})
            cov.update({c: float(res_table[0, j]) for j, c in enumerate(res_cols)})
            for _ in range(arm.n_subjects):
                subject += 1
                for d in arm.doses:
                    d = d if isinstance(d, Dose) else (Dose(**d) if isinstance(d, Mapping) else Dose(float(d)))
                    rows.append(dict(ID=subject, TIME=d.time, DV=np.nan, AMT=d.amt, EVID=1, MDV=1, CMT=d.cmt,
                                     RATE=d.rate, DUR=d.dur, II=d.ii, ADDL=d.addl, SS=d.ss, ARM=k + 1, **cov))
                for t in arm.times:
                    rows.append(dict(ID=subject, TIME=float(t), DV=0.0, AMT=0.0, EVID=0, MDV=0, CMT=self.obs_cmt,
                                     RATE=0.0, DUR=0.0, II=0.0, ADDL=0, SS=0, ARM=k + 1, **cov))
        frame = pd.DataFrame(rows)
        # Doses before observations at equal times (NONMEM processes records in order).
        frame = frame.sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False], kind="stable")
        if self.occasion_starts is not None:
            starts = np.sort(np.asarray(self.occasion_starts, dtype=float))
            frame["OCC"] = np.maximum(np.searchsorted(starts, frame["TIME"].to_numpy(), side="right"), 1)
        if self.lloq is not None:
            frame["LLOQ"] = float(self.lloq)
        return frame.reset_index(drop=True)

    def varying(self) -> tuple[tuple, list[str], np.ndarray]:
        """(((column, distribution), ...), resampled columns, resample table)."""
        drawn = tuple((str(k).upper(), v) for k, v in self.covariates.items())
        cols, table = self.resample_table()
        return drawn, cols, table


# ------------------------------------------------------------------ the template
@dataclass
class _Template:
    dataset: Dataset
    batch: SubjectBatch  # [S, rec]; covariates: model's first, then every other column
    lloq: np.ndarray  # [S, rec], 0 where unknown
    drawn: tuple  # ((batch column index, distribution), ...)
    resample_index: tuple  # batch column indices filled from the resample table
    resample_table: np.ndarray
    has_ss: bool
    design_lloq: float | None


def _template(model, design, lloq=None) -> _Template:
    if isinstance(design, TrialDesign):
        frame = design.frame()
        drawn, res_cols, table = design.varying()
        design_lloq = design.lloq
    else:
        frame, drawn, res_cols, table, design_lloq = design, (), [], np.zeros((0, 0)), None
    if isinstance(frame, Dataset):
        dataset = frame
    else:
        import warnings

        from ._data import DatasetWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DatasetWarning)
            dataset = read_nonmem(frame, model=model)
    dataset.check(model)
    model_cols = [str(c) for c in model.covariates]
    upper = [c.upper() for c in model_cols]
    extra = [c for c in dataset.covariates if c.upper() not in upper]
    names = model_cols + extra
    batch = dataset.batch(names, occasion_column=model.occasion_column)
    col_of = {n.upper(): i for i, n in enumerate(names)}
    for c, _ in drawn:
        if c not in col_of:
            raise ValueError(f"covariate {c} is drawn but is not a data column")
    level = lloq if lloq is not None else design_lloq
    data_lloq = np.nan_to_num(np.asarray(batch.lloq), nan=0.0)
    lloq_arr = np.where(data_lloq > 0, data_lloq, 0.0 if level is None else float(level))
    lloq_arr = np.where(np.asarray(batch.obs_mask), lloq_arr, 0.0)
    return _Template(
        dataset=dataset, batch=batch, lloq=lloq_arr,
        drawn=tuple((col_of[c], d) for c, d in drawn),
        resample_index=tuple(col_of[c] for c in res_cols), resample_table=np.asarray(table, dtype=float),
        has_ss=bool(np.any(np.asarray(batch.ss) > 0)), design_lloq=level,
    )


def _omega_root(model, values, n_occasions):
    """A square root L of the full OMEGA (L L' = OMEGA), from the eigendecomposition so a
    zero-variance (fixed) eta gives zeros rather than a failed Cholesky."""
    omega = model.omega_full(values, n_occasions)
    if omega.shape[0] == 0:
        return omega
    w, V = linalg.eigh(0.5 * (omega + omega.T))
    return V * jnp.sqrt(jnp.maximum(w, 0.0))[None, :]


def _draw_covariates(drawn, resample_index, key, covariates, table):
    """Per-subject covariate draws written over every record of the subject."""
    n_subjects = covariates.shape[0]
    k_draw, k_res = jax.random.split(key)
    for j, (col, dist) in enumerate(drawn):
        v = dist.sample(jax.random.fold_in(k_draw, j), (n_subjects,))
        covariates = covariates.at[:, :, col].set(jnp.broadcast_to(v[:, None], covariates.shape[:2]))
    if resample_index:
        rows = jax.random.randint(k_res, (n_subjects,), 0, table.shape[0])
        picked = table[rows]  # [S, k]
        for j, col in enumerate(resample_index):
            covariates = covariates.at[:, :, col].set(jnp.broadcast_to(picked[:, j:j + 1], covariates.shape[:2]))
    return covariates


def _gaussian_draw(error, key, f, sds, thetas):
    """y = h^-1(h(f) + sqrt(R(f)) eps) for a residual error model (h its transform)."""
    var = error.variance(f, sds, thetas) if error.theta_parameters else error.variance(f, sds)
    yt = error.transform(f) + jnp.sqrt(var) * jax.random.normal(key, f.shape)
    return jnp.exp(yt) if error.log_transform else yt


def _likelihood_draw(error, key, f, thetas, subject):
    """A draw of every record from a built-in likelihood given its predictions ``f``:
    (y, time, keep) [R]; time and keep change only for time-to-event records."""
    from ._model import likelihoods as lk
    from ._model.tte import TimeToEvent

    if isinstance(error, TimeToEvent):
        return error.simulate_records(key, f, thetas, subject)
    if isinstance(error, lk.Binomial):
        p = jnp.exp(error.log_probabilities(f)[0])
        if error.trials is None:
            y = jax.random.bernoulli(key, p).astype(jnp.float64)
        else:
            n = lk._column(subject, error.trials)
            y = jax.random.binomial(key, jnp.maximum(n, 0.0), p).astype(jnp.float64)
    elif isinstance(error, (lk.Poisson, lk.NegativeBinomial)):
        mu = jnp.exp(f) if error.link == "log" else jnp.maximum(f, 0.0)
        k_gamma, k_poisson = jax.random.split(key)
        if isinstance(error, lk.NegativeBinomial):
            # NB2 as a gamma mixture of Poissons: rate ~ Gamma(shape 1/alpha, mean mu).
            alpha = jnp.maximum(thetas[0], lk.TINY)
            mu = mu * alpha * jax.random.gamma(k_gamma, 1.0 / alpha, f.shape)
        y = jax.random.poisson(k_poisson, mu, f.shape).astype(jnp.float64)
    elif isinstance(error, lk.Ordinal):
        # P(y <= k) = F(c_k - f): y is the number of cut-points whose CDF lies below u.
        u = jax.random.uniform(key, f.shape)
        cdf = jnp.exp(lk._log_cdf(jnp.asarray(thetas)[None, :] - f[:, None], error.link))  # [R, K-1]
        y = jnp.sum(u[:, None] > cdf, axis=1).astype(jnp.float64)
    else:  # checked on the host by _check_simulable
        raise ModelError(f"simulate: no sampler for {type(error).__name__}")
    return y, subject.time, jnp.ones(f.shape, dtype=bool)


def _endpoint_thetas(error, model_k, thetas, sds):
    th = (jnp.stack([thetas[error.theta_parameters.index(n)] for n in model_k.theta_parameters])
          if model_k.theta_parameters else jnp.zeros(0))
    sd = jnp.stack([sds[error.parameters.index(n)] for n in model_k.parameters]) if model_k.parameters else jnp.zeros(0)
    return th, sd


def _draw(model, values, key, f, subject):
    """Every record's simulated observation: (y, time, keep) [R]."""
    error = model.error
    thetas = model.error_thetas(values)
    sds = model.sigma_sds(values)
    if not error.non_gaussian:
        return _gaussian_draw(error, key, f, sds, thetas), subject.time, jnp.ones(f.shape, dtype=bool)
    from ._model.likelihoods import Endpoints, _column

    if not isinstance(error, Endpoints):
        return _likelihood_draw(error, key, f, thetas, subject)
    dvid = _column(subject, error.column)
    y, time, keep = jnp.zeros_like(f), subject.time, jnp.ones(f.shape, dtype=bool)
    for k, (v, m) in enumerate(zip(error.values, error.models)):
        sel = dvid == v
        th, sd = _endpoint_thetas(error, m, thetas, sds)
        kk = jax.random.fold_in(key, k)
        if m.non_gaussian:
            # The endpoint's own records are its observations (a time-to-event density
            # reads the previous record of its kind).
            mine = dataclasses.replace(subject, obs_mask=subject.obs_mask & sel)
            fk = jnp.where(sel, f, m.safe_prediction)
            yk, tk, keepk = _likelihood_draw(m, kk, fk, th, mine)
            time = jnp.where(sel, tk, time)
            keep = keep & (keepk | ~sel)
        else:
            yk = _gaussian_draw(m, kk, f, sd, th)
        y = jnp.where(sel, yk, y)
    return y, time, keep


def _has_time_to_event(model) -> bool:
    from ._model.likelihoods import Endpoints
    from ._model.tte import TimeToEvent

    error = model.error
    models = error.models if isinstance(error, Endpoints) else (error,)
    return any(isinstance(m, TimeToEvent) for m in models)


def _check_simulable(model, censor_blq=False):
    """Refuse, before compiling, a model whose observations cannot be drawn."""
    from ._model import likelihoods as lk
    from ._model.tte import TimeToEvent

    error = model.error
    models = error.models if isinstance(error, lk.Endpoints) else (error,)
    samplers = (lk.Binomial, lk.Poisson, lk.NegativeBinomial, lk.Ordinal, TimeToEvent)
    for m in models:
        if m.non_gaussian and not isinstance(m, samplers):
            raise ModelError(f"simulate: {type(m).__name__} (a user log-density) has no sampler; the built-in "
                             "likelihoods (bernoulli, binomial, poisson, negative_binomial, ordinal, time_to_event) "
                             "and the residual error models can be simulated")
    if censor_blq and error.non_gaussian and not isinstance(error, lk.Endpoints):
        raise ValueError("censor_blq: BLQ censoring applies to Gaussian observations; this model's are "
                         f"{type(error).__name__}")


def _simulate_subject(model, has_ss, covariate_rule, censor, values, root, key, subject, lloq):
    """One subject: etas, predictions, observations (residual error or a likelihood's
    draw), censoring. Returns (y, blq, eta, time, keep)."""
    k_eta, k_eps = jax.random.split(key)
    q = root.shape[0]
    eta = root @ jax.random.normal(k_eta, (q,)) if q else jnp.zeros(0)
    f = model.subject_predict(values, eta, subject, has_steady_state=has_ss, covariate_rule=covariate_rule)
    y, time, keep = _draw(model, values, k_eps, f, subject)
    obs = subject.obs_mask
    y = jnp.where(obs, y, 0.0)
    if censor:
        blq = obs & (lloq > 0) & (y < lloq) & _gaussian_records(model, subject)
        y = jnp.where(blq, lloq, y)
    else:
        blq = jnp.zeros_like(obs)
    return y, blq, eta, time, keep


def _gaussian_records(model, subject):
    """Records whose observations are Gaussian (BLQ censoring applies to them only)."""
    if not model.error.non_gaussian:
        return jnp.ones(subject.time.shape, dtype=bool)
    from ._model.likelihoods import Endpoints, _column

    if not isinstance(model.error, Endpoints):
        return jnp.zeros(subject.time.shape, dtype=bool)
    dvid = _column(subject, model.error.column)
    return jnp.isin(dvid, jnp.asarray(model.error.gaussian_values or (-1e300,), dtype=jnp.float64))


def _simulate_program(model, has_ss, covariate_rule, censor, drawn, resample_index, values, template, lloq, table,
                      keys):
    """vmap over replicates (keys [R, 2]) and subjects: (y, blq, eta, covariates or
    None, time and keep or None) with a leading replicate axis."""
    root = _omega_root(model, values, template.n_occasions)
    n_subjects = template.time.shape[0]
    varying_cov = bool(drawn) or bool(resample_index)
    tte = _has_time_to_event(model)

    def one_replicate(key):
        k_cov, k_subjects = jax.random.split(key)
        cov = (_draw_covariates(drawn, resample_index, k_cov, template.covariates, table)
               if varying_cov else template.covariates)
        batch = dataclasses.replace(template, covariates=cov)
        subject_keys = jax.random.split(k_subjects, n_subjects)
        y, blq, eta, time, keep = jax.vmap(lambda k, s, lq: _simulate_subject(
            model, has_ss, covariate_rule, censor, values, root, k, s, lq))(subject_keys, batch, lloq)
        return (y, blq, eta, cov if varying_cov else None, (time, keep) if tte else None)

    return jax.vmap(one_replicate)(keys)


# ------------------------------------------------------------------ the result
class Replicates:
    """Simulated replicate datasets as arrays (what ``fit_batch`` takes, no pandas).

    Every replicate shares the template's records (times, doses, masks); only DV, the
    BLQ flags and drawn covariates differ.

    Attributes:
        template: the template ``SubjectBatch`` [subject, record]; its covariates are the
            simulation model's, then every other covariate column of the design.
        dataset: the template ``Dataset`` (host side).
        dv: simulated observations [replicate, subject, record] (0 off observations;
            the LLOQ on censored records).
        blq: censored-observation flags, same shape.
        covariates: [replicate, subject, record, covariate] when covariates are drawn,
            else None (the template's are used).
        etas: the simulated etas [replicate, subject, eta] (BSV, then IOV per occasion).
        lloq: [subject, record] LLOQ per observation (0 where none).
        model, values: the model and parameter values simulated from (the truth).
        seed: the seed.
        censored: whether BLQ observations were censored.
        time, keep: for a time-to-event model, [replicate, subject, record] record times
            (an event record's is its simulated event time) and whether the record is
            kept (False on the subject's time-to-event records after its event); else None.
    """

    def __init__(self, *, template, dataset, dv, blq, covariates, etas, lloq, model, values, seed, censored,
                 time=None, keep=None):
        self.template = template
        self.dataset = dataset
        self.dv = dv
        self.blq = blq
        self.covariates = covariates
        self.etas = etas
        self.lloq = lloq
        self.model = model
        self.values = values
        self.seed = seed
        self.censored = censored
        self.time = time
        self.keep = keep

    @property
    def n_replicates(self) -> int:
        return int(self.dv.shape[0])

    def __len__(self) -> int:
        return self.n_replicates

    @property
    def n_subjects(self) -> int:
        return int(self.dv.shape[1])

    def __repr__(self):
        return (f"Replicates({self.n_replicates} replicates of {self.n_subjects} subjects, "
                f"{int(np.asarray(self.template.obs_mask).sum())} observations each, seed {self.seed})")

    def varying_fields(self, index=None) -> dict:
        """The per-replicate batch fields {name: array [R, ...]} (optionally a subset)."""
        pick = (lambda a: a) if index is None else (lambda a: a[index])
        out = {"dv": pick(self.dv)}
        if self.censored:
            out["blq"] = pick(self.blq)
        if self.covariates is not None:
            out["covariates"] = pick(self.covariates)
        return out

    def subset(self, index) -> "Replicates":
        """Some of the replicates (an index array or slice), as ``Replicates``."""
        index = np.arange(self.n_replicates)[index]
        return Replicates(template=self.template, dataset=self.dataset, dv=self.dv[index], blq=self.blq[index],
                          covariates=None if self.covariates is None else self.covariates[index],
                          etas=self.etas[index], lloq=self.lloq, model=self.model, values=self.values,
                          seed=self.seed, censored=self.censored,
                          time=None if self.time is None else self.time[index],
                          keep=None if self.keep is None else self.keep[index])

    def batch(self, r: int) -> SubjectBatch:
        """Replicate ``r`` (0-based) as a ``SubjectBatch``."""
        fields = {k: jnp.asarray(v[r]) for k, v in self.varying_fields().items()}
        return dataclasses.replace(self.template, **fields)

    def to_frame(self, replicates=None) -> pd.DataFrame:
        """NONMEM-format records of the replicates, with a REP column (1-based) first.

        DV is the simulated value on observation records (the LLOQ where censored, with
        BLQ = 1), drawn covariates are written per record, LLOQ is given only when BLQ
        observations were censored (a reader would otherwise censor on its own).
        """
        reps = np.arange(self.n_replicates) if replicates is None else np.atleast_1d(np.asarray(replicates))
        base = self.dataset.to_frame()
        rows = self.template.rows
        n_rows = len(base)
        out = pd.concat([base] * len(reps), ignore_index=True)
        out.insert(0, "REP", np.repeat(reps + 1, n_rows))
        obs = rows(self.template.obs_mask)
        dv = rows(np.asarray(self.dv)[reps], leading=1)  # [r, rows]
        out["DV"] = np.where(np.tile(obs, len(reps)), dv.reshape(-1), np.nan)
        blq = rows(np.asarray(self.blq)[reps], leading=1).reshape(-1)
        out["BLQ"] = blq.astype(np.int64)
        if self.censored:
            lloq = np.tile(rows(self.lloq), len(reps))
            out["LLOQ"] = np.where(np.tile(obs, len(reps)) & (lloq > 0), lloq, np.nan)
        else:
            out["LLOQ"] = np.nan
        if self.covariates is not None:
            cov = rows(np.asarray(self.covariates)[reps], leading=1)  # [r, rows, C]
            for j, name in enumerate(self.template.covariate_names):
                column = next((c for c in out.columns if c.upper() == name.upper()), name)
                out[column] = cov[:, :, j].reshape(-1)
        if self.time is not None:
            # Time-to-event: an event record moves to its event time, the subject's later
            # records of the kind go; records are put back in time order.
            out["TIME"] = rows(np.asarray(self.time)[reps], leading=1).reshape(-1)
            keep = rows(np.asarray(self.keep)[reps], leading=1).reshape(-1).astype(bool)
            out = out[keep].sort_values(["REP", "ID", "TIME"], kind="stable").reset_index(drop=True)
        return out

    def dataset_of(self, r: int) -> Dataset:
        """Replicate ``r`` as a ``Dataset`` (through the NONMEM reader)."""
        return read_nonmem(self.to_frame([r]).drop(columns="REP"))


def _resolve_values(model, params) -> ParameterValues:
    if params is not None and hasattr(params, "values") and hasattr(params, "ofv"):  # a FitResult
        return params.values
    return parameter_values(model, params)


def simulate(model, design, n: int = 1, seed: int = 0, params=None, censor_blq: bool = False, *,
             lloq: float | None = None, output: str = "frame", covariate_rule: str = "nonmem",
             chunk_size: int = 1000, progress: bool | None = None):
    """Simulate replicate datasets from a model.

    Args:
        model: a ``pkmix.Model``.
        design: a ``Dataset``, a NONMEM-format DataFrame or CSV path (dosing and
            sampling records and covariates are kept, DV is simulated), or a
            ``TrialDesign``.
        n: number of replicates.
        seed: random seed (replicate r's data do not depend on ``n`` or ``chunk_size``).
        params: parameter values (``{name: value}``, ``ParameterValues`` or a
            ``FitResult``); default the model's initial values.
        censor_blq: replace observations below the LLOQ (data LLOQ column, else the
            design's or ``lloq``) by the LLOQ and flag them BLQ (for M3 fits).
        lloq: LLOQ for observations without one in the data.
        output: "frame" (a DataFrame: REP, then NONMEM columns) or "arrays" (a
            ``Replicates`` object for ``fit_batch``, no pandas round trip).
        covariate_rule: "nonmem" or "locf" (see ``pkmix.predict``).
        chunk_size: replicates per compiled call (bounds memory).
        progress: a progress line (replicates done, elapsed time) for simulations that
            run longer than 2 s; default when standard output is a terminal.

    Returns:
        A DataFrame or ``Replicates`` (see ``output``).

    Raises:
        ModelError: parameter values do not fit the model.
        DatasetError: the design's data do not fit the model.
    """
    require_x64()
    if output not in ("frame", "arrays"):
        raise ValueError(f"output must be 'frame' or 'arrays', got {output!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    values = _resolve_values(model, params)
    tpl = _template(model, design, lloq)
    if censor_blq and not np.any(tpl.lloq > 0):
        raise ValueError("censor_blq=True needs an LLOQ: a data LLOQ column, TrialDesign(lloq=...) or lloq=")
    _check_simulable(model, censor_blq)
    if output == "arrays" and _has_time_to_event(model):
        raise ValueError("simulate: a time-to-event model's replicates differ in their records (an event "
                         "moves its record and ends the subject's follow-up): use output='frame'")
    out = _simulate_arrays(model, tpl, values, n, seed, censor_blq, covariate_rule, chunk_size, progress)
    # Shared by every replicate: the records, the LLOQ; BLQ flags only vary when censored.
    template = dataclasses.replace(tpl.batch, lloq=jnp.asarray(tpl.lloq),
                                   blq=jnp.zeros_like(tpl.batch.blq), dv=jnp.zeros_like(tpl.batch.dv))
    reps = Replicates(template=template, dataset=tpl.dataset, dv=out.dv, blq=out.blq, etas=out.etas,
                      covariates=out.covariates, lloq=tpl.lloq, model=model, values=values, seed=seed,
                      censored=bool(censor_blq), time=out.time, keep=out.keep)
    return reps if output == "arrays" else reps.to_frame()


def _replicate_keys(seed, n):
    return jax.random.split(jax.random.PRNGKey(int(seed)), n)


class _Simulated(NamedTuple):
    """Simulated arrays with a leading replicate axis (numpy)."""

    dv: np.ndarray  # [n, S, rec]
    blq: np.ndarray
    etas: np.ndarray  # [n, S, eta]
    covariates: np.ndarray | None  # [n, S, rec, C] when covariates are drawn
    time: np.ndarray | None  # [n, S, rec] record times, an event record's moved to its event (time-to-event)
    keep: np.ndarray | None  # [n, S, rec] False on time-to-event records after the subject's event


def _simulate_arrays(model, tpl: _Template, values, n, seed, censor, covariate_rule, chunk_size,
                     progress=None) -> _Simulated:
    keys = _replicate_keys(seed, n)
    chunk = max(1, min(int(chunk_size), n))
    static = (model, tpl.has_ss, covariate_rule, bool(censor), tpl.drawn, tpl.resample_index)
    table = jnp.asarray(tpl.resample_table if tpl.resample_table.size else np.zeros((1, 1)))
    lloq = jnp.asarray(tpl.lloq)
    pieces = []
    done = [0]
    with while_running(lambda: f"simulating: {done[0]} of {n} replicates done", progress):
        for start in range(0, n, chunk):
            k = keys[start:start + chunk]
            real = k.shape[0]
            if real < chunk:  # pad the last chunk so one program serves every chunk
                k = jnp.concatenate([k, jnp.repeat(k[:1], chunk - real, axis=0)])
            res, _, _ = _compile.run(_simulate_program, static, values, tpl.batch, lloq, table, k)
            pieces.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[:real], res))
            done[0] += real
    y, blq, eta, cov, tte = jax.tree_util.tree_map(lambda *a: np.concatenate(a), *pieces)
    return _Simulated(y, blq, eta, cov, None if tte is None else tte[0], None if tte is None else tte[1])


# ------------------------------------------------------------------------- VPC
@dataclass
class VPCResult:
    """Visual predictive check data.

    Layout (every table has a ``stratum`` column: the stratification covariate's value,
    or "all"; ``bin`` is 0-based within the common bin edges):

    * ``bins``: one row per (stratum, bin) with observations: ``lower``, ``upper`` (the
      bin's time edges), ``time`` (median observed time in the bin, the x position),
      ``n_observed`` (observations, BLQ included).
    * ``percentiles``: one row per (stratum, bin, pi): ``time``, ``pi`` (e.g. 0.05),
      ``observed`` (the observed pi-percentile), ``sim_lower``, ``sim_median``,
      ``sim_upper`` (the ``ci`` confidence band of the simulated pi-percentile across
      the ``n`` replicates: their (1-ci)/2, 0.5, (1+ci)/2 quantiles). A percentile is
      NaN where it falls below the LLOQ (the fraction of BLQ records in the bin
      reaches pi). With ``pred_corrected`` the values are prediction-corrected
      (Bergstrand et al. 2011): y * median(PRED in bin) / PRED.
    * ``blq`` (None without an LLOQ): one row per (stratum, bin): ``time``,
      ``observed`` (fraction of observations below the LLOQ), ``sim_lower``,
      ``sim_median``, ``sim_upper`` (band of the simulated fraction).
    * ``observations``: one row per observation: ``ID``, ``TIME``, ``DV`` (corrected
      with ``pred_corrected``; NaN when BLQ), ``PRED``, ``BLQ``, ``bin``, ``stratum``.

    Attributes ``pi``, ``ci``, ``n``, ``pred_corrected``, ``stratify``, ``lloq``,
    ``edges`` (the bin edges) record the settings.
    """

    bins: pd.DataFrame
    percentiles: pd.DataFrame
    blq: pd.DataFrame | None
    observations: pd.DataFrame
    pi: tuple
    ci: float
    n: int
    pred_corrected: bool
    stratify: str | None
    lloq: float | None
    edges: np.ndarray

    def coverage(self) -> float:
        """Fraction of the observed percentiles inside their simulated band (NaNs left out)."""
        p = self.percentiles.dropna(subset=["observed", "sim_lower", "sim_upper"])
        if p.empty:
            return float("nan")
        return float(np.mean((p["observed"] >= p["sim_lower"]) & (p["observed"] <= p["sim_upper"])))


def time_bins(times, n_bins: int = 10, *, min_obs: int = 5) -> np.ndarray:
    """Bin edges for observation times: the split of the distinct times into ``n_bins``
    groups with the least within-group sum of squares of log(time + c) (1-D k-means
    solved exactly by dynamic programming, as in Jenks' natural breaks), so the clusters of a sampling
    design (0.25, 0.5, 1, 2 h ...) each get their own bin. Then each bin with fewer than
    ``min_obs`` observations is merged into its smaller neighbour.

    Returns:
        Increasing edges; edge k lies halfway between the last time of group k and the
        first of group k + 1, the first and last edges are the extreme times.
    """
    t = np.asarray(times, dtype=float)
    t = t[np.isfinite(t)]
    if t.size == 0:
        raise ValueError("time_bins: no finite times")
    values, counts = np.unique(t, return_counts=True)
    n = values.size
    k = max(1, min(int(n_bins), n))
    if n > 3000:  # the exact split is O(k n^2); quantile edges serve for large irregular data
        edges = np.unique(np.quantile(t, np.linspace(0.0, 1.0, k + 1)))
        return edges
    w = counts.astype(float)
    # Cluster on log(time + c): PK designs sample densely early and sparsely late, and on
    # the raw scale the spread of the late samples (24 h +- 1 h) would outweigh the gaps
    # between the early ones (0.25 h vs 0.5 h). c, a tenth of the median time since the
    # first, keeps time 0 and the first samples apart without stretching them.
    shifted = values - values[0]
    c = 0.1 * float(np.median(np.repeat(shifted, counts)))
    c = c if c > 0 else 0.1 * max(float(shifted[-1]), 1e-12)
    u = np.log(shifted + c)
    cw = np.concatenate([[0.0], np.cumsum(w)])
    cx = np.concatenate([[0.0], np.cumsum(w * u)])
    cxx = np.concatenate([[0.0], np.cumsum(w * u**2)])

    def sse(i, j):  # groups values[i:j] (arrays of i for one j)
        ww = cw[j] - cw[i]
        sx = cx[j] - cx[i]
        return (cxx[j] - cxx[i]) - np.where(ww > 0, sx * sx / np.where(ww > 0, ww, 1.0), 0.0)

    inf = np.inf
    cost = np.full((k + 1, n + 1), inf)
    arg = np.zeros((k + 1, n + 1), dtype=int)
    cost[0, 0] = 0.0
    for m in range(1, k + 1):
        for j in range(m, n + 1):
            i = np.arange(m - 1, j)
            c = cost[m - 1, i] + sse(i, j)
            best = int(np.argmin(c))
            cost[m, j] = c[best]
            arg[m, j] = i[best]
    cuts = []
    j = n
    for m in range(k, 0, -1):
        i = arg[m, j]
        cuts.append(i)
        j = i
    starts = sorted(cuts)[1:]  # first index of groups 2..k
    # A bin of a handful of observations has no meaningful 5th or 95th percentile: merge
    # each bin under ``min_obs`` into its smaller neighbour.
    bounds = [0, *starts, n]
    sizes = [int(w[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:])]
    while len(sizes) > 1 and min(sizes) < min_obs:
        i = int(np.argmin(sizes))
        j = i - 1 if i == len(sizes) - 1 or (i > 0 and sizes[i - 1] <= sizes[i + 1]) else i + 1
        lo = min(i, j)
        sizes[lo:lo + 2] = [sizes[lo] + sizes[lo + 1]]
        del bounds[lo + 1]
    inner = [(values[s - 1] + values[s]) / 2.0 for s in bounds[1:-1]]
    return np.array([values[0], *inner, values[-1]])


def _bin_edges(times, bins):
    """Edges from a number of bins (``time_bins``, the one binning rule of every VPC) or
    checked edges given by the user."""
    if np.ndim(bins) == 0:
        k = int(bins)
        if k < 1:
            raise ValueError(f"bins must be a positive number of bins or a sequence of edges, got {bins}")
        edges = time_bins(times, k)
        if edges.size == 1:
            edges = np.array([edges[0], edges[0]])
    else:
        edges = np.asarray(bins, dtype=float)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("bins: edges must be an increasing sequence of at least two times")
    return edges


def _assign(times, edges):
    """Bin index of each time: [edges[k], edges[k+1]), the last bin closed; times outside
    the edges get -1."""
    idx = np.searchsorted(edges, times, side="right") - 1
    idx = np.where(times == edges[-1], edges.size - 2, idx)
    return np.where((times < edges[0]) | (times > edges[-1]), -1, idx)


def _censor_rule(values, below, levels):
    """Percentiles (linear interpolation, R's type 7) of ``values`` along the last axis,
    NaN where the fraction of BLQ values reaches the level."""
    v = np.where(below, _CENSORED, values)
    q = np.quantile(v, levels, axis=-1)  # [levels, ...]
    frac = np.mean(below, axis=-1)
    return np.where(frac[None] >= np.asarray(levels).reshape((-1,) + (1,) * frac.ndim), np.nan, q), frac


def vpc_statistics(times, y_obs, below_obs, y_sim, below_sim, edges, levels, ci, *, strata=None,
                   has_lloq=True):
    """The VPC's binned statistics (``VPCResult``'s ``bins``, ``percentiles`` and ``blq``
    tables) from observations and simulated replicates at the same records: the one
    summary behind ``vpc`` and ``pkmix.plots.vpc_summary``.

    Args:
        times, y_obs, below_obs: per observation: time, value, BLQ flag.
        y_sim, below_sim: per replicate and observation [n, n_obs].
        edges: the bins' time edges; levels: the percentiles (fractions); ci: the band.
        strata: per observation stratum (default one, "all").
        has_lloq: whether to report BLQ fractions (the ``blq`` table).
    """
    strata = np.full(np.shape(times), "all", dtype=object) if strata is None else np.asarray(strata, dtype=object)
    bin_idx = _assign(np.asarray(times, dtype=float), edges)
    lo_q, hi_q = (1.0 - ci) / 2.0, (1.0 + ci) / 2.0
    bin_rows, pct_rows, blq_rows = [], [], []
    for s in pd.unique(strata):
        for b in range(edges.size - 1):
            sel = (strata == s) & (bin_idx == b)
            if not sel.any():
                continue
            t_mid = float(np.median(times[sel]))
            bin_rows.append({"stratum": s, "bin": b, "lower": edges[b], "upper": edges[b + 1], "time": t_mid,
                             "n_observed": int(sel.sum())})
            q_obs, f_obs = _censor_rule(y_obs[sel], below_obs[sel], levels)
            q_sim, f_sim = _censor_rule(y_sim[:, sel], below_sim[:, sel], levels)  # [levels, n], [n]
            q_sim = np.where(np.isnan(q_sim), _CENSORED, q_sim)
            band = np.quantile(q_sim, [lo_q, 0.5, hi_q], axis=1)  # [3, levels]
            band = np.where(band < 0.5 * _CENSORED, np.nan, band)
            for j, p in enumerate(levels):
                pct_rows.append({"stratum": s, "bin": b, "time": t_mid, "pi": float(p), "observed": float(q_obs[j]),
                                 "sim_lower": band[0, j], "sim_median": band[1, j], "sim_upper": band[2, j]})
            if has_lloq:
                fb = np.quantile(f_sim, [lo_q, 0.5, hi_q])
                blq_rows.append({"stratum": s, "bin": b, "time": t_mid, "observed": float(f_obs),
                                 "sim_lower": fb[0], "sim_median": fb[1], "sim_upper": fb[2]})
    return pd.DataFrame(bin_rows), pd.DataFrame(pct_rows), pd.DataFrame(blq_rows) if has_lloq else None


def kaplan_meier(time, event, grid):
    """Kaplan-Meier survival at ``grid`` times from subjects' (time, event) pairs.

    Args:
        time, event: [..., N] follow-up times and event flags (1 event, 0 censored);
            leading axes (e.g. replicates) are computed independently.
        grid: [G] increasing times.

    Returns:
        [..., G]: the product-limit estimate S(t) (right-continuous: an event at t counts
        in S(t)). At tied times events come before censorings, so a subject censored at
        an event time is still at risk for it (the usual convention).
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=bool)
    grid = np.asarray(grid, dtype=float)
    lead = time.shape[:-1]
    t2 = time.reshape(-1, time.shape[-1])
    e2 = event.reshape(-1, time.shape[-1])
    n = t2.shape[1]
    out = np.empty((t2.shape[0], grid.size))
    for r in range(t2.shape[0]):
        order = np.lexsort((~e2[r], t2[r]))  # by time, events first among ties
        ts, es = t2[r, order], e2[r, order]
        # Tied events telescope: prod_m (1 - 1/(n_i - m)) = 1 - d/n_i, so one factor per
        # sorted subject gives the product-limit estimate.
        at_risk = n - np.arange(n)
        s = np.cumprod(np.where(es, 1.0 - 1.0 / at_risk, 1.0))
        k = np.searchsorted(ts, grid, side="right")
        out[r] = np.where(k > 0, s[np.maximum(k - 1, 0)], 1.0)
    return out.reshape(lead + (grid.size,))


def km_statistics(time_obs, event_obs, time_sim, event_sim, grid, ci, *, strata=None):
    """The Kaplan-Meier VPC's table: per stratum and grid time the observed KM estimate
    and the (1-ci)/2, 0.5, (1+ci)/2 quantiles of the simulated replicates' KM estimates.

    Args:
        time_obs, event_obs: per subject [N]; time_sim, event_sim: [n, N] per replicate.
        grid: [G] times; ci: the band's level.
        strata: per subject stratum (default one, "all"), for observed and simulated.
    """
    strata = np.full(np.shape(time_obs), "all", dtype=object) if strata is None else np.asarray(strata, dtype=object)
    lo_q, hi_q = (1.0 - ci) / 2.0, (1.0 + ci) / 2.0
    rows = []
    for s in pd.unique(strata):
        sel = strata == s
        obs = kaplan_meier(np.asarray(time_obs)[sel], np.asarray(event_obs)[sel], grid)
        sim = kaplan_meier(np.asarray(time_sim)[:, sel], np.asarray(event_sim)[:, sel], grid)  # [n, G]
        band = np.quantile(sim, [lo_q, 0.5, hi_q], axis=0)
        rows.append(pd.DataFrame({"stratum": s, "time": grid, "n_subjects": int(sel.sum()), "observed": obs,
                                  "sim_lower": band[0], "sim_median": band[1], "sim_upper": band[2]}))
    return pd.concat(rows, ignore_index=True)


def proportion_statistics(times, y_obs, y_sim, edges, categories, ci, *, strata=None):
    """The VPC of proportions: per stratum, time bin and category, the observed fraction
    of records in the category and the band of the simulated fraction. The fractions
    come from ``vpc_statistics`` (its fraction-below table, with the flag "in the
    category"), so binning and bands are the continuous VPC's.

    Returns:
        (bins table of ``vpc_statistics``, proportions: one row per (stratum, bin,
        category) with ``time``, ``category``, ``observed``, ``sim_lower``,
        ``sim_median``, ``sim_upper``).
    """
    y_obs = np.asarray(y_obs, dtype=float)
    y_sim = np.asarray(y_sim, dtype=float)
    tables, bins_table = [], None
    for c in categories:
        bins_c, _, frac = vpc_statistics(times, y_obs, y_obs == c, y_sim, y_sim == c, edges, (0.5,), ci,
                                         strata=strata, has_lloq=True)
        bins_table = bins_c if bins_table is None else bins_table
        frac.insert(3, "category", c)
        tables.append(frac)
    props = pd.concat(tables, ignore_index=True).sort_values(["stratum", "bin", "category"], kind="stable")
    return bins_table, props.reset_index(drop=True)


def _vpc_inputs(name, result_or_model, data, params, ci):
    """(model, values, data) of a VPC from a ``FitResult`` or a model, checked."""
    require_x64()
    if hasattr(result_or_model, "ofv") and hasattr(result_or_model, "model"):
        model = result_or_model.model
        values = result_or_model.values if params is None else _resolve_values(model, params)
        data = result_or_model.dataset if data is None else data
    else:
        model = result_or_model
        values = _resolve_values(model, params)
    if data is None:
        raise ValueError(f"{name}: give the observed data")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    _check_simulable(model)
    return model, values, data


def _strata_of(frame, rows, stratify):
    """Per selected row (boolean ``rows``): the value of the ``stratify`` column, or "all"."""
    if stratify is None:
        return np.full(int(np.sum(rows)), "all", dtype=object)
    column = next((c for c in frame.columns if c.upper() == str(stratify).upper()), None)
    if column is None:
        raise ValueError(f"stratify: {stratify!r} is not a column of the data ({list(frame.columns)})")
    return frame[column].to_numpy()[rows]


def _endpoint_records(model, batch, kind, dvid, what):
    """[S, rec] mask of the observation records of the endpoint a non-Gaussian VPC
    draws: every observation of a model of ``kind`` (a tuple of likelihood classes), or
    those of DVID ``dvid`` in a multi-endpoint model (which must be of that kind)."""
    from ._model.likelihoods import Endpoints

    error = model.error
    obs = np.asarray(batch.obs_mask)
    if isinstance(error, Endpoints):
        candidates = [v for v, m in zip(error.values, error.models) if isinstance(m, kind)]
        if dvid is None:
            if len(candidates) != 1:
                raise ValueError(f"{what}: the model has endpoints {list(error.values)}; name the one to draw "
                                 f"with dvid= (one of {candidates})")
            dvid = candidates[0]
        if dvid not in candidates:
            raise ValueError(f"{what}: DVID {dvid} is not a {_kind_name(kind)} endpoint (those are {candidates})")
        column = np.asarray(batch.covariates)[..., batch.covariate_names.index(error.column)]
        return obs & (column == dvid)
    if not isinstance(error, kind):
        raise ValueError(f"{what}: the model's observations are {type(error).__name__}, not {_kind_name(kind)}")
    return obs


def _kind_name(kind):
    return " or ".join(k.__name__ for k in kind)


def vpc(result_or_model, data=None, params=None, n: int = 500, bins=10, pi=(0.05, 0.5, 0.95), ci: float = 0.95,
        pred_corrected: bool = False, stratify: str | None = None, seed: int = 0, lloq: float | None = None, *,
        covariate_rule: str = "nonmem", progress: bool | None = None) -> VPCResult:
    """Visual predictive check data: observed and simulated percentiles per time bin.

    Args:
        result_or_model: a ``FitResult`` (its model, estimates and data) or a ``Model``.
        data: the observed data (``Dataset``, DataFrame or path); default the fit's.
        params: parameter values for a model (default its initial values; a fit's
            estimates for a ``FitResult``).
        n: simulated replicates of the data's design.
        bins: number of bins (edges by ``time_bins``: the sampling design's clusters of
            times, bins of fewer than 5 observations merged) or a sequence of edges.
        pi: the percentiles shown (fractions).
        ci: width of the simulated percentiles' confidence band.
        pred_corrected: prediction-corrected VPC (Bergstrand et al. 2011).
        stratify: a data column; one VPC per distinct value (bins shared).
        seed: random seed of the simulation.
        lloq: LLOQ; default the data's LLOQ column. With one, BLQ fractions are
            reported and percentiles below it are censored (NaN).
        covariate_rule: see ``pkmix.predict``.
        progress: a progress line for simulations longer than 2 s (see ``simulate``).

    Returns:
        A ``VPCResult`` (its docstring describes the tables).
    """
    model, values, data = _vpc_inputs("vpc", result_or_model, data, params, ci)
    if _has_time_to_event(model):
        raise ValueError("vpc: percentiles of time-to-event records mean nothing; use pkmix.km_vpc (a Kaplan-Meier "
                         "VPC)")
    levels = np.asarray(pi, dtype=float)
    if np.any((levels <= 0) | (levels >= 1)):
        raise ValueError(f"pi must be fractions in (0, 1), got {pi}")
    tpl = _template(model, data, lloq)
    dataset, batch = tpl.dataset, tpl.batch
    sims = _simulate_arrays(model, tpl, values, int(n), seed, False, covariate_rule, chunk_size=max(1, min(n, 500)),
                            progress=progress)
    obs_rec = np.asarray(batch.obs_mask)
    frame = dataset.frame
    obs = batch.rows(obs_rec)  # per frame row
    times = frame["TIME"].to_numpy()[obs]
    y_obs = frame["DV"].to_numpy()[obs]
    blq_obs = (frame["BLQ"].to_numpy()[obs] == 1)
    y_sim = sims.dv[:, obs_rec]  # [n, N_obs] in frame order (row-major = frame order)
    lloq_rec = tpl.lloq[obs_rec]
    has_lloq = bool(np.any(lloq_rec > 0)) or bool(np.any(blq_obs))
    lloq_rec = np.where(lloq_rec > 0, lloq_rec, -np.inf)
    below_obs = blq_obs | (y_obs < lloq_rec)
    below_sim = y_sim < lloq_rec[None]

    from ._predict import _predict_batch

    n_eta = model.n_eta_total(batch.n_occasions)
    pred_rec, _ = _predict_batch(model, values, jnp.zeros((batch.time.shape[0], n_eta)), batch, tpl.has_ss,
                                 covariate_rule)
    pred = np.asarray(pred_rec)[obs_rec]

    edges = _bin_edges(times, bins)
    bin_idx = _assign(times, edges)
    strata = _strata_of(frame, obs, stratify)

    y_obs_c = y_obs.astype(float).copy()
    y_sim_c = y_sim.copy()
    if pred_corrected:
        ratio = np.ones_like(pred)
        for s in pd.unique(strata):
            for b in range(edges.size - 1):
                sel = (strata == s) & (bin_idx == b)
                if sel.any():
                    with np.errstate(divide="ignore", invalid="ignore"):
                        ratio[sel] = np.median(pred[sel]) / pred[sel]
        # PRED 0 (a pre-dose sample): no correction is defined; the value stays as it is.
        ratio = np.where(np.isfinite(ratio), ratio, 1.0)
        y_obs_c = y_obs_c * ratio
        y_sim_c = y_sim_c * ratio[None]

    bins_table, pct_table, blq_table = vpc_statistics(times, y_obs_c, below_obs, y_sim_c, below_sim, edges, levels,
                                                      ci, strata=strata, has_lloq=has_lloq)
    observations = pd.DataFrame({
        "ID": frame["ID"].to_numpy()[obs], "TIME": times, "DV": np.where(below_obs, np.nan, y_obs_c),
        "PRED": pred, "BLQ": below_obs.astype(int), "bin": bin_idx, "stratum": strata,
    })
    lloq_value = lloq if lloq is not None else (float(np.nanmin(tpl.lloq[tpl.lloq > 0])) if np.any(tpl.lloq > 0)
                                                 else None)
    return VPCResult(
        bins=bins_table, percentiles=pct_table, blq=blq_table, observations=observations, pi=tuple(levels.tolist()),
        ci=float(ci), n=int(n), pred_corrected=bool(pred_corrected), stratify=stratify, lloq=lloq_value,
        edges=edges,
    )


# ------------------------------------------------------------- non-Gaussian VPCs
@dataclass
class ProportionVPCResult:
    """VPC of proportions (binary, ordinal or count data).

    * ``bins``: one row per (stratum, bin), as ``VPCResult.bins``.
    * ``proportions``: one row per (stratum, bin, category): ``time``, ``category``,
      ``observed`` (the fraction of the bin's observations in the category),
      ``sim_lower``, ``sim_median``, ``sim_upper`` (the ``ci`` band of the simulated
      fraction across the ``n`` replicates).
    * ``observations``: ``ID``, ``TIME``, ``DV``, ``bin``, ``stratum``.

    Attributes ``categories``, ``ci``, ``n``, ``stratify``, ``edges`` record the settings.
    """

    bins: pd.DataFrame
    proportions: pd.DataFrame
    observations: pd.DataFrame
    categories: tuple
    ci: float
    n: int
    stratify: str | None
    edges: np.ndarray

    def coverage(self) -> float:
        """Fraction of the observed proportions inside their simulated band."""
        p = self.proportions
        return float(np.mean((p["observed"] >= p["sim_lower"]) & (p["observed"] <= p["sim_upper"])))


def vpc_proportions(result_or_model, data=None, params=None, n: int = 200, bins=10, ci: float = 0.95,
                    stratify: str | None = None, seed: int = 0, *, categories=None, dvid: int | None = None,
                    covariate_rule: str = "nonmem", progress: bool | None = None) -> ProportionVPCResult:
    """VPC of proportions: per time bin, the observed fraction of records in each
    category against the band of that fraction over data sets simulated from the model
    (the data's design, ``n`` replicates). The binning and bands are ``vpc``'s.

    Args:
        result_or_model, data, params, n, bins, ci, stratify, seed, covariate_rule,
            progress: as ``vpc``.
        categories: the DV values shown (default: 1 for Bernoulli data, every category
            0..K-1 of ordinal data; give them for counts).
        dvid: in a multi-endpoint model, the endpoint drawn (default: its only
            Bernoulli/ordinal/count endpoint).

    Returns:
        A ``ProportionVPCResult``.
    """
    from ._model import likelihoods as lk

    model, values, data = _vpc_inputs("vpc_proportions", result_or_model, data, params, ci)
    tpl = _template(model, data)
    kind = (lk.Binomial, lk.Ordinal, lk.Poisson, lk.NegativeBinomial)
    records = _endpoint_records(model, tpl.batch, kind, dvid, "vpc_proportions")
    endpoint = model.error if not isinstance(model.error, lk.Endpoints) else model.error.model_for(
        dvid if dvid is not None else next(v for v, m in zip(model.error.values, model.error.models)
                                           if isinstance(m, kind)))
    if categories is None:
        if isinstance(endpoint, lk.Ordinal):
            categories = tuple(range(endpoint.n_categories))
        elif isinstance(endpoint, lk.Binomial) and endpoint.trials is None:
            categories = (1,)
        else:
            raise ValueError("vpc_proportions: give categories= (the DV values to show) for count data")
    categories = tuple(float(c) for c in categories)
    sims = _simulate_arrays(model, tpl, values, int(n), seed, False, covariate_rule,
                            chunk_size=max(1, min(int(n), 500)), progress=progress)
    frame, batch = tpl.dataset.frame, tpl.batch
    rows = batch.rows(records)
    times = frame["TIME"].to_numpy(dtype=float)[rows]
    y_obs = frame["DV"].to_numpy(dtype=float)[rows]
    y_sim = sims.dv[:, records]  # [n, N] in frame order
    edges = _bin_edges(times, bins)
    strata = _strata_of(frame, rows, stratify)
    bins_table, props = proportion_statistics(times, y_obs, y_sim, edges, categories, ci, strata=strata)
    observations = pd.DataFrame({"ID": frame["ID"].to_numpy()[rows], "TIME": times, "DV": y_obs,
                                 "bin": _assign(times, edges), "stratum": strata})
    return ProportionVPCResult(bins=bins_table, proportions=props, observations=observations,
                               categories=tuple(c if not float(c).is_integer() else int(c) for c in categories),
                               ci=float(ci), n=int(n), stratify=stratify, edges=edges)


@dataclass
class KMVPCResult:
    """Kaplan-Meier VPC of time-to-event data (time to each subject's first event).

    * ``curves``: one row per (stratum, time): ``n_subjects``, ``observed`` (the
      observed Kaplan-Meier estimate S(t)), ``sim_lower``, ``sim_median``,
      ``sim_upper`` (the ``ci`` band of the simulated replicates' estimates at t).
    * ``subjects``: the observed ``ID``, ``TIME`` (first event, else the last
      time-to-event record: censored there), ``EVENT`` (1/0), ``stratum``.

    Attributes ``ci``, ``n``, ``stratify`` record the settings.
    """

    curves: pd.DataFrame
    subjects: pd.DataFrame
    ci: float
    n: int
    stratify: str | None

    def coverage(self) -> float:
        """Fraction of the grid times where the observed curve lies inside the band."""
        c = self.curves
        return float(np.mean((c["observed"] >= c["sim_lower"]) & (c["observed"] <= c["sim_upper"])))


def _first_events(records, dv, time, keep=None):
    """Per subject (leading axes kept): (time of the first event, else of the last
    record; event flag) over the [..., S, rec] record mask ``records``."""
    ev = records & (dv > 0.5) & (True if keep is None else keep)
    has = ev.any(axis=-1)
    first = np.argmax(ev, axis=-1)
    last = records.shape[-1] - 1 - np.argmax(records[..., ::-1], axis=-1)
    at = np.where(has, first, last)
    return np.take_along_axis(time, at[..., None], axis=-1)[..., 0], has


def km_vpc(result_or_model, data=None, params=None, n: int = 200, ci: float = 0.95, stratify: str | None = None,
           seed: int = 0, *, times=None, dvid: int | None = None, covariate_rule: str = "nonmem",
           progress: bool | None = None) -> KMVPCResult:
    """Kaplan-Meier VPC: the observed Kaplan-Meier curve of the time to each subject's
    first event against the band of the curves of ``n`` data sets simulated from the
    model (the data's design; simulated subjects are censored at their last
    time-to-event record, the end of follow-up).

    Args:
        result_or_model, data, params, n, ci, stratify, seed, covariate_rule, progress:
            as ``vpc`` (``stratify`` reads each subject's first record).
        times: the times the curves are evaluated at (default 101 points from 0 to the
            last follow-up time, and every observed time).
        dvid: in a multi-endpoint model, the time-to-event endpoint (default its only one).

    Returns:
        A ``KMVPCResult``.
    """
    from ._model.tte import TimeToEvent

    model, values, data = _vpc_inputs("km_vpc", result_or_model, data, params, ci)
    tpl = _template(model, data)
    batch = tpl.batch
    records = _endpoint_records(model, batch, (TimeToEvent,), dvid, "km_vpc")
    sims = _simulate_arrays(model, tpl, values, int(n), seed, False, covariate_rule,
                            chunk_size=max(1, min(int(n), 500)), progress=progress)
    with_records = records.any(axis=1)
    t_obs, e_obs = _first_events(records, np.asarray(batch.dv), np.asarray(batch.time))
    t_sim, e_sim = _first_events(records[None], sims.dv, sims.time, sims.keep)
    t_obs, e_obs = t_obs[with_records], e_obs[with_records]
    t_sim, e_sim = t_sim[:, with_records], e_sim[:, with_records]
    frame = tpl.dataset.frame
    first_rows = ~frame["ID"].duplicated().to_numpy()
    strata = _strata_of(frame, first_rows, stratify)[with_records]
    ids = frame["ID"].to_numpy()[first_rows][with_records]
    if times is None:
        grid = np.unique(np.concatenate([np.linspace(0.0, float(np.max(t_obs)), 101), t_obs]))
    else:
        grid = np.asarray(times, dtype=float)
        if grid.ndim != 1 or grid.size < 1 or np.any(np.diff(grid) <= 0):
            raise ValueError("km_vpc: times must be an increasing sequence")
    curves = km_statistics(t_obs, e_obs, t_sim, e_sim, grid, ci, strata=strata)
    subjects = pd.DataFrame({"ID": ids, "TIME": t_obs, "EVENT": e_obs.astype(int), "stratum": strata})
    return KMVPCResult(curves=curves, subjects=subjects, ci=float(ci), n=int(n), stratify=stratify)


__all__ = ["simulate", "vpc", "vpc_statistics", "vpc_proportions", "km_vpc", "kaplan_meier", "ProportionVPCResult",
           "KMVPCResult", "Replicates", "VPCResult", "TrialDesign", "Arm", "Dose", "Normal", "LogNormal",
           "Uniform", "Categorical"]

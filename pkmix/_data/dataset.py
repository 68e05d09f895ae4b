"""The host-side `Dataset` and the device-side `SubjectBatch` it produces.

This is the hard data boundary of pkmix (STYLE.md section 2, item 7): everything here
is pandas and numpy on the host, until `Dataset.batch` converts the records once into
padded JAX arrays shaped ``[subject, record]``. Nothing downstream of `SubjectBatch`
ever sees a DataFrame, and nothing here is traced by JAX.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Bool, Float, Int

from .errors import DatasetError, Violation, _format_id

# The record columns every canonical frame has, in this order; OCC (when present) and
# the covariates follow.
CANONICAL_COLUMNS: tuple[str, ...] = (
    "ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "DUR", "II", "ADDL", "SS",
    "LLOQ", "BLQ", "REC",
)
# Record items a frame may have after the canonical columns: the occasion and the
# endpoint of each observation (NONMEM's DVID, read by ``pkmix.endpoints``).
OPTIONAL_ITEMS: tuple[str, ...] = ("OCC", "DVID")
INT_COLUMNS: tuple[str, ...] = ("EVID", "MDV", "CMT", "ADDL", "SS", "BLQ", "REC")
# Padded record axes are rounded up to a multiple of this, so that datasets of similar
# size share one compiled program instead of recompiling for every record count.
BUCKET = 8


def padded_length(n_records: int, multiple: int = BUCKET) -> int:
    """The record axis that holds ``n_records``: the next multiple of ``multiple`` at or
    above it (at least one multiple). The one rule by which pkmix pads records (datasets,
    replicate stacks, a dosing patient's records and curve), so that data of similar
    size share one compiled program."""
    return max(multiple, -(-int(n_records) // multiple) * multiple)


# Shapes: "*subj" lets the same annotations describe a batch [subj, rec] and the single
# subject [rec] that `SubjectBatch.subject` returns.
_F = Float[Array, "*subj rec"]
_I = Int[Array, "*subj rec"]
_B = Bool[Array, "*subj rec"]
_C = Float[Array, "*subj rec cov"]


class SubjectBatch(eqx.Module):
    """Padded records of several subjects, ready for `jax.vmap` over the subject axis.

    Every array is shaped ``[subject, record]`` (covariates ``[subject, record,
    covariate]``). Subjects with fewer records than the record axis are padded with
    harmless, finite records: time repeats the subject's last time, ``evid`` is 2
    (an "other" event), amounts, rates, durations, intervals, ``ss``, ``dv`` and
    ``lloq`` are 0, covariates and ``occ`` repeat the last real record, and all masks
    are False. So a numerical function may run over padding without producing NaN, and
    only needs the masks to drop it.

    Attributes:
        time, amt, rate, dur, ii, dv, lloq: float64 record values. ``dv`` is 0 where
            the data had none; ``lloq`` is 0 where unknown (never NaN).
        evid, cmt, ss, occ: int32. ``cmt`` is 1-based as in the data, 0 meaning the
            model's default compartment; ``occ`` is a 0-based occasion index (0 when
            there is no occasion column).
        obs_mask: True on observations (EVID 0, MDV 0) that are real records; BLQ
            observations are included (they contribute through M3).
        blq: True on observations below the LLOQ.
        record_mask: True on real (non-padding) records.
        covariates: float64 covariate values in the order of `covariate_names`.
        covariate_names: names of the covariate columns (static).
        n_occasions: number of distinct occasions (static; 1 without an occasion column).
    """

    time: _F
    amt: _F
    rate: _F
    dur: _F
    ii: _F
    dv: _F
    lloq: _F
    evid: _I
    cmt: _I
    ss: _I
    occ: _I
    obs_mask: _B
    blq: _B
    record_mask: _B
    covariates: _C
    covariate_names: tuple[str, ...] = eqx.field(static=True)
    n_occasions: int = eqx.field(static=True)

    def __check_init__(self):
        # Shape checks only (values may be tracers): every record field must share one
        # shape, and the covariate axis must match the names.
        shape = getattr(self.time, "shape", None)
        if shape is None:
            return
        for name in ("amt", "rate", "dur", "ii", "dv", "lloq", "evid", "cmt", "ss",
                     "occ", "obs_mask", "blq", "record_mask"):
            other = getattr(getattr(self, name), "shape", shape)
            if tuple(other) != tuple(shape):
                raise ValueError(
                    f"SubjectBatch.{name} has shape {tuple(other)}, expected "
                    f"{tuple(shape)} like `time`."
                )
        cov_shape = getattr(self.covariates, "shape", None)
        expected = tuple(shape) + (len(self.covariate_names),)
        if cov_shape is not None and tuple(cov_shape) != expected:
            raise ValueError(
                f"SubjectBatch.covariates has shape {tuple(cov_shape)}, expected "
                f"{expected} for covariates {self.covariate_names}."
            )

    @property
    def n_subjects(self) -> int:
        """Size of the subject axis (raises for a single subject, which has none)."""
        if self.time.ndim < 2:
            raise ValueError("This SubjectBatch holds a single subject (no subject axis).")
        return int(self.time.shape[0])

    @property
    def n_records(self) -> int:
        """Size of the (padded) record axis."""
        return int(self.time.shape[-1])

    def rows(self, values, *, leading: int = 0) -> np.ndarray:
        """``values`` shaped [*leading axes, subject, record, ...] at the real records,
        in the dataset's row order: [*leading axes, row, ...] (the one way back from the
        padded layout to the data's rows)."""
        index = (slice(None),) * leading + (np.asarray(self.record_mask),)
        return np.asarray(values)[index]

    def subject(self, i: int) -> SubjectBatch:
        """The i-th subject (0-based position in the batch) with the subject axis removed."""
        return jax.tree_util.tree_map(lambda x: x[i], self)

    def covariate(self, name: str) -> Float[Array, "*subj rec"]:
        """One covariate's values by name (a static lookup: safe inside jit)."""
        try:
            k = self.covariate_names.index(name)
        except ValueError:
            raise KeyError(
                f"covariate {name!r} is not in this batch; it has {self.covariate_names}"
            ) from None
        return self.covariates[..., k]


class Dataset:
    """A validated NONMEM-format dataset in canonical form (host side, pandas).

    Build one with `pkmix.read_nonmem`; the constructor takes an already-canonical frame.
    The records are expanded (ADDL/II doses made explicit), defaulted (EVID, MDV, CMT,
    RATE, ... as NONMEM would) and annotated with BLQ status, so later code never
    re-derives NONMEM conventions.

    Attributes:
        frame: the canonical records: columns ID, TIME, DV, AMT, EVID, MDV, CMT, RATE,
            DUR, II, ADDL, SS, LLOQ, BLQ, REC, then OCC if present, then covariates;
            subjects in order of first appearance, records in processing order. REC is
            the 1-based source record each row came from (expanded doses share the REC
            of the dose that implied them). ADDL is 0 everywhere: expansion consumed it.
            Treat it as read-only.
        source: the path the data was read from, or None.
    """

    def __init__(self, frame: pd.DataFrame, *, source: str | Path | None = None):
        missing = [c for c in CANONICAL_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(
                f"Dataset needs a canonical frame with columns {CANONICAL_COLUMNS}; "
                f"missing {missing}. Use pkmix.read_nonmem to build one."
            )
        self.frame: pd.DataFrame = frame
        self.source = source

    # -- simple counts -------------------------------------------------------------

    @property
    def ids(self) -> np.ndarray:
        """Subject IDs in order of first appearance."""
        return pd.unique(self.frame["ID"].to_numpy())

    @property
    def n_subjects(self) -> int:
        return len(self.ids)

    @property
    def n_records(self) -> int:
        """Number of canonical records (after ADDL expansion)."""
        return len(self.frame)

    @property
    def _obs(self) -> np.ndarray:
        f = self.frame
        return ((f["EVID"] == 0) & (f["MDV"] == 0)).to_numpy()

    @property
    def n_observations(self) -> int:
        """Observations (EVID 0 and MDV 0), BLQ ones included."""
        return int(self._obs.sum())

    @property
    def n_doses(self) -> int:
        """Dose records (EVID 1 or 4) after ADDL expansion."""
        return int(self.frame["EVID"].isin((1, 4)).sum())

    @property
    def n_blq(self) -> int:
        """Observations below the limit of quantification."""
        return int((self._obs & (self.frame["BLQ"].to_numpy() == 1)).sum())

    @property
    def covariates(self) -> list[str]:
        """Covariate column names (every column that is not a NONMEM data item)."""
        return [c for c in self.frame.columns if c not in CANONICAL_COLUMNS and c not in OPTIONAL_ITEMS]

    @property
    def has_occasions(self) -> bool:
        return "OCC" in self.frame.columns

    def __repr__(self) -> str:
        src = f", source={str(self.source)!r}" if self.source is not None else ""
        return (
            f"Dataset({self.n_subjects} subjects, {self.n_records} records, "
            f"{self.n_observations} observations, {self.n_doses} doses{src})"
        )

    # -- conversions ---------------------------------------------------------------

    def to_frame(self) -> pd.DataFrame:
        """The records in NONMEM layout: numeric columns only, no '.' strings.

        Doses implied by ADDL are written out explicitly (ADDL 0), EVID, MDV, CMT, BLQ
        and LLOQ are explicit, and REC is left out, so `read_nonmem` reads the result
        back to an identical dataset (REC then numbers the rows of this frame). Missing
        values are NaN; write with ``to_csv(path, index=False, na_rep=".")`` for NONMEM.
        """
        return self.frame.drop(columns="REC").reset_index(drop=True).copy()

    def check(self, model: Any) -> None:
        """Check the data against a model; raise one `DatasetError` listing every problem.

        Checks (each only when the model defines the attribute): ``n_compartments`` and
        ``compartment_names`` (CMT must exist), ``covariates`` (every covariate present
        and never missing), ``occasion_column`` (the occasion column present and never
        missing).

        Raises:
            DatasetError: when any check fails.
        """
        violations = model_violations(self.frame, model)
        if violations:
            raise DatasetError(violations, source=self.source)

    def summary(self) -> str:
        """A short human-readable description of the dataset."""
        f = self.frame
        n_other = self.n_records - self.n_observations - self.n_doses
        lines = [
            f"Dataset{f' ({self.source})' if self.source is not None else ''}",
            f"  subjects      {self.n_subjects}",
            f"  records       {self.n_records} ({self.n_observations} observations, "
            f"{self.n_doses} doses, {n_other} other)",
            f"  BLQ           {self.n_blq} observation{'s' if self.n_blq != 1 else ''}",
            f"  time          {_num(f['TIME'].min())} to {_num(f['TIME'].max())}",
        ]
        per_subject = f.groupby("ID", sort=False).size()
        lines.append(
            f"  records/subj  {per_subject.min()} to {per_subject.max()} "
            f"(median {_num(per_subject.median())})"
        )
        if self.has_occasions:
            lines.append(f"  occasions     {f['OCC'].nunique()} distinct OCC values")
        if not self.covariates:
            lines.append("  covariates    none")
        else:
            lines.append("  covariates")
            width = max(len(c) for c in self.covariates)
            for c in self.covariates:
                col = f[c]
                varying = (col.groupby(f["ID"], sort=False).nunique(dropna=True) > 1).any()
                tag = ", time-varying" if varying else ""
                n_missing = int(col.isna().sum())
                miss = f", {n_missing} missing" if n_missing else ""
                lines.append(
                    f"    {c:<{width}}  {_num(col.min())} to {_num(col.max())}{tag}{miss}"
                )
        return "\n".join(lines)

    def batch(
        self,
        covariates: Sequence[str] = (),
        *,
        n_records: int | None = None,
        occasion_column: str | None = None,
    ) -> SubjectBatch:
        """Convert the records to padded JAX arrays, one row per subject.

        Args:
            covariates: covariate columns to include, in this order (names are matched
                case-insensitively; the batch keeps the spelling given here).
            n_records: pad the record axis to exactly this length. By default it is the
                next multiple of 8 at or above the longest subject, so that datasets of
                similar size reuse one compiled program.
            occasion_column: the column whose distinct values (sorted) become occasions
                0..K-1 across the whole dataset.

        Returns:
            A `SubjectBatch` with float64 and int32 arrays shaped [subject, record].

        Raises:
            ValueError: `n_records` is smaller than the longest subject.
            KeyError: a requested covariate or the occasion column is not in the data.
            DatasetError: a requested covariate or occasion value is missing on a record.
            RuntimeError: 64-bit floats are off (see `pkmix.enable_x64`).
        """
        from .._config import require_x64

        require_x64()
        f = self.frame
        names = tuple(str(c) for c in covariates)
        columns = [_find_column(f, c, "covariate") for c in names]
        occ_col = (
            _find_column(f, occasion_column, "occasion column")
            if occasion_column is not None else None
        )
        violations = _missing_value_violations(f, columns, "batch")
        if occ_col is not None:
            violations += _missing_value_violations(f, [occ_col], "batch")
        if violations:
            raise DatasetError(violations, source=self.source)

        # Where each record goes: subject s (order of first appearance), slot r.
        subj, _ = pd.factorize(f["ID"], sort=False)
        n_subj = int(subj.max()) + 1 if len(subj) else 0
        counts = np.bincount(subj, minlength=n_subj)
        longest = int(counts.max()) if n_subj else 0
        if n_records is None:
            width = padded_length(longest)
        else:
            width = int(n_records)
            if width < longest:
                raise ValueError(
                    f"n_records={width} is too small: the longest subject has "
                    f"{longest} records."
                )
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slot = np.arange(len(f)) - starts[subj]

        # Gather index: real slots point at their record, padding at the subject's last
        # record, so padding inherits finite time, covariates and occasion.
        last = starts + counts - 1
        gather = np.repeat(last[:, None], width, axis=1)
        gather[subj, slot] = np.arange(len(f))
        real = np.zeros((n_subj, width), dtype=bool)
        real[subj, slot] = True

        def col(name: str) -> np.ndarray:
            return f[name].to_numpy(dtype=np.float64)[gather]

        def zero_pad(x: np.ndarray, fill: float = 0.0) -> np.ndarray:
            return np.where(real, x, fill)

        evid = zero_pad(col("EVID"), 2.0)
        mdv = col("MDV")
        obs = real & (evid == 0) & (mdv == 0)
        dv = np.nan_to_num(zero_pad(col("DV")), nan=0.0)
        lloq = np.nan_to_num(zero_pad(col("LLOQ")), nan=0.0)
        blq = obs & (col("BLQ") == 1)

        if occ_col is not None:
            levels = np.sort(pd.unique(f[occ_col].to_numpy(dtype=np.float64)))
            occ_idx = np.searchsorted(levels, f[occ_col].to_numpy(dtype=np.float64))
            occ = occ_idx[gather]
            n_occ = len(levels)
        else:
            occ = np.zeros((n_subj, width), dtype=np.int64)
            n_occ = 1

        if columns:
            cov_values = f[columns].to_numpy(dtype=np.float64)[gather]
        else:
            cov_values = np.zeros((n_subj, width, 0))

        def fa(x):
            return jnp.asarray(x, dtype=jnp.float64)

        def ia(x):
            return jnp.asarray(x, dtype=jnp.int32)

        return SubjectBatch(
            time=fa(col("TIME")),
            amt=fa(zero_pad(col("AMT"))),
            rate=fa(zero_pad(col("RATE"))),
            dur=fa(zero_pad(col("DUR"))),
            ii=fa(zero_pad(col("II"))),
            dv=fa(dv),
            lloq=fa(lloq),
            evid=ia(evid),
            cmt=ia(zero_pad(col("CMT"))),
            ss=ia(zero_pad(col("SS"))),
            occ=ia(occ),
            obs_mask=jnp.asarray(obs, dtype=bool),
            blq=jnp.asarray(blq, dtype=bool),
            record_mask=jnp.asarray(real, dtype=bool),
            covariates=fa(cov_values),
            covariate_names=names,
            n_occasions=int(n_occ),
        )


# -- model-dependent checks (shared by read_nonmem and Dataset.check) -------------------


def model_violations(frame: pd.DataFrame, model: Any) -> list[Violation]:
    """Every way `frame` fails to fit `model`; attributes the model lacks are skipped.

    `frame` needs ID, CMT and REC columns (the parsed or the canonical frame).
    """
    violations: list[Violation] = []
    rec = frame["REC"].to_numpy()
    ids = frame["ID"].to_numpy()

    n_cmt = getattr(model, "n_compartments", None)
    if n_cmt is not None:
        names = tuple(getattr(model, "compartment_names", None) or ())
        listing = (
            ", ".join(f"{i}={n}" for i, n in enumerate(names, start=1))
            if names else f"1..{n_cmt}"
        )
        rule = f"CMT <= {n_cmt} (model compartments: {listing})"
        cmt = frame["CMT"].to_numpy()
        for i in np.flatnonzero(cmt > n_cmt):
            violations.append(Violation(
                int(rec[i]), ids[i], "CMT", rule,
                f"compartment {_num(cmt[i])} does not exist in the model",
            ))

    violations += _modelled_dose_violations(frame, model)

    covs = getattr(model, "covariates", None) or ()
    if isinstance(covs, str):
        covs = (covs,)
    for name in covs:
        column = _match_column(frame, name)
        if column is None:
            violations.append(Violation(
                None, None, str(name).upper(), "every model covariate is a data column",
                f"the model uses covariate {name} but the dataset has no such column",
            ))
        else:
            violations += _missing_value_violations(frame, [column], "model")

    occ = getattr(model, "occasion_column", None)
    if occ is not None:
        column = _match_column(frame, occ)
        if column is None:
            violations.append(Violation(
                None, None, str(occ).upper(),
                "the occasion column is present when the model has occasions",
                f"the model needs occasion column {occ} but the dataset has no such column",
            ))
        else:
            violations += _missing_value_violations(frame, [column], "model")

    # A likelihood's rules on the observations it reads (a Bernoulli DV in {0, 1}, a
    # known DVID, ...).
    error = getattr(model, "error", None)
    if getattr(error, "non_gaussian", False) and {"DV", "EVID", "MDV"} <= set(frame.columns):
        obs = (frame["EVID"].to_numpy() == 0) & (frame["MDV"].to_numpy() == 0)
        violations += error.data_violations(frame, obs)
    return violations


# RATE = -1 asks the model for the dose's rate (its individual parameter r<n> for the
# dose compartment n), RATE = -2 for its duration (d<n>).
_MODELLED = {-1.0: ("r", "rate", "RATE = -1 (modelled rate)"), -2.0: ("d", "duration", "RATE = -2 (modelled duration)")}


def _modelled_dose_violations(frame: pd.DataFrame, model: Any) -> list[Violation]:
    """Doses with RATE = -1/-2 into a compartment for which the model's ``individual()``
    returns no ``r<n>``/``d<n>``: the dose's rate or duration would be undefined.

    Needs the model's individual parameter names (``_individual_keys``, known once the
    model is defined) and its structure; skipped for a model without them.
    """
    keys = getattr(model, "_individual_keys", None)
    structure = getattr(model, "structure", None)
    n_cmt = getattr(model, "n_compartments", None)
    if keys is None or structure is None or n_cmt is None or "RATE" not in frame.columns:
        return []
    rate = frame["RATE"].to_numpy(dtype=np.float64)
    if "EVID" in frame.columns:
        evid = frame["EVID"].to_numpy(dtype=np.float64)
        dose = np.isin(evid, (1, 4)) | np.isnan(evid)  # a missing EVID is derived: RATE != 0 is a dose
    else:
        dose = np.ones(len(frame), dtype=bool)
    cmt = frame["CMT"].to_numpy(dtype=np.float64) if "CMT" in frame.columns else np.zeros(len(frame))
    cmt = np.nan_to_num(cmt, nan=0.0)
    default = int(getattr(structure, "default_dose_compartment", 0)) + 1
    names = tuple(getattr(model, "compartment_names", None) or ())
    rec = frame["REC"].to_numpy()
    ids = frame["ID"].to_numpy()
    out: list[Violation] = []
    for code, (prefix, what, label) in _MODELLED.items():
        for i in np.flatnonzero(dose & (rate == code)):
            c = default if cmt[i] == 0 else int(cmt[i])
            if not 1 <= c <= n_cmt or f"{prefix}{c}" in keys:
                continue  # a compartment that does not exist is reported on its own
            shown = f"{c} ({names[c - 1]})" if len(names) >= c else str(c)
            defined = sorted(k for k in keys if k.startswith(prefix) and k[len(prefix):].isdigit())
            out.append(Violation(
                int(rec[i]), ids[i], "RATE",
                f"{label} needs individual parameter {prefix}<n> for the dose compartment n",
                f"{label} into compartment {shown}, but the model's individual() returns no "
                f"'{prefix}{c}' (the dose's {what}); it defines "
                f"{', '.join(defined) if defined else f'no {prefix}<n>'}",
            ))
    return out


def _missing_value_violations(
    frame: pd.DataFrame, columns: Iterable[str], why: str
) -> list[Violation]:
    """One violation per record where one of `columns` is missing (NaN)."""
    out: list[Violation] = []
    rec = frame["REC"].to_numpy()
    ids = frame["ID"].to_numpy()
    reason = "the model uses it" if why == "model" else "it was requested in a batch"
    for column in columns:
        values = frame[column].to_numpy(dtype=np.float64)
        for i in np.flatnonzero(np.isnan(values)):
            out.append(Violation(
                int(rec[i]), ids[i], column,
                f"{column} present on every record ({reason})", "missing value",
            ))
    return out


def _match_column(frame: pd.DataFrame, name: object) -> str | None:
    """The frame column called `name`, ignoring case (data columns are upper case)."""
    wanted = str(name).strip().upper()
    return wanted if wanted in frame.columns else None


def _find_column(frame: pd.DataFrame, name: str, what: str) -> str:
    column = _match_column(frame, name)
    if column is None:
        raise KeyError(
            f"{what} {name!r} is not a column of this dataset; columns are "
            f"{list(frame.columns)}"
        )
    return column


def _num(x: object) -> str:
    """Compact number formatting for messages and summaries."""
    try:
        value = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(value):
        return "."
    return _format_id(value) if value.is_integer() else f"{value:.6g}"

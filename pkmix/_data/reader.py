"""Reading NONMEM-format data: parsing, NONMEM defaults, validation, ADDL expansion.

The pipeline is: load every cell as text, parse numbers ('.' and empty cells are
missing), apply NONMEM's defaults (EVID/MDV derivation, CMT 0 = default compartment),
decide BLQ status, check every rule over the whole file, and only then expand ADDL
doses into explicit records. Problems are collected as `Violation`s and raised together
as one `DatasetError`, because a user fixing a file wants the full list at once.

References: NONMEM Users Guide VI (PREDPP), chapter V (event records) and chapter
III.B.2 (which record's covariates apply at a non-event time); pharmpy's
`check_dataset` and `expand_additional_doses`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .dataset import CANONICAL_COLUMNS, INT_COLUMNS, Dataset, _num, model_violations
from .errors import DatasetError, DatasetWarning, Violation, _format_id

# NONMEM data items pkmix understands; every other column is a covariate.
DATA_ITEMS: tuple[str, ...] = (
    "ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "DUR", "II", "ADDL", "SS",
    "LLOQ", "BLQ", "OCC", "DVID",
)
# Other spellings of the same item (CENS is the Monolix/nlmixr2 censoring flag).
SYNONYMS: dict[str, str] = {"CENS": "BLQ"}
# Items that NONMEM reads as 0 when the column or the cell is missing.
ZERO_DEFAULT: tuple[str, ...] = ("AMT", "RATE", "DUR", "II", "ADDL", "SS", "CMT")

_DOSE_EVIDS = (1, 4)
_RESET_EVIDS = (3, 4)


def read_nonmem(
    source: str | Path | pd.DataFrame,
    *,
    model: Any = None,
    drop: Sequence[str] = (),
) -> Dataset:
    """Read and validate a NONMEM-format dataset.

    Column names are case-insensitive. '.' and empty cells are missing. Recognised
    items: ID, TIME, DV, AMT, EVID, MDV, CMT, RATE, DUR, II, ADDL, SS, LLOQ, BLQ (or
    CENS), OCC, DVID (the endpoint of an observation in a model with several:
    ``pkmix.endpoints``); every other column is a numeric covariate. Missing AMT, RATE, DUR, II,
    ADDL, SS and CMT are 0 as in NONMEM; EVID and MDV are derived when absent. Rows whose
    first field starts with '#' are comments (NM-TRAN's default IGNORE=#).

    Args:
        source: a CSV path (comma- or whitespace-separated, with a header row) or a
            pandas DataFrame.
        model: optional model; when given, the data are also checked against its
            ``n_compartments``/``compartment_names``, ``covariates`` and
            ``occasion_column`` attributes (any may be absent).
        drop: columns to ignore (like NONMEM's ``$INPUT NAME=DROP``), e.g. text columns.

    Returns:
        The validated, ADDL-expanded `Dataset`.

    Raises:
        DatasetError: listing every rule the data break (all of them, not the first).
        FileNotFoundError: the path does not exist.

    Warns:
        DatasetWarning: for subjects without observations.

    Example:
        >>> ds = read_nonmem("tests/data/theo_sd.csv")  # doctest: +SKIP
        >>> ds.n_subjects, ds.n_observations  # doctest: +SKIP
        (12, 132)
    """
    raw, rec, path, violations = _load(source)
    if violations:  # not even a table: nothing further can be checked
        raise DatasetError(violations, source=path)
    parsed, more = _parse(raw, rec, drop)
    violations += more
    if parsed is not None and model is not None:
        # On a broken file `parsed` is a minimal frame (ID, CMT, REC, raw columns), so
        # the model's complaints join the data's in the same single error.
        violations += model_violations(parsed, model)
    if violations:
        raise DatasetError(violations, source=path)
    assert parsed is not None
    frame = expand_additional_doses(parsed)
    _warn_subjects_without_observations(frame, stacklevel=3)
    return Dataset(frame, source=path)


# -- loading ---------------------------------------------------------------------------


def _load(source) -> tuple[pd.DataFrame, np.ndarray, Path | None, list[Violation]]:
    """Raw cells plus the 1-based source record number of each kept row."""
    if isinstance(source, pd.DataFrame):
        raw = source.reset_index(drop=True)
        return raw, np.arange(1, len(raw) + 1), None, []
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"dataset file not found: {path}")
    if path.is_dir():
        return pd.DataFrame(), np.arange(0), path, [Violation(
            None, None, None, "the dataset is a CSV file", f"{path} is a folder, not a data file")]
    # utf-8-sig: spreadsheet exports often start with a byte-order mark, which would
    # otherwise become part of the first column's name ("\ufeffID").
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = fh.readline()
            fh.read()  # the whole file must be text, not only its first line
    except UnicodeDecodeError as err:
        return pd.DataFrame(), np.arange(0), path, [Violation(
            None, None, None, "the dataset is a UTF-8 (or ASCII) text file",
            f"not a text file: byte {err.start} cannot be read ({err.reason})")]
    # NONMEM files are comma- or whitespace-separated; the header line tells which.
    sep = "," if "," in header else r"\s+"
    try:
        # header=None and naming the columns ourselves keeps duplicated names visible
        # (pandas would silently rename a second "ID" to "ID.1").
        table = pd.read_csv(
            path, sep=sep, header=None, dtype=str, keep_default_na=False,
            skipinitialspace=True, encoding="utf-8-sig",
            engine="python" if sep != "," else "c",
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        return pd.DataFrame(), np.arange(0), path, [Violation(
            None, None, None, "every row has the header's number of fields",
            f"the file could not be read as a table: {str(err).strip()}",
        )]
    raw = table.iloc[1:].reset_index(drop=True)
    raw.columns = [str(c) for c in table.iloc[0].tolist()]
    rec = np.arange(1, len(raw) + 1)
    keep = np.ones(len(raw), dtype=bool)
    if len(raw.columns) and len(raw):
        first = raw.iloc[:, 0].astype(str).str.lstrip()
        keep = ~first.str.startswith("#").to_numpy()
    # A row with fewer fields than the header is padded by the parser: its values would
    # sit under the wrong columns (a WT read as SS), so it is reported as what it is.
    counts = _field_counts(path, sep, len(table))
    if counts is not None:
        # Trailing nameless header fields (a trailing separator) are not required.
        names = [str(c).strip() for c in raw.columns]
        while names and names[-1] in ("", "nan"):
            names.pop()
        n_header = min(int(counts[0]), len(names))
        short = keep & (counts[1:] < n_header)
        if short.any():
            return raw, rec, path, [Violation(
                int(rec[i]), _first_field(raw, i), None,
                f"every record has the header's {n_header} fields",
                f"record has {int(counts[1:][i])} field(s), the header {n_header}: "
                "a value is missing (write '.' for an empty cell)",
            ) for i in np.flatnonzero(short)]
    raw, rec = raw.loc[keep].reset_index(drop=True), rec[keep]
    return raw, rec, path, []


def _field_counts(path: Path, sep: str, n_rows: int) -> np.ndarray | None:
    """Fields per non-blank line (header first), as the table parser split them; None
    when the lines do not line up with the parsed rows (then no check is made)."""
    import csv

    counts = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        if sep == ",":
            for row in csv.reader(fh, skipinitialspace=True):
                if row and any(cell.strip() for cell in row):
                    counts.append(len(row))
        else:
            for line in fh:
                if line.strip():
                    counts.append(len(line.split()))
    return np.asarray(counts) if len(counts) == n_rows else None


def _first_field(raw: pd.DataFrame, i: int):
    """The ID (first field) of row ``i`` for a message, as a number when it is one."""
    text = str(raw.iloc[i, 0]).strip() if len(raw.columns) else ""
    try:
        return float(text)
    except ValueError:
        return text or None


def _parse_numeric(column: pd.Series) -> tuple[np.ndarray, np.ndarray, pd.Series | None]:
    """Float values (NaN = missing), a mask of unparseable cells, and the cell text."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        # np.array copies: pandas may hand out read-only views (copy-on-write).
        values = np.array(column.to_numpy(dtype=np.float64, na_value=np.nan))
        bad = np.isinf(values)
        values[bad] = np.nan
        return values, bad, None
    isna = column.isna().to_numpy()
    text = column.astype(object).where(~isna, "").astype(str).str.strip()
    missing = isna | text.isin(["", "."]).to_numpy()
    values = np.array(pd.to_numeric(text.where(~missing, ""), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    ))
    bad = (np.isnan(values) & ~missing) | np.isinf(values)
    values[bad] = np.nan
    return values, bad, text


# -- parsing, defaults and validation --------------------------------------------------


class _Collector:
    """Accumulates violations for rows selected by a boolean mask."""

    def __init__(self, rec: np.ndarray, ids: np.ndarray):
        self.rec, self.ids, self.items = rec, ids, []

    def rows(self, mask: np.ndarray, column: str | None, rule: str, message) -> None:
        """Add one violation per True row; `message` may be a function of the row."""
        for i in np.flatnonzero(mask):
            text = message(i) if callable(message) else message
            ident = self.ids[i]
            self.items.append(Violation(
                int(self.rec[i]), None if _is_nan(ident) else ident, column, rule, text
            ))

    def dataset(self, column: str | None, rule: str, message: str) -> None:
        self.items.append(Violation(None, None, column, rule, message))


def _is_nan(x: object) -> bool:
    return isinstance(x, float) and np.isnan(x)


def _parse(
    raw: pd.DataFrame, rec: np.ndarray, drop: Sequence[str]
) -> tuple[pd.DataFrame | None, list[Violation]]:
    """Parse, default and validate; returns the pre-expansion canonical frame."""
    n = len(raw)
    ids_for_messages = np.full(n, np.nan, dtype=object)
    out = _Collector(rec, ids_for_messages)

    # Column names: case-insensitive, synonyms mapped, duplicates refused.
    dropped = {str(d).strip().upper() for d in drop}
    columns: dict[str, pd.Series] = {}
    shown: dict[str, str] = {}  # canonical name -> name as in the file (for messages)
    for position, original in enumerate(raw.columns):
        series = raw.iloc[:, position]  # by position: labels may repeat
        label = str(original).strip()
        upper = label.upper()
        if upper in dropped:
            continue
        if upper.startswith("UNNAMED:") or label in ("", "nan"):
            # A trailing separator makes an empty, nameless column: ignore it when empty.
            cells = series.astype(str).str.strip()
            if cells.isin(["", ".", "nan"]).all():
                continue
            out.dataset(label or "?", "every column has a name", "column without a name")
            continue
        name = SYNONYMS.get(upper, upper)
        if name in columns:
            out.dataset(
                upper, "column names are unique (case-insensitive; CENS = BLQ)",
                f"column {label} appears more than once",
            )
            continue
        columns[name] = series
        shown[name] = upper

    if n == 0:
        out.dataset(None, "at least one record", "the dataset has no records")
        return None, out.items

    # Numbers. ID first, so that later messages can name the subject.
    values: dict[str, np.ndarray] = {}
    unparsed: dict[str, np.ndarray] = {}  # cells present but not numbers (reported)
    order = sorted(columns, key=lambda c: c != "ID")
    for name in order:
        vals, bad, text = _parse_numeric(columns[name])
        values[name], unparsed[name] = vals, bad
        if name == "ID":
            ids_for_messages[:] = [
                vals[i] if not np.isnan(vals[i])
                else (text.iloc[i] if text is not None and bad[i] else np.nan)
                for i in range(n)
            ]
        out.rows(
            bad, shown[name], f"{shown[name]} is numeric",
            lambda i, t=text, v=columns[name]: (
                f"non-numeric value {(t.iloc[i] if t is not None else v.iloc[i])!r}"
            ),
        )

    nan = np.full(n, np.nan)
    for required in ("ID", "TIME"):
        if required not in values:
            out.dataset(required, f"a {required} column is present", "missing required column")
    ident = values.get("ID", nan)
    time = values.get("TIME", nan)

    def item(name: str) -> np.ndarray:
        return values.get(name, nan)

    def zero(name: str) -> np.ndarray:
        return np.nan_to_num(item(name), nan=0.0)

    amt, rate, dur, ii, addl, ss, cmt = (zero(c) for c in ZERO_DEFAULT)

    # EVID and MDV, derived as NONMEM does where the column (or the cell) is missing.
    # (AMT != 0 rather than > 0: identical on valid data, and a negative amount is then
    # reported as one bad dose instead of also as an observation without DV.)
    evid_given, mdv_given = item("EVID"), item("MDV")
    derived = np.where(
        (amt != 0) | (rate != 0), 1.0,
        np.where(np.isnan(mdv_given) | (mdv_given == 0), 0.0, 2.0),
    )
    evid = np.where(np.isnan(evid_given), derived, evid_given)
    mdv = np.where(np.isnan(mdv_given), (evid != 0).astype(float), mdv_given)
    obs = (evid == 0) & (mdv == 0)
    dose = np.isin(evid, _DOSE_EVIDS)
    reset = np.isin(evid, _RESET_EVIDS)

    # Required per record.
    if "ID" in values:
        out.rows(np.isnan(ident) & ~unparsed["ID"], "ID",
                 "ID present on every record", "ID missing")
    if "TIME" in values:
        out.rows(np.isnan(time) & ~unparsed["TIME"], "TIME",
                 "TIME present on every record", "TIME missing")
    if "DV" not in values:
        if obs.any():
            out.dataset("DV", "a DV column is present when there are observations",
                        "missing required column")
    else:
        dv = values["DV"]
        out.rows(obs & np.isnan(dv) & ~unparsed["DV"], "DV",
                 "DV present on observations (EVID 0, MDV 0)",
                 "observation with missing DV")

    # EVID and MDV values.
    valid_evid = np.isin(evid, (0, 1, 2, 3, 4))
    out.rows(~valid_evid & ~np.isnan(evid), "EVID", "EVID in {0, 1, 2, 3, 4}",
             lambda i: f"unknown event type EVID {_num(evid[i])}")
    valid_mdv = np.isin(mdv, (0, 1))
    out.rows(~valid_mdv & ~np.isnan(mdv), "MDV", "MDV in {0, 1}",
             lambda i: f"MDV {_num(mdv[i])} is neither 0 nor 1")
    out.rows(valid_evid & valid_mdv & (evid != 0) & (mdv == 0), "MDV",
             "MDV = 1 unless EVID is 0", "MDV 0 on a record that is not an observation")

    # Amounts, rates, durations.
    out.rows(amt < 0, "AMT", "AMT >= 0", "negative amount")
    out.rows(valid_evid & ~dose & (amt > 0), "AMT", "AMT = 0 unless EVID is 1 or 4",
             lambda i: f"amount on a record that is not a dose (EVID {_num(evid[i])})")
    out.rows(dose & (amt == 0) & (rate == 0), "AMT",
             "AMT > 0 or RATE != 0 on a dose (EVID 1/4)", "dose with neither AMT nor RATE")
    bad_rate = (rate < 0) & (rate != -1) & (rate != -2)
    out.rows(bad_rate, "RATE", "RATE >= 0, -1 (modelled rate) or -2 (modelled duration)",
             lambda i: f"negative RATE {_num(rate[i])}")
    out.rows(valid_evid & ~dose & (rate != 0), "RATE", "RATE = 0 unless EVID is 1 or 4",
             "RATE on a record that is not a dose")
    ss_infusion = np.isin(ss, (1, 2)) & (rate > 0) & (ii == 0)
    out.rows(dose & (amt == 0) & (rate != 0) & ~ss_infusion & ~bad_rate, "AMT",
             "AMT > 0 on an infusion unless it is a steady-state infusion "
             "(SS 1/2, RATE > 0, II 0)",
             "infusion without an amount")
    out.rows(dur < 0, "DUR", "DUR >= 0", "negative duration")
    out.rows((rate > 0) & (dur > 0), "DUR", "not both RATE > 0 and DUR > 0 on one dose",
             "both RATE and DUR given")

    # Interdose intervals, additional doses, steady state.
    out.rows(ii < 0, "II", "II >= 0", "negative interdose interval")
    bad_addl = (addl < 0) | (addl != np.round(addl))
    out.rows(bad_addl, "ADDL", "ADDL is an integer >= 0",
             lambda i: f"ADDL {_num(addl[i])} is not a non-negative integer")
    out.rows((addl > 0) & ~(ii > 0), "ADDL", "II > 0 when ADDL > 0",
             "additional doses without an interdose interval")
    out.rows(valid_evid & ~dose & (addl > 0), "ADDL", "ADDL = 0 unless EVID is 1 or 4",
             "additional doses on a record that is not a dose")
    valid_ss = np.isin(ss, (0, 1, 2))
    out.rows(~valid_ss, "SS", "SS in {0, 1, 2}", lambda i: f"unknown SS value {_num(ss[i])}")
    out.rows(valid_ss & (ss > 0) & ~(ii > 0) & ~(rate > 0), "II",
             "II > 0 when SS is 1 or 2 (II 0 only for a constant infusion, RATE > 0)",
             "steady-state dose without an interdose interval")
    out.rows(ss_infusion & (amt > 0), "AMT",
             "AMT = 0 on a steady-state infusion (SS 1/2, RATE > 0, II 0)",
             "steady-state infusion with an amount")
    out.rows(valid_evid & ~dose & (ss > 0), "SS", "SS = 0 unless EVID is 1 or 4",
             "steady state on a record that is not a dose")

    # Compartments: positive integers, or 0 for the model's default compartment.
    out.rows((cmt < 0) | (cmt != np.round(cmt)), "CMT", "CMT is an integer >= 0",
             lambda i: f"CMT {_num(cmt[i])} is not a compartment number "
                       "(switching compartments off with a negative CMT is not supported)")

    # Subjects: contiguous records, time order within a subject.
    group = pd.Series(ident).ffill().bfill().to_numpy()  # missing IDs already reported
    if "ID" in values and not np.isnan(group).all():
        block_start = np.r_[True, group[1:] != group[:-1]]
        first_seen: dict[float, int] = {}
        for i in np.flatnonzero(block_start):
            key = group[i]
            if key in first_seen:
                out.rows(
                    np.arange(n) == i, "ID", "the records of a subject are contiguous",
                    f"ID {_format_id(key)} not contiguous: it reappears after other "
                    f"subjects (first seen at record {first_seen[key]}); NONMEM would "
                    "read it as a new subject",
                )
            else:
                first_seen[key] = int(rec[i])
    else:
        block_start = np.r_[True, np.zeros(n - 1, dtype=bool)]
    prev = np.r_[np.nan, time[:-1]]
    backwards = ~block_start & (time < prev) & ~reset
    out.rows(backwards, "TIME", "TIME never decreases within a subject (except at EVID 3/4)",
             lambda i: f"TIME goes backwards (from {_num(prev[i])} to {_num(time[i])})")

    # Censoring: LLOQ column and/or BLQ (CENS) flag.
    lloq_given, flag_given = item("LLOQ"), item("BLQ")
    out.rows(lloq_given < 0, "LLOQ", "LLOQ >= 0", "negative LLOQ")
    out.rows(~np.isnan(flag_given) & ~np.isin(flag_given, (0, 1)), shown.get("BLQ", "BLQ"),
             f"{shown.get('BLQ', 'BLQ')} in {{0, 1}} (upper censoring, -1, is not supported)",
             lambda i: f"censoring flag {_num(flag_given[i])} is neither 0 nor 1")
    dv = item("DV")
    flagged = obs & (flag_given == 1)
    if "LLOQ" in values:
        below = obs & (dv < lloq_given)
        blq = below | flagged
        # A flagged record without its own LLOQ uses its DV as the limit.
        lloq = np.where(flagged & np.isnan(lloq_given), dv, lloq_given)
    elif "BLQ" in values:
        # Flag only (Monolix/nlmixr2 convention): DV of a flagged record is the LLOQ.
        blq = flagged
        lloq = np.where(flagged, dv, np.nan)
    else:
        blq = np.zeros(n, dtype=bool)
        lloq = nan

    # Endpoint of each observation (its value is checked against the model's endpoints);
    # records that are not observations may leave it out.
    if "DVID" in values:
        dvid = values["DVID"]
        out.rows(~np.isnan(dvid) & (dvid != np.round(dvid)), shown["DVID"], f"{shown['DVID']} is an integer",
                 lambda i: f"DVID {_num(dvid[i])} is not an integer")
        out.rows(obs & np.isnan(dvid) & ~unparsed["DVID"], shown["DVID"], "DVID present on observations",
                 "observation without an endpoint (DVID)")
        values["DVID"] = np.where(np.isnan(dvid) & ~obs, 0.0, dvid)

    if out.items:
        return _frame_for_model_checks(rec, ident, cmt, values, unparsed), out.items

    frame = pd.DataFrame({
        "ID": ident, "TIME": time, "DV": dv, "AMT": amt, "EVID": evid, "MDV": mdv,
        "CMT": cmt, "RATE": rate, "DUR": dur, "II": ii, "ADDL": addl, "SS": ss,
        "LLOQ": lloq, "BLQ": blq.astype(np.int64), "REC": rec,
    })
    extra = [c for c in values if c not in DATA_ITEMS]
    for optional in ("OCC", "DVID"):
        if optional in values:
            frame[optional] = values[optional]
    for c in extra:
        frame[c] = values[c]
    return _canonical_dtypes(frame), []


def _frame_for_model_checks(rec, ident, cmt, values, unparsed) -> pd.DataFrame:
    """A minimal frame so model checks can still run on a file with data errors.

    Cells already reported as non-numeric are set to 0 so that they are not reported a
    second time as missing covariate values.
    """
    frame = pd.DataFrame({"ID": ident, "CMT": cmt, "REC": rec})
    for c, v in values.items():
        if c not in ("ID", "CMT"):
            frame[c] = np.where(unparsed[c], 0.0, v)
    return frame


def _canonical_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """Integer item columns as int64, IDs as int64 when all whole, the rest float64."""
    for c in INT_COLUMNS:
        frame[c] = frame[c].to_numpy().astype(np.int64)
    ident = frame["ID"].to_numpy(dtype=np.float64)
    if np.all(ident == np.round(ident)) and np.all(np.abs(ident) < 2**53):
        frame["ID"] = ident.astype(np.int64)
    return frame


# -- ADDL expansion --------------------------------------------------------------------


def expand_additional_doses(frame: pd.DataFrame) -> pd.DataFrame:
    """Make the doses implied by ADDL/II explicit and return the canonical frame.

    A dose at time t with ADDL = n and II = d implies n more doses at t + k*d
    (k = 1..n), each like the initiating dose (same AMT, RATE, DUR, CMT, II) but with
    EVID 1, SS 0 and ADDL 0, and with the REC of the initiating record.

    Order at equal times (NONMEM's rule): an implied dose is given *before* any data
    record that has the same time, so an observation at the time of an additional dose
    sees that dose. Metrum validated this against NONMEM when fixing mrgsolve
    (metrumresearchgroup/mrgsolve#424: "NONMEM has ADDL doses prior to observation";
    mrgsolve's default recsort=1 puts ADDL doses before observations at the same time),
    and pharmpy's `expand_additional_doses` produces the same order. Records written in
    the file keep their file order among themselves; implied doses that coincide are
    ordered by their initiating record.

    Deactivation (PREDPP guide V.K): a reset (EVID 3/4) or a later SS=1 dose stops a
    series. Implied doses after the last record before a reset, or after the time of a
    later SS=1 dose, are never given and are dropped. Implied doses after a subject's
    last record are kept: they change no prediction, and simulation on a longer time
    grid needs them.

    Covariates of an implied dose (PREDPP guide III.B.2, "argument record"): those of
    the subject's first real record at or after its time, or of the last record when
    none follows.
    """
    frame = frame.reset_index(drop=True)
    n = len(frame)
    addl = frame["ADDL"].to_numpy()
    origins = np.flatnonzero(addl > 0)
    if origins.size == 0:
        frame["ADDL"] = 0
        return frame

    subj, _ = pd.factorize(frame["ID"], sort=False)
    evid = frame["EVID"].to_numpy()
    time = frame["TIME"].to_numpy(dtype=np.float64)
    ii = frame["II"].to_numpy(dtype=np.float64)
    reset = np.isin(evid, _RESET_EVIDS)
    ss1_dose = np.isin(evid, _DOSE_EVIDS) & (frame["SS"].to_numpy() == 1)
    # Segments: a reset record starts a new stretch of non-decreasing time.
    segment = pd.Series(reset.astype(np.int64)).groupby(subj).cumsum().to_numpy()
    subj_end = np.r_[np.flatnonzero(subj[1:] != subj[:-1]), n - 1][subj]  # last row
    deactivators = np.flatnonzero(reset | ss1_dose)

    new_rows: list[np.ndarray] = []
    new_times: list[np.ndarray] = []
    new_k: list[np.ndarray] = []
    for i in origins:
        times = time[i] + ii[i] * np.arange(1, int(addl[i]) + 1)
        k = np.searchsorted(deactivators, i, side="right")
        if k < deactivators.size and deactivators[k] <= subj_end[i]:
            j = deactivators[k]
            # A reset discards pending doses beyond the last record it interrupts; an
            # SS=1 dose replaces the state at its own time (doses at that time still
            # precede it, like any record at that time).
            limit = time[j - 1] if reset[j] else time[j]
            times = times[times <= limit]
        new_rows.append(np.full(times.size, i))
        new_times.append(times)
        new_k.append(np.arange(1, times.size + 1))
    src = np.concatenate(new_rows)
    implied = frame.iloc[src].copy()
    implied["TIME"] = np.concatenate(new_times)
    implied["EVID"] = 1
    implied["MDV"] = 1
    implied["SS"] = 0
    implied["DV"] = np.nan
    implied["LLOQ"] = np.nan
    implied["BLQ"] = 0

    # Sort: subject, segment, time, implied-before-real, then source position.
    m = len(implied)
    key_subj = np.r_[subj, subj[src]]
    key_seg = np.r_[segment, segment[src]]
    key_time = np.r_[time, implied["TIME"].to_numpy()]
    key_real = np.r_[np.ones(n, dtype=np.int64), np.zeros(m, dtype=np.int64)]
    key_pos = np.r_[np.arange(n), src]
    key_k = np.r_[np.zeros(n, dtype=np.int64), np.concatenate(new_k)]
    order = np.lexsort((key_k, key_pos, key_real, key_time, key_seg, key_subj))
    out = pd.concat([frame, implied], ignore_index=True).iloc[order].reset_index(drop=True)
    is_real = key_real[order] == 1

    # Implied doses take the covariates (and OCC) of the next real record, else the last.
    carried = [c for c in out.columns if c not in CANONICAL_COLUMNS]
    if carried:
        groups = key_subj[order]
        pointer = pd.Series(np.where(is_real, np.arange(n + m), np.nan))
        pointer = pointer.groupby(groups).bfill()
        pointer = pointer.groupby(groups).ffill().to_numpy().astype(np.int64)
        for c in carried:
            out[c] = out[c].to_numpy()[pointer]
    out["ADDL"] = 0
    return _canonical_dtypes(out)


def _warn_subjects_without_observations(frame: pd.DataFrame, stacklevel: int) -> None:
    obs = (frame["EVID"] == 0) & (frame["MDV"] == 0)
    per_subject = obs.groupby(frame["ID"], sort=False).any()
    empty = per_subject.index[~per_subject.to_numpy()]
    if len(empty):
        listed = ", ".join(_format_id(x) for x in list(empty)[:20])
        more = f" and {len(empty) - 20} more" if len(empty) > 20 else ""
        warnings.warn(
            f"{len(empty)} subject(s) have no observations and add nothing to the "
            f"likelihood: ID {listed}{more}",
            DatasetWarning,
            stacklevel=stacklevel,
        )

"""Tests of the data layer: reading, defaults, validation, ADDL expansion, batching."""

from __future__ import annotations

import types
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pkmix  # noqa: F401  (turns on 64-bit floats)
from pkmix._data import (
    Dataset,
    DatasetError,
    DatasetWarning,
    SubjectBatch,
    Violation,
    read_nonmem,
)

DATA = Path(__file__).parent / "data"


def _model(**overrides):
    """A stand-in for a model: only the attributes the data checks read."""
    attrs = dict(
        n_compartments=2, compartment_names=("depot", "central"), covariates=("WT",),
        occasion_column=None,
    )
    attrs.update(overrides)
    return types.SimpleNamespace(**attrs)


def _csv(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _frame(rows: list[tuple], columns: str) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns.split(","))


@pytest.fixture(scope="session")
def theo() -> Dataset:
    return read_nonmem(DATA / "theo_sd.csv")


@pytest.fixture(scope="session")
def pheno() -> Dataset:
    return read_nonmem(DATA / "pheno.csv")


# -- reference datasets ----------------------------------------------------------------


def test_theophylline_counts(theo):
    assert theo.n_subjects == 12
    assert theo.n_observations == 132
    assert theo.n_doses == 12
    assert theo.n_blq == 0
    assert list(theo.ids) == list(range(1, 13))
    assert theo.covariates == ["WT"]
    assert theo.source == DATA / "theo_sd.csv"
    assert list(theo.frame.columns[:15]) == [
        "ID", "TIME", "DV", "AMT", "EVID", "MDV", "CMT", "RATE", "DUR", "II", "ADDL",
        "SS", "LLOQ", "BLQ", "REC",
    ]
    assert theo.frame["REC"].tolist() == list(range(1, 145))


def test_phenobarbital_counts(pheno):
    assert pheno.n_subjects == 59
    assert pheno.n_observations == 155
    assert pheno.n_doses == 589
    assert pheno.covariates == ["WT", "APGR"]


def test_wang2007_loads():
    ds = read_nonmem(DATA / "wang2007.csv")
    assert (ds.n_subjects, ds.n_observations, ds.n_doses) == (10, 20, 10)


def test_summary_mentions_the_essentials(theo):
    text = theo.summary()
    for part in ("12", "132 observations", "12 doses", "WT", "54.6 to 86.4", "0 to 24.65"):
        assert part in text
    assert "time-varying" not in text


def test_summary_flags_time_varying_covariates():
    ds = read_nonmem(_frame(
        [(1, 0, None, 100, 70), (1, 1, 5.0, 0, 72), (2, 0, None, 100, 60), (2, 1, 4.0, 0, 60)],
        "ID,TIME,DV,AMT,WT",
    ))
    assert "WT  60 to 72, time-varying" in ds.summary()


# -- one error listing every fault -----------------------------------------------------

# record -> (column, words from the message) for each fault planted in broken.csv.
BROKEN = {
    3: ("TIME", "backwards"),
    4: ("AMT", "negative amount"),
    5: ("DV", "non-numeric"),
    6: ("DV", "missing DV"),
    7: ("AMT", "neither AMT nor RATE"),
    8: ("ADDL", "without an interdose interval"),
    9: ("II", "steady-state dose without"),
    10: ("SS", "unknown SS"),
    11: ("EVID", "unknown event type"),
    12: ("RATE", "negative RATE"),
    13: ("DUR", "both RATE and DUR"),
    14: ("II", "negative interdose"),
    15: ("ADDL", "not a non-negative integer"),
    16: ("ID", "not contiguous"),
    17: ("TIME", "TIME missing"),
    18: ("ID", "ID missing"),
    19: ("LLOQ", "negative LLOQ"),
    20: ("WT", "non-numeric"),
}


def test_broken_file_raises_one_error_listing_every_fault():
    with pytest.raises(DatasetError) as info:
        read_nonmem(DATA / "broken.csv")
    err = info.value
    assert isinstance(err, ValueError)
    found = {(v.record, v.column): v for v in err.violations}
    for record, (column, words) in BROKEN.items():
        assert (record, column) in found, f"record {record} {column} not reported"
        assert words in found[record, column].message
    assert len(err.violations) == len(BROKEN)  # and nothing spurious
    assert len(err.rules) >= 12
    # str() lists every violation, one per line, in the documented format.
    lines = str(err).splitlines()
    assert len(lines) == 1 + len(err.violations)
    assert "record 4 (ID 1), column AMT: negative amount (rule: AMT >= 0)" in lines
    assert "record 18, column ID: ID missing (rule: ID present on every record)" in lines
    assert lines[1].startswith("record 3 (ID 1), column TIME:")


def test_violation_format():
    v = Violation(12, 3.0, "AMT", "AMT >= 0", "negative amount")
    assert str(v) == "record 12 (ID 3), column AMT: negative amount (rule: AMT >= 0)"
    whole = Violation(None, None, "DV", "a DV column is present", "missing required column")
    assert str(whole) == (
        "dataset, column DV: missing required column (rule: a DV column is present)"
    )


def test_missing_required_columns():
    with pytest.raises(DatasetError) as info:
        read_nonmem(_frame([(1, 5.0, 0)], "ID,DV,AMT"))
    [v] = info.value.violations
    assert (v.record, v.column, v.message) == (None, "TIME", "missing required column")

    with pytest.raises(DatasetError) as info:
        read_nonmem(_frame([(1, 0, 100), (1, 1, 0)], "ID,TIME,AMT"))  # an observation
    assert [(v.record, v.column) for v in info.value.violations] == [(None, "DV")]

    with pytest.warns(DatasetWarning, match="no observations"):  # doses only: fine
        ds = read_nonmem(_frame([(1, 0, 100), (1, 12, 100)], "ID,TIME,AMT"))
    assert (ds.n_doses, ds.n_observations) == (2, 0)


@pytest.mark.parametrize(
    ("columns", "row", "column", "words"),
    [
        ("ID,TIME,DV,AMT,EVID", (1, 1, None, 0, 0), "DV", "missing DV"),
        ("ID,TIME,DV,AMT,EVID,RATE,SS,II", (1, 0, None, 100, 1, 10, 1, 0), "AMT",
         "steady-state infusion with an amount"),
        ("ID,TIME,DV,AMT,EVID,RATE", (1, 0, None, 0, 1, 10), "AMT", "infusion without"),
        ("ID,TIME,DV,AMT,EVID", (1, 0, 5.0, 100, 0), "AMT", "not a dose"),
        ("ID,TIME,DV,AMT,EVID,MDV", (1, 0, None, 100, 1, 0), "MDV", "not an observation"),
        ("ID,TIME,DV,AMT,CMT", (1, 0, None, 100, -1), "CMT", "not a compartment"),
        ("ID,TIME,DV,AMT,ADDL,II", (1, 0, None, 100, -2, 12), "ADDL", "non-negative integer"),
        ("ID,TIME,DV,AMT,CENS", (1, 0, 1.0, 0, -1), "CENS", "neither 0 nor 1"),
    ],
)
def test_single_rules(columns, row, column, words):
    rows = [row, (1, 2, 3.0) + (0,) * (len(row) - 3)]  # a valid observation after it
    with pytest.raises(DatasetError) as info:
        read_nonmem(_frame(rows, columns))
    messages = {(v.record, v.column): v.message for v in info.value.violations}
    assert (1, column) in messages, messages
    assert words in messages[1, column]


def test_allowed_special_cases():
    # Time may go backwards at a reset; a constant SS infusion may have II 0.
    ds = read_nonmem(_frame(
        [(1, 0, None, 100, 1, 0, 0, 0), (1, 2, 4.0, 0, 0, 0, 0, 0),
         (1, 0, None, 100, 4, 0, 0, 0), (1, 1, 3.0, 0, 0, 0, 0, 0),
         (1, 5, None, 0, 1, 10, 1, 0), (1, 6, 2.0, 0, 0, 0, 0, 0)],
        "ID,TIME,DV,AMT,EVID,RATE,SS,II",
    ))
    assert ds.n_observations == 3


# -- defaults and parsing --------------------------------------------------------------


def test_evid_and_mdv_derived_without_either_column():
    ds = read_nonmem(_frame(
        [(1, 0, None, 100, 0), (1, 1, 5.0, 0, 0), (1, 2, None, 50, -2)],
        "ID,TIME,DV,AMT,RATE",
    ))
    assert ds.frame["EVID"].tolist() == [1, 0, 1]
    assert ds.frame["MDV"].tolist() == [1, 0, 1]


def test_evid_derived_from_mdv():
    ds = read_nonmem(_frame(
        [(1, 0, None, 100, 1), (1, 1, 5.0, 0, 0), (1, 2, None, 0, 1)], "ID,TIME,DV,AMT,MDV"
    ))
    assert ds.frame["EVID"].tolist() == [1, 0, 2]


def test_mdv_derived_from_evid_and_evid0_mdv1_is_not_an_observation():
    ds = read_nonmem(_frame(
        [(1, 0, None, 100, 1), (1, 1, 5.0, 0, 0), (1, 2, None, 0, 2)], "ID,TIME,DV,AMT,EVID"
    ))
    assert ds.frame["MDV"].tolist() == [1, 0, 1]
    ds = read_nonmem(_frame(
        [(1, 0, None, 100, 1, 1), (1, 1, 5.0, 0, 0, 0), (1, 2, 9.0, 0, 0, 1)],
        "ID,TIME,DV,AMT,EVID,MDV",
    ))
    assert ds.n_observations == 1
    assert len(ds.frame) == 3  # the excluded measurement stays as a record
    assert not bool(ds.batch().obs_mask[0, 2])


def test_dots_empty_cells_case_comments_and_defaults(tmp_path):
    path = _csv(tmp_path, (
        "id, time ,dv,Amt,cmt,wt\n"
        "1,0,.,100,,70\n"
        "# a comment row, skipped as NM-TRAN does\n"
        "1,1, 5.5 ,.,2,\n"
        "1,2,6.1,,.,71\n"
    ))
    ds = read_nonmem(path)
    f = ds.frame
    assert ds.covariates == ["WT"]
    assert f["AMT"].tolist() == [100.0, 0.0, 0.0]
    assert f["CMT"].tolist() == [0, 2, 0]
    assert np.isnan(f["DV"][0]) and f["DV"][1] == 5.5
    assert np.isnan(f["WT"][1])
    assert f["REC"].tolist() == [1, 3, 4]  # comment rows keep their numbers
    assert f["II"].tolist() == [0.0] * 3 and f["SS"].tolist() == [0] * 3


def test_whitespace_separated_file(tmp_path):
    path = _csv(tmp_path, "ID TIME DV AMT\n1 0 . 100\n1  1  5.0 0\n")
    ds = read_nonmem(path)
    assert ds.n_observations == 1 and ds.n_doses == 1


def test_dataframe_input_is_not_modified_and_drop_works():
    df = _frame([(1, 0, None, 100, "x"), (1, 1, 5.0, 0, "y")], "ID,TIME,DV,AMT,NOTE")
    before = df.copy()
    with pytest.raises(DatasetError, match="NOTE is numeric"):
        read_nonmem(df)
    ds = read_nonmem(df, drop=["note"])
    pd.testing.assert_frame_equal(df, before)
    assert ds.covariates == []


# -- BLQ -------------------------------------------------------------------------------


def test_blq_from_lloq_column():
    ds = read_nonmem(_frame(
        [(1, 0, None, 100, None), (1, 1, 5.0, 0, 0.5), (1, 2, 0.2, 0, 0.5), (1, 3, 0.5, 0, 0.5)],
        "ID,TIME,DV,AMT,LLOQ",
    ))
    assert ds.frame["BLQ"].tolist() == [0, 0, 1, 0]  # DV < LLOQ, strictly
    assert ds.n_blq == 1 and ds.n_observations == 3
    lloq = ds.frame["LLOQ"].to_numpy()
    assert np.isnan(lloq[0]) and lloq[1:].tolist() == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("flag", ["BLQ", "CENS", "cens"])
def test_blq_from_flag_takes_dv_as_lloq(flag):
    ds = read_nonmem(_frame(
        [(1, 0, None, 100, 0), (1, 1, 5.0, 0, 0), (1, 2, 0.1, 0, 1)], f"ID,TIME,DV,AMT,{flag}"
    ))
    assert ds.frame["BLQ"].tolist() == [0, 0, 1]
    lloq = ds.frame["LLOQ"].to_numpy()
    assert np.isnan(lloq[:2]).all() and lloq[2] == 0.1
    b = ds.batch()
    assert b.blq[0].tolist()[:3] == [False, False, True]
    assert float(b.lloq[0, 2]) == 0.1 and float(b.lloq[0, 1]) == 0.0  # never NaN


def test_blq_flag_and_lloq_together():
    ds = read_nonmem(_frame(
        [(1, 1, 5.0, 0.5, 0), (1, 2, 0.2, 0.5, 0), (1, 3, 0.8, None, 1)],
        "ID,TIME,DV,LLOQ,BLQ",
    ))
    assert ds.frame["BLQ"].tolist() == [0, 1, 1]
    assert ds.frame["LLOQ"].tolist() == [0.5, 0.5, 0.8]


# -- ADDL expansion --------------------------------------------------------------------


def test_addl_expansion_times_order_and_covariates():
    ds = read_nonmem(_frame(
        [
            (1, 0, None, 100, 3, 12, 1, 70),   # doses implied at 12, 24, 36
            (1, 6, 5.0, 0, 0, 0, 2, 71),
            (1, 12, 4.0, 0, 0, 0, 2, 72),     # coincides with an implied dose
            (1, 30, 3.0, 0, 0, 0, 2, 73),
        ],
        "ID,TIME,DV,AMT,ADDL,II,CMT,WT",
    ))
    f = ds.frame
    assert f["TIME"].tolist() == [0, 6, 12, 12, 24, 30, 36]
    # NONMEM gives an implied dose before a record at the same time.
    assert f["EVID"].tolist() == [1, 0, 1, 0, 1, 0, 1]
    assert f["REC"].tolist() == [1, 2, 1, 3, 1, 4, 1]
    # Covariates of the next real record at or after the dose, else the last record.
    assert f["WT"].tolist() == [70, 71, 72, 72, 73, 73, 73]
    implied = f[(f["REC"] == 1) & (f["TIME"] > 0)]
    assert (implied["AMT"] == 100).all() and (implied["CMT"] == 1).all()
    assert (implied["II"] == 12).all() and (implied["MDV"] == 1).all()
    assert (f["ADDL"] == 0).all() and (f["SS"] == 0).all()
    assert ds.n_doses == 4


def test_addl_expansion_stops_at_reset_and_ss1_dose():
    ds = read_nonmem(_frame(
        [
            (1, 0, None, 100, 1, 5, 24, 0),
            (1, 30, 5.0, 0, 0, 0, 0, 0),
            (1, 0, None, 100, 4, 0, 0, 0),      # reset: doses after t=30 never given
            (1, 1, 4.0, 0, 0, 0, 0, 0),
            (2, 0, None, 100, 1, 10, 12, 0),
            (2, 30, 5.0, 0, 0, 0, 0, 0),
            (2, 48, None, 100, 1, 0, 12, 1),    # SS=1 dose replaces the series from t=48
            (2, 50, 4.0, 0, 0, 0, 0, 0),
        ],
        "ID,TIME,DV,AMT,EVID,ADDL,II,SS",
    ))
    f = ds.frame
    one, two = f[f["ID"] == 1], f[f["ID"] == 2]
    assert one["TIME"].tolist() == [0, 24, 30, 0, 1]
    assert one["EVID"].tolist() == [1, 1, 0, 4, 0]
    assert two["TIME"].tolist() == [0, 12, 24, 30, 36, 48, 48, 50]
    assert two["SS"].tolist() == [0, 0, 0, 0, 0, 0, 1, 0]


def test_addl_matches_the_nonmem_help_example():
    # NONMEM help, "ADDL data item": these two fragments specify the same doses.
    explicit = read_nonmem(_frame(
        [(1, 10, None, 15, 0, 0), (1, 15, 25.7, None, None, None), (1, 20, None, 10, 0, 0),
         (1, 22, None, 15, 0, 0), (1, 34, None, 15, 0, 0), (1, 36, 30.2, None, None, None)],
        "ID,TIME,DV,AMT,ADDL,II",
    ))
    compact = read_nonmem(_frame(
        [(1, 10, None, 15, 2, 12), (1, 15, 25.7, None, None, None), (1, 20, None, 10, 0, 0),
         (1, 36, 30.2, None, None, None)],
        "ID,TIME,DV,AMT,ADDL,II",
    ))
    columns = ["TIME", "AMT", "EVID", "MDV", "DV"]
    pd.testing.assert_frame_equal(compact.frame[columns], explicit.frame[columns])


def test_duplicate_columns_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="appears more than once"):
        read_nonmem(_csv(tmp_path, "ID,TIME,DV,id\n1,0,1,1\n"))
    with pytest.raises(DatasetError, match="CENS appears more than once"):
        read_nonmem(_csv(tmp_path, "ID,TIME,DV,BLQ,CENS\n1,0,1,0,0\n"))
    with pytest.raises(DatasetError, match="could not be read as a table"):
        read_nonmem(_csv(tmp_path, "ID,TIME,DV\n1,0,1,5\n"))


def test_expanded_ss_dose_gives_non_steady_state_doses():
    ds = read_nonmem(_frame(
        [(1, 0, None, 100, 2, 12, 1), (1, 30, 5.0, 0, 0, 0, 0)], "ID,TIME,DV,AMT,ADDL,II,SS"
    ))
    assert ds.frame["SS"].tolist() == [1, 0, 0, 0]
    assert ds.frame["TIME"].tolist() == [0, 12, 24, 30]


# -- round trip ------------------------------------------------------------------------


def _same_dataset(a: Dataset, b: Dataset) -> None:
    pd.testing.assert_frame_equal(a.frame.drop(columns="REC"), b.frame.drop(columns="REC"))


def test_round_trip_through_to_frame(theo, pheno):
    mixed = read_nonmem(_frame(
        [
            (1, 0, None, 100, 2, 12, 1, 70, 1, 0.5),
            (1, 6, 0.2, 0, 0, 0, 2, 71, 1, 0.5),
            (1, 30, 3.0, 0, 0, 0, 2, 73, 2, 0.5),
            (2, 0, None, 100, 0, 0, 1, 60, 1, None),
            (2, 1, 3.0, 0, 0, 0, 2, 60, 1, None),
        ],
        "ID,TIME,DV,AMT,ADDL,II,CMT,WT,OCC,LLOQ",
    ))
    for ds in (theo, pheno, mixed):
        out = ds.to_frame()
        assert "REC" not in out.columns
        assert all(pd.api.types.is_numeric_dtype(t) for t in out.dtypes)
        _same_dataset(read_nonmem(out), ds)
    assert mixed.n_blq == 1


def test_round_trip_through_csv(tmp_path, pheno):
    path = tmp_path / "pheno_out.csv"
    pheno.to_frame().to_csv(path, index=False, na_rep=".")
    _same_dataset(read_nonmem(path), pheno)


# -- batching --------------------------------------------------------------------------


def test_batch_shapes_dtypes_and_bucket(theo, pheno):
    b = theo.batch(["WT"])
    assert isinstance(b, SubjectBatch)
    assert b.time.shape == (12, 16)  # 12 records -> next multiple of 8
    assert b.covariates.shape == (12, 16, 1) and b.covariate_names == ("WT",)
    for name in ("time", "amt", "rate", "dur", "ii", "dv", "lloq", "covariates"):
        assert getattr(b, name).dtype == np.float64, name
    for name in ("evid", "cmt", "ss", "occ"):
        assert getattr(b, name).dtype == np.int32, name
    for name in ("obs_mask", "blq", "record_mask"):
        assert getattr(b, name).dtype == bool, name
    assert int(b.obs_mask.sum()) == 132 and int(b.record_mask.sum()) == 144
    assert pheno.batch().time.shape == (59, 24)  # longest subject has 20 records
    assert pheno.batch(n_records=40).time.shape == (59, 40)
    with pytest.raises(ValueError, match="too small"):
        pheno.batch(n_records=19)


def test_padding_is_finite_and_harmless(theo):
    b = theo.batch(["wt"])  # case-insensitive lookup, spelling kept
    assert b.covariate_names == ("wt",)
    pad = ~np.asarray(b.record_mask)
    assert pad[:, 12:].all() and not pad[:, :12].any()
    last_time = theo.frame.groupby("ID")["TIME"].max().to_numpy()
    np.testing.assert_array_equal(np.asarray(b.time)[:, 12:], np.repeat(last_time[:, None], 4, 1))
    assert (np.asarray(b.evid)[pad] == 2).all()
    for name in ("amt", "rate", "dur", "ii", "ss", "dv", "lloq"):
        assert (np.asarray(getattr(b, name))[pad] == 0).all(), name
    assert not np.asarray(b.obs_mask)[pad].any() and not np.asarray(b.blq)[pad].any()
    for name in ("time", "amt", "dv", "lloq", "covariates"):
        assert np.isfinite(np.asarray(getattr(b, name))).all(), name
    wt = theo.frame.groupby("ID")["WT"].last().to_numpy()
    np.testing.assert_array_equal(np.asarray(b.covariate("wt"))[:, -1], wt)


def test_batch_matches_records(theo):
    b = theo.batch(["WT"])
    s = b.subject(2)
    rows = theo.frame[theo.frame["ID"] == 3]
    assert s.time.shape == (16,) and s.covariates.shape == (16, 1)
    np.testing.assert_array_equal(np.asarray(s.time)[:12], rows["TIME"].to_numpy())
    np.testing.assert_array_equal(np.asarray(s.cmt)[:12], rows["CMT"].to_numpy())
    np.testing.assert_array_equal(np.asarray(s.amt)[:12], rows["AMT"].to_numpy())
    assert float(s.dv[0]) == 0.0  # the dose record had no DV


def test_batch_works_under_vmap_and_jit(theo):
    b = theo.batch(["WT"])

    @jax.jit
    def observed_sum(batch):
        return jax.vmap(lambda s: jnp.where(s.obs_mask, s.dv, 0.0).sum())(batch)

    expected = theo.frame[theo.frame["EVID"] == 0].groupby("ID")["DV"].sum().to_numpy()
    np.testing.assert_allclose(np.asarray(observed_sum(b)), expected)


def test_occasions_mapping():
    ds = read_nonmem(_frame(
        [(1, 0, None, 100, 3), (1, 1, 5.0, 0, 3), (1, 24, None, 100, 7), (1, 25, 4.0, 0, 7),
         (2, 0, None, 100, 1), (2, 1, 6.0, 0, 1)],
        "ID,TIME,DV,AMT,OCC",
    ))
    assert "OCC" in ds.frame.columns and ds.covariates == []
    b = ds.batch(occasion_column="occ")
    assert b.n_occasions == 3
    assert np.asarray(b.occ)[0, :4].tolist() == [1, 1, 2, 2]  # 1 -> 0, 3 -> 1, 7 -> 2
    assert np.asarray(b.occ)[1, :2].tolist() == [0, 0]
    plain = ds.batch()
    assert plain.n_occasions == 1 and not np.asarray(plain.occ).any()
    with pytest.raises(KeyError):
        ds.batch(occasion_column="VISIT")


def test_batch_refuses_missing_covariate_values():
    ds = read_nonmem(_frame([(1, 0, None, 100, 70), (1, 1, 5.0, 0, None)], "ID,TIME,DV,AMT,WT"))
    with pytest.raises(DatasetError, match="record 2 \\(ID 1\\), column WT: missing value"):
        ds.batch(["WT"])
    with pytest.raises(KeyError):
        ds.batch(["CRCL"])


# -- model-dependent checks ------------------------------------------------------------


def test_model_checks_pass_on_good_data(theo):
    theo.check(_model())
    read_nonmem(DATA / "theo_sd.csv", model=_model())
    theo.check(types.SimpleNamespace())  # a partial model checks nothing


def test_model_checks_report_every_problem():
    df = _frame(
        [(1, 0, None, 100, 1, 70), (1, 1, 5.0, 0, 3, 70), (1, 2, 4.0, 0, 2, None)],
        "ID,TIME,DV,AMT,CMT,WT",
    )
    with pytest.raises(DatasetError) as info:
        read_nonmem(df, model=_model(covariates=("WT", "CRCL"), occasion_column="OCC"))
    found = {(v.record, v.column): v for v in info.value.violations}
    assert set(found) == {(2, "CMT"), (3, "WT"), (None, "CRCL"), (None, "OCC")}
    assert "depot" in found[2, "CMT"].rule and "central" in found[2, "CMT"].rule
    assert "missing" in found[3, "WT"].message

    ds = read_nonmem(df)  # without the model the same data are fine
    with pytest.raises(DatasetError) as info:
        ds.check(_model())
    assert {(v.record, v.column) for v in info.value.violations} == {(2, "CMT"), (3, "WT")}


def test_model_and_data_problems_come_in_one_error():
    df = _frame([(1, 0, None, -100, 1), (1, 1, 5.0, 0, 5)], "ID,TIME,DV,AMT,CMT")
    with pytest.raises(DatasetError) as info:
        read_nonmem(df, model=_model(covariates=()))
    assert {(v.record, v.column) for v in info.value.violations} == {(1, "AMT"), (2, "CMT")}


# -- warnings --------------------------------------------------------------------------


def test_subject_without_observations_warns():
    df = _frame(
        [(1, 0, None, 100), (1, 1, 5.0, 0), (7, 0, None, 100), (7, 12, None, 100)],
        "ID,TIME,DV,AMT",
    )
    with pytest.warns(DatasetWarning, match="ID 7"):
        ds = read_nonmem(df)
    assert ds.n_subjects == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_nonmem(DATA / "theo_sd.csv")  # a clean dataset is silent

"""The ``pkmix check`` and ``pkmix predict`` subcommands.

Predictions are compared with the one-compartment oral (Bateman) formula written out
here by hand, not with the event engine the command runs on.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pkmix
from pkmix.cli import main
from pkmix.cli.predict import read_params

ROOT = Path(__file__).resolve().parents[1]
THEO_MODEL = ROOT / "examples" / "theophylline" / "model.py"
THEO_DATA = ROOT / "tests" / "data" / "theo_sd.csv"
BROKEN = ROOT / "tests" / "data" / "broken.csv"

# examples/theophylline/model.py's initial values (log scale).
THEO_INIT = {"tka": 0.45, "tcl": 1.0, "tv": 3.45}


def bateman(dose, t, ka, cl, v):
    """Concentration after an oral dose at time 0: D ka / (V (ka - k)) (e^-kt - e^-ka t)."""
    k = cl / v
    return dose * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))


def expected_theo(theta, etas_by_id=None):
    """Hand-computed predictions for every theophylline record (one dose at t = 0 each)."""
    data = pd.read_csv(THEO_DATA)
    out = np.zeros(len(data))
    for sid, rows in data.groupby("ID", sort=False):
        eta = (etas_by_id or {}).get(sid, (0.0, 0.0, 0.0))
        ka = math.exp(theta["tka"] + eta[0])
        cl = math.exp(theta["tcl"] + eta[1])
        v = math.exp(theta["tv"] + eta[2])
        dose = rows.loc[rows["AMT"] > 0, "AMT"]
        assert len(dose) == 1 and rows.loc[dose.index, "TIME"].iloc[0] == 0
        out[rows.index] = bateman(dose.iloc[0], rows["TIME"].to_numpy(), ka, cl, v)
    return out


# -- check ------------------------------------------------------------------------------


def test_check_prints_summary(capsys):
    assert main(["check", str(THEO_DATA)]) == 0
    out = capsys.readouterr().out
    assert "subjects      12" in out
    assert "144 (132 observations, 12 doses, 0 other)" in out
    assert "BLQ           0 observations" in out
    assert "WT  54.6 to 86.4" in out


def test_check_broken_lists_every_violation(capsys):
    with pytest.raises(pkmix.DatasetError) as info:
        pkmix.read_nonmem(BROKEN)
    violations = info.value.violations
    assert len(info.value.rules) >= 12

    assert main(["check", str(BROKEN)]) == 2
    out = capsys.readouterr().out
    for v in violations:
        assert str(v) in out
    # A few written out by hand from the file, so the test does not only echo the reader.
    assert "record 4 (ID 1), column AMT: negative amount" in out
    assert "record 10 (ID 2), column SS: unknown SS value 5" in out
    assert "record 20 (ID 3), column WT: non-numeric value 'heavy'" in out
    assert f"{len(violations)} problems found" in out


def _console_script() -> list[str]:
    """The installed ``pkmix`` entry point (beside this interpreter when in a venv)."""
    script = Path(sys.executable).parent / "pkmix"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from pkmix.cli import main; sys.exit(main())"]


def test_check_broken_subprocess_exit_status():
    proc = subprocess.run(
        [*_console_script(), "check", "tests/data/broken.csv"],
        cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    with pytest.raises(pkmix.DatasetError) as info:
        pkmix.read_nonmem(BROKEN)
    for v in info.value.violations:
        assert str(v) in proc.stdout
    assert "Traceback" not in proc.stderr


def test_check_against_model(capsys, tmp_path):
    assert main(["check", str(THEO_DATA), "--model", str(THEO_MODEL)]) == 0
    assert "theophylline" in capsys.readouterr().out

    # A one-compartment IV model (CMT 1 only) with a covariate theo_sd lacks.
    model_file = tmp_path / "crcl_model.py"
    model_file.write_text(textwrap.dedent("""
        import jax.numpy as jnp
        import pkmix

        model = pkmix.Model(
            theta={"tcl": 1.0, "tv": 3.0},
            omega={"eta_cl": 0.1},
            sigma={"add_sd": 0.5},
            covariates=["CRCL"],
            individual=lambda p: {"cl": jnp.exp(p.tcl + p.eta_cl) * p.CRCL / 100, "v": jnp.exp(p.tv)},
            structure=pkmix.one_compartment(),
            observe=lambda a, p: a.central / p.v,
            error=pkmix.additive("add_sd"),
        )
    """))
    assert main(["check", str(THEO_DATA), "--model", str(model_file)]) == 2
    out = capsys.readouterr().out
    assert "covariate CRCL" in out
    assert "compartment 2 does not exist" in out


def test_check_warns_about_subject_without_observations(capsys, tmp_path):
    data = pd.read_csv(THEO_DATA)
    lonely = data[(data["ID"] == 1) & (data["AMT"] > 0)].assign(ID=99)
    path = tmp_path / "with_lonely.csv"
    pd.concat([data, lonely]).to_csv(path, index=False)
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "subjects      13" in out
    assert "warning:" in out and "99" in out


def test_check_missing_file_and_bad_model(capsys, tmp_path):
    assert main(["check", str(tmp_path / "nope.csv")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["check", str(THEO_DATA), "--model", str(tmp_path / "nope.py")]) == 2
    assert "model file not found" in capsys.readouterr().err


# -- predict ----------------------------------------------------------------------------


def test_predict_writes_table_matching_hand_formula(tmp_path, capsys):
    out = tmp_path / "sub" / "table.csv"
    assert main(["predict", str(THEO_MODEL), str(THEO_DATA), "--out", str(out)]) == 0
    assert "wrote 144 records (12 subjects)" in capsys.readouterr().out
    table = pd.read_csv(out, na_values=["."])
    assert list(table.columns) == ["ID", "TIME", "EVID", "DV", "PRED", "IPRED"]
    assert len(table) == 144
    np.testing.assert_allclose(table["PRED"], expected_theo(THEO_INIT), rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(table["IPRED"], table["PRED"])  # no etas given


def test_predict_prints_table(capsys):
    assert main(["predict", str(THEO_MODEL), str(THEO_DATA)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["ID", "TIME", "EVID", "DV", "PRED", "IPRED"]
    assert len(lines) == 1 + 144
    # Subject 1 at t = 0.25 h, printed to 6 significant digits.
    row = lines[3].split()
    expected = expected_theo(THEO_INIT)[2]
    assert float(row[1]) == 0.25 and float(row[4]) == pytest.approx(expected, rel=1e-5)


def test_predict_params_and_etas(tmp_path):
    theta = {"tka": 0.5, "tcl": 1.1, "tv": 3.4}
    params = tmp_path / "params.json"
    params.write_text(json.dumps({**theta, "add_sd": 0.5}))
    rng = np.random.default_rng(7)
    etas_by_id = {sid: tuple(rng.normal(0, 0.3, 3)) for sid in range(1, 13)}
    etas = tmp_path / "etas.csv"
    pd.DataFrame(
        # Two rows per subject, as in a fit's table.csv: the first is used.
        [{"ID": sid, "ETA_KA": e[0], "eta_cl": e[1], "eta_v": e[2]} for sid, e in etas_by_id.items()] * 2
    ).to_csv(etas, index=False)
    out = tmp_path / "table.csv"
    assert main(["predict", str(THEO_MODEL), str(THEO_DATA), "--params", str(params),
                 "--etas", str(etas), "--out", str(out)]) == 0
    table = pd.read_csv(out, na_values=["."])
    np.testing.assert_allclose(table["PRED"], expected_theo(theta), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(table["IPRED"], expected_theo(theta, etas_by_id), rtol=1e-8, atol=1e-12)


def test_predict_reads_results_json(tmp_path):
    results = {
        "theta": {"tka": 0.4, "tcl": 0.9, "tv": 3.5},
        # Deliberately not in the model's eta order.
        "omega": {"names": ["eta_v", "eta_ka", "eta_cl"],
                  "matrix": [[0.03, 0.0, 0.01], [0.0, 0.5, 0.0], [0.01, 0.0, 0.2]]},
        "sigma": {"add_sd": 0.7},
        "ofv": 116.8,
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    params = read_params(str(path), _theo_model())
    assert params["tka"] == 0.4 and params["add_sd"] == 0.7
    # Model order eta_ka, eta_cl, eta_v.
    np.testing.assert_array_equal(
        params["omega"], [[0.5, 0.0, 0.0], [0.0, 0.2, 0.01], [0.0, 0.01, 0.03]]
    )
    out = tmp_path / "table.csv"
    assert main(["predict", str(THEO_MODEL), str(THEO_DATA), "--params", str(path), "--out", str(out)]) == 0
    table = pd.read_csv(out, na_values=["."])
    np.testing.assert_allclose(table["PRED"], expected_theo(results["theta"]), rtol=1e-8, atol=1e-12)


def _theo_model():
    from pkmix.cli._common import load_model

    return load_model(str(THEO_MODEL))


@pytest.mark.parametrize(
    "content, message",
    [
        ({"tkx": 1.0}, "tkx"),
        ({"tcl": "big"}, "tcl"),
        ([1, 2], "JSON object"),
    ],
)
def test_predict_bad_params_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "params.json"
    path.write_text(json.dumps(content))
    assert main(["predict", str(THEO_MODEL), str(THEO_DATA), "--params", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_predict_broken_data_exit_2(capsys):
    assert main(["predict", str(THEO_MODEL), str(BROKEN)]) == 2
    assert "negative amount" in capsys.readouterr().out

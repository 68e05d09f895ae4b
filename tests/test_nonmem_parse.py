"""NM-TRAN parsing and translation (pkmix.nonmem): the forms real control streams use,
and a refusal naming the record and line for everything not supported. Fast: nothing
here compiles a model."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest

from pkmix import nonmem
from pkmix._pk.ode import Namespace
from pkmix.nonmem import ControlStreamError
from pkmix.nonmem._code import lower, parse_code
from pkmix.nonmem._records import parse_random, parse_thetas, split_records

BASE = """\
$PROBLEM test
$INPUT ID TIME AMT WGT APGR DV
$DATA data.csv IGNORE=@
$SUBROUTINES ADVAN1 TRANS2
$PK
CL=THETA(1)*EXP(ETA(1))
V=THETA(2)*EXP(ETA(2))
S1=V
$ERROR
Y=F+F*EPS(1)
$THETA (0,0.005) (0,1)
$OMEGA 0.1 0.1
$SIGMA 0.01
$ESTIMATION METHOD=1 INTERACTION
"""


def cs_of(text):
    return nonmem.read("run.mod", text=textwrap.dedent(text))


def translated(text):
    return nonmem.translate(cs_of(text))


def module_of(text):
    """The translation executed (the model is built: a definition check, no compilation)."""
    source = translated(text).source
    scope = {"__file__": "/tmp/run.mod"}
    exec(compile(source, "<test>", "exec"), scope)
    return scope


def record(text):
    return split_records(textwrap.dedent(text))[0]


def refusal(text, *fragments):
    with pytest.raises(ControlStreamError) as info:
        translated(text)
    for f in fragments:
        assert f in str(info.value), str(info.value)
    return str(info.value)


# ----------------------------------------------------------------- records and options
def test_abbreviated_record_names_and_commas_between_options():
    text = BASE.replace("$SUBROUTINES ADVAN1 TRANS2", "$SUBR ADVAN4,TRANS4").replace(
        "$PROBLEM", "$PROB").replace("$ESTIMATION METHOD=1 INTERACTION", "$EST METHOD=COND,INTER,MAXEVAL=0 POSTHOC")
    text = text.replace("S1=V", "V2=V\nQ=THETA(1)\nV3=THETA(2)\nKA=THETA(1)").replace("F+F*EPS(1)", "F+F*EPS(1) ; prop")
    text += "$COV MATRIX=R\n"
    cs = cs_of(text)
    assert (cs.advan, cs.trans) == (4, 4)
    assert cs.estimation["pkmix_method"] == "focei" and cs.estimation["maxeval"] == 0
    assert cs.estimation["posthoc"]
    assert cs.covariance == {"matrix": "r"}
    assert cs.compartments == ("depot", "central", "peripheral")


def test_subroutine_spellings_and_spaces():
    for line in ("$SUBROUTINE ADVAN2 TRANS2", "$SUBROUTINES  ADVAN2,  TRANS2", "$SUBR ADVAN2 TRANS=2"
                 .replace("TRANS=2", "TRANS2")):
        cs = cs_of(BASE.replace("$SUBROUTINES ADVAN1 TRANS2", line).replace("S1=V", "KA=THETA(1)"))
        assert cs.advan == 2 and cs.trans == 2


@pytest.mark.parametrize("est, method", [
    ("$EST METHOD=0", "fo"), ("$ESTIMATION METHOD=ZERO MAXEVAL=9999", "fo"), ("$EST METHOD=1", "foce"),
    ("$EST METHOD=COND INTER", "focei"), ("$EST METHOD=CONDITIONAL INTERACTION", "focei"),
    ("$EST METHOD=COND LAPLACIAN INTER", "laplace"),
])
def test_estimation_methods(est, method):
    cs = cs_of(BASE.replace("$ESTIMATION METHOD=1 INTERACTION", est))
    assert cs.estimation["pkmix_method"] == method


def test_an_estimation_step_pkmix_lacks_is_named_not_run():
    t = translated(BASE.replace("$ESTIMATION METHOD=1 INTERACTION",
                                "$EST METHOD=1 INTER MAXEVAL=9999\n$EST METHOD=IMP EONLY=1"))
    assert t.method == "focei"
    assert "Not run: $EST (line 15): METHOD=IMP is not supported" in t.source


def test_comments_after_values_and_theta_forms():
    r = record("""\
        $THETA (0,0.00469307) ; CL
         (0, 1.0, 10) ; V  (L)
         0.5 FIX
         (0.3 FIX) -0.2 (-INF, 1, INF)
         (0,2,1E6)
         (1,2,3) FIX
        """)
    t = parse_thetas(r)
    assert [(x.lower, x.init, x.upper, x.fixed) for x in t] == [
        (0, 0.00469307, math.inf, False), (0, 1.0, 10, False), (-math.inf, 0.5, math.inf, True),
        (-math.inf, 0.3, math.inf, True), (-math.inf, -0.2, math.inf, False), (-math.inf, 1, math.inf, False),
        (0, 2, math.inf, False), (1, 2, 3, True)]
    assert t[0].comment == "CL" and t[1].comment == "V  (L)"


def test_theta_outside_its_bounds_names_the_line():
    r = record("$THETA (0, 1)\n (0, -1)\n")
    with pytest.raises(ControlStreamError, match=r"\$THETA \(line 2\).*not strictly inside"):
        parse_thetas(r)


def test_omega_forms():
    diag = parse_random(record("$OMEGA DIAGONAL(2) 0.1 ; CL\n 0.2 FIX ; V\n"))
    assert (diag.values, diag.fixed, diag.block) == ([0.1, 0.2], [False, True], False)
    block = parse_random(record("$OMEGA BLOCK(2) 0.1\n 0.01 0.2\n"))
    assert block.block and block.size == 2 and block.values == [0.1, 0.01, 0.2] and not block.fixed[0]
    fixed = parse_random(record("$OMEGA BLOCK(2) FIX 0.1 0.01 0.2"))
    assert fixed.fixed == [True]
    sd = parse_random(record("$OMEGA 0.3 SD"))
    assert sd.values == pytest.approx([0.09])
    same = parse_random(record("$OMEGA BLOCK(1) SAME"))
    assert same.same
    with pytest.raises(ControlStreamError, match=r"BLOCK\(2\) needs 3 values"):
        parse_random(record("$OMEGA BLOCK(2) 0.1 0.2"))
    with pytest.raises(ControlStreamError, match="CORRELATION is not supported"):
        parse_random(record("$OMEGA BLOCK(2) CORRELATION 0.1 0.5 0.2"))


def test_block_omega_becomes_a_pkmix_block():
    scope = module_of(BASE.replace("$OMEGA 0.1 0.1", "$OMEGA BLOCK(2) 0.1 0.01 0.2"))
    m = scope["model"]
    np.testing.assert_allclose(m.spec.omega_init, [[0.1, 0.01], [0.01, 0.2]])
    assert m.eta_names == ("eta_cl", "eta_v")


def test_zero_fixed_eta_is_left_out():
    scope = module_of(BASE.replace("$OMEGA 0.1 0.1", "$OMEGA 0.1 0 FIX"))
    assert scope["model"].eta_names == ("eta_cl",)
    assert "eta_v" not in scope["individual"].__code__.co_names
    refusal(BASE.replace("$OMEGA 0.1 0.1", "$OMEGA 0.1 0"), "$OMEGA (line 12)", "OMEGA(2) is 0")


IOV_PK = """\
CL=THETA(1)*EXP(ETA(1)+IOVCL)
V=THETA(2)*EXP(ETA(2))
S1=V
"""


@pytest.mark.parametrize("pick", [
    "IOVCL=0\nIF (OCC.EQ.1) IOVCL=ETA(3)\nIF (OCC.EQ.2) IOVCL=ETA(4)\nIF (OCC.EQ.3) IOVCL=ETA(5)\n",
    "Q1=0\nQ2=0\nQ3=0\nIF(OCC.EQ.1)Q1=1\nIF(OCC.EQ.2)Q2=1\nIF(OCC.EQ.3)Q3=1\nIOVCL=Q1*ETA(3)+Q2*ETA(4)+Q3*ETA(5)\n",
    "IF (OCC.EQ.1) THEN\nIOVCL=ETA(3)\nELSE IF (OCC.EQ.2) THEN\nIOVCL=ETA(4)\nELSE\nIOVCL=ETA(5)\nENDIF\n",
])
def test_block_same_becomes_iov(pick):
    text = BASE.replace("$INPUT ID TIME AMT WGT APGR DV", "$INPUT ID TIME AMT WGT APGR DV OCC").replace(
        "CL=THETA(1)*EXP(ETA(1))\nV=THETA(2)*EXP(ETA(2))\nS1=V\n", pick + IOV_PK).replace(
        "$OMEGA 0.1 0.1", "$OMEGA 0.1 0.1\n$OMEGA BLOCK(1) 0.05\n$OMEGA BLOCK(1) SAME\n$OMEGA BLOCK(1) SAME")
    model = module_of(text)["model"]
    assert model.iov_names == ("kappa_cl",) and model.occasion_column == "OCC"
    assert model.eta_names == ("eta_cl", "eta_v") and model.covariates == ()
    np.testing.assert_allclose(model.spec.iov_init, [0.05])


def test_iov_that_is_not_the_occasions_eta_is_refused():
    pick = "IOVCL=0\nIF (OCC.EQ.1) IOVCL=ETA(4)\nIF (OCC.EQ.2) IOVCL=ETA(3)\n"
    text = BASE.replace("$INPUT ID TIME AMT WGT APGR DV", "$INPUT ID TIME AMT WGT APGR DV OCC").replace(
        "CL=THETA(1)*EXP(ETA(1))\nV=THETA(2)*EXP(ETA(2))\nS1=V\n", pick + IOV_PK).replace(
        "$OMEGA 0.1 0.1", "$OMEGA 0.1 0.1\n$OMEGA BLOCK(1) 0.05\n$OMEGA BLOCK(1) SAME")
    refusal(text, "$PK (line", "IOVCL is not ETA(3) when OCC = 1")


# ----------------------------------------------------------------- abbreviated code
def run_pk(text, **values):
    """individual() of a translated $PK on the given thetas/etas/covariates."""
    scope = module_of(text)
    model = scope["model"]
    ns = {n: 0.0 for n in model.eta_names}
    ns.update({n: float(model.spec.thetas[i].init) for i, n in enumerate(model.theta_names)})
    ns.update(values)
    return {k: float(v) for k, v in scope["individual"](Namespace(ns, "name")).items()}


def test_if_blocks_become_selections():
    pk = """\
        TVCL=THETA(1)
        IF (WGT.GT.2.AND.APGR.GE.5) THEN
          TVCL=TVCL*2
          FAC=3
        ELSE IF (WGT.GT.2) THEN
          TVCL=TVCL*FAC0
        ELSE
          TVCL=TVCL*10
        ENDIF
        IF(APGR.LT.5) TVCL=TVCL+1
        CL=TVCL*EXP(ETA(1))
        V=THETA(2)*EXP(ETA(2))
        S1=V
        """
    text = BASE.replace("CL=THETA(1)*EXP(ETA(1))\nV=THETA(2)*EXP(ETA(2))\nS1=V\n",
                        textwrap.dedent(pk).replace("FAC0", "3"))
    t1 = 0.005
    assert run_pk(text, WGT=3.0, APGR=7.0)["cl"] == pytest.approx(t1 * 2)
    assert run_pk(text, WGT=3.0, APGR=3.0)["cl"] == pytest.approx(t1 * 3 + 1)
    assert run_pk(text, WGT=1.0, APGR=7.0)["cl"] == pytest.approx(t1 * 10)


def test_a_branch_cannot_change_which_branch_runs():
    # The ELSE's condition is the IF's, evaluated before the block.
    pk = "X=THETA(1)\nIF (X.GT.0) THEN\nX=-1\nELSE\nX=5\nENDIF\nCL=THETA(1)*EXP(ETA(1))+X*0+X\nV=THETA(2)*EXP(ETA(2))\n"
    text = BASE.replace("CL=THETA(1)*EXP(ETA(1))\nV=THETA(2)*EXP(ETA(2))\n", pk)
    assert run_pk(text, WGT=1.0, APGR=1.0)["cl"] == pytest.approx(0.005 - 1)


def test_abbr_replace_names_etas():
    text = BASE.replace("$PROBLEM test", "$PROBLEM test\n$ABBR REPLACE ETA_CL=ETA(1)\n$ABBR REPLACE ETA_V=ETA(2)"
                        "\n$ABBR PROTECT").replace("EXP(ETA(1))", "EXP(ETA_CL)").replace("EXP(ETA(2))", "EXP(ETA_V)")
    model = module_of(text)["model"]
    assert model.eta_names == ("eta_cl", "eta_v")
    assert run_pk(text, WGT=1.0, APGR=1.0, eta_v=0.5)["v"] == pytest.approx(math.exp(0.5))


def test_unused_theta_is_pointed_out():
    text = BASE.replace("S1=V", "S1=V\nMAT=THETA(3)").replace("$THETA (0,0.005) (0,1)", "$THETA (0,0.005) (0,1) 2")
    source = translated(text).source
    assert "Not used by the model (only by code that feeds nothing it needs): THETA(3)" in source
    assert "# THETA(3) -- not used by the model" in source


def test_functions_powers_and_fortran_numbers():
    pk = ("CL=THETA(1)*(WGT/2.5D0)**0.75*EXP(ETA(1))\nV=SQRT(ABS(-4.0))*LOG10(100.)*EXP(LOG(THETA(2)))"
          "*EXP(ETA(2))\nS1=V\n")
    text = BASE.replace("CL=THETA(1)*EXP(ETA(1))\nV=THETA(2)*EXP(ETA(2))\nS1=V\n", pk)
    out = run_pk(text, WGT=5.0, APGR=1.0)
    assert out["cl"] == pytest.approx(0.005 * 2 ** 0.75)
    assert out["v"] == pytest.approx(2 * 2 * 1.0)


def test_fortran_precedence():
    code = parse_code(record("$PK\nX=-2**2\nY=XA.GT.1.OR.XB.LT.2.AND.XC.EQ.3\n"))
    flat = lower(code, record("$PK\n"))
    assert flat[0].value == ("neg", ("**", ("num", 2.0), ("num", 2.0)))
    assert flat[1].value[0] == "or" and flat[1].value[2][0] == "and"


def test_mu_referencing_names_and_dead_code():
    text = BASE.replace("CL=THETA(1)*EXP(ETA(1))", "MU_1=LOG(THETA(1))\nCL=EXP(MU_1+ETA(1))\nIF(AMT.GT.0) "
                        "BTIME=TIME\nTAD=TIME-BTIME")
    t = translated(text)
    assert t.names["theta"][0] == "tcl" and t.names["eta"][0] == "eta_cl"
    assert "btime" not in t.source  # TAD/BTIME feed nothing the model needs
    assert t.covariates == []


def test_compartment_modifiers_and_covariates():
    text = BASE.replace("$SUBROUTINES ADVAN1 TRANS2", "$SUBROUTINES ADVAN2 TRANS2").replace(
        "S1=V", "KA=THETA(1)\nF1=THETA(2)/(1+THETA(2))\nALAG1=WGT*0.01\nS2=V")
    scope = module_of(text)
    out = run_pk(text, WGT=2.0, APGR=1.0)
    assert set(out) >= {"cl", "v", "ka", "f1", "alag1", "s2"}
    assert out["alag1"] == pytest.approx(0.02)
    assert scope["model"].covariates == ("WGT",)


def test_trans1_rate_constants():
    text = BASE.replace("ADVAN1 TRANS2", "ADVAN3 TRANS1").replace(
        "CL=THETA(1)*EXP(ETA(1))\nV=THETA(2)*EXP(ETA(2))\nS1=V", "K=THETA(1)*EXP(ETA(1))\nK12=THETA(2)\nK21=0.5\n"
        "DUMMY=ETA(2)")
    out = run_pk(text, WGT=1.0, APGR=1.0)
    # amounts depend on the rate constants only: v1 = 1, q = K12, v2 = K12/K21
    assert out["cl"] == pytest.approx(0.005) and out["v1"] == 1 and out["q"] == pytest.approx(1.0)
    assert out["v2"] == pytest.approx(2.0)


def test_theta_in_error_is_the_residual_sd():
    text = BASE.replace("Y=F+F*EPS(1)", "IPRED=F\nW=SQRT(THETA(3)**2+THETA(4)**2*IPRED**2)\nY=IPRED+W*EPS(1)"
                        ).replace("$THETA (0,0.005) (0,1)", "$THETA (0,0.005) (0,1) (0,0.5) (0,0.2)"
                                  ).replace("$SIGMA 0.01", "$SIGMA 1 FIX")
    scope = module_of(text)
    model = scope["model"]
    assert model.error.theta_parameters == ("add_sd", "prop_sd")  # named by what they do
    values = model.initial_values()
    f = np.array([0.0, 1.0, 10.0])
    np.testing.assert_allclose(model.residual_variance(values, f), 0.5 ** 2 + (0.2 * f) ** 2)


def test_eps_error_forms():
    cases = {
        "Y=F+F*EPS(1)": lambda f, s: s * f ** 2,
        "Y=F*(1+EPS(1))+EPS(2)": lambda f, s: s * f ** 2 + s,
        "Y=F*EXP(EPS(1))": lambda f, s: s * f ** 2,
        "IPRED=LOG(F)\nY=IPRED+EPS(1)": lambda f, s: s + 0 * f,
    }
    for y, expected in cases.items():
        n_eps = y.count("EPS(")
        text = BASE.replace("Y=F+F*EPS(1)", y).replace("$SIGMA 0.01", "$SIGMA " + " ".join(["0.04"] * n_eps))
        model = module_of(text)["model"]
        f = np.array([0.5, 2.0])
        np.testing.assert_allclose(model.residual_variance(model.initial_values(), f), expected(f, 0.04),
                                   err_msg=y)


def test_prediction_is_y_at_eps_zero():
    text = BASE.replace("Y=F+F*EPS(1)", "CONC=A(1)/V\nY=CONC*EXP(EPS(1))")
    scope = module_of(text)
    out = scope["observe"](Namespace({"central": 10.0}, "c"), Namespace({"v": 4.0}, "p"))
    assert float(out) == pytest.approx(2.5)


def test_ode_model():
    text = BASE.replace("$SUBROUTINES ADVAN1 TRANS2", "$SUBROUTINES ADVAN13 TOL=6\n$MODEL COMP=(DEPOT DEFDOSE) "
                        "COMP (CENTRAL DEFOBS)").replace("S1=V", "KA=THETA(1)\n$DES\nC=A(2)/V\nDADT(1)=-KA*A(1)\n"
                                                         "DADT(2)=KA*A(1)-CL*C")
    scope = module_of(text)
    m = scope["model"]
    assert m.compartment_names == ("depot", "central")
    d = scope["des"](0.0, Namespace({"depot": 2.0, "central": 4.0}, "a"),
                     Namespace({"ka": 0.5, "cl": 1.0, "v": 2.0}, "p"))
    assert d == {"depot": pytest.approx(-1.0), "central": pytest.approx(1.0 - 2.0)}


# ----------------------------------------------------------------- $DATA
DATA = """\
ID TIME AMT WGT APGR DV SD
# a comment
@ another
1 0 25 1.4 7 . 1
1 2 0 1.4 7 17.3 1
1 3 0 1.4 7 11 0
2,0,10,2,3,0,1
2,4,0,2,3,9.5,1
"""


def load_data(tmp_path, data_line, input_line="$INPUT ID TIME AMT WGT APGR DV SD"):
    (tmp_path / "data.csv").write_text(DATA)
    text = BASE.replace("$DATA data.csv IGNORE=@", data_line).replace("$INPUT ID TIME AMT WGT APGR DV",
                                                                       input_line)
    text = text.replace("CL=THETA(1)*EXP(ETA(1))", "CL=THETA(1)*WGT*EXP(ETA(1))")
    (tmp_path / "run.mod").write_text(text)
    return nonmem.load(tmp_path / "run.mod").load_data()


def test_ignore_at_with_conditions(tmp_path):
    df = load_data(tmp_path, "$DATA data.csv IGNORE=@ IGNORE (SD.EQ.0)")
    assert list(df.columns) == ["ID", "TIME", "AMT", "DV", "WGT"]
    assert df["TIME"].tolist() == [0, 2, 0, 4]
    assert df["DV"].tolist() == [0, 17.3, 0, 9.5]  # '.' is 0
    df = load_data(tmp_path, "$DATA 'data.csv' IGNORE=@ IGNORE=(SD.EQ.0,ID.GT.1)")
    assert df["TIME"].tolist() == [0, 2]
    df = load_data(tmp_path, "$DATA data.csv IGNORE=@ ACCEPT=(ID.EQ.2)")
    assert df["ID"].tolist() == [2, 2]
    df = load_data(tmp_path, "$DATA data.csv IGNORE=@ ACCEPT=(ID.EQN.1, TIME.GT.1)")  # all must hold
    assert df["TIME"].tolist() == [2, 3]
    df = load_data(tmp_path, "$DATA data.csv IGNORE=@ IGNORE=(DV.EQ.0)")  # text: '.' is not '0'
    assert df["TIME"].tolist() == [0, 2, 3, 4]
    df = load_data(tmp_path, "$DATA data.csv IGNORE=@ IGNORE=(DV.EQN.0)")  # number: '.' is 0
    assert df["TIME"].tolist() == [2, 3, 4]


def test_quoted_data_file_name_with_spaces(tmp_path):
    (tmp_path / "my data.csv").write_text(DATA)
    text = BASE.replace("$DATA data.csv IGNORE=@", "$DATA 'my data.csv' IGNORE=@ IGNORE=(SD.EQ.0)").replace(
        "$INPUT ID TIME AMT WGT APGR DV", "$INPUT ID TIME AMT WGT APGR DV SD")
    (tmp_path / "run.mod").write_text(text)
    assert nonmem.load(tmp_path / "run.mod").load_data()["TIME"].tolist() == [0, 2, 0, 4]


def test_ignore_characters(tmp_path):
    with pytest.raises(ControlStreamError, match="line 1: ID is 'ID', not a number"):
        load_data(tmp_path, "$DATA data.csv")  # the default IGNORE=# leaves the header in
    with pytest.raises(ControlStreamError, match="line 2: ID is '#', not a number"):
        load_data(tmp_path, "$DATA data.csv IGNORE=I")



def test_observations_in_another_compartment_are_refused(tmp_path):
    (tmp_path / "data.csv").write_text("ID TIME AMT DV CMT\n1 0 10 0 1\n1 1 0 5 1\n1 2 0 4 2\n")
    text = BASE.replace("$INPUT ID TIME AMT WGT APGR DV", "$INPUT ID TIME AMT DV CMT")
    (tmp_path / "run.mod").write_text(text)
    with pytest.raises(ControlStreamError, match=r"observations in compartment\(s\) \[2\]"):
        nonmem.load(tmp_path / "run.mod").load_data()


def test_input_renames_and_drops(tmp_path):
    df = load_data(tmp_path, "$DATA data.csv IGNORE=@", "$INPUT ID TIME AMT WGT APGR=DROP CP=DV DROP")
    assert list(df.columns) == ["ID", "TIME", "AMT", "DV", "WGT"]
    with pytest.raises(ControlStreamError, match=r"\$PK \(line 6\): APGR is used before it is assigned"):
        text = BASE.replace("CL=THETA(1)*EXP(ETA(1))", "CL=THETA(1)*APGR*EXP(ETA(1))").replace(
            "$INPUT ID TIME AMT WGT APGR DV", "$INPUT ID TIME AMT WGT APGR=DROP DV")
        translated(text)


# ----------------------------------------------------------------- refusals
@pytest.mark.parametrize("change, fragments", [
    (("$SIGMA 0.01", "$SIGMA 0.01\n$MIX\nNSPOP=2"), ["$MIX (line 14)", "not supported"]),
    (("$SUBROUTINES ADVAN1 TRANS2", "$SUBROUTINES ADVAN5"), ["$SUBROUTINES (line 4)", "ADVAN5 is not supported"]),
    (("ADVAN1 TRANS2", "ADVAN3 TRANS5"), ["$SUBROUTINES (line 4)", "TRANS5 is not supported"]),
    (("ADVAN1 TRANS2", "ADVAN3 TRANS4"), ["ADVAN3 TRANS4 needs V1"]),
    (("$OMEGA 0.1 0.1", "$OMEGA 0.1\n$OMEGA BLOCK(3) 0.1 0.01 0.1 0 0 0.1\n$OMEGA BLOCK(3) SAME"),
     ["$OMEGA (line 13)", "(BLOCK(3) SAME) must be picked by an occasion column"]),
    (("$OMEGA 0.1 0.1", "$OMEGA 0.1\n$OMEGA BLOCK(2) 0.1 0.01 0.1\n$OMEGA BLOCK(2) SAME"),
     ["$OMEGA (line 13)", "ETA(2), ETA(4) (BLOCK(2) SAME) must be picked by an occasion column"]),
    (("$SIGMA 0.01", "$SIGMA BLOCK(3) 0.01 0.001 0.01 0 0 0.01"), ["$SIGMA (line 13)", "BLOCK(n) with n > 2"]),
    (("Y=F+F*EPS(1)\n$THETA (0,0.005) (0,1)\n$OMEGA 0.1 0.1\n$SIGMA 0.01",
      "Y=F+F*EPS(1)+EPS(2)\n$THETA (0,0.005) (0,1)\n$OMEGA 0.1 0.1\n$SIGMA BLOCK(2) 0.01 0.1 0.01"),
     ["$SIGMA (line 13)", "not positive definite"]),
    (("$ESTIMATION METHOD=1 INTERACTION", "$EST METHOD=SAEM"), ["$EST (line 14)", "METHOD=SAEM is not supported"]),
    (("$ESTIMATION METHOD=1 INTERACTION", "$EST METHOD=0 INTER"), ["$EST (line 14)", "FO"]),
    (("S1=V", "S1=V\nCALL RANDOM(2,R)"), ["$PK (line 9)", "CALL statements are not supported"]),
    (("S1=V", "S1=V\nX=GAMLN(2)"), ["$PK (line 9)", "GAMLN is not supported"]),
    (("S1=V", "IF (WGT.GT.1) THEN\nS1=V"), ["$PK (line 8)", "without ENDIF"]),
    (("S1=V", "S1=V\nENDIF"), ["$PK (line 9)", "ENDIF without IF"]),
    (("S1=V", "S1=V*(1+"), ["$PK (line 8)", "expected a value"]),
    (("CL=THETA(1)*EXP(ETA(1))", "CL=THETA(1)*NEWIND*EXP(ETA(1))"), ["$PK (line 6)", "NEWIND"]),
    (("CL=THETA(1)*EXP(ETA(1))", "CL=THETA(1)*AMT*EXP(ETA(1))"), ["$PK (line 6)", "AMT"]),
    (("CL=THETA(1)*EXP(ETA(1))", "CL=THETA(5)*EXP(ETA(1))"), ["$PK (line 6)", "THETA(5)", "$THETA declares 2"]),
    (("Y=F+F*EPS(1)", "Y=F+F*EPS(2)"), ["$ERROR (line 10)", "EPS(2)", "$SIGMA declares 1"]),
    (("Y=F+F*EPS(1)", "Y=F+WGT*EPS(1)"), ["$ERROR (line 10)", "depends on WGT"]),
    (("Y=F+F*EPS(1)", "Y=F+V*EPS(1)"), []),  # a $PK variable: an individual parameter
    (("Y=F+F*EPS(1)", "Y=F+F*EXP(ETA(1))*EPS(1)"), []),  # an ETA: an individual parameter
    (("Y=F+F*EPS(1)", "IPRED=F"), ["$ERROR (line 9)", "Y is never assigned"]),
    (("$ERROR\n", "$PRED\n"), ["$PK (line 5)", "$PK with $PRED"]),
    (("$PROBLEM test", "$PROBLEM test\n$ABBR DECLARE DOWHILE X"), ["$ABBR (line 2)", "not supported"]),
    (("$PROBLEM test", "$PROBLEM test\n$ABBR REPLACE THETA(CL)=THETA(1)"), ["$ABBR (line 2)", "not supported"]),
    (("$DATA data.csv IGNORE=@", "$DATA data.csv IGNORE=@ RECORDS=10"), ["$DATA (line 3)", "RECORDS"]),
    (("$INPUT ID TIME", "$INPUT ID DATE=DROP TIME"), []),
    (("$INPUT ID TIME", "$INPUT ID DAT1 TIME"), ["$INPUT (line 2)", "DAT1"]),
    (("$THETA (0,0.005) (0,1)", "$THETA (0,0.005) (0,1"), ["$THETA (line 11)", "closing parenthesis"]),
])
def test_unsupported_is_refused_naming_record_and_line(change, fragments):
    text = BASE.replace(*change)
    assert text != BASE
    if not fragments:
        translated(text)  # accepted
        return
    refusal(text, *fragments)


PRED = """\
$PROBLEM pred
$INPUT ID TIME DOSE DV
$DATA data.csv IGNORE=@
$PRED
BASE=THETA(1)+ETA(1)
Y=BASE+THETA(2)*TIME*DOSE+EPS(1)
$THETA 1 0.5
$OMEGA 0.1
$SIGMA 0.04
"""


def test_pred_becomes_a_model_without_compartments():
    """Y at EPS = 0 is the prediction, computed in individual() from THETAs, ETAs, covariates
    and TIME; Y with that prediction replaced by f is the residual error."""
    source = translated(PRED).source
    assert "structure=" not in source and "p.TIME" in source
    m = module_of(PRED)
    model = m["model"]
    assert model.compartment_names == () and model.covariates == ("DOSE",)
    (t1, t2), (e1,) = model.theta_names, model.eta_names
    ip = model.individual(Namespace({t1: 1.0, t2: 0.5, e1: 0.2, "DOSE": 10.0, "TIME": 2.0}, "name"))
    assert float(ip["ypred"]) == pytest.approx(1.2 + 0.5 * 2 * 10)
    assert float(m["y"](3.0, None, Namespace({model.sigma_names[0]: 0.1}, "eps"))) == pytest.approx(3.1)
    # an ETA on the residual error is an individual parameter the error model reads
    eta_error = module_of(PRED.replace("+EPS(1)", "+EXP(ETA(1))*EPS(1)"))["model"]
    assert eta_error.error.individual_parameters == (e1,)


@pytest.mark.parametrize("change, fragments", [
    (("Y=BASE+THETA(2)*TIME*DOSE+EPS(1)", "Y=BASE+DOSE*EPS(1)"), ["$PRED (line 6)", "depends on DOSE"]),
    (("BASE=THETA(1)+ETA(1)", "BASE=THETA(1)+A(1)"), ["$PRED (line 5)", "no compartments"]),
    (("Y=BASE+THETA(2)*TIME*DOSE+EPS(1)", "Z=BASE+EPS(1)"), ["$PRED", "Y is never assigned"]),
    (("$PRED", "$SUBROUTINES ADVAN1\n$PRED"), ["$SUBROUTINES (line 4)", "with $PRED"]),
])
def test_pred_refusals_name_record_and_line(change, fragments):
    text = PRED.replace(*change)
    assert text != PRED
    refusal(text, *fragments)


def test_unknown_record_name():
    with pytest.raises(ControlStreamError, match=r"line 2: \$FOO is not an NM-TRAN record"):
        cs_of("$PROBLEM x\n$FOO\n")

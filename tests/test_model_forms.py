"""Model forms beyond a dosed compartment model: a model without compartments (NONMEM's
$PRED) against closed forms and against its import from a control stream."""

from __future__ import annotations

import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pkmix
from pkmix import nonmem

HERE = Path(__file__).parent / "data" / "nonmem"

# The imports are compared with their hand-written models under FOCE-I in the default
# suite; FO (the variance at eta = 0, one more compiled program per model) in the slow run.
# The linear model's closed-form check keeps FO in the default suite.
FO_SLOW = pytest.param("fo", marks=pytest.mark.slow)


def _evaluate(model, data, method, params=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pkmix.DatasetWarning)
        return pkmix.evaluate(model, data, method=method, params=params, diagnostics=False)


def test_linear_model_without_structure_is_the_gaussian_marginal_likelihood():
    """y_ij = b0 + b1 TIME_ij + eta_i + e_ij is linear in eta, so FO's OFV is the exact
    -2 log-likelihood (without the 2 pi constants): sum_i log|V_i| + r_i' V_i^-1 r_i with
    V_i = sigma^2 I + omega 1 1'."""
    times = np.array([0.0, 1.0, 2.5, 4.0])
    ids = np.repeat([1, 2, 3], len(times))
    t = np.tile(times, 3)
    dv = np.array([1.1, 1.9, 3.6, 4.4, 0.2, 1.5, 2.4, 3.9, 1.8, 2.2, 4.1, 5.6])
    model = pkmix.Model(theta={"b0": 0.8, "b1": 1.1}, omega={"eta": 0.4}, sigma={"sd": 0.3},
                        individual=lambda p: {"mu": p.b0 + p.b1 * p.TIME + p.eta},
                        observe=lambda a, p: p.mu, error=pkmix.additive("sd"))
    assert model.compartment_names == ()
    frame = pd.DataFrame({"ID": ids, "TIME": t, "DV": dv})
    want = 0.0
    for i in (1, 2, 3):
        r = dv[ids == i] - (0.8 + 1.1 * times)
        v = 0.3**2 * np.eye(len(times)) + 0.4
        want += np.linalg.slogdet(v)[1] + r @ np.linalg.solve(v, r)
    assert _evaluate(model, frame, "fo").ofv == pytest.approx(want, abs=1e-8)
    # FOCE-I's Laplace approximation is exact too for a model linear in eta with constant variance.
    assert _evaluate(model, frame, "focei").ofv == pytest.approx(want, abs=1e-6)


def test_time_is_not_a_covariate_name():
    with pytest.raises(pkmix.ModelError, match="p.TIME"):
        pkmix.Model(theta={"b0": 1.0}, omega={"eta": 0.1}, sigma={"sd": 0.3}, covariates=["TIME"],
                    individual=lambda p: {"mu": p.b0 + p.eta}, observe=lambda a, p: p.mu,
                    error=pkmix.additive("sd"))


def emax_by_hand():
    """emax_pred.ctl written in pkmix by hand."""

    def individual(p):
        e0 = p.e0 * jnp.exp(p.eta_e0)
        emax = p.emax * jnp.exp(p.eta_emax)
        return {"ipred": e0 + emax * p.CONC / (p.ec50 + p.CONC) + p.slope * p.TIME}

    return pkmix.Model(
        theta={"e0": 10.0, "emax": 50.0, "ec50": 5.0, "slope": -0.1, "add": 0.5, "prop": 0.1},
        omega={"eta_e0": 0.09, "eta_emax": 0.04}, sigma={"eps": pkmix.Variance(1.0, fixed=True)},
        covariates=["CONC"], individual=individual, observe=lambda a, p: p.ipred,
        error=pkmix.eps_error(lambda f, p, eps: f + jnp.sqrt(p.add**2 + p.prop**2 * f**2) * eps.eps,
                              eps=["eps"], theta=["add", "prop"]))


@pytest.fixture(scope="module")
def emax_pred():
    return nonmem.load(HERE / "emax_pred.ctl")


@pytest.mark.parametrize("method", ["focei", FO_SLOW])
def test_pred_import_matches_the_hand_written_model(emax_pred, method):
    data = emax_pred.load_data()
    assert emax_pred.model.compartment_names == ()
    want = _evaluate(emax_by_hand(), pd.read_csv(HERE / "emax_pred.csv"), method).ofv
    assert np.isfinite(want)
    assert _evaluate(emax_pred.model, data, method).ofv == pytest.approx(want, abs=1e-8)


@pytest.mark.slow
def test_pred_import_fits(emax_pred):
    result = pkmix.fit(emax_pred.model, emax_pred.load_data(), covariance="none", diagnostics=False)
    assert result.converged, result.message
    by_hand = pkmix.fit(emax_by_hand(), pd.read_csv(HERE / "emax_pred.csv"), covariance="none",
                        diagnostics=False)
    assert result.ofv == pytest.approx(by_hand.ofv, abs=1e-3)


# ------------------------------------------------------------ an ETA on the residual error


def pheno_eta_error_by_hand():
    """pheno_eta_error.ctl written in pkmix by hand: the proportional SD THETA(4) scaled by
    EXP(ETA(3)), an individual parameter the error model reads."""

    def individual(p):
        tvv = p.tv * p.WT * jnp.where(p.APGR < 5, 1 + p.tapgr, 1.0)
        return {"cl": p.tcl * p.WT * jnp.exp(p.eta_cl), "v": tvv * jnp.exp(p.eta_v),
                "sd_scale": jnp.exp(p.eta_sd)}

    return pkmix.Model(
        theta={"tcl": pkmix.Theta(0.00469307, lower=0), "tv": pkmix.Theta(1.00916, lower=0),
               "tapgr": pkmix.Theta(0.1, lower=-0.99), "prop": pkmix.Theta(0.115, lower=0)},
        omega={"eta_cl": 0.0309626, "eta_v": 0.031128, "eta_sd": 0.09},
        sigma={"eps": pkmix.Variance(1.0, fixed=True)}, covariates=["WT", "APGR"],
        individual=individual, structure=pkmix.one_compartment(), observe=lambda a, p: a.central / p.v,
        error=pkmix.eps_error(lambda f, p, eps: f + p.prop * f * p.sd_scale * eps.eps, eps=["eps"],
                              theta=["prop"], individual=["sd_scale"]))


def test_eta_on_the_residual_error_in_the_conditional_likelihood(pheno):
    """l(eta) of one subject at a given eta against numpy: sum log R + (y - f)^2 / R plus
    the eta prior, with R = (prop f exp(eta_sd))^2 (the residual SD moves with the eta)."""
    from pkmix._estimation.likelihood import Options, m2ll

    model = pheno_eta_error_by_hand()
    subject = pheno.batch(model.covariates).subject(0)
    values = model.initial_values()
    eta = jnp.array([0.1, -0.2, 0.3])
    omega = np.diag([0.0309626, 0.031128, 0.09])
    opts = Options(interaction=True, has_steady_state=False, covariate_rule="nonmem", has_infusions=False)
    got = float(m2ll(model, values, eta, subject, opts, jnp.asarray(np.linalg.inv(omega)),
                     np.linalg.slogdet(omega)[1]))
    f = np.asarray(model.subject_predict(values, eta, subject, has_steady_state=False, has_infusions=False))
    obs = np.asarray(subject.obs_mask & ~subject.blq)
    y = np.asarray(subject.dv)[obs]
    r = (0.115 * f[obs] * np.exp(0.3)) ** 2
    e = np.asarray(eta)
    want = np.sum(np.log(r) + (y - f[obs]) ** 2 / r) + e @ np.linalg.solve(omega, e) + np.linalg.slogdet(omega)[1]
    assert got == pytest.approx(want, rel=1e-12)


@pytest.fixture(scope="module")
def pheno_eta_error():
    return nonmem.load(HERE / "pheno_eta_error.ctl")


@pytest.mark.parametrize("method", ["focei", FO_SLOW])
def test_eta_in_error_import_matches_the_hand_written_model(pheno_eta_error, pheno, method):
    assert pheno_eta_error.model.error.individual_parameters == ("eta3",)
    want = _evaluate(pheno_eta_error_by_hand(), pheno, method).ofv
    assert np.isfinite(want)
    assert _evaluate(pheno_eta_error.model, pheno_eta_error.load_data(), method).ofv == pytest.approx(want, abs=1e-8)


@pytest.mark.slow
def test_eta_in_error_import_fits(pheno_eta_error):
    result = pkmix.fit(pheno_eta_error.model, pheno_eta_error.load_data(), covariance="none", diagnostics=False)
    assert result.converged, result.message
    assert np.isfinite(result.ofv)


# ------------------------------------------------------------------ $SIGMA BLOCK(2)
S11, S21, S22 = 0.01, 0.005, 4.0  # pheno_sigma_block.ctl's $SIGMA BLOCK(2)


@pytest.fixture(scope="module")
def pheno_sigma_block():
    return nonmem.load(HERE / "pheno_sigma_block.ctl")


def test_correlated_eps_variance_is_g_sigma_g(pheno_sigma_block):
    """Y = F + F*EPS(1) + EPS(2): g = (F, 1), so R = F^2 SIGMA11 + 2 F SIGMA21 + SIGMA22."""
    model = pheno_sigma_block.model
    rho = model.initial_values().theta[model.theta_names.index("rho_eps1_eps2")]
    assert float(rho) == pytest.approx(S21 / np.sqrt(S11 * S22))
    f = jnp.array([0.5, 10.0, 30.0])
    want = f**2 * S11 + 2 * f * S21 + S22
    np.testing.assert_allclose(model.residual_variance(model.initial_values(), f), want, rtol=1e-12)


@pytest.mark.parametrize("method", ["focei", FO_SLOW])
def test_sigma_block_import_matches_the_variance_written_out(pheno_sigma_block, pheno, method):
    """The imported model against a hand-written one whose residual SD is
    sqrt(s11 F^2 + 2 s21 F + s22) with s11, s21, s22 thetas and one EPS of variance 1."""

    def individual(p):
        return {"cl": p.tcl * p.WT * jnp.exp(p.eta_cl), "v": p.tv * p.WT * jnp.exp(p.eta_v)}

    by_hand = pkmix.Model(
        theta={"tcl": 0.0047, "tv": 1.0, "s11": S11, "s21": S21, "s22": S22},
        omega={"eta_cl": 0.03, "eta_v": 0.03}, sigma={"eps": pkmix.Variance(1.0, fixed=True)},
        covariates=["WT"], individual=individual, structure=pkmix.one_compartment(),
        observe=lambda a, p: a.central / p.v,
        error=pkmix.eps_error(lambda f, p, eps: f + jnp.sqrt(p.s11 * f**2 + 2 * p.s21 * f + p.s22) * eps.eps,
                              eps=["eps"], theta=["s11", "s21", "s22"]))
    want = _evaluate(by_hand, pheno, method).ofv
    assert np.isfinite(want)
    assert _evaluate(pheno_sigma_block.model, pheno_sigma_block.load_data(), method).ofv == pytest.approx(
        want, abs=1e-8)


# ------------------------------------------------------- $OMEGA BLOCK(2) SAME (IOV blocks)


def _iov_stream(tmp_path, name, omega, picks=None):
    """theo_iov_block.ctl with its IOV $OMEGA records replaced (and its $PK picks, ``{old:
    new}``), beside a copy of its data."""
    text = (HERE / "theo_iov_block.ctl").read_text()
    block = "$OMEGA BLOCK(2) 0.02 0.005 0.01 ; IOV CL, V\n$OMEGA BLOCK(2) SAME\n"
    assert block in text
    text = text.replace(block, omega)
    for old, new in (picks or {}).items():
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "theo_occ.csv").write_text((HERE / "theo_occ.csv").read_text())
    path = tmp_path / name
    path.write_text(text)
    return nonmem.load(path)


@pytest.mark.parametrize("method", ["focei", FO_SLOW])
def test_iov_block_without_covariance_is_two_iov_etas(tmp_path, method):
    """A BLOCK(2) SAME is read as OMEGA = L L' (L lower triangular, thetas) over independent
    IOV etas of variance 1: with a zero covariance it is the same model as two BLOCK(1) SAME
    groups (pkmix.IOV with the variances 0.02 and 0.01; CL's etas 4 and 5, V's 6 and 7)."""
    block = _iov_stream(tmp_path, "block.ctl", "$OMEGA BLOCK(2) 0.02 0 0.01\n$OMEGA BLOCK(2) SAME\n")
    diagonal = _iov_stream(
        tmp_path, "diagonal.ctl",
        "$OMEGA BLOCK(1) 0.02\n$OMEGA BLOCK(1) SAME\n$OMEGA BLOCK(1) 0.01\n$OMEGA BLOCK(1) SAME\n",
        {"IOVV = ETA(5)": "IOVV = ETA(X)", "IOVCL = ETA(6)": "IOVCL = ETA(5)", "IOVV = ETA(X)": "IOVV = ETA(6)"})
    assert block.model.iov_names == ("kappa_cl", "kappa_v")
    values = block.model.initial_values().theta
    chol = {n: float(values[block.model.theta_names.index(n)]) for n in ("l_kappa_cl", "l_kappa_cl_2", "l_kappa_v")}
    assert chol == pytest.approx({"l_kappa_cl": np.sqrt(0.02), "l_kappa_cl_2": 0.0, "l_kappa_v": np.sqrt(0.01)})
    want = _evaluate(diagonal.model, diagonal.load_data(), method).ofv
    assert _evaluate(block.model, block.load_data(), method).ofv == pytest.approx(want, abs=1e-8)


def test_iov_block_cholesky_factor():
    """OMEGA = L L' for the BLOCK(2) 0.02 0.005 0.01: l11 = sqrt(0.02), l21 = 0.005/l11,
    l22 = sqrt(0.01 - l21^2)."""
    model = nonmem.load(HERE / "theo_iov_block.ctl").model
    theta = dict(zip(model.theta_names, np.asarray(model.initial_values().theta)))
    lower = np.array([[theta["l_kappa_cl"], 0.0], [theta["l_kappa_cl_2"], theta["l_kappa_v"]]])
    np.testing.assert_allclose(lower @ lower.T, [[0.02, 0.005], [0.005, 0.01]], rtol=1e-10)


def _iov3_stream(tmp_path, name, omega, picks):
    """theo_iov_block.ctl with inter-occasion etas on KA, CL and V: ``omega`` the IOV $OMEGA
    records, ``picks`` the eta numbers (KA, CL, V) of occasion 1 and of occasion 2."""
    text = (HERE / "theo_iov_block.ctl").read_text()
    (ka1, cl1, v1), (ka2, cl2, v2) = picks
    pk_old = text[text.index("IOVCL = 0"):text.index("KA = EXP")]
    pk_new = (f"IOVKA = 0\nIOVCL = 0\nIOVV = 0\nIF (OCC.EQ.1) THEN\n  IOVKA = ETA({ka1})\n  IOVCL = ETA({cl1})\n"
              f"  IOVV = ETA({v1})\nENDIF\nIF (OCC.EQ.2) THEN\n  IOVKA = ETA({ka2})\n  IOVCL = ETA({cl2})\n"
              f"  IOVV = ETA({v2})\nENDIF\n")
    text = text.replace(pk_old, pk_new).replace("KA = EXP(THETA(1) + ETA(1))", "KA = EXP(THETA(1) + ETA(1) + IOVKA)")
    text = text.replace("$OMEGA BLOCK(2) 0.02 0.005 0.01 ; IOV CL, V\n$OMEGA BLOCK(2) SAME\n", omega)
    (tmp_path / "theo_occ.csv").write_text((HERE / "theo_occ.csv").read_text())
    path = tmp_path / name
    path.write_text(text)
    return nonmem.load(path)


def test_iov_block3_without_covariance_is_three_iov_etas(tmp_path):
    """BLOCK(3) SAME, read as OMEGA = L L' over three IOV etas of variance 1: with zero
    covariances it is the model of three BLOCK(1) SAME groups (FOCE-I)."""
    block = _iov3_stream(tmp_path, "block3.ctl", "$OMEGA BLOCK(3) 0.03 0 0.02 0 0 0.01\n$OMEGA BLOCK(3) SAME\n",
                         ((4, 5, 6), (7, 8, 9)))
    diagonal = _iov3_stream(tmp_path, "diagonal3.ctl",
                            "$OMEGA BLOCK(1) 0.03\n$OMEGA BLOCK(1) SAME\n$OMEGA BLOCK(1) 0.02\n$OMEGA BLOCK(1) SAME\n"
                            "$OMEGA BLOCK(1) 0.01\n$OMEGA BLOCK(1) SAME\n", ((4, 6, 8), (5, 7, 9)))
    assert block.model.iov_names == ("kappa_ka", "kappa_cl", "kappa_v")
    want = _evaluate(diagonal.model, diagonal.load_data(), "focei").ofv
    assert _evaluate(block.model, block.load_data(), "focei").ofv == pytest.approx(want, abs=1e-8)


def test_iov_block3_cholesky_factor(tmp_path):
    """L's elements, named by column (l_<eta> its diagonal, l_<eta>_<row> below it), give
    back a BLOCK(3) with nonzero covariances: L L' = OMEGA."""
    omega = np.array([[0.03, 0.004, 0.002], [0.004, 0.02, 0.003], [0.002, 0.003, 0.01]])
    values = " ".join(f"{omega[i, j]:g}" for i in range(3) for j in range(i + 1))
    model = _iov3_stream(tmp_path, "block3.ctl", f"$OMEGA BLOCK(3) {values}\n$OMEGA BLOCK(3) SAME\n",
                         ((4, 5, 6), (7, 8, 9))).model
    t = dict(zip(model.theta_names, np.asarray(model.initial_values().theta)))
    lower = np.array([[t["l_kappa_ka"], 0.0, 0.0],
                      [t["l_kappa_ka_2"], t["l_kappa_cl"], 0.0],
                      [t["l_kappa_ka_3"], t["l_kappa_cl_3"], t["l_kappa_v"]]])
    np.testing.assert_allclose(lower @ lower.T, omega, rtol=1e-10)

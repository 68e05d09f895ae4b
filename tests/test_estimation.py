"""Estimation: gradients against finite differences, the theophylline fit against
nlmixr2, no recompilation, results contract, and clear failures.

Each compiled program costs seconds to tens of seconds on a 2-core CPU, so fixtures
are module-scoped and the small Wang (2007) dataset carries the derivative checks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pkmix
from pkmix import _compile
from pkmix._estimation.fit import likelihood_options, transform_for
from pkmix._estimation.likelihood import m2ll
from pkmix._estimation.methods import get_method
from pkmix._estimation.objective import gradient_program, solve_modes
from pkmix._predict import bind, parameter_values

from conftest import assert_close, oral_one_compartment

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


def load_example(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / name / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.model


def wang_free(structure="closed"):
    """Wang's model with every parameter free (proportional error)."""
    if structure == "closed":
        struct = pkmix.one_compartment()
    else:
        struct = pkmix.ODE(["central"], lambda t, a, p: {"central": -p.cl / p.v * a.central})
    return pkmix.Model(
        name=f"wang_free_{structure}",
        theta={"TVK": pkmix.Theta(0.45, lower=0)},
        omega={"ETA1": 0.05},
        sigma={"SIG": pkmix.Variance(0.12)},
        individual=lambda p: {"cl": p.TVK * jnp.exp(p.ETA1), "v": 1.0},
        structure=struct,
        observe=lambda a, p: a.central / p.v,
        error=pkmix.proportional("SIG"),
    )


def gradient_program_for(model, data, method, inner_tol=1e-14):
    """gradient_program compiled for ``model`` on ``data``: (evaluate(x, etas), x0, zero
    etas), x0 being the initial values on the unconstrained scale + 0.1."""
    method = get_method(method)
    dataset, batch = bind(model, data)
    transform = transform_for(model)
    base = model.initial_values()
    x = transform.to_vector(base, base) + 0.1
    etas0 = jnp.zeros((dataset.n_subjects, model.n_eta_total(batch.n_occasions)))
    executable, _ = _compile.compiled(gradient_program, (model, method, likelihood_options(method, batch, "nonmem"),
                                                         transform, 100, inner_tol), x, base, etas0, batch)
    return (lambda z, etas: executable(jnp.asarray(z), base, etas, batch)), x, etas0


def ofv_and_gradient(model, data, method):
    """(OFV, gradient) at z from zero etas, and the x0 of ``gradient_program_for``."""
    program, x, etas0 = gradient_program_for(model, data, method)

    def at(z):
        ev = program(z, etas0)
        return float(jnp.sum(ev.ofvs)), np.asarray(jnp.sum(ev.jac, axis=0))

    return at, x


@pytest.fixture(scope="module")
def wang():
    return pkmix.read_nonmem(DATA / "wang2007.csv")


def assert_gradient_matches_central_differences(model, data, method, h=1e-5):
    """The OFV's exact gradient on the unconstrained scale against central differences
    of the OFV with re-solved modes, every coordinate (rel 1e-4, abs 1e-6)."""
    at, x = ofv_and_gradient(model, data, method)
    _, grad = at(x)
    for k in range(x.shape[0]):
        e = np.zeros(x.shape[0])
        e[k] = h
        fd = (at(x + e)[0] - at(x - e)[0]) / (2 * h)
        assert grad[k] == pytest.approx(fd, rel=1e-4, abs=1e-6), (method, k)


@pytest.mark.parametrize("method", ["fo", "foce", "focei", "laplace"])
def test_gradient_matches_central_differences(wang, method):
    assert_gradient_matches_central_differences(wang_free(), wang, method)


def test_mode_derivative_matches_central_differences(wang):
    """d eta^/dx, from which the optimiser predicts the modes at its next trial point
    (outer.OuterState.etas_at), against central differences of re-solved modes."""
    at, x, etas0 = gradient_program_for(wang_free(), wang, "focei")
    ev = at(x, etas0)
    # Modes are accurate to ~1e-7 (Newton decrement 1e-14), hence a larger step than for
    # OFV gradients: truncation error O(h^2) ~ 1e-6, noise 1e-7 / h ~ 1e-4.
    h = 1e-3
    for k in range(x.shape[0]):
        e = np.zeros(x.shape[0])
        e[k] = h
        fd = (at(x + e, ev.etas).etas - at(x - e, ev.etas).etas) / (2 * h)
        np.testing.assert_allclose(ev.eta_slope[:, :, k], fd, rtol=1e-3, atol=1e-6)


def theo_block_iov_combined():
    """Theophylline with every kind of eta and epsilon at once: a block OMEGA (CL, V),
    IOV on CL over two occasions (five etas per subject) and a combined error model;
    and the data with an OCC column."""
    model = pkmix.Model(
        name="theo_block_iov_combined", theta={"tka": 0.45, "tcl": 1.0, "tv": 3.45},
        omega=[{"eta_ka": 0.6}, pkmix.Block(["eta_cl", "eta_v"], [0.1, 0.01, 0.05])],
        iov=pkmix.IOV(occasion="OCC", kappa_cl=0.02), sigma={"add_sd": 0.5, "prop_sd": 0.05},
        individual=lambda p: {"ka": jnp.exp(p.tka + p.eta_ka), "cl": jnp.exp(p.tcl + p.eta_cl + p.kappa_cl),
                              "v": jnp.exp(p.tv + p.eta_v)},
        structure=pkmix.one_compartment(depot=True), observe=lambda a, p: a.central / p.v,
        error=pkmix.combined("add_sd", "prop_sd"))
    frame = pd.read_csv(DATA / "theo_sd.csv")
    return model, frame.assign(OCC=np.where(frame["TIME"] <= 5.0, 1, 2))


# FOCE-I in the default suite; FO and FOCE (each ~25 s of compiling on 2 cores, the same
# chain rule through the mode with fewer terms) in the slow one. Their gradients on Wang's
# data stay in the default suite (test_gradient_matches_central_differences).
@pytest.mark.parametrize("method", [pytest.param("fo", marks=pytest.mark.slow),
                                    pytest.param("foce", marks=pytest.mark.slow), "focei"])
def test_gradient_and_mode_derivative_with_several_etas(method):
    """The exact gradient (built from one second-order pass over the predictions for
    these methods: objective._jacobian_from_second_order_pieces) and d eta^/dx against
    central differences, with five etas per subject, correlated ones among them."""
    model, data = theo_block_iov_combined()
    at, x, etas0 = gradient_program_for(model, data, method)
    ev = at(x, etas0)
    grad = np.asarray(jnp.sum(ev.jac, axis=0))
    assert np.abs(grad).min() > 1e-3  # every parameter moves the OFV here
    for k in range(x.shape[0]):
        e = np.zeros(x.shape[0])
        e[k] = 1e-5
        fd = (float(jnp.sum(at(x + e, ev.etas).ofvs)) - float(jnp.sum(at(x - e, ev.etas).ofvs))) / 2e-5
        assert grad[k] == pytest.approx(fd, rel=1e-4, abs=1e-6), (method, k)
        # The modes are accurate to about 1e-8 here, so differences of step 1e-3 carry
        # noise of about 1e-5 (it grows as the step shrinks): compare to 0.1 % of the
        # largest derivative of the column.
        e[k] = 1e-3
        fd_modes = (at(x + e, ev.etas).etas - at(x - e, ev.etas).etas) / 2e-3
        slope = np.asarray(ev.eta_slope[:, :, k])
        np.testing.assert_allclose(slope, fd_modes, rtol=0, atol=1e-3 * np.abs(slope).max() + 1e-9)


@pytest.mark.parametrize("method", ["foce", "focei"])
def test_ofv_error_is_second_order_in_the_mode_error(wang, method):
    """FOCE's OFV is not stationary in eta, so a mode solved to a loose tolerance would
    show in it to first order (1.6e-4 for FOCE-I here at 1e-6 without the final exact
    Newton step of inner.implicit_mode); with that step the OFV agrees to 1e-7."""
    loose, x, etas0 = gradient_program_for(wang_free(), wang, method, 1e-6)
    tight, _, _ = gradient_program_for(wang_free(), wang, method)
    assert float(jnp.sum(loose(x, etas0).ofvs)) == pytest.approx(float(jnp.sum(tight(x, etas0).ofvs)), abs=1e-7)


def test_ode_gradient_and_ofv_match_closed_form(wang):
    at_closed, x = ofv_and_gradient(wang_free("closed"), wang, "focei")
    at_ode, _ = ofv_and_gradient(wang_free("ode"), wang, "focei")
    v_closed, g_closed = at_closed(x)
    v_ode, g_ode = at_ode(x)
    assert v_ode == pytest.approx(v_closed, abs=1e-3)
    np.testing.assert_allclose(g_ode, g_closed, rtol=1e-5, atol=1e-6)
    h = 1e-5
    for k in range(x.shape[0]):
        e = np.zeros(x.shape[0])
        e[k] = h
        fd = (at_ode(x + e)[0] - at_ode(x - e)[0]) / (2 * h)
        assert g_ode[k] == pytest.approx(fd, rel=1e-4, abs=1e-6)


@pytest.fixture(scope="module")
def theo_fit():
    model = load_example("theophylline")
    return model, pkmix.fit(model, DATA / "theo_sd.csv", method="focei", progress=False, npde=True, npde_samples=200)


def test_theophylline_focei_matches_nlmixr2(theo_fit):
    _, r = theo_fit
    assert r.converged, r.message
    assert abs(r.ofv - 116.804) < 0.05
    assert abs(r.minus2ll - 359.404) < 0.05
    nlmixr2 = {"tka": 0.4663, "tcl": 1.012, "tv": 3.460}
    for name, ref in nlmixr2.items():
        assert r.theta[name] == pytest.approx(ref, rel=0.01), name
    assert r.sigma["add_sd"] == pytest.approx(0.6947, rel=0.01)
    omegas = {"eta_ka": 0.3988, "eta_cl": 0.0694, "eta_v": 0.0191}
    for name, ref in omegas.items():
        assert r.omega.loc[name, name] == pytest.approx(ref, rel=0.05), name
    # Sandwich SEs of the thetas against nlmixr2's (a looser check: nlmixr2 reports its
    # own covariance form).
    assert r.se["tcl"] == pytest.approx(0.0837, rel=0.25)
    assert r.se["tv"] == pytest.approx(0.0465, rel=0.25)


def test_second_fit_compiles_nothing(theo_fit):
    model, first = theo_fit
    before = _compile.STATS["compiles"]
    again = pkmix.fit(model, DATA / "theo_sd.csv", method="focei", progress=False, npde=True, npde_samples=200)
    assert _compile.STATS["compiles"] == before
    assert again.timing["compile_s"] == 0.0
    assert again.ofv == pytest.approx(first.ofv, abs=1e-9)


def test_results_contract(theo_fit, tmp_path):
    _, r = theo_fit
    d = json.loads(r.to_json(tmp_path / "results.json"))
    for key in ("pkmix_version", "model", "method", "n_subjects", "n_observations", "ofv", "minus2ll", "aic",
                "bic", "converged", "message", "iterations", "theta", "omega", "sigma", "se", "rse_percent",
                "shrinkage_percent", "timing", "device"):
        assert key in d, key
    assert set(d["timing"]) >= {"total_s", "compile_s", "estimation_s", "covariance_s"}
    assert d["omega"]["names"] == ["eta_ka", "eta_cl", "eta_v"]
    assert "omega(eta_cl,eta_cl)" in d["se"] and "add_sd" in d["se"]
    assert d["aic"] == pytest.approx(d["minus2ll"] + 2 * 7)
    table = r.table()
    assert list(table.columns[:14]) == ["ID", "TIME", "DV", "EVID", "MDV", "BLQ", "PRED", "IPRED", "RES", "IRES",
                                        "WRES", "CWRES", "IWRES", "NPDE"]
    obs = table[table.EVID == 0]
    assert obs[["PRED", "IPRED", "CWRES", "IWRES", "NPDE"]].notna().all().all()
    # CWRES of a well-specified fit: mean near 0, SD near 1.
    assert abs(obs.CWRES.mean()) < 0.3 and 0.6 < obs.CWRES.std() < 1.4
    text = str(r)
    assert "OFV" in text and "tka" in text and "converged" in text


def test_bad_start_is_reported_not_hidden(theo_fit):
    model, _ = theo_fit
    r = pkmix.fit(model, DATA / "theo_sd.csv", params={"tv": 30.0, "tcl": -20.0}, max_iter=3,
                  progress=False, covariance="none", diagnostics=False)
    assert not r.converged
    assert "iteration limit" in r.message or "line search" in r.message
    assert all(math.isfinite(v) for v in r.theta.values())


def test_blq_needs_a_conditional_method(wang):
    frame = wang.to_frame()
    frame["LLOQ"] = 4.0
    model = wang_free()
    with pytest.raises(pkmix.ModelError, match="M3"):
        pkmix.evaluate(model, frame, method="foce")


def test_bad_data_fails_clearly(theo_fit, tmp_path):
    model, _ = theo_fit
    frame = pd.read_csv(DATA / "theo_sd.csv").astype(object)
    frame.loc[3, "TIME"] = -1.0
    frame.loc[5, "DV"] = "abc"
    with pytest.raises(pkmix.DatasetError) as err:
        pkmix.fit(model, frame, progress=False)
    text = str(err.value)
    assert "TIME" in text and "DV" in text


# Subjects simulated from the model below (1-compartment oral, proportional error) whose
# levels fall far faster than typical, with their modes and the inner evaluations allowed.
FAR_FROM_TYPICAL = {
    # CL ~4x typical, five decades in 36 h: Newton on the Gauss-Newton matrix alone took
    # 113 evaluations from eta = 0 (31 with the secant correction). The limit was then
    # 100: the mode was reported unconverged and a batch fit of its replicate failed with
    # a non-finite gradient at the start.
    "five decades": ([3.230189, 4.548553, 5.185702, 2.645324, 1.417073, 0.8981843, 0.4331531, 0.05544344,
                      9.221301e-05, 1.568631e-07], [-0.18552, 0.6508, -0.70798], 40),
    # Eleven decades: the prediction runs decades above the late levels, where l grows
    # only like log f; Newton steps of 0.005 in eta_cl took 219 evaluations (the limit is
    # 200: one replicate in 200 of benchmarks/bench_batch.py's failed at its initial
    # estimates) and 33 with the inner line search's step expansion.
    "eleven decades": ([4.124052, 4.479073, 3.504377, 2.167157, 0.8397124, 0.2359906, 0.05063381, 0.003277555,
                        5.572605e-07, 8.174822e-11], [0.38578, 1.04161, -0.63761], 45),
    # Not far at all, but the third pass's secant estimate left M + S positive definite
    # and nearly singular: a "Newton" step of length ~1e7, every trial along it failed
    # and the solve stalled after 10 evaluations, so the replicate's fit failed at its
    # initial estimates (replicate 2862 of bench_batch.py's 1-cmt design, seed 1: 2 in
    # 10,000). 13 evaluations with inner.CORRECTED_REACH (checked: unconverged without it,
    # with these levels to the last digit).
    "secant step too long": ([1.515157133269217, 2.1056212520376114, 2.255178091605727, 3.4850223217621124,
                              2.306533567494704, 2.5570565196865274, 2.2650698022568747, 1.3564371289145891,
                              0.4982381916555338, 0.1053150303428783], [-0.17458, -0.08996, 0.20473], 20),
}


@pytest.fixture(scope="module")
def far_model():
    # One model object for both cases: same-shaped data compile nothing the second time.
    return oral_one_compartment({"tka": 0.0, "tcl": 1.0, "tv": 3.0},
                                {"eta_ka": 0.2, "eta_cl": 0.1, "eta_v": 0.1}, {"prop_sd": 0.15},
                                pkmix.proportional("prop_sd"))


@pytest.mark.parametrize("case", sorted(FAR_FROM_TYPICAL))
def test_subject_far_from_typical_reaches_its_mode(case, far_model):
    levels, mode, evaluations = FAR_FROM_TYPICAL[case]
    model = far_model
    times = [0.5, 1, 2, 3, 4, 6, 8, 12, 24, 36]
    frame = pd.DataFrame([dict(ID=1, TIME=0.0, DV=0.0, AMT=100.0, EVID=1, MDV=1, CMT=1)]
                         + [dict(ID=1, TIME=t, DV=y, AMT=0.0, EVID=0, MDV=0, CMT=2) for t, y in zip(times, levels)])
    r = pkmix.fit(model, frame, max_iter=0, covariance="none", diagnostics=False, progress=False)
    assert np.isfinite(r.ofv)
    assert "did not converge" not in r.message
    etas = r.etas[["eta_ka", "eta_cl", "eta_v"]].to_numpy()[0]
    np.testing.assert_allclose(etas, mode, atol=1e-4)
    # Under vmap every subject of a fit waits for the slowest: the evaluations count.
    method = get_method("focei")
    _, batch = bind(model, frame)
    opts = likelihood_options(method, batch, "nonmem")
    values = parameter_values(model, None)
    modes = solve_modes(model, method, opts, values, jnp.zeros((1, 3)), batch)
    assert bool(modes.converged[0]) and int(modes.iterations[0]) <= evaluations
    np.testing.assert_allclose(modes.eta[0], etas, atol=1e-9)
    # A mode: l's exact Hessian (reverse mode, not the solver's matrices) is positive
    # definite there and the Newton decrement g' H^-1 g (OFV units) is negligible.
    subject = jax.tree_util.tree_map(lambda a: a[0], batch)
    omega_inv = jnp.linalg.inv(model.omega_full(values, batch.n_occasions))

    def l(eta):
        return m2ll(model, values, eta, subject, opts, omega_inv, 0.0)

    g, H = (np.asarray(jax.jit(d(l))(modes.eta[0])) for d in (jax.grad, jax.hessian))
    assert np.all(np.linalg.eigvalsh(H) > 0)
    assert g @ np.linalg.solve(H, g) < 1e-10


class _Simulated1Cmt:
    """An 80-subject 1-cmt oral dataset simulated from the model, and the compiled fit
    loop (``engine.fit_program``, without the covariance step) with given settings,
    started from the true values; ``run(x, etas, 0)`` evaluates at x."""

    def __init__(self):
        from pkmix._simulate import Dose, TrialDesign, simulate

        self.model = oral_one_compartment({"tka": 0.2, "tcl": 1.1, "tv": 3.4},
                                          {"eta_ka": 0.2, "eta_cl": 0.1, "eta_v": 0.1}, {"prop_sd": 0.15},
                                          pkmix.proportional("prop_sd"))
        design = TrialDesign(n_subjects=80, doses=[Dose(100.0)], times=(0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0))
        data = simulate(self.model, design, n=1, seed=5, output="arrays").dataset_of(0)
        self.method = get_method("focei")
        _, self.batch = bind(self.model, data)
        self.opts = likelihood_options(self.method, self.batch, "nonmem")
        self.transform = transform_for(self.model)
        self.base = parameter_values(self.model, None)
        self.x0 = self.transform.to_vector(self.base, self.base)
        self.etas0 = jnp.zeros((self.batch.time.shape[0], self.model.n_eta_total(self.batch.n_occasions)))

    def program(self, settings):
        from pkmix._estimation.engine import fit_program

        return jax.jit(lambda x, e, limit: fit_program(
            self.model, self.method, self.opts, settings, x, self.base, e, self.batch, limit, False))


@pytest.fixture(scope="module")
def simulated_1cmt():
    from pkmix._estimation.settings import FitSettings

    case = _Simulated1Cmt()
    run = case.program(FitSettings())
    return case, run, run(case.x0, case.etas0, 500)


@pytest.mark.slow  # compiles its own fit program (not the cached one) and runs it 2p+1 times: ~46 s
def test_information_metric_models_the_ofv_hessian(simulated_1cmt):
    """The outer L-BFGS runs on the scale of ``outer.information_metric`` (half the
    subjects' centred gradient outer products). At the optimum of data simulated from
    the model that metric agrees with the OFV's Hessian (central differences of the exact
    gradient) within a factor of 2 in every direction (measured 0.66 to 1.69), which is
    why it helps; and the fit, started from the true values, needs few iterations
    (measured 9; plain L-BFGS 23: the slow test below)."""
    from pkmix._estimation import outer
    from pkmix._estimation.settings import RESULTS

    _, run, fit = simulated_1cmt
    assert int(fit.status) == RESULTS.gradient, RESULTS(int(fit.status)).message
    assert int(fit.iterations) <= 15
    x = np.asarray(fit.x)
    p = x.size
    hessian = np.zeros((p, p))
    for j in range(p):
        h = 1e-4 * max(1.0, abs(x[j]))
        step = np.eye(p)[j] * h
        hessian[:, j] = (np.asarray(run(x + step, fit.etas, 0).grad) - np.asarray(run(x - step, fit.etas, 0).grad)) / (
            2 * h)
    L, estimated = outer.information_metric(run(x, fit.etas, 0).jac)
    assert bool(estimated)
    L_inv = np.linalg.inv(np.asarray(L))
    ratios = np.linalg.eigvalsh(L_inv @ (0.5 * (hessian + hessian.T)) @ L_inv.T)
    assert 0.5 < ratios.min() and ratios.max() < 2.0, ratios


@pytest.mark.slow
def test_preconditioned_fit_reaches_the_plain_optimum_in_fewer_iterations(simulated_1cmt):
    """With the metric the fit reaches the optimum plain L-BFGS reaches (OFV to 1e-6,
    estimates to 1e-4 on the unconstrained scale) in fewer than half the iterations
    (measured: 9 against 23)."""
    from pkmix._estimation.settings import RESULTS, FitSettings

    case, _, fit = simulated_1cmt
    plain = case.program(FitSettings(precondition=False))(case.x0, case.etas0, 500)
    assert int(plain.status) in (RESULTS.gradient, RESULTS.no_progress)
    assert abs(float(np.sum(fit.ofvs)) - float(np.sum(plain.ofvs))) < 1e-6
    assert_close(fit.x, plain.x, rtol=0, atol=1e-4, what="estimates")
    assert 2 * int(fit.iterations) < int(plain.iterations)

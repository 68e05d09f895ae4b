"""SAEM (``method="saem"``): stochastic approximation expectation-maximisation
(Delyon, Lavielle & Moulines 1999; Kuhn & Lavielle 2005), as Monolix runs it.

Each iteration k of one compiled program (a ``lax.scan`` over all iterations):

* **E-step**: a few Metropolis-Hastings steps over every subject's etas (vmapped over
  subjects and chains), the kernels of Monolix: proposals from the prior N(0, OMEGA)
  (independent sampler), a random walk on all etas (step s * chol(OMEGA) z) and a
  component-wise random walk (step s_c sqrt(OMEGA_cc) z). The step sizes adapt to an
  acceptance rate of 0.4 during the exploratory phase and are frozen after it. The
  target is exp(-l(eta)/2), l = ``likelihood.m2ll`` (the conditional -2 log density with
  the eta prior): nothing else of the model is used, so any likelihood ``m2ll`` covers
  (Gaussian, M3 BLQ records, ...) is sampled the same way.
* **Stochastic approximation** with step gamma_k = 1 for the K1 exploratory
  iterations, then 1/(k - K1 + 1) for the K2 smoothing ones (after a short burn-in of
  the chains without M-step).
* **M-step**.
  - Mu-referenced etas (found numerically, ``mu_references``: a free theta t and an eta
    e that the predictions see only through t + e, or log t + e, as in
    ``exp(tcl + eta_cl)`` or ``THETA1 * WT * exp(ETA1)``) are sampled in the centred
    parameterisation psi = u(t) + eta: their thetas are the SA of the mean of psi in
    closed form, and the chains are shifted by the change of u so the individual
    parameters stay where they were. (Without centring, an EM step for t given the
    etas hardly moves t when the data determine t + eta well: the convergence rate is
    the fraction of information the prior holds.)
  - OMEGA = SA(mean psi psi') - mu mu' (mu zero for the etas without a theta), with
    the model's structure: elements outside its blocks zero, fixed blocks kept. During
    the annealing iterations a variance may fall at most by the factor ``annealing``
    an iteration (the block's correlations kept), so early iterations explore widely.
  - Every other free theta (covariate effects, "fixed effects without etas") and the
    residual parameters: a few damped Newton steps (forward-over-forward Hessian) on
    the complete-data -2 log-likelihood sum_i l_i(eta_i) at the current samples, from
    the previous estimate, on the unconstrained scale of ``ParameterTransform``; then
    the SA of that maximiser (saemix's rule for its error-model parameters). Generic
    models (``individual(p)`` is any function) therefore work without mu-referencing,
    but a non-mu-referenced theta inside a parameter with an eta converges slowly (the
    reason nlmixr2 and Monolix ask for mu-referenced models). While annealing, a
    residual parameter's unconstrained value falls at most by 1/2 log(1/annealing) an
    iteration (a sigma bounded below by 0 only: its variance at most by ``annealing``).

After SAEM (``fit_saem``): the etas' conditional modes (as after FOCE-I, so the
diagnostics are FOCE-I's), the OFV by importance sampling at the estimates
(``IMP``, with its Monte Carlo SE), and the standard errors from the information of an
objective at the estimates (default IMP's, by central differences of its exact
gradient as the fit's covariance step does: R, S, sandwich).
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..._linalg import cholesky
from ..._model.errors import ModelError
from ..._model.parameters import ParameterValues
from ..likelihood import likelihood_terms, m2ll, predictions
from .base import AbstractMethod
from .imp import IMP

# The MH kernels' proposal types.
PRIOR, RANDOM_WALK, COMPONENT = 0, 1, 2
TARGET_ACCEPTANCE = 0.4
ADAPTATION_RATE = 0.4
# The default number of chains gives at least this many subject-chains. Monolix's rule
# is 50; on phenobarbital (59 sparse subjects) one chain left the estimates' Monte Carlo
# error at 0.6 OFV units above the exact (AGQ) optimum, five chains at 0.16
# (docs/estimation_methods.md).
MIN_SUBJECT_CHAINS = 200
BURN_IN = 5
NO_OFV = ("method 'saem' is an estimation algorithm with no OFV of its own: use pkmix.fit(model, data, "
          "method='saem') (fit_batch does not run it); its OFV is importance sampling's, "
          "pkmix.evaluate(..., method='imp')")


class SAEM(AbstractMethod):
    """``method="saem"`` or ``SAEM(exploratory=300, smoothing=200, ...)``.

    Args:
        exploratory: K1, iterations with step 1.
        smoothing: K2, iterations with step 1/k.
        seed: the chains' random seed (a fit is reproducible given it).
        chains: chains per subject; default ceil(200 / subjects) (Monolix's rule has 50).
        kernel_steps: MH steps an iteration of each kernel: (prior proposals, random walk
            on all etas, component-wise random-walk sweeps).
        annealing: the factor by which a variance may shrink an iteration while annealing.
        annealing_iterations: how many iterations anneal (default: the exploratory ones).
        newton_steps: Newton steps of the M-step for the thetas without a mu-referenced
            eta and the residual parameters.
        imp: the importance sampling that gives the OFV (``IMP()``: 1024 draws, seed 0).
        information: the objective whose information gives the standard errors at the
            SAEM estimates ("imp" default, the reported OFV's; "focei", "laplace", ...).
    """

    name = "saem"
    interaction = True
    supports_blq = True
    supports_likelihood = True  # the E-step needs only m2ll

    def __init__(self, exploratory: int = 300, smoothing: int = 200, *, seed: int = 0, chains: int | None = None,
                 kernel_steps=(2, 2, 2), annealing: float = 0.95, annealing_iterations: int | None = None,
                 newton_steps: int = 3, imp: IMP | None = None, information: str = "imp"):
        def count(name, v, minimum):
            if isinstance(v, bool) or int(v) != v or int(v) < minimum:
                raise ValueError(f"method 'saem': {name} must be an integer >= {minimum}, got {v!r}")
            return int(v)

        self.exploratory = count("exploratory", exploratory, 1)
        self.smoothing = count("smoothing", smoothing, 0)
        self.seed = int(seed)
        self.chains = None if chains is None else count("chains", chains, 1)
        steps = tuple(kernel_steps)
        if len(steps) != 3:
            raise ValueError(f"method 'saem': kernel_steps must be 3 counts (prior, random walk, component-wise), "
                             f"got {kernel_steps!r}")
        self.kernel_steps = tuple(count("kernel_steps", s, 0) for s in steps)
        if sum(self.kernel_steps) == 0:
            raise ValueError("method 'saem': kernel_steps are all 0: the chains would never move")
        if not 0.0 < float(annealing) <= 1.0:
            raise ValueError(f"method 'saem': annealing must be in (0, 1], got {annealing!r}")
        self.annealing = float(annealing)
        self.annealing_iterations = (self.exploratory if annealing_iterations is None
                                     else count("annealing_iterations", annealing_iterations, 0))
        self.newton_steps = count("newton_steps", newton_steps, 1)
        self.imp = IMP() if imp is None else imp
        if not isinstance(self.imp, IMP):
            raise ValueError(f"method 'saem': imp must be a pkmix.IMP, got {type(self.imp).__name__}")
        if isinstance(information, SAEM) or str(information).lower() == "saem":
            raise ValueError("method 'saem': information must be a method with an OFV ('imp', 'focei', ...)")
        self._information = information

    @property
    def information(self) -> AbstractMethod:
        """The method whose OFV's information gives the standard errors."""
        from . import get_method

        return get_method(self._information)

    def _key(self):
        return (self.exploratory, self.smoothing, self.seed, self.chains, self.kernel_steps, self.annealing,
                self.annealing_iterations, self.newton_steps, repr(self.imp), repr(self.information))

    def __repr__(self):  # part of the compiled programs' cache key
        return (f"SAEM(exploratory={self.exploratory}, smoothing={self.smoothing}, seed={self.seed}, "
                f"chains={self.chains}, kernel_steps={self.kernel_steps}, annealing={self.annealing:g}, "
                f"annealing_iterations={self.annealing_iterations}, newton_steps={self.newton_steps}, "
                f"imp={self.imp!r}, information={self.information!r})")

    def __eq__(self, other):
        return type(other) is type(self) and other._key() == self._key()

    def __hash__(self):
        return hash((type(self).__name__,) + self._key())

    def compiled(self) -> "SAEM":
        """The settings compiled into the SAEM program, its cache key: the seed is a run-time
        key, the chains' count is in the program's layout, and IMP and the information
        method run after it."""
        return SAEM(self.exploratory, self.smoothing, kernel_steps=self.kernel_steps, annealing=self.annealing,
                    annealing_iterations=self.annealing_iterations, newton_steps=self.newton_steps)

    @property
    def iterations(self) -> int:
        return BURN_IN + self.exploratory + self.smoothing

    def check_etas(self, n_eta: int) -> None:
        # Called where evaluate checks a method against the model: SAEM has no OFV of its
        # own, only fit runs it.
        raise ValueError(NO_OFV)

    def subject_ofv(self, model, values, eta, subject, opts, omega_inv, logdet_omega):
        raise ValueError(NO_OFV)  # a program built on per-subject OFVs (fit_batch)


# ---------------------------------------------------------------------------- mu-referencing


def _jacobians(model, opts, values, etas, batch):
    """d(what the likelihood sees per record)/d(theta, eta) at each point and subject:
    ([P, N, 2R, n_theta], [P, N, 2R, q]). Gaussian models: the compared prediction and
    the residual variance; likelihood models: the prediction and each record's term of
    the -2 log-likelihood (so a theta the likelihood reads directly is no mu-reference)."""

    def one(vals, eta, subject):
        def fn(theta, e):
            v = vals._replace(theta=theta)
            if getattr(model, "non_gaussian", False):
                f = model.subject_predict(v, e, subject, has_steady_state=opts.has_steady_state,
                                          covariate_rule=opts.covariate_rule, has_infusions=opts.has_infusions)
                return jnp.concatenate([f, likelihood_terms(model, v, f, subject)])
            _, ft, var = predictions(model, v, e, subject, opts)
            return jnp.concatenate([ft, var])

        return jax.jacfwd(fn, argnums=(0, 1))(vals.theta, eta)

    return jax.vmap(lambda v, e: jax.vmap(lambda ee, s: one(v, ee, s))(e, batch))(values, etas)


def mu_references(model, opts, values, batch, *, points: int = 3, max_subjects: int = 8, seed: int = 0):
    """The mu-referenced (eta, theta, kind) pairs of ``model``: ``kind`` "add" when the
    predictions and variances depend on a free theta t and an eta e only through t + e
    (d/dt = d/de), "log" when through log t + e (t d/dt = d/de, t > 0). Checked at
    ``points`` random parameter values and etas on up to ``max_subjects`` subjects;
    each eta gets at most one theta and each theta one eta."""
    from ... import _compile

    spec = model.spec
    q, n_theta = spec.n_eta, len(spec.theta_names)
    if q == 0 or n_theta == 0:
        return ()
    rng = np.random.default_rng(seed)
    theta0 = np.asarray(values.theta, dtype=float)
    thetas, etas = [], []
    for _ in range(points):
        th = theta0.copy()
        for i, t in enumerate(spec.thetas):
            r = rng.normal()
            if t.lower >= 0 and th[i] > 0:
                th[i] = th[i] * math.exp(0.2 * r)
            else:
                th[i] = th[i] + 0.2 * max(abs(th[i]), 0.1) * r
            lo = t.lower + 1e-6 * (1 + abs(t.lower)) if math.isfinite(t.lower) else -np.inf
            hi = t.upper - 1e-6 * (1 + abs(t.upper)) if math.isfinite(t.upper) else np.inf
            th[i] = min(max(th[i], lo), hi) if not t.fixed else theta0[i]
        thetas.append(th)
        sd = np.sqrt(np.clip(np.diag(np.asarray(values.omega, dtype=float)), 1e-12, None))
        etas.append(rng.normal(size=q) * 0.5 * sd)
    n = min(int(batch.time.shape[0]), max_subjects)
    sub = jax.tree_util.tree_map(lambda a: a[:n] if getattr(a, "ndim", 0) and a.shape[0] == batch.time.shape[0]
                                 else a, batch)
    pts = ParameterValues(theta=np.stack(thetas), omega=np.repeat(np.asarray(values.omega)[None], points, 0),
                          iov=np.repeat(np.asarray(values.iov)[None], points, 0),
                          sigma=np.repeat(np.asarray(values.sigma)[None], points, 0))
    eta_pts = np.repeat(np.stack(etas)[:, None, :], n, axis=1)
    (jt, je), _, _ = _compile.run(_jacobians, (model, opts), pts, eta_pts, sub)
    jt, je = np.asarray(jt), np.asarray(je)
    obs = np.asarray(sub.obs_mask)
    keep = np.concatenate([obs, obs], axis=1)[None, :, :]  # [1, N, 2R]
    th_pts = np.stack(thetas)[:, None, None, :]  # [P, 1, 1, n_theta]
    scale = max(np.max(np.abs(je[..., :] * keep[..., None]), initial=0.0), 1e-300)
    pairs, used = [], set()
    for k in range(q):
        de = np.where(keep, je[..., k], 0.0)
        if np.max(np.abs(de)) <= 1e-10 * scale:
            continue
        for j, t in enumerate(spec.thetas):
            if t.fixed or j in used:
                continue
            dt = np.where(keep, jt[..., j], 0.0)
            for kind, candidate in (("add", dt), ("log", dt * th_pts[..., j])):
                if kind == "log" and not (t.lower >= 0 and np.all(th_pts[..., j] > 0)):
                    continue
                if np.all(np.abs(candidate - de) <= 1e-7 * (np.abs(de) + np.abs(candidate)) + 1e-12 * scale):
                    pairs.append((k, j, kind))
                    used.add(j)
                    break
            if pairs and pairs[-1][0] == k:
                break
    return tuple(pairs)


# ---------------------------------------------------------------------------- the program


class Layout(NamedTuple):
    """Static description of what the M-step updates how (hashable: part of the key)."""

    mu: tuple  # (eta, theta, kind) pairs
    generic_theta: tuple  # free thetas updated by Newton steps
    free_sigma: tuple  # free sigmas (Newton steps)
    omega_free: tuple  # per eta: whether its OMEGA block is estimated
    structure: tuple  # OMEGA's structure, rows of bools
    chains: int


class SAEMOutput(NamedTuple):
    theta: jax.Array
    omega: jax.Array
    sigma: jax.Array
    etas: jax.Array  # the chains' last state [C, N, q]
    acceptance: jax.Array  # mean acceptance of each kernel over the last iteration [3]
    history: tuple  # per iteration: (complete -2LL, step, theta, omega, sigma, acceptance)


def layout_for(model, transform, mu, chains: int) -> Layout:
    spec = model.spec
    mu_thetas = {j for _, j, _ in mu}
    omega_free = tuple(not bool(spec.omega_fixed[i, i]) for i in range(spec.n_eta))
    return Layout(mu=tuple(mu), generic_theta=tuple(i for i in transform.theta_free if i not in mu_thetas),
                  free_sigma=tuple(transform.sigma_free), omega_free=omega_free,
                  structure=tuple(tuple(bool(v) for v in row) for row in spec.omega_structure), chains=int(chains))


def _compose(transform, layout, base, theta, omega, z):
    """ParameterValues from the state: mu-referenced and fixed thetas in ``theta``, the
    generic thetas and free sigmas from the unconstrained ``z``."""
    scale = transform._scale(jnp.asarray(base.theta))
    sigma = jnp.asarray(base.sigma)
    j = 0
    for i in layout.generic_theta:
        theta = theta.at[i].set(transform._theta_from_x(i, z[j], scale[i]))
        j += 1
    for i in layout.free_sigma:
        sigma = sigma.at[i].set(transform._sigma_from_x(i, z[j]))
        j += 1
    return ParameterValues(theta=theta, omega=omega, iov=jnp.asarray(base.iov), sigma=sigma)


def generic_vector(transform, layout, values):
    """The unconstrained vector of the generic thetas and free sigmas (host side)."""
    base = values
    scale = np.asarray(transform._scale(np.asarray(base.theta, dtype=float)))
    out = [transform._theta_to_x(i, float(values.theta[i]), scale[i]) for i in layout.generic_theta]
    out += [transform._sigma_to_x(i, float(values.sigma[i])) for i in layout.free_sigma]
    return np.asarray(out, dtype=np.float64)


def _mu_u(layout, theta, q):
    """u(theta) per eta: t (additive), log t (log) for mu-referenced etas, else 0."""
    u = jnp.zeros(q)
    for k, j, kind in layout.mu:
        u = u.at[k].set(theta[j] if kind == "add" else jnp.log(theta[j]))
    return u


def _kernel_schedule(method: SAEM, q: int):
    n_prior, n_rw, n_sweeps = method.kernel_steps
    kinds = [PRIOR] * n_prior + [RANDOM_WALK] * n_rw + [COMPONENT] * (n_sweeps * q)
    comps = [0] * (n_prior + n_rw) + list(range(q)) * n_sweeps
    return np.asarray(kinds, np.int32), np.asarray(comps, np.int32)


def _e_step(model, opts, method, values, chol, omega_inv, logdet, etas, batch, key, rw_scale, comp_scale):
    """Every chain's MH steps; returns (etas [C, N, q], l at them [C, N], acceptance [C, N, T])."""
    q = etas.shape[-1]
    kinds_np, comps_np = _kernel_schedule(method, q)
    kinds, comps = jnp.asarray(kinds_np), jnp.asarray(comps_np)
    sd = jnp.sqrt(jnp.diag(values.omega))

    def l_of(eta, subject):
        return m2ll(model, values, eta, subject, opts, omega_inv, logdet)

    def quad(e):
        return e @ omega_inv @ e

    def one(eta, subject, k):
        l0 = l_of(eta, subject)

        def body(carry, xs):
            eta, l, k = carry
            kind, comp = xs
            k, kz, ku = jax.random.split(k, 3)
            z = jax.random.normal(kz, (q,))
            lz = chol @ z
            cw = eta + jax.nn.one_hot(comp, q) * comp_scale[comp] * sd[comp] * z[0]
            prop = jnp.where(kind == PRIOR, lz, jnp.where(kind == RANDOM_WALK, eta + rw_scale * lz, cw))
            lp = l_of(prop, subject)
            log_a = -0.5 * (lp - l) + jnp.where(kind == PRIOR, 0.5 * (quad(prop) - quad(eta)), 0.0)
            accept = jnp.isfinite(lp) & (jnp.log(jax.random.uniform(ku)) < log_a)
            return (jnp.where(accept, prop, eta), jnp.where(accept, lp, l), k), accept

        (eta, l, _), acc = jax.lax.scan(body, (eta, l0, k), (kinds, comps))
        return eta, l, acc

    n_chains, n = etas.shape[0], etas.shape[1]
    keys = jax.random.split(key, n_chains * n).reshape(n_chains, n, -1)
    return jax.vmap(lambda e, k: jax.vmap(one)(e, batch, k))(etas, keys)


def _newton(objective, z, steps):
    """``steps`` damped Newton steps on ``objective`` from ``z``: the Hessian's eigenvalues
    taken in absolute value (a descent direction where it is indefinite), the step capped
    at 1 an entry, and the better of the full and a quarter step kept only when it lowers
    the objective."""
    if z.shape[0] == 0:
        return z
    def grad_and_grad(z):
        g = jax.jacfwd(objective)(z)
        return g, g

    # The Hessian and gradient from one trace of the objective (forward over forward),
    # and the three values from another: the model code is compiled twice, not five times.
    hess_and_grad = jax.jacfwd(grad_and_grad, has_aux=True)

    def body(z, _):
        H, g = hess_and_grad(z)
        w, V = jnp.linalg.eigh(0.5 * (H + H.T))
        aw = jnp.abs(w)
        aw = jnp.maximum(aw, 1e-8 * jnp.max(aw) + 1e-12)
        d = -V @ ((V.T @ g) / aw)
        longest = jnp.max(jnp.abs(d))
        d = jnp.where(longest > 1.0, d / longest, d)
        d = jnp.where(jnp.all(jnp.isfinite(d)), d, 0.0)
        f0, f1, f4 = jax.vmap(objective)(jnp.stack([z, z + d, z + 0.25 * d]))
        ok1 = jnp.isfinite(f1) & (f1 < f0) & ~(jnp.isfinite(f4) & (f4 < f1))
        ok4 = jnp.isfinite(f4) & (f4 < f0) & ~ok1
        z = jnp.where(ok1, z + d, jnp.where(ok4, z + 0.25 * d, z))
        return z, None

    z, _ = jax.lax.scan(body, z, None, length=steps)
    return z


def saem_program(model, opts, method: SAEM, layout: Layout, transform, values0, z0, batch, key) -> SAEMOutput:
    """The whole SAEM run (burn-in, K1 exploratory, K2 smoothing iterations) as one scan."""
    q = model.spec.n_eta
    n = batch.time.shape[0]
    C = layout.chains
    structure = jnp.asarray(np.asarray(layout.structure, bool).reshape(q, q))
    fixed = jnp.asarray(~np.asarray(layout.omega_free, bool))
    fixed2 = fixed[:, None] | fixed[None, :]
    mu_mask = np.zeros(q, bool)
    for k, _, _ in layout.mu:
        mu_mask[k] = True
    mu_mask = jnp.asarray(mu_mask)
    base = values0
    K1, anneal_until = method.exploratory, method.annealing_iterations
    tau = method.annealing
    n_sigma_z = len(layout.free_sigma)
    n_theta_z = len(layout.generic_theta)
    from ..objective import omega_terms

    def omega_pieces(omega):
        chol = cholesky(omega)
        omega_inv, logdet = omega_terms(model, ParameterValues(base.theta, omega, base.iov, base.sigma), 1)
        return chol, omega_inv, logdet

    class Carry(NamedTuple):
        theta: jax.Array
        omega: jax.Array
        z: jax.Array
        etas: jax.Array
        s1: jax.Array
        s2: jax.Array
        rw_scale: jax.Array
        comp_scale: jax.Array

    def iteration(c: Carry, k):
        values = _compose(transform, layout, base, c.theta, c.omega, c.z)
        chol, omega_inv, logdet = omega_pieces(c.omega)
        etas, ls, acc = _e_step(model, opts, method, values, chol, omega_inv, logdet, c.etas, batch,
                                jax.random.fold_in(key, k), c.rw_scale, c.comp_scale)
        # Adapt the random walks' scales during the exploratory phase.
        kinds, comps = _kernel_schedule(method, q)  # numpy: static
        acc_mean = jnp.mean(acc, axis=(0, 1))  # [T]
        rw_steps = kinds == RANDOM_WALK
        rw_rate = jnp.sum(jnp.where(rw_steps, acc_mean, 0.0)) / max(int(rw_steps.sum()), 1)
        comp_onehot = ((kinds == COMPONENT)[:, None] & (comps[:, None] == np.arange(q)[None, :])).astype(float)
        comp_rate = (acc_mean @ comp_onehot) / np.maximum(comp_onehot.sum(axis=0), 1)
        adapting = k < BURN_IN + K1
        rw_scale = jnp.where(adapting & bool(rw_steps.any()),
                             c.rw_scale * jnp.exp(ADAPTATION_RATE * (rw_rate - TARGET_ACCEPTANCE)), c.rw_scale)
        comp_scale = jnp.where(adapting & bool(comp_onehot.any()),
                               c.comp_scale * jnp.exp(ADAPTATION_RATE * (comp_rate - TARGET_ACCEPTANCE)),
                               c.comp_scale)
        prior_steps = kinds == PRIOR
        prior_rate = jnp.sum(jnp.where(prior_steps, acc_mean, 0.0)) / max(int(prior_steps.sum()), 1)

        # Stochastic approximation of the sufficient statistics.
        j = k - BURN_IN  # the SA iteration (negative during burn-in)
        gamma = jnp.where(j < 0, 0.0, jnp.where(j < K1, 1.0, 1.0 / (j - K1 + 1.0)))
        updating = j >= 0
        u_old = _mu_u(layout, c.theta, q)
        psi = etas + u_old[None, None, :]
        s1 = c.s1 + gamma * (jnp.mean(psi, axis=(0, 1)) - c.s1)
        s2 = c.s2 + gamma * (jnp.einsum("cni,cnj->ij", psi, psi) / (C * n) - c.s2)

        # OMEGA with the model's structure, fixed blocks kept, annealed.
        mu = jnp.where(mu_mask, s1, 0.0)
        om = s2 - jnp.outer(mu, mu)
        om = jnp.where(structure, 0.5 * (om + om.T), 0.0)
        om = jnp.where(fixed2, base.omega, om)
        d_new = jnp.diag(om)
        d_old = jnp.diag(c.omega)
        annealing = j < anneal_until
        d_target = jnp.where(annealing & ~fixed, jnp.maximum(d_new, tau * d_old), d_new)
        ratio = jnp.sqrt(d_target / jnp.maximum(d_new, 1e-300))
        om = om * ratio[:, None] * ratio[None, :]
        omega = jnp.where(updating, om, c.omega)

        # Mu-referenced thetas: the SA mean of psi; the chains follow so psi is unchanged.
        theta = c.theta
        for kk, jj, kind in layout.mu:
            t = model.spec.thetas[jj]
            new = s1[kk] if kind == "add" else jnp.exp(s1[kk])
            lo = t.lower + 1e-10 * (1.0 + abs(t.lower)) if math.isfinite(t.lower) else -jnp.inf
            hi = t.upper - 1e-10 * (1.0 + abs(t.upper)) if math.isfinite(t.upper) else jnp.inf
            theta = theta.at[jj].set(jnp.where(updating, jnp.clip(new, lo, hi), c.theta[jj]))
        etas = etas - (_mu_u(layout, theta, q) - u_old)[None, None, :]

        # Generic thetas and residual parameters: Newton steps on the complete-data -2LL,
        # then the SA of the maximiser.
        z = c.z
        if z.shape[0]:
            _, omega_inv_new, logdet_new = omega_pieces(omega)

            def complete(zz):
                v = _compose(transform, layout, base, theta, omega, zz)
                per = jax.vmap(lambda e: jax.vmap(
                    lambda ee, s: m2ll(model, v, ee, s, opts, omega_inv_new, logdet_new))(e, batch))(etas)
                return jnp.sum(per) / C

            z_star = _newton(complete, c.z, method.newton_steps)
            z_new = c.z + gamma * (z_star - c.z)
            floor = jnp.concatenate([jnp.full(n_theta_z, -jnp.inf),
                                     jnp.full(n_sigma_z, 0.5 * math.log(tau))]) + c.z
            z_new = jnp.where(annealing, jnp.maximum(z_new, floor), z_new)
            z = jnp.where(updating & jnp.all(jnp.isfinite(z_new)), z_new, c.z)
        v = _compose(transform, layout, base, theta, omega, z)
        row = (jnp.sum(ls) / C, gamma, v.theta, v.omega, v.sigma, jnp.stack([prior_rate, rw_rate,
                                                                                jnp.mean(comp_rate)]))
        return Carry(theta, omega, z, etas, s1, s2, rw_scale, comp_scale), row

    u0 = _mu_u(layout, jnp.asarray(values0.theta), q)
    c0 = Carry(theta=jnp.asarray(values0.theta), omega=jnp.asarray(values0.omega), z=jnp.asarray(z0),
               etas=jnp.zeros((C, n, q)), s1=u0, s2=jnp.asarray(values0.omega) + jnp.outer(u0, u0),
               rw_scale=jnp.asarray(1.0), comp_scale=jnp.ones(q))
    c, rows = jax.lax.scan(iteration, c0, jnp.arange(method.iterations))
    v = _compose(transform, layout, base, c.theta, c.omega, c.z)
    return SAEMOutput(theta=v.theta, omega=v.omega, sigma=v.sigma, etas=c.etas, acceptance=rows[5][-1],
                      history=rows)


# ---------------------------------------------------------------------------- after SAEM


def _posthoc_program(model, method, opts, values, etas0, batch):
    """The conditional modes (FOCE-I's inner solve), each subject's OFV there by
    ``method`` (IMP) and its Monte Carlo SE, in one program."""
    from ..objective import solve_modes, subject_ofvs
    from .imp import mc_standard_errors

    modes = solve_modes(model, method, opts, values, etas0, batch)
    return (modes.eta, modes.converged, subject_ofvs(model, method, opts, values, modes.eta, batch),
            mc_standard_errors(model, method, opts, values, modes.eta, batch))


def _information_program(model, method, opts, transform, x, base, etas, batch):
    """The covariance step of ``engine.fit_program`` at a given point: per-subject
    gradients of ``method``'s OFV at ``x`` (S) and R by central differences of the total
    gradient at x +- h e_k (modes re-solved at every point)."""
    from .. import inner
    from ..covariance import user_scale
    from ..engine import R_STEP
    from ..objective import gradient_program

    p = x.shape[0]
    h = R_STEP * jnp.maximum(1.0, jnp.abs(x))
    points = jnp.concatenate([x[None], x[None] + jnp.diag(h), x[None] - jnp.diag(h)])

    def at(point):
        ev = gradient_program(model, method, opts, transform, inner.MAX_ITER, inner.TOL, point, base, etas, batch)
        return ev.jac

    jacs = jax.lax.map(at, points)
    grads = jnp.sum(jacs, axis=1)
    R = ((grads[1:p + 1] - grads[p + 1:]) / (2.0 * h)[:, None]).T
    _, natural, J = user_scale(transform, x, base)
    return jacs[0], 0.5 * (R + R.T), natural, J


def history_frame(model, method: SAEM, rows) -> pd.DataFrame:
    """One row per iteration: iteration, phase, step, ofv (the complete-data -2 log
    likelihood at the chains' samples, averaged over chains: noisy, not the OFV), every
    parameter as in ``fit``'s history (OMEGA elements as omega(A,B)), and the kernels'
    acceptance rates."""
    spec = model.spec
    ofv, gamma, theta, omega, sigma, acc = (np.asarray(r) for r in rows)
    k = np.arange(len(ofv)) - BURN_IN + 1
    phase = np.where(k < 1, "burn-in", np.where(k <= method.exploratory, "exploratory", "smoothing"))
    table = {"iteration": k, "phase": phase, "step": gamma, "ofv": ofv}
    for i, name in enumerate(spec.theta_names):
        table[name] = theta[:, i]
    for i, a in enumerate(spec.eta_names):
        for j, b in enumerate(spec.eta_names[: i + 1]):
            table[f"omega({a},{b})"] = omega[:, i, j]
    for i, name in enumerate(spec.sigma_names):
        table[name] = sigma[:, i]
    table["accept_prior"], table["accept_rw"], table["accept_component"] = acc[:, 0], acc[:, 1], acc[:, 2]
    return pd.DataFrame(table)


def fit_saem(model, data, method: SAEM, *, params=None, covariance: str = "sandwich", covariate_rule="nonmem",
             progress=None, diagnostics: bool = True, npde: bool = False, npde_samples: int = 1000, seed: int = 0):
    """``pkmix.fit(model, data, method="saem" | SAEM(...))``: see the module docstring."""
    from ... import _compile
    from ..._config import require_x64
    from ..._predict import bind, parameter_values
    from ..._progress import wanted, while_running
    from ..._results import build_result
    from ..covariance import natural_names, summarize
    from ..engine import transform_for
    from ..fit import _diagnostics, _omega_near_boundary, _require_observations
    from ..fit import likelihood_options
    from ..inner import InnerResult
    from ..settings import COVARIANCE_KINDS

    require_x64()
    covariance = str(covariance).lower()
    if covariance not in COVARIANCE_KINDS:
        raise ValueError(f"covariance must be one of {COVARIANCE_KINDS}, got {covariance!r}")
    model.check_estimable()
    if model.iov_names:
        raise ModelError("method 'saem' does not take inter-occasion variability (IOV) etas yet: use 'focei', "
                         "'laplace' or 'imp'")
    if model.spec.n_eta == 0:
        raise ModelError("method 'saem' needs at least one eta (a model without random effects has no E-step): "
                         "use 'focei'")
    dataset, batch = bind(model, data)
    _require_observations(dataset)
    values0 = parameter_values(model, params)
    opts = likelihood_options(method, batch, covariate_rule)
    transform = transform_for(model)
    if transform.size == 0:
        raise ModelError("every parameter is fixed: use pkmix.evaluate for the OFV at fixed values")
    report = wanted(progress)
    t_start = time.perf_counter()

    mu = mu_references(model, opts, values0, batch)
    n = dataset.n_subjects
    chains = method.chains or max(1, math.ceil(MIN_SUBJECT_CHAINS / n))
    layout = layout_for(model, transform, mu, chains)
    z0 = generic_vector(transform, layout, values0)
    key = jax.random.PRNGKey(method.seed)
    with while_running(f"SAEM ({method.exploratory} + {method.smoothing} iterations, {chains} chain(s))", report):
        out, compile_s, run_s = _compile.run(saem_program, (model, opts, method.compiled(), layout, transform),
                                             values0, z0, batch, key)
    values = ParameterValues(theta=jnp.asarray(out.theta), omega=jnp.asarray(out.omega),
                             iov=jnp.asarray(values0.iov), sigma=jnp.asarray(out.sigma))
    finite = bool(np.all(np.isfinite(np.asarray(out.theta))) and np.all(np.isfinite(np.asarray(out.omega)))
                  and np.all(np.isfinite(np.asarray(out.sigma))))
    if not finite:
        raise ModelError("SAEM ended with estimates that are not finite: check the initial values and that "
                         "individual() stays finite for etas of a few standard deviations")

    # Posthoc modes and the IMP OFV at the estimates.
    imp = method.imp
    imp_opts = likelihood_options(imp, batch, covariate_rule)
    etas0 = np.asarray(jnp.mean(out.etas, axis=0))
    t_post = time.perf_counter()
    (eta_hat, eta_ok, ofvs, subject_se), post_compile, _ = _compile.run(
        _posthoc_program, (model, imp, imp_opts), values, etas0, batch)
    ofvs = np.asarray(ofvs)
    ofv = float(np.sum(ofvs))
    mc_se = float(np.sqrt(np.sum(np.asarray(subject_se) ** 2)))  # the subjects' in quadrature, as fit's
    posthoc_s = time.perf_counter() - t_post

    cov_result, cov_s, cov_compile = None, 0.0, 0.0
    if covariance != "none":
        info = method.information
        info_opts = likelihood_options(info, batch, covariate_rule)
        x_hat = transform.to_vector(values, values)
        (jac, R, natural, J), cov_compile, cov_s = _compile.run(
            _information_program, (model, info, info_opts, transform), x_hat, values, eta_hat, batch)
        cov_result = summarize(jac, R, J, natural, natural_names(transform), covariance)
        cov_result = cov_result._replace(message=f"{cov_result.message} ({info.name} information at the SAEM "
                                                 "estimates)")

    modes = InnerResult(eta_hat, eta_ok, None, None, None)
    diag, diag_compile, diag_s = ({}, 0.0, 0.0)
    if diagnostics:
        diag, diag_compile, diag_s = _diagnostics(model, imp_opts, npde, npde_samples, values, eta_hat, batch,
                                                  seed, report)
    acc = np.asarray(out.acceptance)
    message = (f"SAEM: {method.exploratory} exploratory + {method.smoothing} smoothing iterations, {chains} "
               f"chain(s), seed {method.seed}; final acceptance prior {acc[0]:.2f}, random walk {acc[1]:.2f}, "
               f"component-wise {acc[2]:.2f}; OFV by IMP ({imp.samples} draws a subject), Monte Carlo SE "
               f"{mc_se:.3g}")
    n_bad = int(np.sum(~np.asarray(eta_ok)))
    if n_bad:
        message += f"; eta modes did not converge for {n_bad} subject(s)"
    boundary = _omega_near_boundary(model, values)
    if boundary:
        message += f"; {boundary}"
    timing = {"total_s": time.perf_counter() - t_start, "compile_s": compile_s + post_compile + cov_compile
              + diag_compile, "estimation_s": run_s, "covariance_s": cov_s, "diagnostics_s": diag_s,
              "posthoc_s": posthoc_s}
    result = build_result(
        model=model, method=method, dataset=dataset, batch=batch, values=values, transform=transform, ofv=ofv,
        subject_ofvs=ofvs, modes=modes, diagnostics=diag, converged=True, message=message,
        iterations=method.exploratory + method.smoothing, covariance=cov_result, timing=timing,
        history=history_frame(model, method, out.history))
    result.ofv_mc_se = mc_se
    result.mu_referenced = {model.spec.eta_names[k]: model.spec.theta_names[j] for k, j, _ in mu}
    return result


__all__ = ["SAEM", "fit_saem", "mu_references"]

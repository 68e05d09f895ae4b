"""Per-record diagnostics NONMEM users read: PRED, IPRED, RES, WRES, CWRES, IRES, IWRES, NPDE.

* WRES (FO): C0^-1/2 (y - f(0)) with C0 = G0 Omega G0' + R(0) (+ the eta-epsilon
  interaction term when the method has interaction, as NONMEM's tables).
* CWRES (Hooker et al. 2007): C^-1/2 (y - f(eta^) + G eta^) with C = G Omega G' + R, the
  model linearised at the EBEs (R at the EBEs when the method has interaction).
* IWRES: (y - f(eta^))/sqrt(R(eta^)).
* NPDE (Brendel et al. 2006), on request (``n_sim > 0``): each subject's observations and K simulated replicates
  (etas from OMEGA, residuals from R) are decorrelated with the Cholesky factor of the
  simulated covariance; pde is the fraction of decorrelated simulations below the
  decorrelated observation, npde = Phi^-1(pde) (pde clipped to [1/2K, 1 - 1/2K]).

Residuals are on the scale the error model compares (log scale for log-transform-both-
sides). BLQ records get NaN weighted residuals and NPDE (M3 has no residual), and so do
the records of a model whose observations follow a likelihood (``pkmix.bernoulli``, ...,
``pkmix.endpoints``): they have no residual variance.

NPDE simulates ``n_sim`` replicates of every subject: a program that compiles as long as
the rest of the table and can run longer than the estimation, so it is compiled only
when asked for (``n_sim = 0`` leaves it out of the program, and the table has no NPDE).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.stats import norm

from . import _linalg as linalg
from ._estimation.likelihood import Options, pieces, predictions


def _inverse_sqrt_weighted(C, r, mask):
    """C^-1/2 r with the symmetric square root (what NONMEM's tables use), restricted to
    the records in ``mask``; other entries give 0."""
    eye = jnp.eye(C.shape[0])
    both = mask[:, None] & mask[None, :]
    C = jnp.where(both, C, eye)
    w, V = linalg.eigh(0.5 * (C + C.T))
    w = jnp.maximum(w, 1e-300)
    return jnp.where(mask, V @ ((V.T @ jnp.where(mask, r, 0.0)) / jnp.sqrt(w)), 0.0)


def subject_diagnostics(model, values, eta, subject, opts: Options, omega, key, n_sim: int):
    """Diagnostics for one subject (vmapped by the caller); NPDE only when ``n_sim > 0``."""
    obs = subject.obs_mask & ~subject.blq & (not model.non_gaussian)
    y = model.error.transform(jnp.where(obs, subject.dv, 1.0))
    # Both linearisation points in one vmapped call (one compiled copy of the model's
    # derivatives); at eta = 0 the residual variance is R(0) with or without interaction.
    both = jax.vmap(lambda e: pieces(model, values, e, subject, opts))(jnp.stack([jnp.zeros_like(eta), eta]))
    p0 = jax.tree_util.tree_map(lambda x: x[0], both)
    pi = jax.tree_util.tree_map(lambda x: x[1], both)
    C0 = p0.a @ omega @ p0.a.T + jnp.diag(p0.var)
    if opts.interaction:
        # NONMEM's WRES under INTERACTION keeps the eta-epsilon cross term of the FO
        # variance: Var(H eps) with H = sqrt(R) varying with eta adds dH Omega dH' sigma^2
        # = (dR Omega dR')/(4R).
        C0 = C0 + jnp.diag(jnp.einsum("rk,kl,rl->r", p0.dvar, omega, p0.dvar) / (4.0 * p0.var))
    wres = _inverse_sqrt_weighted(C0, y - p0.ft, obs)
    r = y - pi.ft + pi.a @ eta
    cwres = _inverse_sqrt_weighted(pi.a @ omega @ pi.a.T + jnp.diag(pi.var), r, obs)
    iwres = jnp.where(obs, (y - pi.ft) / jnp.sqrt(pi.var), 0.0)
    nan = jnp.nan
    table = {
        "PRED": p0.f,
        "IPRED": pi.f,
        "WRES": jnp.where(obs, wres, nan),
        "CWRES": jnp.where(obs, cwres, nan),
        "IWRES": jnp.where(obs, iwres, nan),
    }
    if n_sim:
        table["NPDE"] = jnp.where(obs, _npde(model, values, eta, subject, opts, omega, key, n_sim, y, obs), nan)
    return table


def _npde(model, values, eta, subject, opts, omega, key, n_sim, y, obs):
    """NPDE by simulation from the model (see the module's docstring)."""
    k_eta, k_eps = jax.random.split(key)
    chol_omega = linalg.cholesky(omega + 1e-300 * jnp.eye(omega.shape[0])) if omega.shape[0] else omega
    eta_sim = jax.random.normal(k_eta, (n_sim, eta.shape[0])) @ chol_omega.T
    eps = jax.random.normal(k_eps, (n_sim, y.shape[0]))

    def simulate(e, z):
        _, ft, var = predictions(model, values, e, subject, opts._replace(interaction=True))
        return ft + jnp.sqrt(var) * z

    y_sim = jax.vmap(simulate)(eta_sim, eps)  # [K, R]
    mean = jnp.mean(y_sim, axis=0)
    centred = jnp.where(obs[None, :], y_sim - mean[None, :], 0.0)
    cov = centred.T @ centred / (n_sim - 1)
    both = obs[:, None] & obs[None, :]
    cov = jnp.where(both, cov, jnp.eye(cov.shape[0]))
    L = linalg.cholesky(cov)
    decor_obs = linalg.solve_triangular(L, jnp.where(obs, y - mean, 0.0))
    decor_sim = linalg.solve_triangular(L, centred.T).T
    pde = jnp.mean(decor_sim < decor_obs[None, :], axis=0)
    pde = jnp.clip(pde, 1.0 / (2 * n_sim), 1.0 - 1.0 / (2 * n_sim))
    return norm.ppf(pde)


def batch_diagnostics(model, opts, values, etas, batch, key, n_sim):
    """Every subject's diagnostics: {column: [N, T]} (``NPDE`` only when ``n_sim > 0``)."""
    omega = model.omega_full(values, batch.n_occasions)
    keys = jax.random.split(key, etas.shape[0])
    return jax.vmap(lambda e, s, k: subject_diagnostics(model, values, e, s, opts, omega, k, n_sim))(
        etas, batch, keys
    )

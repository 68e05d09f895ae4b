"""The covariance step (NONMEM's $COV): R, S and the sandwich R^-1 S R^-1.

With OFV = -2 log L, R = d2 OFV/dx2 and S = sum_i g_i g_i' (g_i: subject i's OFV
gradient), the asymptotic covariances are: sandwich R^-1 S R^-1, R-only 2 R^-1,
S-only 4 S^-1. Gradients are exact (forward mode, with the implicit-function term for the modes);
R is their central difference (``engine.fit_program`` evaluates the 2p points in the fit's own
loop), taken like everything here on the unconstrained scale, then carried to the user's
scale (thetas, OMEGA elements as variances/covariances, sigmas as declared) by the delta
method: Cov_user = J Cov_x J' with J = d(user)/dx.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np



def natural_parameters(transform, x, base):
    """The estimated parameters on the user's scale, in a fixed order (see ``natural_names``)."""
    v = transform.from_vector(x, base)
    out = [v.theta[i] for i in transform.theta_free]
    for start, k in transform.omega_free_blocks:
        for r in range(k):
            for c in range(r + 1):
                out.append(v.omega[start + r, start + c])
    if transform.iov_free:
        out += [v.iov[i] for i in range(v.iov.shape[0])]
    out += [v.sigma[i] for i in transform.sigma_free]
    return jnp.stack(out) if out else jnp.zeros(0)


def natural_names(transform):
    s = transform.spec
    names = [s.theta_names[i] for i in transform.theta_free]
    for start, k in transform.omega_free_blocks:
        for r in range(k):
            for c in range(r + 1):
                names.append(f"omega({s.eta_names[start + r]},{s.eta_names[start + c]})")
    if transform.iov_free:
        names += [f"omega({n},{n})" for n in s.iov_names]
    names += [s.sigma_names[i] for i in transform.sigma_free]
    return names


def user_scale(transform, x, base):
    """The parameters at ``x`` on the user's scale: as ``ParameterValues``, as the vector
    of estimated ones (``natural_parameters``) and its Jacobian d natural / dx (the delta
    method's J). One small program, instead of a dozen operations dispatched one by one
    (each compiled on its first use)."""
    natural = natural_parameters(transform, x, base)
    J = jax.jacfwd(lambda z: natural_parameters(transform, z, base))(x)
    return transform.from_vector(x, base), natural, J


class CovarianceResult(NamedTuple):
    names: list
    estimates: np.ndarray
    covariance: np.ndarray | None  # user scale
    se: np.ndarray | None
    correlation: np.ndarray | None
    condition_number: float | None
    eigenvalues: np.ndarray | None
    kind: str  # what was computed: "sandwich", "R", "S" or "none"
    message: str


def summarize(G, R, J, estimates, names, kind="sandwich") -> CovarianceResult:
    """Turn R, S and J into user-scale covariances, with a fallback when R is singular."""
    G, R, J = (np.asarray(a, dtype=float) for a in (G, R, J))
    S = G.T @ G
    kind = kind.lower()
    message = "covariance step completed"
    r_eig = np.linalg.eigvalsh(R) if R.size else np.zeros(0)
    r_ok = R.size > 0 and np.all(np.isfinite(R)) and r_eig.min() > 1e-10 * max(r_eig.max(), 1e-300)
    s_eig = np.linalg.eigvalsh(S) if S.size else np.zeros(0)
    s_ok = S.size > 0 and np.all(np.isfinite(S)) and s_eig.min() > 1e-10 * max(s_eig.max(), 1e-300)
    cov_x = None
    if kind in ("sandwich", "r") and not r_ok:
        message = (f"R matrix is not positive definite (smallest eigenvalue {r_eig.min():.3g}); "
                   + ("standard errors from the S matrix instead (S-only)" if s_ok else "no standard errors"))
        kind = "s" if s_ok else "none"
    if kind == "s" and not s_ok:
        message = "S matrix is singular; no standard errors"
        kind = "none"
    if kind == "sandwich":
        R_inv = np.linalg.inv(R)
        cov_x = R_inv @ S @ R_inv
    elif kind == "r":
        cov_x = 2.0 * np.linalg.inv(R)
    elif kind == "s":
        cov_x = 4.0 * np.linalg.inv(S)
    if cov_x is None:
        return CovarianceResult(names, estimates, None, None, None, None, None, "none", message)
    cov = J @ cov_x @ J.T
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(se, se)
    eig = np.linalg.eigvalsh(np.nan_to_num(corr)) if corr.size else np.zeros(0)
    cond = float(eig.max() / eig.min()) if eig.size and eig.min() > 0 else float("inf")
    label = {"sandwich": "R^-1 S R^-1 (sandwich)", "r": "R-only", "s": "S-only"}[kind]
    return CovarianceResult(names, estimates, cov, se, corr, cond, eig, kind,
                            message if message != "covariance step completed" else f"covariance step completed: {label}")

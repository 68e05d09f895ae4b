"""Adaptive Gauss-Hermite quadrature (AGQ): each subject's marginal likelihood by a
tensor Gauss-Hermite grid centred at the eta mode and scaled by the curvature there
(lme4's nAGQ, nlmixr2's agq; Pinheiro & Bates 1995).

The OFV convention is Laplace's (-2 log L without the records' n log 2 pi):

    OFV_i = -2 log[(2 pi)^(-q/2) integral exp(-l(eta)/2) d eta]

With A = 1/2 d2l/deta2 at the mode eta^ and A = C C' (Cholesky), eta = eta^ + C'^-1 u
turns the integral into one against the standard normal density:

    OFV_i = log|A| - 2 log sum_k w_k exp(-(l(eta^ + C'^-1 u_k) - u_k'u_k) / 2)

with (u_k, w_k) the probabilists' Gauss-Hermite nodes and weights normalised to sum to
one. One node (u = 0, w = 1) is Laplace's l(eta^) + log|A| exactly; the rule is exact
when l is quadratic in eta (a model linear in eta with variances free of eta), for any
number of nodes. The grid has nodes^q points, so AGQ is offered for q <= MAX_ETAS.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from ..._linalg import cholesky, solve_triangular
from ..likelihood import m2ll
from .base import AbstractMethod

# nodes^q evaluations of the model a subject (7^3 = 343): beyond 3 etas the grid costs
# more than importance sampling for the same accuracy.
MAX_ETAS = 3


def mode_frame(model, values, eta, subject, opts, omega_inv, logdet_omega):
    """(l, C, log|A|): l as a function of eta, the lower Cholesky factor C of
    A = 1/2 d2l/deta2 at the mode (exact Hessian, as Laplace), and log|A| (NaN where A
    is not positive definite: a failed evaluation, as under Laplace)."""

    def l_fn(e):
        return m2ll(model, values, e, subject, opts, omega_inv, logdet_omega)

    A = 0.5 * jax.jacfwd(jax.jacfwd(l_fn))(eta)
    C = cholesky(A)
    logdet_A = 2.0 * jnp.sum(jnp.log(jnp.diag(C)))
    return l_fn, C, logdet_A


def scaled_terms(model, values, eta, subject, opts, omega_inv, logdet_omega, u):
    """log|A| and, at each standardised point u_k [K, q], l(eta^ + C'^-1 u_k) - u_k'u_k:
    minus twice the log of the integrand over the standard normal density there."""
    l_fn, C, logdet_A = mode_frame(model, values, eta, subject, opts, omega_inv, logdet_omega)
    u = jnp.asarray(u)
    # eta_k = eta^ + C'^-1 u_k for every k: one triangular solve with K right-hand sides.
    points = eta[None, :] + solve_triangular(C, u.T, transpose=True).T
    ls = jax.vmap(l_fn)(points)
    return logdet_A, ls - jnp.sum(u**2, axis=1)


def hermite_grid(nodes: int, q: int):
    """The tensor grid of the probabilists' Gauss-Hermite rule: points [nodes^q, q] and
    log weights [nodes^q] (weights summing to one)."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()
    pts = np.array(list(itertools.product(x, repeat=q)), dtype=np.float64).reshape(-1, q)
    logw = np.array([np.sum(np.log(c)) for c in itertools.product(w, repeat=q)], dtype=np.float64)
    return pts, logw


class AGQ(AbstractMethod):
    """``method="agq"`` (5 nodes per eta) or ``AGQ(nodes=n)``: adaptive Gauss-Hermite
    quadrature with n nodes per eta (n = 1 is Laplace), at most 3 etas a subject."""

    name = "agq"
    interaction = True
    supports_blq = True
    supports_likelihood = True

    def __init__(self, nodes: int = 5):
        nodes = int(nodes)
        if nodes < 1:
            raise ValueError(f"method 'agq' needs at least 1 node per eta, got {nodes}")
        self.nodes = nodes

    def __repr__(self):  # part of the compiled programs' cache key
        return f"AGQ(nodes={self.nodes})"

    def __eq__(self, other):
        return type(other) is type(self) and other.nodes == self.nodes

    def __hash__(self):
        return hash((type(self).__name__, self.nodes))

    def check_etas(self, n_eta: int) -> None:
        if n_eta > MAX_ETAS:
            raise ValueError(
                f"method 'agq' integrates at most {MAX_ETAS} etas a subject (its grid has nodes^q points); "
                f"this model has {n_eta}: use method='laplace' or 'imp'")

    def pieces_suffice(self, opts):
        return False  # the OFV needs l along the grid and its exact eta-Hessian

    def subject_ofv(self, model, values, eta, subject, opts, omega_inv, logdet_omega):
        q = eta.shape[0]
        self.check_etas(q)
        pts, logw = hermite_grid(self.nodes, q)
        logdet_A, terms = scaled_terms(model, values, eta, subject, opts, omega_inv, logdet_omega, pts)
        return logdet_A - 2.0 * logsumexp(logw - 0.5 * terms)

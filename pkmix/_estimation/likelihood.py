"""One subject's conditional likelihood and its eta derivatives.

l(eta) = sum_obs [log R_j + (y_j - f_j)^2 / R_j] + sum_blq -2 log Phi((LLOQ_j - f_j)/sqrt(R_j))
         + eta' Omega^-1 eta + log|Omega|

(-2 log density without the 2 pi constants, NONMEM's convention; f and y on the scale the
error model compares, R the residual variance). A model whose observations follow a
likelihood (``pkmix._model.likelihoods``) has instead

l(eta) = sum_obs -2 log p(y_j | f_j) + eta' Omega^-1 eta + log|Omega|

with the density's full normalising constants (``likelihood_m2ll``). The derivatives with respect to eta
come from one forward-mode Jacobian of (f, R): the estimator never uses reverse mode,
so ODE models (solved with diffrax's ForwardMode) take the same path as closed forms.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.stats import norm


class Options(NamedTuple):
    """Static settings of a likelihood evaluation."""

    interaction: bool  # R evaluated at eta (FOCE-I, Laplace) or at eta = 0 (FO, FOCE)
    has_steady_state: bool
    covariate_rule: str
    has_blq: bool = False
    # False when no dose is an infusion: the event engine then leaves out the infusion
    # ends (about half of a closed-form model's compiled prediction).
    has_infusions: bool = True


class Pieces(NamedTuple):
    """Per-record predictions and derivatives at one eta."""

    f: jax.Array  # predictions on the original scale [R]
    ft: jax.Array  # predictions on the compared scale [R]
    var: jax.Array  # residual variance [R]
    a: jax.Array  # d ft / d eta [R, q]
    dvar: jax.Array  # d var / d eta [R, q]


def _masks(subject):
    obs = subject.obs_mask & ~subject.blq
    blq = subject.obs_mask & subject.blq
    return obs, blq


def predictions(model, values, eta, subject, opts: Options):
    """(f, ft, var) at ``eta``; var at eta = 0 when there is no interaction."""
    f = model.subject_predict(values, eta, subject, has_steady_state=opts.has_steady_state,
                              covariate_rule=opts.covariate_rule, has_infusions=opts.has_infusions)
    ft = model.error.transform(f)
    reads_ip = bool(model.error.individual_parameters)  # an ETA on the residual error
    if opts.interaction:
        ip = model.individual_parameters(values, eta, subject) if reads_ip else None
        var = model.residual_variance(values, f, ip)
    else:
        eta0 = jnp.zeros_like(eta)
        f0 = model.subject_predict(values, eta0, subject, has_steady_state=opts.has_steady_state,
                                   covariate_rule=opts.covariate_rule, has_infusions=opts.has_infusions)
        ip0 = model.individual_parameters(values, eta0, subject) if reads_ip else None
        var = model.residual_variance(values, f0, ip0)
    return f, ft, var


def pieces(model, values, eta, subject, opts: Options) -> Pieces:
    """Predictions with their eta-Jacobians (one forward-mode pass)."""

    def fn(e):
        f, ft, var = predictions(model, values, e, subject, opts)
        return (ft, var), (ft, var, f)

    (a, dvar), (ft, var, f) = jax.jacfwd(fn, has_aux=True)(eta)
    return Pieces(f=f, ft=ft, var=var, a=a, dvar=dvar)


def _blq_terms(p: Pieces, subject, model):
    lloq = model.error.transform(jnp.where(subject.blq, subject.lloq, 1.0))
    sd = jnp.sqrt(p.var)
    z = (lloq - p.ft) / sd
    return z, sd


def _gaussian_term(y, ft, var):
    """An observed record's term of l: log R + (y - f)^2 / R (compared scale)."""
    return jnp.log(var) + (y - ft) ** 2 / var


def _observations(model, subject):
    """The observed and BLQ records' masks, and the observations on the compared scale."""
    obs, blq = _masks(subject)
    return obs, blq, model.error.transform(jnp.where(obs, subject.dv, 1.0))


def _first_observed(obs, x):
    """``x`` with every unobserved record given the subject's first observation's value:
    a density then sees only values the data can take (a masked NaN spoils gradients)."""
    return jnp.where(obs, x, x[jnp.argmax(obs)])


def likelihood_terms(model, values, f, subject):
    """A likelihood model's -2 log p(y_j | f_j) on each observed record, 0 elsewhere [R]."""
    obs = subject.obs_mask
    terms = model.observation_m2ll(values, _first_observed(obs, f), _first_observed(obs, subject.dv), subject)
    return jnp.where(obs, terms, 0.0)


def m2ll(model, values, eta, subject, opts: Options, omega_inv, logdet_omega, p: Pieces | None = None):
    """The conditional -2 log-likelihood l(eta), with the eta prior."""
    if model.non_gaussian:
        f = p.f if p is not None else model.subject_predict(
            values, eta, subject, has_steady_state=opts.has_steady_state, covariate_rule=opts.covariate_rule,
            has_infusions=opts.has_infusions)
        return jnp.sum(likelihood_terms(model, values, f, subject)) + eta @ omega_inv @ eta + logdet_omega
    if p is None:
        p = pieces_value(model, values, eta, subject, opts)
    obs, blq, y = _observations(model, subject)
    gauss = jnp.where(obs, _gaussian_term(jnp.where(obs, y, p.ft), p.ft, p.var), 0.0)
    total = jnp.sum(gauss)
    if opts.has_blq:
        z, _ = _blq_terms(p, subject, model)
        total = total + jnp.sum(jnp.where(blq, -2.0 * norm.logcdf(z), 0.0))
    return total + eta @ omega_inv @ eta + logdet_omega


def gaussian_term_derivatives(model, subject, ft, var):
    """The first and second derivatives of each observed record's term of l in its
    compared prediction and variance: [2, R] and [2, 2, R] over (ft, var), zero for the
    other records. l's eta-derivatives follow from them by the chain rule, without
    differentiating through the predictions again (``objective``'s second-order pass;
    for data without BLQ records, which add terms of their own)."""
    obs, _, y = _observations(model, subject)

    def term(z, y_obs):
        return _gaussian_term(y_obs, z[0], z[1])

    z = jnp.stack([ft, var], axis=-1)
    first = jnp.where(obs[:, None], jax.vmap(jax.grad(term))(z, y), 0.0)
    second = jnp.where(obs[:, None, None], jax.vmap(jax.hessian(term))(z, y), 0.0)
    return first.T, jnp.moveaxis(second, 0, -1)


def pieces_value(model, values, eta, subject, opts) -> Pieces:
    """Predictions only (no derivatives)."""
    f, ft, var = predictions(model, values, eta, subject, opts)
    zeros = jnp.zeros(ft.shape + eta.shape)
    return Pieces(f=f, ft=ft, var=var, a=zeros, dvar=zeros)


def gradient_and_gauss_newton(model, values, eta, subject, opts, omega_inv, p: Pieces):
    """grad_eta l and the Gauss-Newton (expected information) approximation of its Hessian.

    For a Gaussian record the expected Hessian of log R + e^2/R is 2 a'a/R + dR'dR/R^2;
    for a BLQ record we use 1/4 of the outer product of its gradient (the same identity
    E[grad grad'] = 4 * (expected 1/2 Hessian) that holds for the Gaussian terms), which
    keeps the matrix positive definite far from the mode. A likelihood model's records
    take their own path (``_likelihood_gradient_and_information``).
    """
    if model.non_gaussian:
        return _likelihood_gradient_and_information(model, values, eta, subject, omega_inv, p)
    obs, blq, y = _observations(model, subject)
    e = jnp.where(obs, y - p.ft, 0.0)
    inv_var = jnp.where(obs, 1.0 / p.var, 0.0)
    w_dvar = (inv_var * (1.0 - e**2 * inv_var))[:, None] * p.dvar
    grad = jnp.sum(w_dvar - 2.0 * (e * inv_var)[:, None] * p.a, axis=0) + 2.0 * omega_inv @ eta
    gn = 2.0 * omega_inv + 2.0 * (p.a.T * inv_var[None, :]) @ p.a + (p.dvar.T * (inv_var**2)[None, :]) @ p.dvar
    if opts.has_blq:
        z, sd = _blq_terms(p, subject, model)
        ratio = jnp.where(blq, jnp.exp(norm.logpdf(z) - norm.logcdf(z)), 0.0)
        dz = -p.a / sd[:, None] - (z / (2.0 * p.var))[:, None] * p.dvar
        g_blq = (-2.0 * ratio)[:, None] * dz
        grad = grad + jnp.sum(g_blq, axis=0)
        gn = gn + 0.5 * g_blq.T @ g_blq
    return grad, gn


def _likelihood_gradient_and_information(model, values, eta, subject, omega_inv, p: Pieces):
    """A likelihood model's grad_eta l = a' g + 2 Omega^-1 eta and a' H a + 2 Omega^-1,
    with g and H the gradient and Hessian of the records' terms in the predictions f
    (a = df/deta). For the built-in densities H is positive semi-definite (they are
    log-concave in the linear predictor), and a'Ha is the exact eta-Hessian of a model
    linear in eta (a GLMM); what it leaves out, like Gauss-Newton, the inner solver's
    secant correction estimates."""

    def total(f):
        return jnp.sum(likelihood_terms(model, values, f, subject))

    g_f = jax.grad(total)
    H_f, g = jax.jacfwd(lambda f: (g_f(f),) * 2, has_aux=True)(p.f)
    H_f = 0.5 * (H_f + H_f.T)
    grad = p.a.T @ g + 2.0 * omega_inv @ eta
    return grad, 2.0 * omega_inv + p.a.T @ H_f @ p.a


def expected_information(p: Pieces, subject, omega_inv):
    """H~ = Omega^-1 + sum_obs [a'a/R + 1/2 dR'dR/R^2] (FOCE-I's eta information)."""
    obs, _ = _masks(subject)
    inv_var = jnp.where(obs, 1.0 / p.var, 0.0)
    return omega_inv + (p.a.T * inv_var[None, :]) @ p.a + 0.5 * (p.dvar.T * (inv_var**2)[None, :]) @ p.dvar


def blq_m2ll(model, values, eta, subject, opts):
    """The BLQ (M3) records' part of l(eta): sum -2 log Phi((LLOQ - f)/sqrt(R))."""
    p = pieces_value(model, values, eta, subject, opts)
    _, blq = _masks(subject)
    z, _ = _blq_terms(p, subject, model)
    return jnp.sum(jnp.where(blq, -2.0 * norm.logcdf(z), 0.0))

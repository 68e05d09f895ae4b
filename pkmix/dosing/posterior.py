"""The posterior of a patient's etas: NUTS, and sampling-importance-resampling (SIR).

Target density: p(eta | levels) proportional to exp(-l(eta)/2), with l the MAP
objective (see `pkmix.dosing.map`). Two samplers:

* ``method="nuts"``: blackjax's NUTS with window adaptation (step size and a diagonal
  mass matrix), several chains started around the MAP. The gradient of the
  log-density is computed in forward mode (one ``jax.jacfwd`` over the few etas) behind
  a ``jax.custom_vjp``, so reverse-mode callers such as blackjax get it without
  differentiating backwards through the event engine or an ODE solver (diffrax's
  ForwardMode solves cannot be reverse-differentiated): closed-form and ODE models take
  the same path. R-hat and ESS come from ``arviz.summary``.
* ``method="sir"`` (fast): proposals from a multivariate t (5 degrees of freedom) centred
  at the MAP with the Hessian covariance inv(H~), importance weights p/q, resampled
  with replacement (systematic resampling). The effective sample size of the weights is reported; when it is
  small the proposal missed the posterior and NUTS is the safer choice.

Both return ``arviz.InferenceData``: the posterior group holds ``eta`` (draw x eta) and
each individual parameter at the patient's last record.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import _linalg as linalg
from .._estimation.likelihood import m2ll
from .._estimation.objective import omega_terms
from .map import TRACES, MAPResult, call_program, map_estimate, model_fingerprint

SIR_DF = 5  # degrees of freedom of the t proposal (an integer: see _sir_core)


def log_density(model, opts, values, subject):
    """log p(eta | data) up to a constant (= -l(eta)/2), with a forward-mode gradient
    behind a custom VJP (reverse-mode callers never differentiate through the engine)."""
    omega_inv, logdet = omega_terms(model, values, subject.n_occasions)

    def value(eta):
        lp = -0.5 * m2ll(model, values, eta, subject, opts, omega_inv, logdet)
        return jnp.where(jnp.isfinite(lp), lp, -jnp.inf)

    @jax.custom_vjp
    def logp(eta):
        return value(eta)

    def fwd(eta):
        grad, lp = jax.jacfwd(lambda e: (value(e), value(e)), has_aux=True)(eta)
        grad = jnp.where(jnp.isfinite(lp) & jnp.all(jnp.isfinite(grad)), grad, 0.0)
        return lp, grad

    def bwd(grad, g):
        return (g * grad,)

    logp.defvjp(fwd, bwd)
    return logp


def _last_parameters(model, values, etas, subject):
    """Individual parameters at the last real record for each row of ``etas``."""
    last = jnp.maximum(jnp.sum(subject.record_mask) - 1, 0)

    def one(eta):
        ip = model.individual_parameters(values, eta, subject)
        return {k: v[last] for k, v in ip.items()}

    return jax.vmap(one)(etas)


def _sir_core_impl(model, opts, n_draws: int, df: int, with_parameters: bool, values, subject, eta_hat, cov,
                   z, chi2, u0):
    """SIR from standard normal ``z`` [n, q], chi^2_df draws ``chi2`` [n] and one uniform
    ``u0`` (random numbers come from the host: a random-number generator in the program
    would only add to its compile time)."""
    TRACES["sir"] += 1
    n_proposals, q = z.shape
    chol = linalg.cholesky(cov)
    x = z / jnp.sqrt(chi2 / df)[:, None]
    etas = eta_hat[None, :] + x @ chol.T
    # log q up to a constant: multivariate t with scale matrix cov.
    maha = jnp.sum(x * x, axis=1)
    log_q = -0.5 * (df + q) * jnp.log1p(maha / df)
    omega_inv, logdet = omega_terms(model, values, subject.n_occasions)
    log_p = -0.5 * jax.vmap(lambda e: m2ll(model, values, e, subject, opts, omega_inv, logdet))(etas)
    log_w = jnp.where(jnp.isfinite(log_p), log_p - log_q, -jnp.inf)
    log_w = log_w - jax.scipy.special.logsumexp(log_w)
    weights = jnp.exp(log_w)
    # Systematic resampling: n_draws evenly spaced points on the weights' CDF.
    cdf = jnp.cumsum(weights)
    u = (jnp.arange(n_draws) + u0) / n_draws
    idx = jnp.clip(jnp.searchsorted(cdf, u * cdf[-1], method="sort"), 0, n_proposals - 1)
    draws = etas[idx]
    ess = 1.0 / jnp.sum(weights**2)
    out = {"eta": draws, "ess": ess, "max_weight": jnp.max(weights), "log_weight": log_w[idx]}
    if with_parameters:
        out["parameters"] = _last_parameters(model, values, draws, subject)
    return out


_sir_core = eqx.filter_jit(_sir_core_impl)


@dataclasses.dataclass
class Draws:
    """Posterior draws as arrays (what the regimen optimiser consumes)."""

    eta: np.ndarray  # [chain, draw, q]
    parameters: dict  # {name: [chain, draw]} (empty when not asked for)
    method: str
    stats: dict  # sampler statistics (arrays [chain, draw]) and scalars
    eta_names: list

    @property
    def flat_eta(self) -> np.ndarray:
        return self.eta.reshape(int(np.prod(self.eta.shape[:-1])), self.eta.shape[-1])  # q may be 0


def _prepare(model, patient, covariate_rule, params, metadata) -> MAPResult:
    if isinstance(patient, MAPResult):
        return patient
    return map_estimate(model, patient, covariate_rule=covariate_rule, params=params, metadata=metadata)


def sir_draws(fit: MAPResult, *, n_samples: int = 2000, n_proposals: int | None = None, seed: int = 0,
              df: int = SIR_DF, parameters: bool = True) -> Draws:
    """SIR draws for a MAP fit (arrays; `sample_posterior` wraps them for arviz).

    Args:
        fit: the patient's `MAPResult`.
        n_samples: draws returned.
        n_proposals: proposals drawn (default 4 x n_samples, at least 4000).
        seed: seed of the proposals and the resampling.
        df: degrees of freedom of the t proposal (an integer).
        parameters: also return the individual parameters of each draw.
    """
    n_proposals = int(n_proposals or max(4 * n_samples, 4000))
    q = len(fit.eta)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_proposals, q))
    chi2 = rng.chisquare(df, n_proposals)
    u0 = rng.uniform()
    subject = fit.subject()
    out = call_program("sir", _sir_core_impl, _sir_core, (fit.model, fit.opts, int(n_samples), int(df), parameters),
                       (fit.values, subject, np.asarray(fit.eta), np.asarray(fit.covariance), z, chi2,
                        np.asarray(u0)), model_fingerprint(fit.info))
    eta = np.asarray(out["eta"])[None]
    params = {k: np.asarray(v)[None] for k, v in out.get("parameters", {}).items()}
    stats = {"log_weight": np.asarray(out["log_weight"])[None], "ess": float(out["ess"]),
             "max_weight": float(out["max_weight"]), "n_proposals": n_proposals}
    return Draws(eta=eta, parameters=params, method="sir", stats=stats, eta_names=list(fit.eta_names))


@eqx.filter_jit
def _nuts_core(model, opts, values, subject, eta_hat, cov, keys, n_warmup: int, n_draws: int):
    import blackjax

    TRACES["nuts"] += 1
    logp = log_density(model, opts, values, subject)
    chol = linalg.cholesky(cov)

    def chain(key):
        k0, k1, k2 = jax.random.split(key, 3)
        # Start near the mode, spread like the posterior, so chains that disagree show.
        x0 = eta_hat + 0.5 * chol @ jax.random.normal(k0, eta_hat.shape)
        warmup = blackjax.window_adaptation(blackjax.nuts, logp, initial_step_size=0.5)
        (state, params), _ = warmup.run(k1, x0, num_steps=n_warmup)
        kernel = blackjax.nuts(logp, **params)

        def step(s, k):
            s, info = kernel.step(k, s)
            return s, (s.position, info.is_divergent, info.acceptance_rate, info.num_integration_steps)

        _, (pos, div, acc, steps) = jax.lax.scan(step, state, jax.random.split(k2, n_draws))
        return pos, div, acc, steps, params["step_size"]

    pos, div, acc, steps, step_size = jax.vmap(chain)(keys)
    params = jax.vmap(lambda p: _last_parameters(model, values, p, subject))(pos)
    return {"eta": pos, "diverging": div, "acceptance_rate": acc, "n_steps": steps, "step_size": step_size,
            "parameters": params}


def nuts_draws(fit: MAPResult, *, n_samples: int = 1000, chains: int = 4, warmup: int = 500,
               seed: int = 0) -> Draws:
    """NUTS draws for a MAP fit (arrays; `sample_posterior` wraps them for arviz)."""
    subject = fit.subject()
    keys = jax.random.split(jax.random.PRNGKey(seed), int(chains))
    out = _nuts_core(fit.model, fit.opts, fit.values, subject, jnp.asarray(fit.eta), jnp.asarray(fit.covariance),
                     keys, int(warmup), int(n_samples))
    stats = {"diverging": np.asarray(out["diverging"]), "acceptance_rate": np.asarray(out["acceptance_rate"]),
             "n_steps": np.asarray(out["n_steps"]), "step_size": np.asarray(out["step_size"])}
    return Draws(eta=np.asarray(out["eta"]), parameters={k: np.asarray(v) for k, v in out["parameters"].items()},
                 method="nuts", stats=stats, eta_names=list(fit.eta_names))


def to_inference_data(draws: Draws, fit: MAPResult | None = None):
    """``arviz.InferenceData`` with the draws (posterior) and sampler statistics."""
    import arviz as az

    posterior = {"eta": draws.eta}
    for k, v in draws.parameters.items():
        posterior[k] = v
    stats = {k: v for k, v in draws.stats.items() if isinstance(v, np.ndarray) and v.ndim == 2}
    if draws.method == "nuts" and "step_size" in draws.stats:
        stats["step_size"] = np.repeat(draws.stats["step_size"][:, None], draws.eta.shape[1], axis=1)
    attrs = {"sampler": draws.method, "inference_library": "pkmix"}
    for k, v in draws.stats.items():
        if np.isscalar(v):
            attrs[k] = v
    if fit is not None:
        attrs.update({"model": fit.model_name, "patient": fit.patient_id})
    idata = az.from_dict(posterior=posterior, sample_stats=stats or None,
                         coords={"eta_dim_0": list(draws.eta_names)}, dims={"eta": ["eta_dim_0"]})
    idata.posterior.attrs.update(attrs)
    return idata


def sample_posterior(model, patient, *, method: str = "nuts", n_samples: int | None = None, chains: int = 4,
                     warmup: int = 500, seed: int = 0, covariate_rule: str = "nonmem", params=None,
                     metadata=None, n_proposals: int | None = None):
    """Draws from the posterior of a patient's etas and individual parameters.

    Args:
        model: a ``pkmix.Model``, library module or name.
        patient: a patient (see `load_patient`) or a `MAPResult` (reused).
        method: "nuts" (blackjax NUTS with window adaptation) or "sir"
            (sampling-importance-resampling from a t proposal around the MAP).
        n_samples: draws per chain (NUTS, default 1000) or in all (SIR, default 2000).
        chains, warmup: NUTS chains and adaptation steps.
        seed: the random seed.
        n_proposals: SIR proposals (default 4 x n_samples).

    Returns:
        ``arviz.InferenceData``: ``posterior`` has ``eta`` (chain, draw, eta) and each
        individual parameter at the last record; ``sample_stats`` the sampler's
        (NUTS: ``diverging``, ``acceptance_rate``, ``n_steps``, ``step_size``; SIR:
        ``log_weight``); ``posterior.attrs`` the sampler name and, for SIR, ``ess``
        (Kish effective sample size of the weights) and ``max_weight``; for NUTS
        ``rhat_max`` and ``ess_bulk_min`` (``arviz.summary`` over the etas).
    """
    if method not in ("nuts", "sir"):
        raise ValueError(f"method must be 'nuts' or 'sir', got {method!r}")
    fit = _prepare(model, patient, covariate_rule, params, metadata)
    if method == "sir":
        draws = sir_draws(fit, n_samples=n_samples or 2000, n_proposals=n_proposals, seed=seed)
        return to_inference_data(draws, fit)
    draws = nuts_draws(fit, n_samples=n_samples or 1000, chains=chains, warmup=warmup, seed=seed)
    idata = to_inference_data(draws, fit)
    import arviz as az

    summary = az.summary(idata, var_names=["eta"])
    idata.posterior.attrs["rhat_max"] = float(np.nanmax(summary["r_hat"]))
    idata.posterior.attrs["ess_bulk_min"] = float(np.nanmin(summary["ess_bulk"]))
    idata.posterior.attrs["ess_tail_min"] = float(np.nanmin(summary["ess_tail"]))
    idata.posterior.attrs["divergences"] = int(draws.stats["diverging"].sum())
    return idata


def summary(idata):
    """``arviz.summary`` of the etas and parameters (mean, sd, HDI, R-hat, ESS)."""
    import arviz as az

    return az.summary(idata)

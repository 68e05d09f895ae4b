"""Which parameters a model uses on the log scale, read from ``individual()`` itself.

The parameter table shows a theta that enters as ``exp(tcl + eta_cl)`` beside its
back-transformed value (``tcl 1.012 -> CL 2.75``), as nlmixr2 does, and gives an eta's
CV % only where the eta is exponential (log-normal), its SD otherwise. Both are decided
the same way: the individual parameter ``k`` depends on ``x`` exponentially when
d log k / d x is 1, checked at two points (at the estimate and 0.5 away) so that
``theta * (1 + eta)`` or a theta that happens to be 1 is not mistaken for it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# |d log k / d x - 1| below this counts as exactly 1 (derivatives are exact: forward mode).
TOLERANCE = 1e-8


def _typical_covariates(model, dataset) -> np.ndarray:
    """Each covariate's median over the records (1 where the data are not at hand): the
    derivatives of a multiplicative covariate model do not depend on it."""
    out = np.ones(len(model.covariates))
    frame = getattr(dataset, "frame", None)
    if frame is None:
        return out
    columns = {c.upper(): c for c in frame.columns}
    for i, name in enumerate(model.covariates):
        col = columns.get(name.upper())
        if col is not None:
            values = np.asarray(frame[col], dtype=float)
            values = values[np.isfinite(values)]
            if values.size:
                out[i] = float(np.median(values))
    return out


def _log_slopes(model, values, dataset, shift_theta: float, shift_eta: float):
    """d log k / d theta and d log k / d eta for every individual parameter k, at the
    estimate shifted by the given amounts (etas from 0). {k: (theta slopes, eta slopes)}."""
    cov = _typical_covariates(model, dataset)
    theta0 = jnp.asarray(values.theta) + shift_theta
    eta0 = jnp.full(model.spec.n_eta, shift_eta)
    iov = jnp.zeros(len(model.iov_names))

    def log_ip(theta, eta):
        ip = model._individual_one(values._replace(theta=theta), eta, iov, cov)
        return {k: jnp.log(jnp.abs(v)) for k, v in ip.items()}

    jac = jax.jacfwd(log_ip, argnums=(0, 1))(theta0, eta0)  # {k: (d/d theta, d/d eta)}
    return {k: (np.asarray(d[0]), np.asarray(d[1])) for k, d in jac.items()}


def _exponential(model, values, dataset, which: int) -> dict[int, list[str]]:
    """{index of a theta (which=0) or eta (which=1): individual parameters that depend on it
    exponentially}."""
    try:
        a = _log_slopes(model, values, dataset, 0.0, 0.0)
        b = _log_slopes(model, values, dataset, 0.5, 0.5)
    except Exception:  # noqa: BLE001 - an individual() that cannot be differentiated: no claim
        return {}
    found: dict[int, list[str]] = {}
    for k in sorted(a, key=lambda n: (len(n), n)):
        for i, (x, y) in enumerate(zip(a[k][which], b[k][which])):
            if abs(x - 1.0) < TOLERANCE and abs(y - 1.0) < TOLERANCE:
                found.setdefault(i, []).append(k)
    return found


def back_transformed(model, values, dataset) -> dict[str, str]:
    """{theta name: the individual parameter it is the log of (upper case)} for the thetas
    that enter ``individual()`` as exp(theta + ...)."""
    if model is None or values is None:
        return {}
    names = model.spec.theta_names
    return {names[i]: ks[0].upper() for i, ks in _exponential(model, values, dataset, 0).items()}


def exponential_etas(model, values, dataset) -> set[str] | None:
    """The etas that enter ``individual()`` as exp(... + eta) (log-normal parameters);
    None when the model is not at hand (then every eta is treated as exponential)."""
    if model is None or values is None:
        return None
    names = model.spec.eta_names
    return {names[i] for i in _exponential(model, values, dataset, 1)}

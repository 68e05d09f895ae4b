"""Which parameters a model uses on the log scale, read from ``individual()`` itself.

The parameter table shows a theta that enters as ``exp(tcl + eta_cl)`` beside its
back-transformed value (``tcl 1.012 -> CL 2.75``), as nlmixr2 does, and gives an eta's
CV % only where the eta is exponential (log-normal), its SD otherwise. Both are decided
the same way: the individual parameter ``k`` depends on ``x`` exponentially when
d log k / d x is 1, checked at two points (at the estimate and 0.5 away) so that
``theta * (1 + eta)`` or a theta that happens to be 1 is not mistaken for it.
"""

from __future__ import annotations

import weakref

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


# One compiled program per model (weakly held: it goes with the model). Taken op by op,
# jax.jacfwd of individual() compiled some twenty tiny programs in every process that
# printed a fit's parameter table; traced once under jit it is one program (and one
# entry of the persistent compilation cache).
_PROGRAMS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _slopes_program(model):
    program = _PROGRAMS.get(model)
    if program is None:
        n_eta = model.spec.n_eta
        iov = jnp.zeros(len(model.iov_names))

        def slopes(values, cov, shifts):
            def at(shift):  # shift: (theta shift, eta shift)
                def log_ip(theta, eta):
                    ip = model._individual_one(values._replace(theta=theta), eta, iov, cov)
                    return {k: jnp.log(jnp.abs(v)) for k, v in ip.items()}

                theta0 = values.theta + shift[0]
                eta0 = jnp.full(n_eta, shift[1], dtype=values.theta.dtype)
                return jax.jacfwd(log_ip, argnums=(0, 1))(theta0, eta0)

            return jax.vmap(at)(shifts)

        program = jax.jit(slopes)
        _PROGRAMS[model] = program
    return program


def _log_slopes(model, values, dataset, shifts):
    """d log k / d theta and d log k / d eta for every individual parameter k, at the
    estimate shifted by each (theta shift, eta shift) of ``shifts`` (etas from 0):
    {k: (theta slopes [len(shifts), n_theta], eta slopes [len(shifts), n_eta])}."""
    cov = jnp.asarray(_typical_covariates(model, dataset))
    values = jax.tree_util.tree_map(jnp.asarray, values)
    jac = _slopes_program(model)(values, cov, jnp.asarray(shifts, dtype=float))
    return {k: (np.asarray(d[0]), np.asarray(d[1])) for k, d in jac.items()}


def _exponential(model, values, dataset, which: int) -> dict[int, list[str]]:
    """{index of a theta (which=0) or eta (which=1): individual parameters that depend on it
    exponentially}."""
    try:
        slopes = _log_slopes(model, values, dataset, [(0.0, 0.0), (0.5, 0.5)])
    except Exception:  # noqa: BLE001 - an individual() that cannot be differentiated: no claim
        return {}
    found: dict[int, list[str]] = {}
    for k in sorted(slopes, key=lambda n: (len(n), n)):
        a, b = slopes[k][which]  # at the estimate, and 0.5 away
        for i, (x, y) in enumerate(zip(a, b)):
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

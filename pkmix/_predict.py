"""Population and individual predictions for a dataset."""

from __future__ import annotations

from typing import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._config import require_x64
from ._model.errors import ModelError
from ._model.model import Model
from ._model.parameters import ParameterValues


def parameter_values(model: Model, params=None) -> ParameterValues:
    """Parameter values from ``None`` (the initial values), a ``ParameterValues``, or a
    ``{name: value}`` mapping that overrides initial values by name (thetas, sigmas,
    eta names for OMEGA diagonal elements, ``"omega(ETA_A,ETA_B)"`` for any OMEGA element
    (the names of the SE keys and the parameter table), ``"omega"`` for a full matrix)."""
    values = model.initial_values()
    if params is None:
        return values
    if isinstance(params, ParameterValues):
        model.check_values(params)
        return params
    if not isinstance(params, Mapping):
        raise ModelError(f"params: expected a dict of values by name, got {type(params).__name__}")
    theta = np.array(values.theta)
    omega = np.array(values.omega)
    iov = np.array(values.iov)
    sigma = np.array(values.sigma)
    s = model.spec
    for name, v in params.items():
        if name in s.theta_names:
            theta[s.theta_names.index(name)] = v
        elif name in s.sigma_names:
            sigma[s.sigma_names.index(name)] = v
        elif name in s.eta_names:
            i = s.eta_names.index(name)
            omega[i, i] = v
        elif name in s.iov_names:
            iov[s.iov_names.index(name)] = v
        elif name == "omega":
            omega = np.asarray(v, dtype=float)
        elif _omega_key(name, s) is not None:
            kind, i, j = _omega_key(name, s)
            if kind == "iov":
                iov[i] = v
            else:
                omega[i, j] = omega[j, i] = v
        else:
            raise ModelError(f"params: '{name}' is not a parameter of the model")
    values = ParameterValues(*(jnp.asarray(x, dtype=jnp.float64) for x in (theta, omega, iov, sigma)))
    model.check_values(values)
    return values


def _omega_key(name: str, spec):
    """("omega", i, j) or ("iov", i, i) for a key ``omega(ETA_A,ETA_B)`` (the one name of an
    OMEGA element: SE keys, the parameter table, params=); None for anything else."""
    if not (name.startswith("omega(") and name.endswith(")")):
        return None
    parts = [x.strip() for x in name[6:-1].split(",")]
    if len(parts) != 2:
        return None
    a, b = parts
    if a in spec.eta_names and b in spec.eta_names:
        return "omega", spec.eta_names.index(a), spec.eta_names.index(b)
    if a == b and a in spec.iov_names:
        return "iov", spec.iov_names.index(a), spec.iov_names.index(a)
    return None


@eqx.filter_jit
def _predict_batch(model, values, etas, batch, has_steady_state, covariate_rule):
    def one(eta, subject):
        pred = model.subject_predict(values, jnp.zeros_like(eta), subject,
                                     has_steady_state=has_steady_state, covariate_rule=covariate_rule)
        ipred = model.subject_predict(values, eta, subject,
                                      has_steady_state=has_steady_state, covariate_rule=covariate_rule)
        return pred, ipred

    return jax.vmap(one)(etas, batch)


def bind(model: Model, data):
    """Check ``data`` against ``model`` and return (dataset, padded batch)."""
    from ._data import Dataset, read_nonmem

    dataset = data if isinstance(data, Dataset) else read_nonmem(data, model=model)
    dataset.check(model)
    batch = dataset.batch(model.covariates, occasion_column=model.occasion_column)
    return dataset, batch


def predict(model: Model, data, params=None, etas=None, *, covariate_rule: str = "nonmem") -> pd.DataFrame:
    """Population (PRED, etas = 0) and individual (IPRED) predictions at every record.

    Args:
        model: a ``pkmix.Model``.
        data: a ``Dataset``, a path to a NONMEM-format CSV, or a DataFrame.
        params: parameter values (see ``parameter_values``); default the initial ones.
        etas: ``[n_subjects, n_eta]`` array or a DataFrame with ID and eta columns;
            default zeros (then IPRED = PRED).
        covariate_rule: "nonmem" (a record's values govern the interval ending at it)
            or "locf".

    Returns:
        One row per record (doses included): ID, TIME, EVID, DV, PRED, IPRED.
    """
    require_x64()
    dataset, batch = bind(model, data)
    values = parameter_values(model, params)
    n_occ = batch.n_occasions
    n_eta = model.n_eta_total(n_occ)
    if etas is None:
        eta_array = jnp.zeros((dataset.n_subjects, n_eta))
    elif isinstance(etas, pd.DataFrame):
        by_id = etas.set_index("ID")
        cols = list(model.eta_names)
        eta_array = jnp.asarray(by_id.loc[list(dataset.ids), cols].to_numpy(dtype=float))
    else:
        eta_array = jnp.asarray(etas, dtype=jnp.float64)
    if eta_array.shape != (dataset.n_subjects, n_eta):
        raise ModelError(f"etas have shape {eta_array.shape}, expected {(dataset.n_subjects, n_eta)}")
    has_ss = bool(np.any(np.asarray(batch.ss) > 0))
    pred, ipred = _predict_batch(model, values, eta_array, batch, has_ss, covariate_rule)
    frame = dataset.frame
    out = pd.DataFrame({
        "ID": frame["ID"].to_numpy(),
        "TIME": frame["TIME"].to_numpy(),
        "EVID": frame["EVID"].to_numpy(),
        "DV": frame["DV"].to_numpy(),
        "PRED": batch.rows(pred),
        "IPRED": batch.rows(ipred),
    })
    return out

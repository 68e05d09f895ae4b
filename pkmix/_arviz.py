"""A fit as ``arviz.InferenceData``, so arviz's summaries and plots work on its EBEs.

A FOCE/FOCE-I/Laplace fit has no posterior sample: each subject's EBE is the mode of
its conditional posterior of eta. ``to_inference_data`` stores the EBEs in the
``posterior`` group as a single draw of a single chain, so ``arviz.summary`` gives the
EBEs (its ``mean``; ``sd``, ESS and R-hat are undefined for one draw) and arviz's
plots (``plot_forest``, ``plot_pair`` over subjects) apply. Where a real posterior
sample exists -- ``pkmix.dosing`` returns one as InferenceData already -- it is passed
through unchanged.

Groups and variables:

* ``posterior``: ``eta`` (chain, draw, subject, eta_name) -- the EBEs (between-subject and,
  with IOV, per-occasion etas named ``<kappa>_occ<k>``); ``ipred`` (chain, draw, obs)
  -- the individual predictions at the EBEs.
* ``observed_data``: ``DV`` (obs) -- the observations (EVID 0, MDV 0; BLQ ones too).
* ``constant_data``: ``ID``, ``TIME``, ``BLQ``, ``PRED`` (obs); ``theta`` (theta),
  ``omega`` (eta_row, eta_col), ``sigma`` (sigma), ``iov`` (iov) -- the estimates.

Coordinates: ``subject`` holds the subject IDs, ``eta_name`` the eta names, ``obs`` the
record's row number in the fit's table.
"""

from __future__ import annotations

import numpy as np


def to_inference_data(result):
    """Convert a ``FitResult`` (or pass an ``arviz.InferenceData`` through).

    Args:
        result: a ``FitResult`` from ``pkmix.fit``/``pkmix.evaluate`` or
            ``pkmix.report.load_run``; or an ``arviz.InferenceData``.

    Returns:
        ``arviz.InferenceData`` with ``posterior``, ``observed_data`` and
        ``constant_data`` groups (see the module docstring); attrs record the model,
        the method, the OFV and that the posterior is the EBE (one draw).

    Raises:
        TypeError: ``result`` is neither.
    """
    import arviz as az

    if isinstance(result, az.InferenceData):
        return result
    if not hasattr(result, "etas") or not hasattr(result, "theta"):
        raise TypeError(f"to_inference_data: expected a pkmix FitResult, got {type(result).__name__}")
    etas = result.etas
    eta_cols = [c for c in etas.columns if c != "ID"]
    subjects = etas["ID"].to_numpy()
    eta_values = etas[eta_cols].to_numpy(dtype=float)[None, None]

    table = None
    try:
        table = result.table()
    except ValueError:  # no diagnostics computed
        table = None
    posterior = {"eta": eta_values}
    dims = {"eta": ["subject", "eta_name"]}
    coords = {"subject": subjects, "eta_name": eta_cols}
    observed, constant = {}, {}
    if table is not None:
        obs = table[(table["EVID"] == 0) & (table["MDV"] == 0)]
        coords["obs"] = obs.index.to_numpy()
        posterior["ipred"] = obs["IPRED"].to_numpy(dtype=float)[None, None]
        dims["ipred"] = ["obs"]
        observed["DV"] = obs["DV"].to_numpy(dtype=float)
        dims["DV"] = ["obs"]
        for col in ("ID", "TIME", "BLQ", "PRED"):
            constant[col] = obs[col].to_numpy()
            dims[col] = ["obs"]

    omega = result.omega
    names = list(omega.index)
    constant["theta"] = np.array(list(result.theta.values()), dtype=float)
    dims["theta"] = ["theta"]
    coords["theta"] = list(result.theta)
    constant["omega"] = omega.to_numpy(dtype=float)
    dims["omega"] = ["eta_row", "eta_col"]
    coords["eta_row"] = names
    coords["eta_col"] = names
    constant["sigma"] = np.array(list(result.sigma.values()), dtype=float)
    dims["sigma"] = ["sigma"]
    coords["sigma"] = list(result.sigma)
    if result.iov:
        constant["iov"] = np.array(list(result.iov.values()), dtype=float)
        dims["iov"] = ["iov"]
        coords["iov"] = list(result.iov)

    attrs = {
        "model": str(result.model_name), "method": str(result.method), "ofv": float(result.ofv),
        "posterior_kind": "empirical Bayes estimates (conditional modes): one chain, one draw",
        "inference_library": "pkmix",
    }
    return az.from_dict(posterior=posterior, observed_data=observed or None, constant_data=constant,
                        coords=coords, dims=dims, attrs=attrs, posterior_attrs=attrs)

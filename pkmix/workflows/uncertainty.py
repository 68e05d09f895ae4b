"""Simulation with parameter uncertainty: parameter sets drawn from a fit's covariance
matrix, a bootstrap or a SIR, and simulations that use one set per replicate.

``pkmix.simulate`` and ``pkmix.vpc`` take one parameter set per call, so
``simulate_with_uncertainty`` loops over the sets (one ``simulate`` call each, the
program compiled once: parameter values are run-time inputs) and numbers the
replicates 1..n_sets * n_per_set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._common import covariance_from_run, estimate_vector, valid_values, values_from_vector


def parameter_sets(fit, source="covariance", n: int = 100, seed: int = 0) -> list:
    """``n`` parameter sets (``ParameterValues``, usable as ``params=`` of
    ``pkmix.simulate``, ``pkmix.vpc``, ``pkmix.predict``) describing the uncertainty of
    ``fit``'s estimates.

    Args:
        fit: a ``FitResult`` (or run folder) with its model.
        source: "covariance" (multivariate normal from the covariance step; draws
            outside the parameter space are redrawn), a ``BootstrapResult`` or a
            ``SIRResult`` (its converged replicates / resamples, drawn with replacement).
        n: number of sets.
        seed: random seed.
    """
    from ._common import as_fit

    fit = as_fit(fit)
    rng = np.random.default_rng(int(seed))
    model = fit.model
    if isinstance(source, str):
        if source != "covariance":
            raise ValueError(f"source must be 'covariance', a BootstrapResult or a SIRResult, got {source!r}")
        from .._estimation.covariance import natural_names
        from .._estimation.engine import transform_for

        names = natural_names(transform_for(model))
        cov = covariance_from_run(fit, names)
        if cov is None:
            raise ValueError("source='covariance' needs a fit with a covariance step")
        mean = estimate_vector(fit, names)
        out = []
        for _ in range(100):  # redraw the few that leave the parameter space
            draws = rng.multivariate_normal(mean, cov, size=n, method="eigh")
            for v in draws:
                values = values_from_vector(model, fit.values, names, v)
                if valid_values(model, values) is None:
                    out.append(values)
                    if len(out) == n:
                        return out
        raise ValueError("fewer than 1 % of the draws from the covariance matrix lie in the parameter space")
    samples = source.samples()
    rows = rng.integers(0, len(samples), size=n)
    return [values_from_vector(model, fit.values, list(samples.columns), samples.iloc[r].to_numpy()) for r in rows]


def simulate_with_uncertainty(fit, design, sets, n_per_set: int = 1, seed: int = 0, **simulate_kw) -> pd.DataFrame:
    """Simulated replicates, each from one of ``sets`` (``parameter_sets``):
    ``n_per_set`` replicates per set, a REP column 1..len(sets) n_per_set and a
    ``PARSET`` column (1-based set index). Other arguments go to ``pkmix.simulate``."""
    from .._simulate import simulate

    model = fit.model if hasattr(fit, "model") else fit
    frames = []
    for k, values in enumerate(sets):
        frame = simulate(model, design, n=n_per_set, seed=int(seed) + k, params=values, **simulate_kw)
        frame["REP"] = frame["REP"] + k * n_per_set
        frame.insert(1, "PARSET", k + 1)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


__all__ = ["parameter_sets", "simulate_with_uncertainty"]

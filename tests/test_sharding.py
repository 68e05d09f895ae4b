"""fit_batch sharded over 4 virtual CPU devices (replicates vmapped on each) gives what
one device fitting them one at a time gives.

XLA's device count is fixed when JAX starts, so the check runs in a subprocess started
with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``; it prints a JSON line that
this test reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    import pkmix
    from pkmix.batch import fit_batch
    from pkmix._simulate import Dose, TrialDesign, simulate

    model = pkmix.Model(
        theta={"tcl": 1.0, "tv": 3.0}, omega={"eta_cl": 0.1, "eta_v": 0.1}, sigma={"prop_sd": 0.1},
        individual=lambda p: {"cl": jnp.exp(p.tcl + p.eta_cl), "v": jnp.exp(p.tv + p.eta_v)},
        structure=pkmix.one_compartment(), observe=lambda a, p: a.central / p.v,
        error=pkmix.proportional("prop_sd"))
    reps = simulate(model, TrialDesign(n_subjects=12, doses=[Dose(100.0)], times=(0.5, 2, 6, 12, 24)),
                    n=6, seed=3, output="arrays")
    start = {"tcl": 1.2, "tv": 2.8}
    # 4 devices, each fitting its 2 replicates side by side (vmapped: the GPU layout), and
    # 1 device fitting them one after another (lax.map: the CPU default).
    four = fit_batch(model, reps, params=start, chunk_size=8, vmap_width=2)
    one = fit_batch(model, reps, params=start, devices=jax.devices()[:1], chunk_size=8)
    cols = four.names + ["ofv", "iterations"] + [f"se({n})" for n in four.names]
    print(json.dumps({
        "n_devices": len(jax.devices()),
        "devices_used": [four.timing["devices"], one.timing["devices"]],
        "widths": [four.timing["vmap_width"], one.timing["vmap_width"]],
        "four": four.estimates[cols].to_numpy().tolist(),
        "one": one.estimates[cols].to_numpy().tolist(),
        "converged": [bool(c) for c in four.converged],
    }))
""")


@pytest.mark.slow
def test_four_devices_match_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["n_devices"] == 4
    assert out["devices_used"] == [4, 1]
    assert out["widths"] == [2, 1]
    import numpy as np

    four, one = np.asarray(out["four"]), np.asarray(out["one"])
    # Same replicate, same steps: only the vectorisation differs, which can change
    # rounding, not the steps.
    np.testing.assert_allclose(four, one, rtol=1e-6, atol=1e-9)
    assert sum(out["converged"]) >= 4

"""diffrax's implicit solver (Kvaerno5) with its linear solves in plain JAX operations.

Imported only when an ODE model is solved, so that ``import pkmix`` does not pay for
diffrax, lineax and optimistix (0.2 s of a cold process that never needs them).
"""

from __future__ import annotations

import diffrax
import jax
import jax.flatten_util
import lineax as lx

from .. import _linalg as linalg


class PlainSolve(lx.AbstractLinearSolver):
    """The implicit solver's Newton systems solved by ``pkmix._linalg.solve`` (plain JAX
    operations): lineax's default LU is a LAPACK call, batched over subjects under vmap,
    which can hang jaxlib 0.10's CPU thread pool (see ``pkmix/_linalg.py``)."""

    def init(self, operator, options):
        return operator.as_matrix()

    def compute(self, state, vector, options):
        flat, unravel = jax.flatten_util.ravel_pytree(vector)
        return unravel(linalg.solve(state, flat)), lx.RESULTS.successful, {}

    def transpose(self, state, options):
        return state.T, options

    def conj(self, state, options):
        return state, options  # real matrices

    def assume_full_rank(self):
        return True


def kvaerno5(rtol=None, atol=None, **kwargs):
    """diffrax's Kvaerno5 with the root finder's linear solves in plain JAX operations."""
    if rtol is None:  # tolerances from diffeqsolve's step-size controller
        root_finder = diffrax.with_stepsize_controller_tols(diffrax.VeryChord)(linear_solver=PlainSolve())
    else:
        root_finder = diffrax.VeryChord(rtol=rtol, atol=atol, linear_solver=PlainSolve())
    return diffrax.Kvaerno5(root_finder=root_finder, **kwargs)

"""Small symmetric positive definite linear algebra on LAPACK primitives.

``jnp.linalg.solve``/``inv``/``slogdet`` go through LU with pivoting and a custom linear
solve whose derivative rules are large; XLA on a CPU takes seconds to compile them in
every differentiated copy. Every matrix pkmix inverts is SPD (OMEGA, the eta
information, the Gauss-Newton matrix), so a Cholesky factor and two triangular solves
do, compile several times faster, and fail loudly (NaN) when the matrix is not SPD.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def cholesky(A):
    return lax.linalg.cholesky(0.5 * (A + jnp.swapaxes(A, -1, -2)))


def cho_solve(L, b):
    """Solve (L L') x = b for a vector or matrix ``b``."""
    vector = b.ndim == 1
    B = b[:, None] if vector else b
    y = lax.linalg.triangular_solve(L, B, left_side=True, lower=True)
    x = lax.linalg.triangular_solve(L, y, left_side=True, lower=True, transpose_a=True)
    return x[:, 0] if vector else x


def spd_solve(A, b):
    return cho_solve(cholesky(A), b)


def spd_inv(A):
    return cho_solve(cholesky(A), jnp.eye(A.shape[-1], dtype=A.dtype))


def spd_logdet(A):
    """log|A| for SPD ``A``; NaN when it is not positive definite."""
    L = cholesky(A)
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)

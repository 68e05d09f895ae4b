"""Small dense linear algebra in plain JAX operations (no LAPACK calls).

Why not ``jnp.linalg``/``lax.linalg``:

* On CPU, jaxlib 0.10's batched LAPACK kernels (Cholesky, triangular solve, LU,
  eigh: everything vmapped over subjects) split the batch over XLA's intra-op thread
  pool and block a pool thread until the pieces finish. When the program runs as many
  such calls side by side as the pool has threads (2 on a 2-core machine: e.g. the
  population and individual linearisations), every thread waits and the process hangs
  for ever. Plain operations never block.
* ``jnp.linalg.solve``/``inv``/``slogdet`` go through LU with pivoting and a custom
  linear solve whose derivative rules are large; XLA takes seconds to compile them in
  every differentiated copy.

Every matrix pkmix factors is small (etas, compartments, a subject's records), so the
textbook algorithms, unrolled for up to ``UNROLL_MAX`` rows and a ``fori_loop`` above
that, cost little, differentiate in forward and reverse mode and vectorise under
``vmap``. The unrolled forms keep the columns (rows) as separate vectors and stack
them once, without writing into a matrix column by column: each such write is a
dynamic-update-slice that XLA compiles as a kernel of its own, and with its
derivatives they were 40 % of the fit program's kernels. Matrices that should be SPD and are not give NaN (loud, never a silent
answer). Leading batch dimensions are allowed everywhere.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

UNROLL_MAX = 12


def _loop(n, body, init):
    """``body(i, carry)`` for i = 0..n-1: unrolled for small n (fuses, compiles small),
    a fori_loop for larger n (compile size independent of n)."""
    if n <= UNROLL_MAX:
        for i in range(n):
            init = body(i, init)
        return init
    return lax.fori_loop(0, n, body, init)


def _weighted_sum(vectors, weights):
    """sum_k vectors[k] * weights[k] as elementwise operations (fused by XLA)."""
    total = vectors[0] * weights[0]
    for v, w in zip(vectors[1:], weights[1:]):
        total = total + v * w
    return total


@functools.partial(jnp.vectorize, signature="(n,n)->(n,n)")
def _cholesky(A):
    n = A.shape[-1]
    rows = jnp.arange(n)
    if n == 0:
        return A
    if n <= UNROLL_MAX:
        columns = []
        for j in range(n):
            v = A[:, j]
            if j:
                v = v - _weighted_sum(columns, [c[j] for c in columns])
            columns.append(jnp.where(rows >= j, v / jnp.sqrt(v[j]), 0.0))
        return jnp.stack(columns, axis=1)

    def column(j, L):
        # Columns >= j of L are still zero, so L @ L[j] sums over k < j only.
        v = A[:, j] - L @ L[j, :]
        return L.at[:, j].set(jnp.where(rows >= j, v / jnp.sqrt(v[j]), 0.0))

    return _loop(n, column, jnp.zeros_like(A))


def cholesky(A):
    """Lower Cholesky factor of the symmetric part of ``A`` (NaN if not positive definite)."""
    return _cholesky(0.5 * (A + jnp.swapaxes(A, -1, -2)))


@functools.partial(jnp.vectorize, signature="(n,n),(n,m)->(n,m)", excluded=(2,))
def _triangular(L, B, transpose):
    n = L.shape[-1]
    if n == 0:
        return B
    if n <= UNROLL_MAX:
        X, solved = [None] * n, []
        for i in (range(n - 1, -1, -1) if transpose else range(n)):
            r = B[i]
            if solved:
                r = r - _weighted_sum([X[k] for k in solved], [L[k, i] if transpose else L[i, k] for k in solved])
            X[i] = r / L[i, i]
            solved.append(i)
        return jnp.stack(X, axis=0)
    order = (lambda i: n - 1 - i) if transpose else (lambda i: i)

    def row(i, X):
        # Rows of X not solved yet are zero, so the product only sums solved ones.
        i = order(i)
        coeffs = L[:, i] if transpose else L[i, :]
        return X.at[i].set((B[i] - coeffs @ X) / L[i, i])

    return _loop(n, row, jnp.zeros_like(B))


def solve_triangular(L, b, *, transpose: bool = False):
    """x with L x = b (or L' x = b) for lower-triangular ``L``; ``b`` a vector or matrix."""
    vector = b.ndim == L.ndim - 1
    B = b[..., None] if vector else b
    X = _triangular(L, B, bool(transpose))
    return X[..., 0] if vector else X


def cho_solve(L, b):
    """Solve (L L') x = b for a vector or matrix ``b``."""
    return solve_triangular(L, solve_triangular(L, b), transpose=True)


def spd_solve(A, b):
    return cho_solve(cholesky(A), b)


def spd_inv(A):
    return cho_solve(cholesky(A), jnp.broadcast_to(jnp.eye(A.shape[-1], dtype=A.dtype), A.shape))


def spd_logdet(A):
    """log|A| for SPD ``A``; NaN when it is not positive definite."""
    L = cholesky(A)
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)


@functools.partial(jnp.vectorize, signature="(n,n),(n)->(n)")
def _solve(A, b):
    n = A.shape[-1]
    rows = jnp.arange(n)
    M = jnp.concatenate([A, b[:, None]], axis=1)

    def eliminate(k, M):
        # Partial pivoting: the largest |entry| at or below the diagonal of column k.
        p = jnp.argmax(jnp.where(rows >= k, jnp.abs(M[:, k]), -1.0))
        row_k, row_p = M[k], M[p]
        M = M.at[p].set(row_k).at[k].set(row_p)
        factors = jnp.where(rows > k, M[:, k] / M[k, k], 0.0)
        return M - factors[:, None] * M[k][None, :]

    M = _loop(n, eliminate, M)
    U, y = M[:, :n], M[:, n]

    def back(i, x):
        i = n - 1 - i
        return x.at[i].set((y[i] - U[i] @ x) / U[i, i])

    return _loop(n, back, jnp.zeros_like(y))


def solve(A, b):
    """x with A x = b for a general square ``A`` and vector ``b`` (Gaussian elimination
    with partial pivoting)."""
    return _solve(A, b)


@jax.custom_batching.custom_vmap
def eigh(C):
    """``jnp.linalg.eigh`` (no derivatives) that, under ``vmap``, decomposes the matrices
    one after another (``lax.map``): one LAPACK call per matrix never blocks the thread
    pool as a batched call can (see the module docstring). Returns (eigenvalues,
    eigenvectors)."""
    w, V = jnp.linalg.eigh(C)
    return w, V


@eigh.def_vmap
def _eigh_vmap(axis_size, in_batched, C):
    (batched,) = in_batched
    if not batched:
        return eigh(C), (False, False)
    return lax.map(eigh, C), (True, True)

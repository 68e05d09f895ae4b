"""Ahead-of-time compilation with an in-process cache, so compile time can be reported
apart from run time and a second call with same-shaped data compiles nothing.

``compiled(fn, static, *args)`` lowers and compiles ``fn`` for the shapes and dtypes of
``args`` (pytrees of arrays) with ``static`` (a hashable tuple) bound, once per
(function, static, shapes); later calls reuse the executable. JAX's persistent cache
(turned on in pkmix._config) makes the compile of a second process fast too.
"""

from __future__ import annotations

import time
from typing import Callable

import jax

_CACHE: dict = {}
STATS = {"compiles": 0}


def _signature(args):
    leaves, treedef = jax.tree_util.tree_flatten(args)
    return treedef, tuple((tuple(getattr(x, "shape", ())), str(getattr(x, "dtype", type(x)))) for x in leaves)


def compiled(fn: Callable, static: tuple, *args):
    """(executable, compile seconds) for ``fn(*static, *args)``; 0 s when cached."""
    key = (fn, static, _signature(args))
    hit = _CACHE.get(key)
    if hit is not None:
        return hit, 0.0
    start = time.perf_counter()
    jitted = jax.jit(lambda *a: fn(*static, *a))
    executable = jitted.lower(*args).compile()
    seconds = time.perf_counter() - start
    _CACHE[key] = executable
    STATS["compiles"] += 1
    STATS.setdefault("log", []).append((getattr(fn, "__name__", str(fn)), seconds))
    return executable, seconds


def run(fn: Callable, static: tuple, *args):
    """Compile if needed, run, block; returns (outputs, compile_s, run_s)."""
    executable, compile_s = compiled(fn, static, *args)
    start = time.perf_counter()
    out = jax.block_until_ready(executable(*args))
    return out, compile_s, time.perf_counter() - start

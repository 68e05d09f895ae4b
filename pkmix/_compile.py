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

# XLA's CPU backend emits fused kernels with its MLIR fusion emitters by default; its
# older elemental emitters compile pkmix's programs in two thirds of the time and run
# them as fast (theophylline's fit program: 5.9 s -> 4.0 s to compile; warm fits of
# theophylline, phenobarbital, 120 x 19 two-compartment and 1,000-subject data took
# the same time either way, measured on 2 cores with XLA_FLAGS set to this option).
# Compile options are part of JAX's persistent cache key, so cached programs match.
CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
_cpu_options_supported = True


def compile_lowered(lowered):
    """``lowered.compile()``, with ``CPU_COMPILER_OPTIONS`` on CPU (an XLA that does not
    know them compiles with its defaults)."""
    global _cpu_options_supported
    if _cpu_options_supported and jax.default_backend() == "cpu":
        try:
            return lowered.compile(compiler_options=CPU_COMPILER_OPTIONS)
        except Exception as error:  # jaxlib's runtime error type has changed name across versions
            if "compile option" not in str(error):
                raise
            _cpu_options_supported = False
    return lowered.compile()


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
    executable = compile_lowered(jitted.lower(*args))
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

"""Ahead-of-time compilation with an in-process cache, so compile time can be reported
apart from run time and a second call with same-shaped data compiles nothing.

``compiled(fn, static, *args)`` lowers and compiles ``fn`` for the shapes and dtypes of
``args`` (pytrees of arrays) with ``static`` (a hashable tuple) bound, once per
(function, static, shapes); later calls reuse the executable. JAX's persistent cache
(turned on in pkmix._config) spares a second process XLA's compile, but not tracing and
lowering (seconds for a fit). For a model whose code pkmix can fingerprint
(``model_fingerprint``: the module-level ``model`` of a file, or of the model library)
the program therefore goes through the exported-program cache of
``call_program`` (``jax.export`` artifacts on disk, shared with pkmix.dosing): a second process
neither traces nor compiles it. ``prefetch`` builds a program on a background thread
while the caller works on another one (a fit's diagnostics while the fit compiles).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable

import jax
import numpy as np

_CACHE: dict = {}
STATS = {"compiles": 0}

# XLA's CPU backend emits fused kernels with its MLIR fusion emitters by default; its
# older elemental emitters compile pkmix's programs in two thirds of the time and run
# them as fast (theophylline's fit program: 5.9 s -> 4.0 s to compile; warm fits of
# theophylline, phenobarbital, 120 x 19 two-compartment and 1,000-subject data took
# the same time either way, measured on 2 cores with XLA_FLAGS set to this option).
# Compile options are part of JAX's persistent cache key, so cached programs match.
CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
# ``quick`` programs: XLA's backend (LLVM) optimisation level 0, for programs that run
# once and briefly. The CWRES diagnostics program compiles in a third of the CPU time and
# runs as fast; a fit program compiles in half the time but runs 2.5-5 times slower,
# which every later process pays too, so fits keep full optimisation
# (benchmarks/README.md, "Cold start").
QUICK_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0}
_cpu_options_supported = True


def compile_lowered(lowered, quick: bool = False):
    """``lowered.compile()``, with ``CPU_COMPILER_OPTIONS`` on CPU (an XLA that does not
    know them compiles with its defaults), and ``QUICK_COMPILE_OPTIONS`` when ``quick``."""
    global _cpu_options_supported
    if _cpu_options_supported and jax.default_backend() == "cpu":
        options = dict(CPU_COMPILER_OPTIONS, **(QUICK_COMPILE_OPTIONS if quick else {}))
        try:
            return lowered.compile(compiler_options=options)
        except Exception as error:  # jaxlib's runtime error type has changed name across versions
            if "compile option" not in str(error):
                raise
            _cpu_options_supported = False
    return lowered.compile()


def signature(args):
    leaves, treedef = jax.tree_util.tree_flatten(args)
    return treedef, tuple((tuple(getattr(x, "shape", ())), str(getattr(x, "dtype", type(x)))) for x in leaves)


# ------------------------------------------------------------------ exported programs
# JAX's persistent compilation cache spares a second process the XLA compile, but not
# the tracing and lowering of each program, which for these programs (the event engine
# under forward-mode derivatives and nested vmaps) takes seconds. For a model pkmix can
# fingerprint (a library model for dosing, `library_fingerprint`; a model file's or the
# library's module-level model for fits, `model_fingerprint`) the traced programs are
# therefore also kept on disk, as `jax.export` artifacts beside the compilation cache,
# keyed by everything that determines them: the program, its static settings, the
# shapes of its inputs, the JAX version, the model's fingerprint and a hash of every
# source file of pkmix and of the model library. Other models always take the ordinary
# jitted path. This lives here, not in pkmix.dosing, so that a fit does not import the
# dosing package.
PROGRAM_FORMAT = 1
_PROGRAMS: dict = {}
_SOURCE_HASH: list = []


def _source_hash() -> str:
    if not _SOURCE_HASH:
        import hashlib
        from pathlib import Path

        import pkmix

        h = hashlib.sha256()
        roots = [Path(pkmix.__file__).parent]
        try:
            import pkmix.models as library

            roots.append(Path(library.__file__).parent)
        except ImportError:  # pragma: no cover - the library is part of the package
            pass
        for root in roots:
            for path in sorted(root.rglob("*.py")):
                h.update(str(path.relative_to(root)).encode())
                h.update(path.read_bytes())
        _SOURCE_HASH.append(h.hexdigest())
    return _SOURCE_HASH[0]


def library_fingerprint(info) -> str | None:
    """A stable identity for a library model (None for any other model)."""
    module = getattr(info, "module", None)
    if module is None or not str(getattr(module, "__name__", "")).startswith("pkmix.models."):
        return None
    if getattr(module, "model", None) is not info.model:  # e.g. build(...) with other options
        return None
    return f"{module.__name__}:{_source_hash()}"


def _program_dir():
    from pathlib import Path

    import importlib.util

    # jax.export serialises with flatbuffers, an optional dependency of JAX.
    if importlib.util.find_spec("flatbuffers") is None:
        return None
    base = jax.config.jax_compilation_cache_dir
    if not base:
        return None
    path = Path(base) / "pkmix-programs"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path


def call_program(name: str, impl, jitted, statics: tuple, args: tuple, fingerprint: str | None):
    """``impl(*statics, *args)``: through ``jitted`` (an ``eqx.filter_jit`` of impl), or,
    for a fingerprinted model with a cache folder, through a `jax.export` artifact
    loaded from (or written to) disk, so a new process neither traces nor compiles it."""
    folder = _program_dir() if fingerprint is not None else None
    if folder is None:
        return jitted(*statics, *args)
    call = _load_exported(name, impl, statics, args, fingerprint, folder, False)
    return call(*[np.asarray(x) for x in jax.tree_util.tree_leaves(args)])


def _load_exported(name: str, impl, statics: tuple, args: tuple, fingerprint: str, folder, quick: bool):
    """The compiled executable of ``impl(*statics, *args)`` (called with ``args``'
    leaves as host arrays), from its `jax.export` artifact in ``folder`` (written
    first if missing), compiled as ``compile_lowered(..., quick)``."""
    import hashlib

    leaves, treedef = jax.tree_util.tree_flatten(args)
    # Host arrays: jnp.asarray would compile a small staging program per shape.
    leaves = [np.asarray(x) for x in leaves]
    signature = [(tuple(x.shape), str(x.dtype)) for x in leaves]
    static_text = repr(tuple(x for x in statics[1:]))
    material = repr((PROGRAM_FORMAT, name, fingerprint, static_text, str(treedef), signature, jax.__version__,
                     bool(jax.config.jax_enable_x64)))
    key = hashlib.sha256(material.encode()).hexdigest()[:40]
    call = _PROGRAMS.get((key, quick))
    if call is None:
        path = folder / f"{name}-{key}.jaxexport"
        exported = None
        if path.exists():
            try:
                exported = jax.export.deserialize(bytearray(path.read_bytes()))
            except Exception:  # a damaged or foreign file: rebuild it
                exported = None
        if exported is None:
            def flat(*xs):
                return impl(*statics, *jax.tree_util.tree_unflatten(treedef, list(xs)))

            exported = jax.export.export(jax.jit(flat))(*leaves)
            # A name of this process's and this thread's own: the server's worker threads
            # may export the same program at once, and must not write into one file.
            tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
            try:
                tmp.write_bytes(exported.serialize())
                os.replace(tmp, path)
            except OSError:
                tmp.unlink(missing_ok=True)
        call = compile_lowered(_lower_exported(exported, leaves), quick)
        _PROGRAMS[(key, quick)] = call
    return call


_NO_LAPACK = threading.local()


def _lower_exported(exported, leaves):
    """``jax.jit(exported.call).lower(*leaves)``. Before lowering an exported call on CPU,
    JAX initialises its LAPACK kernels, which imports scipy.linalg (0.3-0.6 s of a new
    process's start); pkmix's programs make no LAPACK call (``pkmix._linalg``), so for a
    module without one that step is skipped (where this JAX has no such step, nothing
    changes)."""
    from jax._src.export import _export

    ensure = getattr(_export, "_ensure_backends_initialized", None)
    if ensure is not None and not getattr(ensure, "_pkmix", False):
        def ensure_unless_skipped(platforms, _original=ensure):
            if not getattr(_NO_LAPACK, "on", False):
                _original(platforms)

        ensure_unless_skipped._pkmix = True
        _export._ensure_backends_initialized = ensure_unless_skipped
    _NO_LAPACK.on = b"lapack" not in bytes(exported.mlir_module_serialized)
    try:
        return jax.jit(exported.call).lower(*leaves)
    finally:
        _NO_LAPACK.on = False


# Modules whose objects a fingerprinted model file may use: their code is pkmix's (in the
# source hash) or an installed package's (JAX's version is in the program's key).
_KNOWN_MODULES = ("pkmix", "jax", "jaxlib", "numpy", "math", "equinox", "builtins", "typing", "__future__")


def model_fingerprint(model) -> str | None:
    """A stable identity of ``model``'s code, or None where pkmix cannot vouch for one.

    A model is fingerprinted when it is the module-level ``model`` of a Python file (a
    model file given to ``pkmix fit``, or a module of the model library) whose other
    names are the file's own functions and classes or come from pkmix, JAX, NumPy or
    the standard math: then its programs depend only on that file's text and pkmix's
    source, which the fingerprint hashes. A model built from helpers of other files, or
    by a function with options (another ``model`` than the file's), gets None and the
    ordinary jitted path.
    """
    import hashlib
    import inspect
    from pathlib import Path

    fn = getattr(model, "individual", None)
    names = getattr(fn, "__globals__", None)
    if not names or names.get("model") is not model or not names.get("__file__"):
        return None
    path = Path(names["__file__"])
    if not path.is_file():
        return None
    own = str(path.resolve())
    for value in names.values():
        if inspect.ismodule(value):
            root = value.__name__.split(".")[0]
        elif inspect.isfunction(value) or inspect.isclass(value):
            root = str(getattr(value, "__module__", "")).split(".")[0]
            code = getattr(value, "__code__", None)
            if code is not None and str(Path(code.co_filename).resolve()) == own:
                continue
        else:
            continue
        if root not in _KNOWN_MODULES and root != names.get("__name__"):
            return None
    return f"{hashlib.sha256(path.read_bytes()).hexdigest()}:{_source_hash()}"


_REGISTERED: list = []


_REGISTERING = threading.Lock()


def _register_output_types():
    """jax.export serialises an output's tree structure only of types it was told about:
    the named tuples pkmix's exported programs return (once, also when a prefetching
    thread gets here at the same time)."""
    with _REGISTERING:
        if _REGISTERED:
            return
        from ._estimation.engine import FitOutput
        from ._model.parameters import ParameterValues

        for cls in (FitOutput, ParameterValues):
            jax.export.register_namedtuple_serialization(cls, serialized_name=f"pkmix.{cls.__name__}")
        _REGISTERED.append(True)


def _exported(fn: Callable, static: tuple, args: tuple, fingerprint: str, quick: bool):
    """The executable of ``fn(*static, *args)`` from the exported-program cache (called
    like ``fn``'s), or None where that cache is off (no cache folder)."""
    folder = _program_dir()
    if folder is None:  # PKMIX_CACHE_DIR=off, or no flatbuffers: compile as usual
        return None
    _register_output_types()
    flat = _load_exported(fn.__name__, fn, static, args, fingerprint, folder, quick)

    def executable(*a):
        return flat(*(np.asarray(x) for x in jax.tree_util.tree_leaves(a)))

    return executable


def _build(fn: Callable, static: tuple, args: tuple, fingerprint: str | None, quick: bool):
    """(executable, seconds): compiled, or loaded through the exported-program cache."""
    start = time.perf_counter()
    executable = _exported(fn, static, args, fingerprint, quick) if fingerprint is not None else None
    if executable is None:
        jitted = jax.jit(lambda *a: fn(*static, *a))
        executable = compile_lowered(jitted.lower(*args), quick)
    seconds = time.perf_counter() - start
    _CACHE[(fn, static, signature(args), quick)] = executable
    STATS["compiles"] += 1
    STATS.setdefault("log", []).append((getattr(fn, "__name__", str(fn)), seconds))
    return executable, seconds


# Programs being built on a background thread (``prefetch``): key -> Future.
_PENDING: dict = {}
_BACKGROUND: list = []


def prefetch(fn: Callable, static: tuple, *args, fingerprint: str | None = None, quick: bool = False) -> None:
    """Start building ``fn(*static, *args)``'s program (for the shapes of ``args``) on a
    background thread, so that it is traced and compiled while the caller traces,
    compiles or runs another program: XLA compiles outside the GIL, and a fit's own
    compile leaves the second core idle while it traces and optimises its HLO.
    ``compiled`` and ``run`` then wait for it (their compile seconds are the wait)."""
    key = (fn, static, signature(args), quick)
    if key in _CACHE or key in _PENDING:
        return
    if not _BACKGROUND:
        from concurrent.futures import ThreadPoolExecutor

        _BACKGROUND.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="pkmix-compile"))
    _PENDING[key] = _BACKGROUND[0].submit(_build, fn, static, args, fingerprint, quick)


def compiled(fn: Callable, static: tuple, *args, fingerprint: str | None = None, quick: bool = False):
    """(executable, compile seconds) for ``fn(*static, *args)``; 0 s when cached. With a
    ``fingerprint`` (``model_fingerprint`` of ``static[0]``, the model; every other
    static must have a ``repr`` that names it), through the exported-program cache.
    ``quick``: compiled with ``QUICK_COMPILE_OPTIONS`` (for programs whose run is short)."""
    key = (fn, static, signature(args), quick)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit, 0.0
    pending = _PENDING.pop(key, None)
    if pending is not None:
        start = time.perf_counter()
        executable, _ = pending.result()
        return executable, time.perf_counter() - start
    return _build(fn, static, args, fingerprint, quick)


def run(fn: Callable, static: tuple, *args, fingerprint: str | None = None, quick: bool = False):
    """Compile if needed, run, block; returns (outputs, compile_s, run_s)."""
    executable, compile_s = compiled(fn, static, *args, fingerprint=fingerprint, quick=quick)
    start = time.perf_counter()
    out = jax.block_until_ready(executable(*args))
    return out, compile_s, time.perf_counter() - start

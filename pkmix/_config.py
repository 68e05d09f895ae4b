"""Process-wide JAX settings pkmix relies on: 64-bit floats and the compilation cache."""

from __future__ import annotations

import os

import jax


def enable_x64() -> None:
    """Turn on 64-bit floats. pkmix calls this on import: every estimate is float64."""
    jax.config.update("jax_enable_x64", True)


def x64_enabled() -> bool:
    return bool(jax.config.read("jax_enable_x64"))


def require_x64() -> None:
    """Raise if something turned 64-bit floats off after pkmix was imported."""
    if not x64_enabled():
        raise RuntimeError(
            "pkmix needs 64-bit floats (jax_enable_x64): OFV differences of 3.84 must be "
            "right to 1e-3. Call pkmix.enable_x64() before creating any JAX array."
        )


def enable_compilation_cache(path: str | None = None) -> str:
    """Use JAX's persistent compilation cache so a second process does not compile again.

    The folder is ``$PKMIX_CACHE_DIR`` or ``~/.cache/pkmix/jax``; set ``PKMIX_CACHE_DIR=off``
    to disable it.
    """
    path = path or os.environ.get("PKMIX_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "pkmix", "jax"
    )
    if path == "off":
        return path
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    # Cache every program, however small or quick to compile: our users pay for all of them.
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path

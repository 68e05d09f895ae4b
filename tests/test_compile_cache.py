"""pkmix._compile: programs built once per shape, loaded from the exported-program cache
without tracing, and prefetched on a background thread."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from pkmix import _compile

TRACES: list = []


def _doubled(tag, x):
    TRACES.append(tag)  # runs only while JAX traces the function
    return 2.0 * x


def _refused(tag, x):
    raise ValueError(f"{tag}: refused while tracing")


def _forget(before_cache, before_programs):
    """Drop what a test added to the in-process caches (other tests keep theirs)."""
    for key in set(_compile._CACHE) - before_cache:
        del _compile._CACHE[key]
    for key in set(_compile._PROGRAMS) - before_programs:
        del _compile._PROGRAMS[key]


def test_exported_program_is_loaded_by_a_new_process_without_tracing():
    if _compile._program_dir() is None:
        pytest.skip("no exported-program cache here (PKMIX_CACHE_DIR=off or no flatbuffers)")
    tag = f"t{uuid.uuid4().hex}"  # a fingerprint no earlier run wrote to the cache folder
    x = np.arange(3.0)
    cache, programs = set(_compile._CACHE), set(_compile._PROGRAMS)
    executable, _ = _compile.compiled(_doubled, (tag,), x, fingerprint=tag)
    assert TRACES.count(tag) == 1  # traced once, to export it
    np.testing.assert_array_equal(np.asarray(executable(x)), 2.0 * x)
    # A new process has neither in-process cache: it reads the program from disk.
    _forget(cache, programs)
    executable, _ = _compile.compiled(_doubled, (tag,), x + 1.0, fingerprint=tag)
    assert TRACES.count(tag) == 1
    np.testing.assert_array_equal(np.asarray(executable(x + 1.0)), 2.0 * (x + 1.0))
    _forget(cache, programs)


def test_prefetched_program_is_built_once_and_served_from_the_background():
    tag = f"p{uuid.uuid4().hex}"
    x = np.ones((2, 4))
    before = _compile.STATS["compiles"]
    _compile.prefetch(_doubled, (tag,), x)
    _compile.prefetch(_doubled, (tag,), x)  # already under way: nothing new
    executable, _ = _compile.compiled(_doubled, (tag,), 3.0 * x)  # same shapes: the prefetched program
    again, seconds = _compile.compiled(_doubled, (tag,), x)
    assert again is executable and seconds == 0.0
    assert _compile.STATS["compiles"] == before + 1 and TRACES.count(tag) == 1
    out, _, _ = _compile.run(_doubled, (tag,), x)
    np.testing.assert_array_equal(np.asarray(out), 2.0 * x)


def test_a_failure_while_prefetching_is_raised_to_the_caller():
    tag = f"f{uuid.uuid4().hex}"
    _compile.prefetch(_refused, (tag,), np.ones(2))
    with pytest.raises(ValueError, match=f"{tag}: refused while tracing"):
        _compile.compiled(_refused, (tag,), np.ones(2))


def test_quick_program_is_its_own_entry_with_the_same_results():
    tag = f"q{uuid.uuid4().hex}"
    x = np.linspace(0.0, 1.0, 5)
    optimised, _ = _compile.compiled(_doubled, (tag,), x)
    quick, _ = _compile.compiled(_doubled, (tag,), x, quick=True)
    assert quick is not optimised
    np.testing.assert_array_equal(np.asarray(quick(x)), np.asarray(optimised(x)))
    assert _compile.compiled(_doubled, (tag,), x, quick=True)[0] is quick

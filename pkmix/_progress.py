"""Progress lines for long work (fits, simulations, diagnostics), one rule for all.

Nothing is printed for work that ends within ``AFTER_S``; after that, a line at most
every ``EVERY_S``, so a log is not flooded. By default (``enabled=None``) lines go out
only when standard output is a terminal: a script's log or a test's captured output
stays quiet unless ``progress=True`` is asked for.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Callable

AFTER_S = 2.0  # work shorter than this prints nothing
EVERY_S = 0.5  # at most one line per this many seconds


def wanted(enabled: bool | None) -> bool:
    """``enabled``, or (None) whether standard output is a terminal."""
    return sys.stdout.isatty() if enabled is None else bool(enabled)


class ProgressLine:
    """Decides when a progress line is due and prints it (``report``)."""

    def __init__(self, enabled: bool | None = None):
        self.reset(enabled)

    def reset(self, enabled: bool | None = None):
        self.enabled = wanted(enabled)
        self.start = time.perf_counter()
        self.last = -float("inf")

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def report(self, text: str, *, force: bool = False):
        """Print ``text`` with the elapsed time when a line is due (with ``force``,
        whenever the work has run past AFTER_S: a last line, or one per few big steps)."""
        if not self.enabled:
            return
        now = self.elapsed()
        if now >= AFTER_S and (force or now - self.last >= EVERY_S):
            self.last = now
            print(f"  {text}   ({now:.1f} s)", flush=True)


@contextlib.contextmanager
def while_running(label: str | Callable[[], str], enabled: bool | None = None):
    """A progress display for work that reports nothing itself while it runs (compiled
    programs): a line with the elapsed time from a background thread, and one when it
    ends (only past AFTER_S, as always). ``label`` may be a function, called for each
    line (say, to count finished chunks)."""
    text = label if callable(label) else (lambda: label)
    line = ProgressLine(enabled)
    if not line.enabled:
        yield
        return
    stop = threading.Event()

    def beat():
        while not stop.wait(EVERY_S):
            line.report(f"{text()} ...")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        line.report(f"{text()}, finished", force=True)

"""The ``pkmix`` command line: one module per subcommand, each with ``add_parser`` and ``run``.

Exit codes: 0 success, 1 a run that failed (a fit that did not converge; an unexpected
failure, which is a bug), 2 bad input (dataset violations, a model that does not load, a
numeric option out of range, an output path that cannot be written). Errors are one line
``pkmix: error: ...`` on standard error (dataset violations: one line each, on standard
output, as ``pkmix check`` reports them); never a Python traceback unless PKMIX_DEBUG is set.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# fit also registers evaluate
SUBCOMMANDS = ("check", "predict", "fit", "dose", "simulate", "report", "serve", "import_", "runs", "compare",
               "bootstrap", "sir", "sse")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="pkmix", description="Population pharmacokinetics on JAX.")
    parser.add_argument("--version", action="version", version=f"pkmix {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":
                continue  # subcommand not built yet
            raise
        module.add_parser(sub)
    return parser


class _PipeGuard:
    """Standard output that goes quiet when its reader leaves (``pkmix check d.csv | head``):
    the rest of the output is dropped, and the command still ends with its own status,
    instead of a BrokenPipeError traceback."""

    def __init__(self, stream):
        self._stream = stream
        self.closed_by_reader = False

    def write(self, text):
        if not self.closed_by_reader:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._silence()
        return len(text)

    def flush(self):
        if not self.closed_by_reader:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._silence()

    def _silence(self):
        self.closed_by_reader = True
        # Later writes and the interpreter's final flush of what is still buffered go to
        # the null device, not to the closed pipe.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main(argv=None) -> int:
    """Run one command; returns its exit status (also for arguments argparse refuses,
    2, and for --help/--version, 0), so that callers in Python get a status too."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed the usage and the error
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    real_stdout = sys.stdout
    guard = sys.stdout = _PipeGuard(real_stdout)
    try:
        code = int(args.run(args) or 0)
        guard.flush()
        return code
    except KeyboardInterrupt:
        print("pkmix: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the last guard against a traceback on the user's screen
        if os.environ.get("PKMIX_DEBUG"):
            raise
        print(f"pkmix: error: unexpected failure ({type(e).__name__}: {e}). This is a bug in pkmix: "
              "please report it with the command line; PKMIX_DEBUG=1 shows the traceback.", file=sys.stderr)
        return 1
    finally:
        if sys.stdout is guard:
            sys.stdout = real_stdout


if __name__ == "__main__":
    sys.exit(main())

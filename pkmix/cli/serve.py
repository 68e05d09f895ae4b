"""``pkmix serve [--host 127.0.0.1] [--port 8765] [--audit-db PATH]``: the dose calculator
as a local web app.

Serves the page (``/``) and the JSON API (``/api/...``, documented at ``/openapi.json``)
of `pkmix.server`. Every answer is stored in the audit database (``--audit-db``, default
as ``pkmix dose``: ``$PKMIX_AUDIT_DB``, else ``audit.sqlite3`` in the user's data
directory), which is opened at start so a path that cannot be used is refused at once.
Needs the ``serve`` extra (``pip install "pkmix[serve]"``); without it the command says
so and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

from ._common import error_exit, positive_int

INSTALL_HINT = 'the web app needs FastAPI and uvicorn: pip install "pkmix[serve]"'


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve",
        help="the dose calculator as a local web app (page and JSON API)",
        description=(
            "Start the dose calculator: a page at http://HOST:PORT/ to pick a library model, enter a "
            "patient and get MAP estimates, a plot and a recommended regimen, and the JSON API behind it "
            "(POST /api/dose answers as `pkmix dose --json`; schema at /openapi.json). Nothing is fetched "
            "from the network."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=positive_int, default=8765, help="port (default 8765)")
    parser.add_argument("--audit-db", metavar="PATH",
                        help="the audit database (SQLite) every answer is stored in (default: $PKMIX_AUDIT_DB, "
                             "else audit.sqlite3 in the user's data directory)")
    parser.set_defaults(run=run)
    return parser


def missing_dependencies() -> list:
    return [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]


def _cannot_listen(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (taken, not this machine's address), or
    None; said plainly before the server starts rather than in uvicorn's log."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return f"unknown host ({e.strerror})"
    family, kind, proto, _, address = infos[0]
    try:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(address)
    except OSError as e:
        return e.strerror or str(e)
    return None


def run(args: argparse.Namespace) -> int:
    if args.port > 65535:
        return error_exit(f"--port: must be at most 65535, got {args.port}")
    missing = missing_dependencies()
    if missing:
        return error_exit(f"{', '.join(missing)} not installed; {INSTALL_HINT}")
    import uvicorn

    from ..server import create_app

    try:
        from ..dosing import audit
    except ImportError:  # a dosing service without an audit database
        if args.audit_db:
            return error_exit("--audit-db: this pkmix's dosing service keeps no audit database")
    else:
        try:
            audit.connect(args.audit_db).close()
        except audit.AuditError as e:
            return error_exit(f"--audit-db: {e.message}")
    problem = _cannot_listen(args.host, args.port)
    if problem:
        return error_exit(f"cannot listen on {args.host}:{args.port}: {problem}")
    app = create_app(audit_db=args.audit_db)
    print(f"pkmix dose calculator: http://{args.host}:{args.port}/ (Ctrl-C to stop)", file=sys.stderr)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    except OSError as e:  # the port is taken, or the address is not this machine's
        return error_exit(f"cannot listen on {args.host}:{args.port}: {e}")
    except SystemExit as e:  # uvicorn exits when it cannot bind
        return error_exit(f"cannot listen on {args.host}:{args.port}") if e.code else 0
    return 0

"""The app served by uvicorn in a background thread (tests, the README's screenshot)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app=None, *, host: str = "127.0.0.1", timeout: float = 30.0):
    """Serve ``app`` (default: a new `create_app()`) on a free port of ``host`` in a
    daemon thread; yields the base URL (``http://127.0.0.1:PORT``) and stops the server
    on exit."""
    import uvicorn

    from .app import create_app

    port = free_port(host)
    server = uvicorn.Server(uvicorn.Config(app or create_app(), host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="pkmix-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)

"""The dose calculator's web app (``pkmix serve``): a JSON API on `pkmix.dosing.service`
and a page that shows its answers.

    from pkmix.server import create_app
    app = create_app()          # an ASGI app: uvicorn.run(app), or fastapi.testclient.TestClient(app)

Needs the ``serve`` extra (``pip install "pkmix[serve]"``: FastAPI and uvicorn).
"""

from .app import create_app as create_app

__all__ = ["create_app"]

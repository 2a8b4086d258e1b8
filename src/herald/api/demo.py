"""The demo page with the browser bundle of the TypeScript client, and in demo mode a token for it."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response

from herald.api import paths
from herald.auth.minting import mint_token
from herald.gateway import Gateway

DEMO_USER = "demo"


def install_demo(app: FastAPI, gateway: Gateway) -> None:
    settings = gateway.settings
    if settings.demo_page:

        @app.get(paths.DEMO_PAGE, include_in_schema=False)
        async def demo_page() -> HTMLResponse:
            return HTMLResponse(files("herald.api").joinpath("static/demo.html").read_text())

        @app.get(paths.DEMO_CLIENT, include_in_schema=False)
        async def demo_client() -> Response:
            """@herald/client as one script (clients/js/scripts/build.mjs), for the demo page."""
            bundle = files("herald.api").joinpath("static/herald-client.js").read_bytes()
            return Response(
                bundle,
                media_type="text/javascript; charset=utf-8",
                headers={"cache-control": "no-cache"},
            )

    if settings.demo and settings.jwt_secret:
        secret = settings.jwt_secret

        @app.get(paths.DEMO_TOKEN, include_in_schema=False)
        async def demo_token() -> JSONResponse:
            """Demo mode only: a JWT for the demo user, so the page works with no set-up."""
            return JSONResponse({"token": mint_token(secret, sub=DEMO_USER, resources=["novel:*"])})

"""Cross-origin access for pages served from other origins (CORS).

Nothing is allowed by default: without ``cors_allow_origins`` the gateway
answers no preflight and adds no ``Access-Control-*`` header, so only pages
of its own origin can read its responses. With origins configured, the
control API gets Starlette's ``CORSMiddleware`` (preflight included, for the
stream path too), and the stream (which the standalone server writes outside
the ASGI app) gets the same headers from :func:`stream_cors_headers`,
computed per request from its ``Origin``.

``Retry-After`` is exposed, so a page can read how long a 429 or 503 asks it
to wait.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from herald.config import Settings

ALLOWED_METHODS = ["GET", "POST", "OPTIONS"]
ALLOWED_HEADERS = ["authorization", "content-type", "last-event-id", "herald-client-version"]
EXPOSED_HEADERS = ["retry-after", "herald-version"]


def install_cors(app: FastAPI, settings: Settings) -> None:
    if not settings.cors_allow_origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_allow_origins,
        allow_credentials=settings.cors_allow_credentials,
        allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        max_age=settings.cors_max_age_seconds,
    )


def stream_cors_headers(origin: str | None, settings: Settings) -> list[tuple[str, str]]:
    """The ``Access-Control-*`` headers of a response to a request from ``origin``
    (none when the origin is not allowed, or the request named none)."""
    allowed = settings.cors_allow_origins
    if not origin or not allowed:
        return []
    normalized = origin.strip().rstrip("/").lower()
    any_origin = "*" in allowed
    if not any_origin and normalized not in allowed:
        return []
    credentials = settings.cors_allow_credentials
    headers = [
        # With credentials the origin must be named, never ``*`` (Fetch standard, CORS check).
        ("access-control-allow-origin", origin if credentials or not any_origin else "*"),
        ("access-control-expose-headers", ", ".join(EXPOSED_HEADERS)),
    ]
    if credentials:
        headers.append(("access-control-allow-credentials", "true"))
    if credentials or not any_origin:
        headers.append(("vary", "origin"))
    return headers

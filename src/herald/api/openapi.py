"""The stream endpoint in the OpenAPI document.

The stream is served outside FastAPI's routing (straight to the socket by the
standalone server), so its operation is described here by hand.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from herald.api import paths
from herald.api.schemas import BatchRequest

_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}

STREAM_OPERATION: dict[str, Any] = {
    "get": {
        "tags": ["events"],
        "summary": "Open an event stream (Server-Sent Events)",
        "description": (
            "Authenticate with `Authorization: Bearer <jwt>`, or `?token=` with a stream token "
            "from `POST /api/v1/auth/sse-token`. The stream begins with `retry:` and a "
            "`connection.established` event (`connection_id`, `server_time`, `recovered`), then "
            "the replay after `Last-Event-ID`, then live events; a comment every heartbeat interval."
        ),
        "operationId": "open_stream",
        "parameters": [
            {
                "name": "token",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "a stream token (never a long-lived JWT)",
            },
            {
                "name": "subscribe",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "comma-separated resource keys the token grants (`novel:42,novel:7`)",
            },
            {
                "name": "last_event_id",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "resume after this cursor (the `Last-Event-ID` header wins)",
            },
            {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
            {
                "name": "since",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "format": "date-time"},
                "description": (
                    "without a cursor: replay what this stream may see from this time (ISO 8601 with a "
                    "zone) on; inside the replay window `recovered: true`, else `recovered: false` "
                    "with `replay_miss: stale` (and the retained states). A cursor wins over it"
                ),
            },
        ],
        "responses": {
            "200": {
                "description": "the event stream",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            "400": {
                "description": (
                    "`REQUEST_INVALID`: too many query parameters, or `since` not an ISO 8601 time "
                    "with a zone or in the future (`field: since`)"
                ),
                "content": {"application/json": {"schema": _ERROR_REF}},
            },
            "401": {
                "description": "credentials missing, invalid, expired, or a stream token in use",
                "content": {"application/json": {"schema": _ERROR_REF}},
            },
            "403": {
                "description": "a subscription the token does not grant (`PERMISSION_DENIED`)",
                "content": {"application/json": {"schema": _ERROR_REF}},
            },
            "422": {
                "description": "a malformed subscription key (`SUBSCRIPTION_INVALID`)",
                "content": {"application/json": {"schema": _ERROR_REF}},
            },
            "429": {
                "description": (
                    "too many stream opens for this user or client address (`RATE_LIMIT_EXCEEDED`), "
                    "or the user's open streams are at the per-user limit (`SSE_CONNECTION_LIMIT`); "
                    "`Retry-After` says when to try again"
                ),
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                "content": {"application/json": {"schema": _ERROR_REF}},
            },
            "503": {
                "description": (
                    "`SERVER_OVERLOAD`: this node is full (`fallback: polling`) or shutting down; "
                    "`AUTH_UNAVAILABLE`: keys or the resource authorizer cannot be reached"
                ),
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                "content": {"application/json": {"schema": _ERROR_REF}},
            },
        },
        "security": [{"bearer": []}],
    }
}


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            schema["paths"][paths.STREAM] = STREAM_OPERATION
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            # The batch route reads its body itself (one bad event fails alone), so FastAPI
            # does not know its model: its schema is added here.
            batch = BatchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(batch.pop("$defs", {}))
            components["BatchRequest"] = batch
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

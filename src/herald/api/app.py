"""The ASGI application: control API, demo page, and the stream for ASGI servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.routing import Route

from herald import __version__
from herald.api import paths
from herald.api.admin import router as admin_router
from herald.api.asgi_stream import asgi_stream_endpoint
from herald.api.batch import router as batch_router
from herald.api.cors import install_cors
from herald.api.demo import install_demo
from herald.api.errors import install_error_handlers
from herald.api.openapi import install_openapi
from herald.api.routes import router
from herald.api.version import VersionHeader
from herald.gateway import Gateway
from herald.obs.metrics import registry_for


def create_app(gateway: Gateway, *, manage_gateway: bool = True) -> FastAPI:
    """The app over ``gateway``.

    ``manage_gateway``: start and stop the gateway with the app's lifespan, as
    an ASGI server embedding Herald needs. The standalone server runs the
    gateway itself and passes ``False``.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_gateway:
            await gateway.start()
        try:
            yield
        finally:
            if manage_gateway:
                await gateway.stop()

    app = FastAPI(
        title="Herald",
        version=__version__,
        summary="Real-time event gateway: domain events in, Server-Sent Events out.",
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.state.metrics = registry_for(gateway.readings)
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(batch_router)
    app.include_router(admin_router)
    endpoint: Any = asgi_stream_endpoint(gateway)
    app.router.routes.append(Route(paths.STREAM, endpoint, methods=["GET"], include_in_schema=False))
    install_demo(app, gateway)
    install_openapi(app)
    install_cors(app, gateway.settings)
    app.add_middleware(VersionHeader)  # outermost: CORS refusals and errors carry it too
    return app

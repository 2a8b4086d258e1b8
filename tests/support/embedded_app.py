"""An application that embeds Herald (docs/embedding.md), for the embedding test:
it mounts Herald's app under ``/herald``, decides who may follow which order
with a Python function, and publishes from its own route, in-process.

Run with ``uvicorn tests.support.embedded_app:app``; ``HERALD_JWT_SECRET`` is the
key of the users' tokens.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException

from herald.api.app import create_app
from herald.auth.authorizers import CallableAuthorizer
from herald.auth.principal import Principal
from herald.config import Settings
from herald.events.message import build_message
from herald.gateway import Gateway

#: The application's own data: whose orders are whose.
ORDERS = {"42": "alice", "43": "bob"}


def may_follow(principal: Principal, resource: str) -> bool:
    kind, _, order_id = resource.partition(":")
    return kind == "order" and ORDERS.get(order_id) == principal.user_id


gateway = Gateway(
    Settings(jwt_secret=os.environ["HERALD_JWT_SECRET"], heartbeat_seconds=1.0),
    authorizer=CallableAuthorizer(may_follow),
)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    # A mounted app's own lifespan does not run: the host starts and stops the gateway.
    await gateway.start()
    try:
        yield
    finally:
        await gateway.stop()


app = FastAPI(title="Shop", lifespan=lifespan)
app.mount("/herald", create_app(gateway, manage_gateway=False))


@app.get("/orders/{order_id}")
async def order(order_id: str) -> dict[str, str]:
    if order_id not in ORDERS:
        raise HTTPException(404)
    return {"order_id": order_id, "owner": ORDERS[order_id]}


@app.post("/orders/{order_id}/ship")
async def ship(order_id: str) -> dict[str, str]:
    if order_id not in ORDERS:
        raise HTTPException(404)
    message = build_message(
        event="order.shipped", scope="order", key=order_id, data={"order_id": order_id, "carrier": "owl"}
    )
    result = await gateway.publish(message)
    return {"event_id": str(result.cursor)}

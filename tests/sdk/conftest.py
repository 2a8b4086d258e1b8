"""The producer SDK (clients/python, ``herald_publisher``) against real gateways and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from herald_publisher import AsyncPublisher, RetryPolicy

from tests.support.gateway import GatewayProcess

#: Quick retries: the tests wait for outcomes, not for backoff.
FAST_RETRY = RetryPolicy(attempts=6, deadline=20.0, base=0.02, cap=0.2)


class Requests:
    """Counts the requests an httpx client sends, by path."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def hook(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)

    def sync_hook(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)


@pytest.fixture
def requests() -> Requests:
    return Requests()


@pytest.fixture
async def publisher(gateway: GatewayProcess, requests: Requests) -> AsyncIterator[AsyncPublisher]:
    """An async publisher on the shared gateway, its requests counted."""
    client = httpx.AsyncClient(timeout=10, event_hooks={"request": [requests.hook]})
    async with (
        client,
        AsyncPublisher(gateway.url, gateway.publisher_token, retry=FAST_RETRY, client=client) as pub,
    ):
        yield pub

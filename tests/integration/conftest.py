from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.api import Api, api_client
from tests.support.gateway import GatewayProcess


@pytest.fixture
async def api(gateway: GatewayProcess) -> AsyncIterator[Api]:
    """The shared gateway's control API."""
    async with api_client(gateway) as client:
        yield client

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from herald.sources.outbox import create_table
from tests.support.api import Api, api_client
from tests.support.gateway import GatewayProcess
from tests.support.postgres import PostgresServer


@pytest.fixture
async def api(gateway: GatewayProcess) -> AsyncIterator[Api]:
    """The shared gateway's control API."""
    async with api_client(gateway) as client:
        yield client


@pytest.fixture
async def db(postgres_server: PostgresServer) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the session's PostgreSQL."""
    connection = await asyncpg.connect(postgres_server.dsn)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def table(db: asyncpg.Connection) -> str:
    """A fresh outbox table (created twice: creating it is idempotent)."""
    name = f"outbox_{secrets.token_hex(4)}"
    await create_table(db, name)
    await create_table(db, name)
    return name

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.support.gateway import GatewayProcess, running_gateway

#: Fixtures every test may use: ``redis_server``, ``kafka_broker``, ``postgres_server``
#: (real servers, one each for the session, started on first use).
pytest_plugins = ["tests.support.redis", "tests.support.kafka", "tests.support.postgres"]

settings.register_profile("ci", max_examples=300, deadline=None)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci")


@pytest.fixture(scope="session")
def gateway() -> Iterator[GatewayProcess]:
    """One shared gateway with a short heartbeat, for tests that do not restart it.

    Its coalesce throttle is off: tests here publish coalescible events in quick
    succession to see a slow connection's queue coalesce them; the throttle has
    gateways of its own (tests/integration/test_throttle_gateway.py)."""
    with running_gateway(
        {"HERALD_HEARTBEAT_SECONDS": "0.5", "HERALD_COALESCE_INTERVAL_SECONDS": "0"}
    ) as process:
        yield process

from __future__ import annotations

import asyncio

from tests.support.gateway import GatewayProcess
from tests.support.sse import open_stream


async def test_a_published_event_reaches_its_user(gateway: GatewayProcess) -> None:
    async with open_stream(gateway.url, token=gateway.token("smoke-user")) as stream:
        hello = await stream.next()
        assert hello.event == "connection.established"
        cursor = await asyncio.to_thread(
            gateway.publish, "task.progress-updated", "user", "smoke-user", {"task_id": "t1", "progress": 5}
        )
        event = await stream.next()
        assert event.event == "task.progress-updated"
        assert event.id == cursor
        assert event.json() == {"task_id": "t1", "progress": 5, "_scope": "user", "_version": "1.0"}

"""Routing isolation: an event reaches exactly the connections its scope names.

Absence is proved, not hoped for: after the events under test, a global
marker is published, and every stream must show exactly what it was owed
before that marker.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

from tests.support.api import Api, ids, unique, until_marker
from tests.support.gateway import GatewayProcess
from tests.support.sse import Stream, open_stream


async def _open(
    stack: AsyncExitStack,
    gateway: GatewayProcess,
    sub: str,
    *,
    sid: str | None = None,
    resources: tuple[str, ...] = (),
    subscribe: str | None = None,
) -> Stream:
    stream = await stack.enter_async_context(
        open_stream(gateway.url, token=gateway.token(sub, sid=sid, resources=resources), subscribe=subscribe)
    )
    hello = await stream.next()
    assert hello.event == "connection.established"
    return stream


async def test_user_events_reach_every_connection_of_that_user_and_nobody_else(
    gateway: GatewayProcess, api: Api
) -> None:
    alice, bob = unique("alice"), unique("bob")
    async with AsyncExitStack() as stack:
        alice_tabs = [await _open(stack, gateway, alice) for _ in range(3)]
        alice_in_session = await _open(stack, gateway, alice, sid=unique("sid"))
        bobs = [await _open(stack, gateway, bob) for _ in range(2)]

        to_alice = await api.publish("task.created", "user", alice, {"task_id": "a"})
        to_bob = await api.publish("task.created", "user", bob, {"task_id": "b"})
        to_nobody = await api.publish("task.created", "user", unique("carol"), {"task_id": "c"})
        marker = await api.marker()

        for stream in [*alice_tabs, alice_in_session]:
            received = await until_marker(stream, marker)
            assert ids(received) == [to_alice]
            assert received[0].json() == {"task_id": "a", "_scope": "user", "_version": "1.0"}
        for stream in bobs:
            assert ids(await until_marker(stream, marker)) == [to_bob]
        assert to_nobody not in ids([e for s in [*alice_tabs, *bobs] for e in s.events])


async def test_session_events_reach_only_that_session(gateway: GatewayProcess, api: Api) -> None:
    alice, bob = unique("alice"), unique("bob")
    s1, s2 = unique("s1"), unique("s2")
    async with AsyncExitStack() as stack:
        in_s1 = [await _open(stack, gateway, alice, sid=s1) for _ in range(2)]
        in_s2 = await _open(stack, gateway, alice, sid=s2)
        no_session = await _open(stack, gateway, alice)
        other_user = await _open(stack, gateway, bob, sid=unique("s3"))

        to_s1 = await api.publish("genesis.step-completed", "session", s1, {"stage": 1})
        to_s2 = await api.publish("genesis.step-completed", "session", s2, {"stage": 2})
        marker = await api.marker()

        for stream in in_s1:
            received = await until_marker(stream, marker)
            assert ids(received) == [to_s1]
            assert received[0].json()["_scope"] == "session"
        assert ids(await until_marker(in_s2, marker)) == [to_s2]
        assert await until_marker(no_session, marker) == []
        assert await until_marker(other_user, marker) == []


async def test_resource_events_need_both_a_subscription_and_a_grant(
    gateway: GatewayProcess, api: Api
) -> None:
    novel, other_novel = unique("n"), unique("n")
    exact, wildcard = f"novel:{novel}", "novel:*"
    both = f"novel:{novel},novel:{other_novel}"
    async with AsyncExitStack() as stack:
        subscribed_exact = await _open(stack, gateway, unique("u"), resources=(exact,), subscribe=exact)
        subscribed_wildcard = await _open(stack, gateway, unique("u"), resources=(wildcard,), subscribe=exact)
        subscribed_both = await _open(stack, gateway, unique("u"), resources=(wildcard,), subscribe=both)
        granted_not_subscribed = await _open(stack, gateway, unique("u"), resources=(exact,))
        wildcard_not_subscribed = await _open(stack, gateway, unique("u"), resources=(wildcard,))
        other_novel_only = await _open(
            stack, gateway, unique("u"), resources=(wildcard,), subscribe=f"novel:{other_novel}"
        )
        no_grants = await _open(stack, gateway, unique("u"))

        to_novel = await api.publish("chapter.draft-created", "novel", novel, {"chapter_id": "c1"})
        same_id_other_type = await api.publish("workflow.started", "chapter", novel, {"workflow_id": "w"})
        to_other = await api.publish("chapter.draft-created", "novel", other_novel, {"chapter_id": "c2"})
        marker = await api.marker()

        for stream in (subscribed_exact, subscribed_wildcard):
            received = await until_marker(stream, marker)
            assert ids(received) == [to_novel]
            assert received[0].json() == {"chapter_id": "c1", "_scope": "novel", "_version": "1.0"}
        assert ids(await until_marker(subscribed_both, marker)) == [to_novel, to_other]
        assert ids(await until_marker(other_novel_only, marker)) == [to_other]
        for stream in (granted_not_subscribed, wildcard_not_subscribed, no_grants):
            assert await until_marker(stream, marker) == []
        # The resource type is part of the key: ``chapter`` 42 is not ``novel`` 42.
        assert same_id_other_type not in ids(subscribed_both.events + subscribed_exact.events)


async def test_global_events_reach_every_connection(gateway: GatewayProcess, api: Api) -> None:
    novel = f"novel:{unique('n')}"
    async with AsyncExitStack() as stack:
        streams = [
            await _open(stack, gateway, unique("u")),
            await _open(stack, gateway, unique("u"), sid=unique("s")),
            await _open(stack, gateway, unique("u"), resources=(novel,), subscribe=novel),
        ]
        announcement = await api.publish("system.notification", "global", None, {"title": "hello"})
        marker = await api.marker()
        for stream in streams:
            received = await until_marker(stream, marker)
            assert ids(received) == [announcement]
            assert received[0].json() == {"title": "hello", "_scope": "global", "_version": "1.0"}

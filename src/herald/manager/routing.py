"""Indexes from a message's scope and key to the connections that receive it.

An event costs in proportion to its receivers: ``user``, ``session`` and
resource events look up one set; only ``global`` touches every connection.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

from herald.events.message import SSEMessage
from herald.types import GLOBAL, SESSION, USER

if TYPE_CHECKING:
    from herald.manager.connection import Connection

_NOBODY: frozenset[Connection] = frozenset()


class RoutingIndex:
    __slots__ = ("all", "by_resource", "by_session", "by_user", "everyone")

    def __init__(self) -> None:
        self.all: dict[str, Connection] = {}
        #: A live view of every connection, the same object for every global event: the
        #: manager hands a turn's run of records to one receivers object in one pass.
        self.everyone = self.all.values()
        self.by_user: dict[str, set[Connection]] = {}
        self.by_session: dict[str, set[Connection]] = {}
        self.by_resource: dict[str, set[Connection]] = {}

    def __len__(self) -> int:
        return len(self.all)

    def add(self, conn: Connection) -> None:
        self.all[conn.id] = conn
        _add(self.by_user, conn.user_id, conn)
        if conn.session_id is not None:
            _add(self.by_session, conn.session_id, conn)
        for key in conn.subscriptions:
            _add(self.by_resource, key, conn)

    def remove(self, conn: Connection) -> None:
        if self.all.pop(conn.id, None) is None:
            return
        _discard(self.by_user, conn.user_id, conn)
        if conn.session_id is not None:
            _discard(self.by_session, conn.session_id, conn)
        for key in conn.subscriptions:
            _discard(self.by_resource, key, conn)

    def subscribe(self, conn: Connection, keys: Iterable[str]) -> None:
        for key in keys:
            _add(self.by_resource, key, conn)

    def unsubscribe(self, conn: Connection, keys: Iterable[str]) -> None:
        for key in keys:
            _discard(self.by_resource, key, conn)

    def receivers(self, message: SSEMessage) -> Collection[Connection]:
        scope = message.scope
        if scope == USER:
            return self.by_user.get(message.key, _NOBODY)  # type: ignore[arg-type]
        if scope == SESSION:
            return self.by_session.get(message.key, _NOBODY)  # type: ignore[arg-type]
        if scope == GLOBAL:
            return self.everyone
        return self.by_resource.get(f"{scope}:{message.key}", _NOBODY)

    def users(self) -> int:
        return len(self.by_user)


def _add(index: dict[str, set[Connection]], key: str, conn: Connection) -> None:
    bucket = index.get(key)
    if bucket is None:
        index[key] = {conn}
    else:
        bucket.add(conn)


def _discard(index: dict[str, set[Connection]], key: str, conn: Connection) -> None:
    bucket = index.get(key)
    if bucket is not None:
        bucket.discard(conn)
        if not bucket:
            del index[key]


def visible_to(conn: Connection, message: SSEMessage) -> bool:
    """Whether ``conn`` may receive ``message``: the predicate the indexes encode,
    for replay, where records are checked one by one."""
    scope = message.scope
    if scope == USER:
        return message.key == conn.user_id
    if scope == SESSION:
        return conn.session_id is not None and message.key == conn.session_id
    if scope == GLOBAL:
        return True
    return f"{scope}:{message.key}" in conn.subscriptions

"""Which channels this node's streams follow: what a bus that reads by channel subscribes to.

Reference-counted: a channel is followed while at least one stream follows it,
so a thousand streams of one resource are one subscription. A bus that reads
its whole log (the memory bus, the single-log Redis bus) delivers every record
anyway and only counts (docs/architecture.md, D28).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import Any


class ChannelInterest:
    def __init__(self) -> None:
        self._streams: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, channel: object) -> bool:
        return channel in self._streams

    def add(self, channels: Iterable[str]) -> list[str]:
        """One more stream follows each of ``channels``; those no stream followed before."""
        fresh = []
        streams = self._streams
        for channel in channels:
            count = streams.get(channel, 0)
            streams[channel] = count + 1
            if count == 0:
                fresh.append(channel)
        return fresh

    def remove(self, channels: Iterable[str]) -> list[str]:
        """One stream fewer follows each of ``channels``; those no stream follows any more."""
        gone = []
        streams = self._streams
        for channel in channels:
            count = streams.get(channel, 0)
            if count <= 1:
                if streams.pop(channel, None) is not None:
                    gone.append(channel)
            else:
                streams[channel] = count - 1
        return gone


class Ready:
    """An awaitable that is done at once: ``follow`` of a bus whose records already flow."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


READY = Ready()

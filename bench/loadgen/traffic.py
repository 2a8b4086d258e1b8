"""Who each published event is for, by its index: the same answer in every publishing
process and in the coordinator, which counts the deliveries a stage should see.

The streams of a run are ``u0 … u{n-1}``, one user each; stream ``i`` also
follows one resource, ``doc:r{j}``, whose followers number 10, 20, 30, 40, 50,
10, … (resources fill up in that order, so a resource's followers are
consecutive streams). Kinds of traffic:

- ``global``: every event to everyone;
- ``users``: every event to one user (a permutation of the users, so a stage
  reaches them evenly);
- ``nobody``: users with no stream (the cost of an event that enters and
  reaches no one);
- ``mix``: 90 % to one user, 9 % to one resource's followers, 1 % to everyone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: Followers of the resources, in the order they fill up.
FOLLOWER_CYCLE = (10, 20, 30, 40, 50)
RESOURCE_TYPE = "doc"
KINDS = ("global", "users", "nobody", "mix")
#: Users with no stream that ``nobody`` traffic goes to (a bounded set: each is a channel
#: with history on Centrifugo, a key on Herald).
NOBODY_USERS = 100


def resource_sizes(n: int) -> tuple[int, ...]:
    sizes: list[int] = []
    left = n
    while left > 0:
        size = min(FOLLOWER_CYCLE[len(sizes) % len(FOLLOWER_CYCLE)], left)
        sizes.append(size)
        left -= size
    return tuple(sizes)


def resource_of_streams(n: int) -> list[str]:
    """``r{j}`` for each stream index."""
    out: list[str] = []
    for j, size in enumerate(resource_sizes(n)):
        out.extend([f"r{j}"] * size)
    return out


@dataclass(frozen=True)
class Traffic:
    kind: str
    #: The run's streams (users ``u0 … u{n-1}``).
    n: int = 0
    sizes: tuple[int, ...] = field(default=())

    @classmethod
    def of(cls, kind: str, n: int) -> Traffic:
        if kind not in KINDS:
            raise ValueError(f"unknown traffic {kind!r}")
        return cls(kind, n, resource_sizes(n) if kind == "mix" else ())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Traffic:
        return cls(raw["kind"], raw["n"], tuple(raw["sizes"]))

    def target(self, i: int) -> tuple[str, str | None]:
        """(scope, key) of event ``i``: ``global``/None, ``user``/``u7``, ``doc``/``r3``."""
        kind = self.kind
        if kind == "global":
            return "global", None
        if kind == "nobody":
            return "user", f"idle{i % NOBODY_USERS}"
        if kind == "users":
            return "user", f"u{(i * 7919) % self.n}"
        bucket = ((i * 2654435761) & 0xFFFFFFFF) % 100
        if bucket < 90:
            return "user", f"u{(i * 7919) % self.n}"
        if bucket < 99:
            return RESOURCE_TYPE, f"r{(i * 104729) % len(self.sizes)}"
        return "global", None

    def receivers(self, scope: str, key: str | None, everyone: int) -> int:
        """Streams that should receive an event to (scope, key), of ``everyone`` held."""
        if scope == "global":
            return everyone
        if scope == RESOURCE_TYPE and key is not None:
            return self.sizes[int(key[1:])]
        return 0 if self.kind == "nobody" else 1

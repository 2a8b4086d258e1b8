"""Channels and their placement on shards (herald.bus.channels; docs/architecture.md, D28)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald.bus.channels import GLOBAL_CHANNEL, channel_of, channels_followed
from herald.bus.interest import ChannelInterest
from herald.cluster.placement import jump_hash, shard_of, user_shard
from herald.events.message import build_message


def test_each_event_has_the_channel_of_its_scope_and_key() -> None:
    def of(scope: str, key: str | None) -> str:
        return channel_of(build_message(event="task.created", scope=scope, key=key, data={}))

    assert of("user", "alice") == "user:alice"
    assert of("session", "s1") == "session:s1"
    assert of("novel", "42") == "novel:42"
    assert of("global", None) == GLOBAL_CHANNEL


def test_a_stream_follows_its_user_session_resources_and_global() -> None:
    assert channels_followed("alice", "s1", ["novel:42", "doc:7"]) == {
        "global",
        "user:alice",
        "session:s1",
        "novel:42",
        "doc:7",
    }
    assert channels_followed("bob", None, []) == {"global", "user:bob"}


@given(st.integers(min_value=0, max_value=2**64 - 1), st.integers(min_value=1, max_value=1000))
def test_jump_hash_stays_in_range(key: int, buckets: int) -> None:
    assert 0 <= jump_hash(key, buckets) < buckets


def test_adding_a_shard_moves_only_channels_to_the_new_shard_about_one_in_n_plus_one() -> None:
    channels = [f"user:u{i}" for i in range(20_000)]
    for shards in (1, 2, 3, 4, 7):
        before = [shard_of(c, shards) for c in channels]
        after = [shard_of(c, shards + 1) for c in channels]
        moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
        assert all(a == shards for _, a in moved), "a channel only ever moves to the new shard"
        share = len(moved) / len(channels)
        assert abs(share - 1 / (shards + 1)) < 0.02, (shards, share)


def test_channels_spread_evenly_over_the_shards() -> None:
    counts = Counter(shard_of(f"novel:{i}", 5) for i in range(50_000))
    assert set(counts) == set(range(5))
    assert max(counts.values()) / min(counts.values()) < 1.1


def test_placement_is_the_same_in_every_process_and_release() -> None:
    """A node in another process (Python salts str hashes per process) places a channel
    where this one does; and a release must not move channels, so the placement of a
    few names is pinned."""
    names = ["user:alice", "session:s1", "novel:42", "global"]
    code = f"from herald.cluster.placement import shard_of; print([shard_of(c, 5) for c in {names!r}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str([shard_of(c, 5) for c in names])
    assert [shard_of(c, 5) for c in names] == [0, 0, 4, 3]
    assert [shard_of(c, 3) for c in names] == [0, 0, 1, 2]


def test_there_is_at_least_one_shard() -> None:
    with pytest.raises(ValueError, match="at least one shard"):
        shard_of("user:alice", 0)
    assert shard_of("user:alice", 1) == 0


def test_a_channel_is_followed_while_one_stream_follows_it() -> None:
    interest = ChannelInterest()
    assert interest.add(["global", "user:a"]) == ["global", "user:a"]
    assert interest.add(["global", "user:b"]) == ["user:b"]
    assert interest.remove(["global", "user:a"]) == ["user:a"]
    assert "global" in interest
    assert interest.remove(["global", "user:b", "user:never"]) == ["global", "user:b"]
    assert len(interest) == 0


def test_a_users_leases_and_presence_live_on_the_shard_of_their_channel() -> None:
    """One Redis holds everything of one user: their events and their connection state."""
    for user in ("alice", "bob", "u-42", "ü"):
        for shards in (1, 3, 7):
            assert user_shard(user, shards) == shard_of(f"user:{user}", shards)

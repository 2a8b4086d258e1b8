"""``redis+sentinel://`` URLs (a primary found through Redis Sentinel) and the durability
setting: how they are read, and what is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from herald.cluster.redis_client import SentinelTarget, parse_sentinel_url
from herald.config import Settings


def test_a_sentinel_url_names_its_sentinels_service_db_and_the_primarys_credentials() -> None:
    assert parse_sentinel_url("redis+sentinel://s1:26380,s2,[::1]:26381/herald/2") == SentinelTarget(
        sentinels=(("s1", 26380), ("s2", 26379), ("::1", 26381)), service="herald", db=2
    )
    target = parse_sentinel_url("redis+sentinel://app:p%40ss@s1:26379/main")
    assert target is not None
    assert (target.username, target.password, target.service, target.db) == ("app", "p@ss", "main", 0)
    only_password = parse_sentinel_url("redis+sentinel://:secret@s1/main")
    assert only_password is not None
    assert (only_password.username, only_password.password) == (None, "secret")


def test_other_urls_are_not_sentinel_urls() -> None:
    assert parse_sentinel_url("redis://127.0.0.1:6379/0") is None
    assert parse_sentinel_url("unix:///run/redis.sock") is None


@pytest.mark.parametrize(
    "url", ["redis+sentinel:///herald", "redis+sentinel://s1:26379", "redis+sentinel://s1/"]
)
def test_a_sentinel_url_without_sentinels_or_service_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="Sentinel"):
        parse_sentinel_url(url)


def test_shards_split_where_a_url_starts_not_inside_a_sentinel_list() -> None:
    settings = Settings(
        bus="redis",
        redis_shards="redis+sentinel://a:26379,b:26379/one, redis+sentinel://a:26379,b:26379/two,redis://c:6379/0",  # type: ignore[arg-type]
    )
    assert settings.redis_shards == [
        "redis+sentinel://a:26379,b:26379/one",
        "redis+sentinel://a:26379,b:26379/two",
        "redis://c:6379/0",
    ]
    assert settings.redis_url == "redis+sentinel://a:26379,b:26379/one"
    plain = Settings(redis_shards="redis://a:6379,redis://b:6379")  # type: ignore[arg-type]
    assert plain.redis_shards == ["redis://a:6379", "redis://b:6379"]


def test_waiting_for_replicas_must_end_before_the_command_bound() -> None:
    Settings(redis_min_replicas_ack=1, redis_replica_ack_timeout_seconds=0.5, redis_timeout_seconds=2)
    with pytest.raises(ValidationError):
        Settings(redis_min_replicas_ack=1, redis_replica_ack_timeout_seconds=2, redis_timeout_seconds=2)
    # Off by default: asynchronous replication, as before.
    assert Settings().redis_min_replicas_ack == 0

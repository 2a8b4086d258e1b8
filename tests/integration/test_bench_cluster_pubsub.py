"""The Cluster benchmark's premise against a real three-primary Redis Cluster (D28): classic
``PUBLISH`` reaches every node over the cluster bus, ``SPUBLISH`` stays on the slot's owner.
Counted by Redis (``CLUSTER INFO``), not timed."""

from __future__ import annotations

from contextlib import ExitStack

from bench.cluster_pubsub import notice_case, notices, owner, start_cluster

COUNT = 500


def test_classic_pubsub_costs_every_node_and_sharded_pubsub_only_the_owner() -> None:
    with ExitStack() as stack:
        cluster = start_cluster(stack)
        home = owner(cluster, "herald:n:{user:alice}")
        others = [s for s in cluster if s is not home]
        classic = notice_case("publish", cluster, notices(others[0], home, False, COUNT), COUNT)
        sharded = notice_case("spublish", cluster, notices(home, home, True, COUNT), COUNT)
    # Sent to one node, a classic message is forwarded to each of the two others.
    received = dict(zip((s.port for s in cluster), classic["cluster_bus_received_per_node"], strict=True))
    assert received[others[0].port] == 0
    assert received[home.port] >= COUNT
    assert received[others[1].port] >= COUNT
    assert sharded["cluster_bus_received_per_node"] == [0, 0, 0]

"""What makes several gateway nodes act as one: the Redis connections they share,
the stream-token leases and the cluster-wide count of each user's connections.

Single-node deployments use the memory equivalents and need none of Redis.
"""

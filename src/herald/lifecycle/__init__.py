"""Lifecycle events: ``connection.opened`` and ``connection.closed`` per user, for the
application (presence, "send a push notification instead"), decided once per
transition across the cluster and published to a Redis Stream or a Kafka topic.

``events``            the schema and the arithmetic of when events come (pure)
``redis_presence``    the per-user connection count with presence kept beside it, in Redis
``kafka_relay``       moves the announcements from Redis to Kafka, in order
"""

"""Publish events to a Herald gateway: typed catalogue events, retries that never make a second
event, progress of long tasks, and the outbox inside your transaction (README.md)."""

from herald_publisher.catalogue import EVENTS, Payload
from herald_publisher.errors import (
    AuthenticationError,
    ConnectionFailedError,
    HeraldError,
    InvalidEventError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    TooLargeError,
    UnavailableError,
)
from herald_publisher.events import Event, new_idempotency_key
from herald_publisher.outbox import OutboxError, add_event
from herald_publisher.progress import AsyncTaskProgress, TaskError, TaskProgress, progress
from herald_publisher.publisher import NO_RETRY, AsyncPublisher, Published, Publisher, RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "EVENTS",
    "NO_RETRY",
    "AsyncPublisher",
    "AsyncTaskProgress",
    "AuthenticationError",
    "ConnectionFailedError",
    "Event",
    "HeraldError",
    "InvalidEventError",
    "NotFoundError",
    "OutboxError",
    "Payload",
    "PermissionDeniedError",
    "Published",
    "Publisher",
    "RateLimitedError",
    "RetryPolicy",
    "ServerError",
    "TaskError",
    "TaskProgress",
    "TooLargeError",
    "UnavailableError",
    "add_event",
    "new_idempotency_key",
    "progress",
]

"""Errors that cross layer boundaries.

Each error carries the stable ``code`` clients branch on, the HTTP status the
API answers with, and whether retrying the same request later can succeed
(``retriable``), so callers decide by type, never by message text.
"""

from __future__ import annotations

from typing import Any, ClassVar


class HeraldError(Exception):
    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500
    retriable: ClassVar[bool] = False

    def __init__(self, message: str, *, retry_after: float | None = None, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.detail = detail

    def body(self) -> dict[str, Any]:
        """The JSON body every refusal carries."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        out.update(self.detail)
        return out

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": str(max(1, round(self.retry_after)))}


class AuthError(HeraldError):
    """Missing, malformed, badly signed or otherwise unacceptable credentials."""

    code = "AUTH_INVALID"
    status = 401


class AuthMissing(AuthError):
    code = "AUTH_MISSING"


class AuthExpired(AuthError):
    code = "AUTH_EXPIRED"


class AuthRevoked(AuthError):
    """The token was revoked (``POST /api/v1/admin/revocations``): a new one will not help
    until the application issues one after the revocation."""

    code = "AUTH_REVOKED"


class StreamTokenInUse(AuthError):
    code = "STREAM_TOKEN_IN_USE"


class AuthUnavailable(HeraldError):
    """Credentials cannot be checked right now (the JWKS endpoint is unreachable)."""

    code = "AUTH_UNAVAILABLE"
    status = 503
    retriable = True


class PermissionDenied(HeraldError):
    code = "PERMISSION_DENIED"
    status = 403


class GrantRevoked(PermissionDenied):
    """The user's grant of a resource was revoked for the token presented."""

    code = "AUTH_REVOKED"


class InvalidEvent(HeraldError):
    code = "EVENT_INVALID"
    status = 422


class EventTooLarge(HeraldError):
    code = "EVENT_TOO_LARGE"
    status = 413


class SubscriptionInvalid(HeraldError):
    code = "SUBSCRIPTION_INVALID"
    status = 422


class RequestInvalid(HeraldError):
    code = "REQUEST_INVALID"
    status = 400


class BatchInvalid(HeraldError):
    """A batch whose body is not ``{"events": [...]}`` with 1 to the most allowed items."""

    code = "REQUEST_INVALID"
    status = 422


class BatchTooLarge(HeraldError):
    code = "BATCH_TOO_LARGE"
    status = 413


class BodyTooLarge(HeraldError):
    code = "BODY_TOO_LARGE"
    status = 413


class BusUnavailable(HeraldError):
    """The event log cannot take or give events right now; try again shortly."""

    code = "BUS_UNAVAILABLE"
    status = 503
    retriable = True


class ServerOverload(HeraldError):
    code = "SERVER_OVERLOAD"
    status = 503
    retriable = True


class RateLimited(HeraldError):
    code = "RATE_LIMIT_EXCEEDED"
    status = 429
    retriable = True


class ConnectionLimitExceeded(HeraldError):
    """The user has as many open streams as the per-user limit allows (policy ``refuse``)."""

    code = "SSE_CONNECTION_LIMIT"
    status = 429
    retriable = True


class ConnectionNotFound(HeraldError):
    """No open stream of the caller has this connection id (closed, or someone else's)."""

    code = "CONNECTION_NOT_FOUND"
    status = 404


class NodeNotFound(HeraldError):
    """No node of the cluster answered to this id (gone, or never one of ours)."""

    code = "NODE_NOT_FOUND"
    status = 404

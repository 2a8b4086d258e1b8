"""Errors by the gateway's code families: branch on the type (or ``code``), never on the message.

Every refusal Herald answers is JSON with a stable ``code`` (docs/api.md); the
SDK raises the class of the code's family, carrying ``code``, ``status``,
``message``, ``details`` (the rest of the body: ``field``, ``errors``, …) and
``retry_after``. ``retriable`` says whether the same request may succeed
later: the publisher retries those itself before giving up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class HeraldError(Exception):
    """Base of every error the SDK raises about a publish."""

    #: The code a family answers when the gateway's body names none.
    default_code: ClassVar[str] = "INTERNAL_ERROR"
    default_status: ClassVar[int] = 500
    retriable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        #: The HTTP status (0: no answer came, or the SDK refused the event itself).
        self.status = self.default_status if status is None else status
        self.details: dict[str, Any] = dict(details or {})
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.code} ({self.status}): {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status}, message={self.message!r})"


class AuthenticationError(HeraldError):
    """401: the token is missing, malformed, expired, badly signed or revoked."""

    default_code = "AUTH_INVALID"
    default_status = 401


class PermissionDeniedError(HeraldError):
    """403: the token lacks the ``publisher`` role (or the right to what was asked)."""

    default_code = "PERMISSION_DENIED"
    default_status = 403


class InvalidEventError(HeraldError, ValueError):
    """400/422: the event or the request is malformed (``EVENT_INVALID`` names the ``field``).

    Also raised before sending when ``data`` breaks the catalogue's payload model
    (``status`` 0, ``details["errors"]`` from pydantic).
    """

    default_code = "EVENT_INVALID"
    default_status = 422

    @property
    def field(self) -> str | None:
        value = self.details.get("field")
        return value if isinstance(value, str) else None


class TooLargeError(HeraldError):
    """413: ``EVENT_TOO_LARGE`` (encoded data over 64 KiB), ``BODY_TOO_LARGE``, ``BATCH_TOO_LARGE``."""

    default_code = "EVENT_TOO_LARGE"
    default_status = 413


class NotFoundError(HeraldError):
    """404: no such endpoint (an older gateway) or resource."""

    default_code = "NOT_FOUND"
    default_status = 404


class RateLimitedError(HeraldError):
    """429: too many requests; ``retry_after`` says when to come back."""

    default_code = "RATE_LIMIT_EXCEEDED"
    default_status = 429
    retriable = True


class UnavailableError(HeraldError):
    """503: ``BUS_UNAVAILABLE``, ``SERVER_OVERLOAD``, ``AUTH_UNAVAILABLE``: try again shortly."""

    default_code = "BUS_UNAVAILABLE"
    default_status = 503
    retriable = True


class ServerError(HeraldError):
    """Another 5xx (a proxy's 502/504 too): retried like 503."""

    default_code = "INTERNAL_ERROR"
    default_status = 500
    retriable = True


class ConnectionFailedError(HeraldError):
    """No answer: the connection failed, broke or timed out (``status`` 0) after every retry."""

    default_code = "CONNECTION_FAILED"
    default_status = 0
    retriable = True


_BY_CODE: dict[str, type[HeraldError]] = {
    "AUTH_MISSING": AuthenticationError,
    "AUTH_INVALID": AuthenticationError,
    "AUTH_EXPIRED": AuthenticationError,
    "STREAM_TOKEN_IN_USE": AuthenticationError,
    "PERMISSION_DENIED": PermissionDeniedError,
    "EVENT_INVALID": InvalidEventError,
    "REQUEST_INVALID": InvalidEventError,
    "SUBSCRIPTION_INVALID": InvalidEventError,
    "EVENT_TOO_LARGE": TooLargeError,
    "BODY_TOO_LARGE": TooLargeError,
    "BATCH_TOO_LARGE": TooLargeError,
    "RATE_LIMIT_EXCEEDED": RateLimitedError,
    "SSE_CONNECTION_LIMIT": RateLimitedError,
    "BUS_UNAVAILABLE": UnavailableError,
    "SERVER_OVERLOAD": UnavailableError,
    "AUTH_UNAVAILABLE": UnavailableError,
}
_BY_STATUS: dict[int, type[HeraldError]] = {
    400: InvalidEventError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: TooLargeError,
    422: InvalidEventError,
    429: RateLimitedError,
    503: UnavailableError,
}


def error_class(code: str | None, status: int | None) -> type[HeraldError]:
    """The family of a refusal: by its status when it has one (``AUTH_REVOKED`` is 401 or 403),
    else by its code (a batch item's error carries no status)."""
    if status is not None:
        if status in _BY_STATUS:
            return _BY_STATUS[status]
        if status >= 500:
            return ServerError
    if code is not None and code in _BY_CODE:
        return _BY_CODE[code]
    if code == "AUTH_REVOKED":
        return AuthenticationError
    return HeraldError


def error_from_body(
    status: int | None, body: Any, *, retry_after: float | None = None, fallback: str = ""
) -> HeraldError:
    """The typed error of a refusal's JSON body (or of a batch item's ``error``)."""
    details: dict[str, Any] = dict(body) if isinstance(body, Mapping) else {}
    code = details.pop("code", None)
    message = details.pop("message", None) or fallback or f"HTTP {status}"
    details.pop("retriable", None)
    body_retry = details.pop("retry_after", None)
    if retry_after is None and isinstance(body_retry, int | float):
        retry_after = float(body_retry)
    code = code if isinstance(code, str) else None
    cls = error_class(code, status)
    return cls(str(message), code=code, status=status, details=details, retry_after=retry_after)

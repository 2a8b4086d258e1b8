"""CORS headers of the stream response, which the standalone server writes itself."""

from __future__ import annotations

import pytest

from herald.api.cors import stream_cors_headers
from herald.config import Settings

APP = "https://app.example.com"


def settings(origins: list[str], credentials: bool = False) -> Settings:
    return Settings(jwt_secret="x" * 32, cors_allow_origins=origins, cors_allow_credentials=credentials)


@pytest.mark.parametrize(
    ("origins", "credentials", "origin", "expected"),
    [
        # nothing configured: nothing allowed beyond the gateway's own origin
        ([], False, APP, {}),
        # no Origin header: a same-origin or non-browser request needs nothing
        ([APP], False, None, {}),
        # an origin not on the list
        ([APP], False, "https://evil.example.com", {}),
        # allowed, named on the list (compared without case or trailing slash)
        (
            [APP],
            False,
            "https://APP.example.com",
            {
                "access-control-allow-origin": "https://APP.example.com",
                "access-control-expose-headers": "retry-after, herald-version",
                "vary": "origin",
            },
        ),
        (
            [APP],
            True,
            APP,
            {
                "access-control-allow-origin": APP,
                "access-control-expose-headers": "retry-after, herald-version",
                "access-control-allow-credentials": "true",
                "vary": "origin",
            },
        ),
        # any origin, without credentials: the wildcard
        (
            ["*"],
            False,
            APP,
            {
                "access-control-allow-origin": "*",
                "access-control-expose-headers": "retry-after, herald-version",
            },
        ),
        # any origin with credentials: the origin must be named (never "*")
        (
            ["*"],
            True,
            APP,
            {
                "access-control-allow-origin": APP,
                "access-control-expose-headers": "retry-after, herald-version",
                "access-control-allow-credentials": "true",
                "vary": "origin",
            },
        ),
    ],
)
def test_stream_cors_headers(
    origins: list[str], credentials: bool, origin: str | None, expected: dict[str, str]
) -> None:
    assert dict(stream_cors_headers(origin, settings(origins, credentials))) == expected


@pytest.mark.parametrize("bad", ["app.example.com", "https://app.example.com/path", "ftp://x"])
def test_configured_origins_must_be_origins(bad: str) -> None:
    with pytest.raises(ValueError, match="CORS origin"):
        settings([bad])


def test_configured_origins_are_normalised() -> None:
    assert settings(["HTTPS://App.Example.com/"]).cors_allow_origins == [APP]

"""Hand-made JWTs: any header, any claims, signed or not, for fuzzing token parsing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from tests.support.gateway import SECRET

_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign_hs256(claims: Any, *, header: dict[str, Any] | None = None, secret: str = SECRET) -> str:
    """``claims`` (any JSON value) under ``header`` (default HS256), HMAC-signed with the
    hash its ``alg`` names (SHA-256 for anything else)."""
    head = header if header is not None else {"alg": "HS256", "typ": "JWT"}
    digest = _HASHES.get(str(head.get("alg")), hashlib.sha256)
    signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(signature)}"

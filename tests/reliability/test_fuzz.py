"""Hostile input, fuzzed with hypothesis: the SSE encoder, the cursor parser, bearer headers,
application JWTs (any text; any header and claims, correctly signed), stream tokens, domain
records through the mapping layer, mapping files, and publish bodies as the Redis sources
take them. No crash, no hang (each example has a deadline), only the documented errors
(``tests.reliability.fuzz_targets``). The HTTP publish body is fuzzed through the live
API by schemathesis (test_openapi_fuzz.py); atheris runs the same targets coverage-guided
(atheris_fuzz.py).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald.events.catalogue import CATALOGUE
from tests.reliability import fuzz_targets as targets
from tests.reliability.mode import pick
from tests.reliability.tokens import b64

pytestmark = pytest.mark.reliability

FUZZ = settings(
    max_examples=pick(300, 5000),
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from(["\ud800", "x\udfffy", "", " ", "novel:*", "a,b", "\x00"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _json(value: Any) -> bytes:
    """The standard library's JSON: it writes what orjson refuses (huge integers, NaN,
    escaped lone surrogates), exactly what a hostile producer sends."""
    return json.dumps(value).encode()


#: Text with what breaks line-based formats: CR, LF, NUL, separators, surrogates.
hostile_text = st.text(
    alphabet=st.characters(codec=None) | st.sampled_from("\r\n\0:, \t\u2028\x85\ud800\udfff"), max_size=80
)


@FUZZ
@given(hostile_text, hostile_text, hostile_text, st.integers(-(10**6), 10**9), hostile_text)
def test_the_sse_encoder_never_lets_a_value_smuggle_a_field(
    data: str, event: str, id: str, retry: int, comment: str
) -> None:
    targets.sse_roundtrip(data, event, id, retry, comment)


@FUZZ
@given(st.text(max_size=60) | st.from_regex(r"\s*[0-9]{1,20}-[0-9]{1,20}\s*", fullmatch=True))
def test_the_cursor_parser_never_raises_and_round_trips(text: str) -> None:
    targets.cursor_text(text)


@FUZZ
@given(
    st.text(max_size=80)
    | st.builds(
        lambda s, t: f"{s} {t}", st.sampled_from(["Bearer", "bearer", "Basic", ""]), st.text(max_size=40)
    )
)
def test_a_bearer_header_is_a_token_or_an_auth_error(header: str) -> None:
    targets.bearer_header(header)


def _jwt_like(draw: Any) -> str:
    parts = draw(st.lists(st.binary(max_size=60).map(b64) | st.text(max_size=30), min_size=1, max_size=4))
    return ".".join(parts)


jwt_like = st.composite(_jwt_like)()
algs = st.sampled_from(
    ["HS256", "HS384", "HS512", "none", "None", "NONE", "nOnE", "RS256", "RS512", "ES256", "ES512", "PS256",
     "EdDSA", "", "hs256", "HS256 ", None, 256, ["HS256"], {"alg": "HS256"}]
)  # fmt: skip


@FUZZ
@given(st.text(max_size=200) | jwt_like)
def test_any_text_as_a_jwt_is_refused_with_an_auth_error(token: str) -> None:
    targets.app_token(token)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["sub", "sid", "exp", "nbf", "iat", "resources", "roles", "aud", "iss", "typ", "jti"])
        | st.text(max_size=8),
        json_values,
        max_size=8,
    )
    | json_values,
    st.fixed_dictionaries(
        {"alg": algs},
        optional={
            "typ": st.text(max_size=5),
            "kid": json_values,
            "crit": json_values,
            "jku": st.text(max_size=20),
        },
    ),
)
def test_signed_tokens_with_any_claims_and_alg_give_a_valid_principal_or_an_auth_error(
    claims: Any, header: dict[str, Any]
) -> None:
    targets.signed_claims(claims, header)


@FUZZ
@given(st.text(max_size=200) | jwt_like)
def test_any_text_as_a_stream_token_is_refused_with_an_auth_error(token: str) -> None:
    targets.stream_token(token)


@FUZZ
@given(st.binary(max_size=300) | json_values.map(_json))
def test_any_bytes_as_a_domain_record_map_to_an_event_or_poison(raw: bytes) -> None:
    targets.domain_record(raw)


CATALOGUE_TYPES = sorted(targets.ADAPTER.table.rules)
FIELD_NAMES = sorted({name for model in CATALOGUE.values() for name in model.model_fields}
                     | {"user_id", "novel_id", "session_id", "payload", "timestamp"})  # fmt: skip


@FUZZ
@given(
    st.sampled_from(CATALOGUE_TYPES),
    st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), json_values, max_size=10),
)
def test_catalogue_records_with_hostile_fields_map_to_an_event_or_poison(
    event_type: str, fields: dict[str, Any]
) -> None:
    targets.domain_record_object({**fields, "event_type": event_type})


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["event", "scope", "key", "data", "priority", "coalesce", "id", "idempotency_key"])
        | st.text(max_size=6),
        json_values | st.sampled_from(["task.created", "user", "global", "novel", "u1", "high"]),
        max_size=8,
    ).map(_json)
    | st.binary(max_size=200)
)
def test_any_publish_body_from_a_redis_source_is_an_event_or_invalid(raw: bytes) -> None:
    targets.publish_body(raw)


mapping_lines = st.lists(
    st.sampled_from(
        ['[rules.X]', 'event = "a.b-c"', 'scope = "user"', 'key = "user_id"', 'fields = ["a"]',
         'priority = "low"', 'extends = "none"', 'format = 1', 'timestamps = ["t"]', 'coalesce = "{a}"',
         '[rules.X.error]', 'code = "E"', 'type_field = "t"', 'payload_path = "p"', 'summaries = {a = 3}',
         'urls = {u = "/x/{a}"}', 'scope = "global"', 'event = "error.x"', "[rules]", "rules = 3"]
    )
    | st.text(max_size=30),
    max_size=12,
).map("\n".join)  # fmt: skip


@FUZZ
@given(mapping_lines)
def test_any_mapping_file_loads_or_is_reported_invalid(text: str) -> None:
    targets.mapping_text(text)

"""Coverage-guided fuzzing (atheris, libFuzzer) of the same targets as test_fuzz.py.

    python -m tests.reliability.atheris_fuzz TARGET [libFuzzer flags, e.g. -max_total_time=60]

Targets: sse, cursor, bearer, jwt, claims, stream-token, record, publish-body, mapping.
``make reliability`` runs each for a minute; ``make test`` for a few thousand inputs each
(tests/reliability/test_atheris.py). A finding is an exception other than the target's
documented ones: libFuzzer prints the input and exits non-zero.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports(include=["herald", "tomllib", "jwt"]):
    from tests.reliability import fuzz_targets as targets


def _text(fdp: atheris.FuzzedDataProvider, n: int = 200) -> str:
    return str(fdp.ConsumeUnicodeNoSurrogates(n)) if fdp.ConsumeBool() else str(fdp.ConsumeUnicode(n))


def sse(fdp: atheris.FuzzedDataProvider) -> None:
    targets.sse_roundtrip(_text(fdp), _text(fdp, 40), _text(fdp, 40), fdp.ConsumeIntInRange(-(10**6), 10**9),
                          _text(fdp, 40))  # fmt: skip


def claims(fdp: atheris.FuzzedDataProvider) -> None:
    raw = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return
    header = {"alg": _text(fdp, 8) if fdp.ConsumeBool() else "HS256", "typ": "JWT"}
    targets.signed_claims(value, header)


_RECORD_FIELDS = [
    *("user_id", "novel_id", "session_id", "task_id", "progress", "title", "status", "created_at"),
    *("changed_at", "start_time", "end_time", "payload", "message", "level", "code", "error"),
    *("correlation_id", "chapter_id", "word_count", "final_settings", "updated_fields"),
]
_BODY_FIELDS = ["event", "scope", "key", "data", "priority", "coalesce", "id", "idempotency_key"]


def _value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> object:
    kind = fdp.ConsumeIntInRange(0, 8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeInt(9)
    if kind == 3:
        return fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeFloat()
    if kind in (4, 5):
        return _text(fdp, 30)
    if kind == 6:
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    return {_text(fdp, 8): _value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))}


def _object(fdp: atheris.FuzzedDataProvider, names: list[str]) -> dict[str, object]:
    return {
        (fdp.PickValueInList(names) if fdp.ConsumeBool() else _text(fdp, 8)): _value(fdp)
        for _ in range(fdp.ConsumeIntInRange(0, 8))
    }


def record(fdp: atheris.FuzzedDataProvider) -> None:
    if fdp.ConsumeIntInRange(0, 9) == 0:
        targets.domain_record(fdp.ConsumeBytes(fdp.remaining_bytes()))
        return
    fields = _object(fdp, _RECORD_FIELDS)
    fields["event_type"] = fdp.PickValueInList(sorted(targets.ADAPTER.table.rules))
    targets.domain_record_object(fields)


def publish_body(fdp: atheris.FuzzedDataProvider) -> None:
    if fdp.ConsumeIntInRange(0, 9) == 0:
        targets.publish_body(fdp.ConsumeBytes(fdp.remaining_bytes()))
        return
    body = _object(fdp, _BODY_FIELDS)
    for name, pool in (("event", ["task.created", "a.b-c", "error.x", "connection.opened"]),
                       ("scope", ["user", "global", "novel", "session"])):  # fmt: skip
        if fdp.ConsumeBool():
            body[name] = fdp.PickValueInList(pool)
    try:
        raw = json.dumps(body)
    except (ValueError, RecursionError):
        return
    targets.publish_body(raw)


TARGETS: dict[str, Callable[[atheris.FuzzedDataProvider], None]] = {
    "sse": sse,
    "cursor": lambda fdp: targets.cursor_text(_text(fdp, 60)),
    "bearer": lambda fdp: targets.bearer_header(_text(fdp, 120)),
    "jwt": lambda fdp: targets.app_token(_text(fdp, 400)),
    "claims": claims,
    "stream-token": lambda fdp: targets.stream_token(_text(fdp, 400)),
    "record": record,
    "publish-body": publish_body,
    "mapping": lambda fdp: targets.mapping_text(_text(fdp, 2000)),
}


def main() -> None:
    name = sys.argv[1]
    target = TARGETS[name]

    def one_input(data: bytes) -> None:
        target(atheris.FuzzedDataProvider(data))

    atheris.Setup([sys.argv[0], *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

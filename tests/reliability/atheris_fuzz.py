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


TARGETS: dict[str, Callable[[atheris.FuzzedDataProvider], None]] = {
    "sse": sse,
    "cursor": lambda fdp: targets.cursor_text(_text(fdp, 60)),
    "bearer": lambda fdp: targets.bearer_header(_text(fdp, 120)),
    "jwt": lambda fdp: targets.app_token(_text(fdp, 400)),
    "claims": claims,
    "stream-token": lambda fdp: targets.stream_token(_text(fdp, 400)),
    "record": lambda fdp: targets.domain_record(fdp.ConsumeBytes(fdp.remaining_bytes())),
    "publish-body": lambda fdp: targets.publish_body(fdp.ConsumeBytes(fdp.remaining_bytes())),
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

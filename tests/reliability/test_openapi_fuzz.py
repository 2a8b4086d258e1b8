"""schemathesis against the live control API, from the OpenAPI document the node serves:
every response has a documented status, content type and body schema, and none is a 500.
Run with a publisher's token (every route accepts it), and with no credentials (the
refusals are documented too). The stream route is fuzzed without credentials only: with
them it answers a stream that never ends.

(schemathesis's own pytest plugin does not run under pytest 9 yet, so each operation's
hypothesis strategy is driven here directly.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from schemathesis import openapi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.reliability.mode import pick
from tests.support.gateway import GatewayProcess, running_gateway

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(pick(300, 1800))]

STREAM = "/api/v1/events/stream"
EXAMPLES = settings(max_examples=pick(40, 500), deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fuzzed_gateway() -> Iterator[GatewayProcess]:
    """A node of its own: fuzzed publishes land in no other test's streams."""
    with running_gateway({"HERALD_CONNECT_RATE_PER_IP": "0", "HERALD_CONNECT_RATE_PER_USER": "0"}) as node:
        yield node


#: A body the schema allows may still break a rule JSON Schema cannot say (a reserved event
#: name, a key a scope requires): 422 with a code is the documented answer, not a defect.
_NOT_CHECKED = [positive_data_acceptance]


def _operations(node: GatewayProcess) -> list[Any]:
    schema = openapi.from_url(f"{node.url}/openapi.json")
    schema.config.update(base_url=node.url)
    return [result.ok() for result in schema.get_all_operations()]


def _fuzz(operation: Any, headers: dict[str, str]) -> int:
    calls = 0

    @EXAMPLES
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        nonlocal calls
        if case.headers:
            for name in [n for n in case.headers if n.lower() == "authorization"]:
                del case.headers[name]
        case.call_and_validate(headers=headers, timeout=10, excluded_checks=_NOT_CHECKED)
        calls += 1

    check()
    return calls


def test_the_control_api_answers_as_documented_with_credentials(fuzzed_gateway: GatewayProcess) -> None:
    bearer = {"authorization": f"Bearer {fuzzed_gateway.publisher_token}"}
    operations = [op for op in _operations(fuzzed_gateway) if op.path != STREAM]
    assert len(operations) >= 6
    for operation in operations:
        assert _fuzz(operation, bearer) > 0, operation.label


def test_the_control_api_answers_as_documented_without_credentials(fuzzed_gateway: GatewayProcess) -> None:
    for operation in _operations(fuzzed_gateway):
        assert _fuzz(operation, {}) > 0, operation.label

"""The demo page listens for exactly the names the server sends, through the served client bundle."""

from __future__ import annotations

import inspect
import re
from importlib.resources import files

from herald.api import paths
from herald.api.demo import DEMO_USER
from herald.events import system
from herald.sources import simulator

PAGE = files("herald.api").joinpath("static/demo.html").read_text()
BUNDLE = files("herald.api").joinpath("static/herald-client.js").read_text()


def listened_names() -> list[str]:
    block = re.search(r"const EVENT_NAMES = \[(.*?)\];", PAGE, re.DOTALL)
    assert block is not None
    return re.findall(r'"([^"]+)"', block.group(1))


def test_the_page_listens_for_exactly_the_names_the_gateway_and_the_simulator_send() -> None:
    gateway = {
        system.CONNECTION_ESTABLISHED,
        system.SERVER_SHUTDOWN,
        system.AUTH_EXPIRED,
        system.SLOW_CONSUMER,
    }
    names = listened_names()
    assert len(names) == len(set(names))
    assert set(names) == gateway | simulator.EVENT_NAMES


def test_the_page_adds_handlers_only_through_that_list() -> None:
    assert PAGE.count(".on(name,") == 1
    assert not re.search(r"\.on\(\s*[\"'][a-z]+\.", PAGE)
    assert not re.search(r"addEventListener\(\s*[\"'][a-z]+\.", PAGE)
    assert "onmessage" not in PAGE


def test_the_page_uses_the_client_bundle_and_opens_no_stream_of_its_own() -> None:
    assert "new Herald.HeraldClient(" in PAGE
    assert "new EventSource(" not in PAGE
    assert BUNDLE.startswith("// @herald/client browser bundle")
    assert "var Herald=" in BUNDLE


def test_the_page_needs_nothing_from_elsewhere() -> None:
    sources = re.findall(r"<(?:script|link|img|iframe)[^>]+(?:src|href)=\"([^\"]*)\"", PAGE)
    assert sources == [paths.DEMO_CLIENT]
    assert not re.search(r"https?://", PAGE)
    assert "@import" not in PAGE


def test_the_simulator_works_for_the_user_the_demo_token_is_for() -> None:
    assert inspect.signature(simulator.run_simulator).parameters["user"].default == DEMO_USER

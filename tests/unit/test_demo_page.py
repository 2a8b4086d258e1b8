"""The demo page is one self-contained file that listens for exactly the names the server sends."""

from __future__ import annotations

import inspect
import re
from importlib.resources import files

from herald.api.demo import DEMO_USER
from herald.events import system
from herald.sources import simulator

PAGE = files("herald.api").joinpath("static/demo.html").read_text()


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


def test_the_page_adds_listeners_only_through_that_list() -> None:
    assert PAGE.count("addEventListener(name") == 1
    assert not re.search(r"addEventListener\(\s*[\"'][a-z]+\.", PAGE)
    assert "onmessage" not in PAGE


def test_the_page_needs_nothing_from_elsewhere() -> None:
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", PAGE)
    assert not re.search(r"https?://", PAGE)
    assert "@import" not in PAGE


def test_the_simulator_works_for_the_user_the_demo_token_is_for() -> None:
    assert inspect.signature(simulator.run_simulator).parameters["user"].default == DEMO_USER

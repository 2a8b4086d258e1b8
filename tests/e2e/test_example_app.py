"""The AI Writer example (examples/ai-writer) in real Chromium, started as ``make example`` does.

``examples/ai-writer/install.sh`` (which ``make test`` runs) installed its packages; the test
builds the page again (esbuild, well under a second) so it is never stale, starts
``run.py`` (FastAPI + Herald mounted, a private PostgreSQL with the outbox, or SQLite
without it), and drives the page (tests/e2e/browser/example_app.mjs): a task is started,
its progress rises live, the page is reloaded mid-task — its bar comes back from the retained
state on the new stream while the task list's answer is held back — and the progress goes on,
the task completes and the chapter appears. The task's steps are short (``EXAMPLE_STEP_SECONDS``).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import ROOT, Driver, require_browser, run_driver
from tests.support.redis import free_port
from tests.support.waiting import wait_until_sync

pytestmark = pytest.mark.browser

EXAMPLE = ROOT / "examples" / "ai-writer"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
INSTALL = "run examples/ai-writer/install.sh (make test and make example do)"
#: 20 steps of 0.3 s: a task of about 6 s, long enough to reload the page in the middle.
STEPS, STEP_SECONDS = 20, 0.3
Snapshot = dict[str, Any]


@dataclass
class Example:
    url: str
    banner: str
    process: subprocess.Popen[bytes]


def build_page() -> None:
    node = require_browser()
    if not (EXAMPLE / "web" / "node_modules" / "esbuild").is_dir():
        pytest.fail(f"the example's page has no node_modules — {INSTALL}", pytrace=False)
    result = subprocess.run(
        [node, "build.mjs"], cwd=EXAMPLE / "web", capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"the page's build failed:\n{result.stdout}\n{result.stderr}"


@contextlib.contextmanager
def running_example(database: str) -> Iterator[Example]:
    """``run.py`` on a free port; stopped with SIGTERM (its private PostgreSQL with it)."""
    port = free_port()
    env = {**os.environ, "EXAMPLE_STEPS": str(STEPS), "EXAMPLE_STEP_SECONDS": str(STEP_SECONDS)}
    env.pop("EXAMPLE_DATABASE_URL", None)
    log = tempfile.NamedTemporaryFile(prefix="ai-writer-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE / "run.py"), "--port", str(port), "--database", database],
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
    )
    log.close()
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)
        banner = process.stdout.readline().decode() if ready else ""
        url = f"http://127.0.0.1:{port}"

        def answering() -> bool:
            assert process.poll() is None, f"run.py exited: {banner}\n{Path(log.name).read_text()[-3000:]}"
            try:
                return httpx.get(f"{url}/api/tasks", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until_sync(answering, timeout=40, interval=0.1)
        except TimeoutError:
            pytest.fail(f"the example did not answer in 40 s\n{Path(log.name).read_text()[-3000:]}")
        yield Example(url=url, banner=banner, process=process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process.stdout is not None:
            process.stdout.close()
        Path(log.name).unlink(missing_ok=True)


def errors(driver: Driver) -> list[dict[str, Any]]:
    return [
        e for e in driver.entries if e.get("kind") in ("page-error", "console", "command-error", "http-error")
    ]


def the_task(snapshot: Snapshot) -> Snapshot | None:
    return snapshot["tasks"][0] if len(snapshot["tasks"]) == 1 else None


def task_where(check: Callable[[Snapshot], bool]) -> Callable[[Snapshot], bool]:
    def holds(snapshot: Snapshot) -> bool:
        task = the_task(snapshot)
        return task is not None and check(task)

    return holds


def streams(driver: Driver) -> list[dict[str, Any]]:
    return [e for e in driver.entries if e.get("kind") == "stream"]


def test_the_example_shows_live_progress_across_a_reload_and_the_chapter_from_the_outbox() -> None:
    build_page()
    with (
        running_example("postgres") as example,
        run_driver("example_app.mjs", ["--url", example.url], timeout=90) as driver,
    ):
        driver.until(lambda s: s["connection"] == "open", 20, "an open stream")
        driver.request("start")
        seen: list[int] = []

        def record(check: Callable[[Snapshot], bool]) -> Callable[[Snapshot], bool]:
            def holds(snapshot: Snapshot) -> bool:
                task = the_task(snapshot)
                if task is not None and (not seen or seen[-1] != task["progress"]):
                    seen.append(task["progress"])
                return check(snapshot)

            return holds

        started = driver.until(
            record(task_where(lambda t: t["status"] == "running" and t["progress"] >= 15)),
            15,
            "live progress before the reload",
            interval=0.05,
        )
        task_id = started["tasks"][0]["id"]
        before_reload = seen[-1]
        streams_before = len(streams(driver))
        # Reload with the task list's answer held back: the bar must come from the stream alone
        # (the retained progress, first on the new stream), not from a fetch.
        driver.request("hold-list")
        reloaded_at = len(driver.entries)
        driver.request("reload")
        from_stream = driver.until(
            lambda s: s["connection"] == "open" and the_task(s) is not None,
            20,
            "the bar back from the retained state, the list still held",
        )
        answered = [e for e in driver.entries[reloaded_at:] if e.get("kind") == "api-answer"]
        assert "/api/tasks" not in [e["path"] for e in answered]
        shell = from_stream["tasks"][0]
        assert shell["id"] == task_id
        assert shell["title"] == "…", "the list did not answer: what shows came from the stream"
        assert shell["progress"] >= before_reload
        assert driver.request("release-list")["released"] == 1
        after_reload = driver.until(task_where(lambda t: t["title"] != "…"), 10, "the list's answer")[
            "tasks"
        ][0]
        assert after_reload["id"] == task_id
        assert after_reload["progress"] >= shell["progress"] or after_reload["status"] == "completed"
        live = driver.until(
            task_where(lambda t: t["progress"] > after_reload["progress"]),
            15,
            "progress rising after the reload",
            interval=0.05,
        )
        done = driver.until(
            task_where(lambda t: t["status"] == "completed" and t["document"] is not None),
            20,
            "the task completed and its chapter shown",
        )
        path = SCREENSHOTS / "example-ai-writer.png"
        driver.request("screenshot", path=str(path))
        problems = errors(driver)
        driver.finish()

    assert "with the outbox" in example.banner, example.banner
    assert problems == []
    print(
        f"\nprogress seen before the reload: {seen}; from the retained state: {shell['progress']}; "
        f"with the list: {after_reload['progress']} → "
        f"{live['tasks'][0]['progress']} → 100"
    )
    assert len([p for p in seen if 0 < p < 100]) >= 2, f"the bar moved live: {seen}"
    assert seen == sorted(seen), f"progress never went back: {seen}"
    task = done["tasks"][0]
    assert task["progress"] == 100
    assert task["document"]["title"].startswith("Chapter 1: ")
    assert task["document"]["paragraphs"] == STEPS
    assert done["user"] == "demo"
    opened = streams(driver)
    assert len(opened) == streams_before + 1, "one new stream after the reload"
    assert all(s["url"].endswith("subscribe=novel%3Ademo") for s in opened)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_postgresql_the_example_runs_on_sqlite_and_publishes_the_chapter_over_http() -> None:
    build_page()
    with (
        running_example("sqlite") as example,
        run_driver("example_app.mjs", ["--url", example.url], timeout=60) as driver,
    ):
        driver.until(lambda s: s["connection"] == "open", 20, "an open stream")
        driver.request("start")
        driver.until(task_where(lambda t: 0 < t["progress"] < 100), 15, "live progress", interval=0.05)
        done = driver.until(
            task_where(lambda t: t["status"] == "completed" and t["document"] is not None),
            20,
            "the task completed and its chapter shown",
        )
        problems = errors(driver)
        driver.finish()

    assert "SQLite, no outbox" in example.banner, example.banner
    assert problems == []
    assert done["tasks"][0]["document"]["paragraphs"] == STEPS


def test_the_example_page_typechecks() -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(f"npm (Node.js 20+) is not on PATH — {INSTALL}", pytrace=False)
    result = subprocess.run(
        [npm, "run", "--silent", "typecheck"],
        cwd=EXAMPLE / "web",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"tsc --strict over examples/ai-writer/web:\n{result.stdout}{result.stderr}"
    )

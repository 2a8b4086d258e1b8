"""Run a browser driver (a Node script under tests/e2e/browser/) and talk to it.

The driver prints one JSON object per line: progress lines as things happen
in Chromium, then a ``result`` line. Commands go to its stdin as JSON lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVERS = ROOT / "tests" / "e2e" / "browser"
JS_ROOT = ROOT / "clients" / "js"
CHROMIUM = Path(os.environ.get("HERALD_CHROMIUM", "/usr/bin/chromium"))
INSTALL = "run scripts/install-browser-deps.sh (Debian chromium, then npm ci in clients/js)"

Entry = dict[str, Any]


def require_browser() -> str:
    """The node executable; fails (never skips) the test when a browser part is missing."""
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node (Node.js 20+) is not on PATH")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} does not exist")
    if not (JS_ROOT / "node_modules" / "playwright-core" / "package.json").is_file():
        missing.append(f"{JS_ROOT}/node_modules/playwright-core is not installed")
    if missing:
        pytest.fail(f"browser tests need: {'; '.join(missing)} — {INSTALL}", pytrace=False)
    assert node is not None
    return node


class Driver:
    def __init__(self, process: subprocess.Popen[str], timeout: float, stderr_path: Path) -> None:
        self.process = process
        self.timeout = timeout
        self.stderr_path = stderr_path
        self.entries: list[Entry] = []
        self.result: Entry | None = None
        self.noise: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = None
            with self._changed:
                if not isinstance(entry, dict):
                    self.noise.append(line.rstrip())
                elif entry.get("kind") == "result":
                    self.result = entry
                else:
                    self.entries.append(entry)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def send(self, cmd: str, **fields: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.process.stdin.flush()

    def request(self, cmd: str, timeout: float = 10.0, **fields: Any) -> Entry:
        """Send a command and wait for its reply."""
        seen = len(self.entries)
        self.send(cmd, **fields)
        return self.wait_for(
            lambda e: e.get("kind") in ("reply", "command-error") and e.get("cmd") == cmd,
            timeout,
            f"a reply to {cmd}",
            start=seen,
        )

    def wait_for(
        self, predicate: Callable[[Entry], bool], timeout: float, what: str, *, start: int = 0
    ) -> Entry:
        """The first entry from index ``start`` on that satisfies ``predicate``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for entry in self.entries[start:]:
                    if predicate(entry):
                        if entry.get("kind") == "command-error":
                            raise AssertionError(f"the driver refused a command: {entry}")
                        return entry
                left = deadline - time.monotonic()
                if left <= 0 or self.result is not None or self.process.poll() is not None:
                    break
                self._changed.wait(min(left, 0.5))
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.describe()}")

    def snapshot(self, **fields: Any) -> dict[str, Any]:
        """What the page shows now (demo_page.mjs; client_page.mjs takes ``tab``)."""
        reply = self.request("snapshot", **fields)
        snapshot: dict[str, Any] = reply["snapshot"]
        return snapshot

    def until(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float,
        what: str,
        interval: float = 0.1,
        **fields: Any,
    ) -> dict[str, Any]:
        """Poll the page's snapshot until ``predicate`` holds; fails after ``timeout`` with the last one."""
        deadline = time.monotonic() + timeout
        snapshot = self.snapshot(**fields)
        while not predicate(snapshot):
            if time.monotonic() > deadline:
                brief = {k: v for k, v in snapshot.items() if k != "feed"}
                feed = json.dumps(snapshot.get("feed", [])[:15])[:3000]
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}\n"
                    f"last snapshot: {json.dumps(brief)[:3000]}\nfeed: {feed}\n{self.describe()}"
                )
            with self._changed:
                self._changed.wait(interval)
            snapshot = self.snapshot(**fields)
        return snapshot

    def events(self, name: str | None = None) -> list[Entry]:
        with self._changed:
            return [
                e for e in self.entries if e.get("kind") == "event" and (name is None or e["name"] == name)
            ]

    def data(self, entry: Entry) -> Any:
        return json.loads(entry["data"])

    def finish(self) -> Entry:
        """Close the page; the driver's ``result`` line."""
        if self.process.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                self.send("close")
        try:
            self.process.wait(self.timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self._reader.join(5)
        if self.result is None or not self.result.get("ok"):
            raise AssertionError(f"the browser driver failed\n{self.describe()}")
        return self.result

    def describe(self) -> str:
        stderr = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        lines = [json.dumps(e)[:400] for e in self.entries[-60:]]
        return "\n".join(
            [
                "driver entries (last 60):",
                *lines,
                f"result: {json.dumps(self.result)[:2000] if self.result else None}",
                f"other output: {self.noise[-20:]}",
                f"stderr: {stderr[-3000:]}",
            ]
        )


@contextlib.contextmanager
def run_driver(script: str, args: list[str], *, timeout: float = 30.0) -> Iterator[Driver]:
    """Start ``tests/e2e/browser/<script>``; it is killed on the way out if still running."""
    node = require_browser()
    with tempfile.NamedTemporaryFile(prefix="herald-browser-", suffix=".log", delete=False) as stderr:
        process = subprocess.Popen(
            [node, str(DRIVERS / script), *args, "--timeout", str(timeout)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=ROOT,
        )
    driver = Driver(process, timeout, Path(stderr.name))
    try:
        yield driver
    finally:
        if process.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                driver.send("close")
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        Path(stderr.name).unlink(missing_ok=True)

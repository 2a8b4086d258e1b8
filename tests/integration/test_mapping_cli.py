"""``herald mapping check|try`` and ``herald outbox init`` as an operator runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncpg
import orjson

from tests.support.postgres import PostgresServer


def herald(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herald", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_mapping_check_lists_the_rules_or_names_each_mistake(tmp_path: Path) -> None:
    done = herald("mapping", "check", "default")
    assert done.returncode == 0, done.stderr
    assert "21 rules" in done.stdout
    assert "TaskFailedEvent -> error.task-failed (user by user_id)" in done.stdout

    bad = tmp_path / "mapping.toml"
    bad.write_text('[rules.A]\nevent = "a.b"\nscope = "user"\nfields = ["x"]\n\n[rules.B]\nevent = "B"\n')
    failed = herald("mapping", "check", str(bad))
    assert failed.returncode == 1
    lines = failed.stderr.splitlines()
    assert (
        lines[0]
        == f"{bad}:1: rule A: scope 'user' needs a key: the dotted path of the routing key in the record"
    )
    assert any(line.startswith(f"{bad}:7: rule B: event name 'B'") for line in lines)


def test_mapping_try_shows_the_event_a_poison_record_or_an_ignored_one(tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    record.write_bytes(
        orjson.dumps(
            {"event_type": "TaskProgressUpdateEvent", "user_id": "u1", "task_id": "t1", "progress": 5}
        )
    )
    shown = herald("mapping", "try", "default", str(record))
    assert shown.returncode == 0, shown.stderr
    assert orjson.loads(shown.stdout) == {
        "event": "task.progress-updated",
        "scope": "user",
        "key": "u1",
        "priority": "normal",
        "coalesce": "task:t1",
        "data": {"task_id": "t1", "progress": 5, "message": None, "estimated_remaining": None},
    }
    poison = herald("mapping", "try", "default", "-", stdin=b'{"event_type": "TaskCreatedEvent"}')
    assert poison.returncode == 1
    assert "routing key 'user_id' is missing" in poison.stderr
    ignored = herald("mapping", "try", "default", "-", stdin=b'{"event_type": "Unknown"}')
    assert (ignored.returncode, orjson.loads(ignored.stdout)["ignored"]) == (0, True)


async def test_outbox_init_creates_the_table_and_can_run_again(postgres_server: PostgresServer) -> None:
    for _ in range(2):
        done = herald("outbox", "init", "--dsn", postgres_server.dsn, "--table", "cli_outbox")
        assert done.returncode == 0, done.stderr
    connection = await asyncpg.connect(postgres_server.dsn)
    try:
        columns = await connection.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'cli_outbox' ORDER BY 1"
        )
    finally:
        await connection.close()
    assert [c["column_name"] for c in columns] == [
        "created_at", "error", "event_type", "id", "payload", "processed_at", "status", "traceparent",
    ]  # fmt: skip
    assert "CREATE TABLE IF NOT EXISTS herald_outbox" in herald("outbox", "init", "--print-sql").stdout

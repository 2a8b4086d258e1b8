"""Run the AI Writer example: ``make example`` calls this after installing what it needs.

    .venv/bin/python examples/ai-writer/run.py [--host 127.0.0.1] [--port 8080] [--database auto]

The database (``--database``):

- ``postgres``: a private PostgreSQL in a temporary directory, from the installed server
  binaries (Debian's ``postgresql`` package), removed on exit. Herald's outbox poller runs.
- ``sqlite``: a SQLite file in a temporary directory; no outbox (app.py publishes the
  chapter's event over HTTP after the commit instead).
- ``auto`` (the default): ``EXAMPLE_DATABASE_URL`` if set, else ``postgres`` where the
  binaries are installed, else ``sqlite``.

Herald runs inside the app (mounted at ``/herald``, the embedded default: the memory bus),
so everything is one process on one port. ``HERALD_JWT_SECRET`` is generated when unset.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn

HERE = Path(__file__).resolve().parent


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server's ``bin`` directory, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def private_postgres(binaries: Path) -> Iterator[str]:
    """A throw-away PostgreSQL on a free loopback port; its SQLAlchemy URL. PostgreSQL refuses
    to run as root: then its commands run as the ``postgres`` account the package creates."""
    directory = Path(tempfile.mkdtemp(prefix="ai-writer-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(directory, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log, port = directory / "data", directory / "postgres.log", free_port()

    def run(*command: str) -> None:
        result = subprocess.run([*as_user, *command], capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise SystemExit(f"{command[0]} failed: {result.stderr.strip()}\n{detail}")

    try:
        run(
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            "writer",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
        try:
            yield f"postgresql+asyncpg://writer@127.0.0.1:{port}/postgres"
        finally:
            run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def database(choice: str) -> Iterator[str]:
    if choice == "auto" and os.environ.get("EXAMPLE_DATABASE_URL"):
        yield os.environ["EXAMPLE_DATABASE_URL"]
        return
    binaries = postgres_bin()
    if choice == "postgres" or (choice == "auto" and binaries is not None):
        if binaries is None:
            raise SystemExit(
                "--database postgres: no PostgreSQL server binaries (apt-get install postgresql)"
            )
        with private_postgres(binaries) as url:
            yield url
        return
    with tempfile.TemporaryDirectory(prefix="ai-writer-") as directory:
        yield f"sqlite+aiosqlite:///{directory}/ai-writer.db"


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the AI Writer example (Herald mounted in FastAPI).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--database", choices=["auto", "postgres", "sqlite"], default="auto")
    args = parser.parse_args()
    if not (HERE / "web" / "dist" / "index.html").is_file():
        raise SystemExit(
            "the page is not built: run `make example` (or `npm install && npm run build` in web/)"
        )

    # uvicorn raises the signal it stopped for again once it has shut down: let SIGTERM end us
    # the way Ctrl-C does, through the `finally` blocks (which stop a private PostgreSQL).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    os.environ.setdefault("HERALD_JWT_SECRET", secrets.token_urlsafe(32))
    os.environ["EXAMPLE_SELF_URL"] = f"http://{args.host}:{args.port}"
    with database(args.database) as url:
        os.environ["EXAMPLE_DATABASE_URL"] = url
        outbox = url.startswith("postgresql")
        how = "PostgreSQL, with the outbox" if outbox else "SQLite, no outbox (events over HTTP)"
        print(f"AI Writer on http://{args.host}:{args.port}/  ({how}; Ctrl-C stops)", flush=True)
        uvicorn.run(
            "app:app",
            app_dir=str(HERE),
            host=args.host,
            port=args.port,
            # Streams never end by themselves: cut them 3 s into a shutdown (docs/embedding.md).
            timeout_graceful_shutdown=3,
            log_level="warning",
        )


if __name__ == "__main__":
    main()

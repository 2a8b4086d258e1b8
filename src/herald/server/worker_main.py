"""One worker of ``herald serve --workers N``: ``python -m herald.server.worker_main``.

The supervisor (:mod:`herald.server.supervisor`) starts it and writes one JSON
line on its stdin: the settings it runs with (secrets included, which is why
they do not travel in the environment or the command line), its id, and the
supervisor's pid. It then serves like ``herald serve --workers 1``, on the
shared port (SO_REUSEPORT), with its id on every log line, and prints the
usual ``herald_listening`` line on stdout for the supervisor.

Exit codes: 0 after a graceful shutdown, 1 when its backends cannot be
reached at start, 2 for an invalid mapping (the supervisor does not restart
a worker that fails before it ever listened).
"""

from __future__ import annotations

import asyncio
import sys

import orjson

from herald.adapter import MappingInvalid
from herald.config import Settings
from herald.errors import BusUnavailable
from herald.obs.logs import configure_logging
from herald.server.parent_death import die_with_parent
from herald.server.runner import demo_extras, install_event_loop, serve


def main() -> int:
    brief = orjson.loads(sys.stdin.buffer.readline())
    die_with_parent(int(brief["parent"]))
    settings = Settings.model_validate(brief["settings"])
    worker = int(brief["worker"])
    configure_logging(settings.log_level, settings.log_format, {"worker": worker})
    # The demo simulator publishes to the shared log: one worker runs it.
    extras = demo_extras(settings) if worker == 1 else []
    private = brief.get("private_port")
    install_event_loop()
    try:
        asyncio.run(
            serve(
                settings,
                extras=extras,
                reuse_port=True,
                private_port=None if private is None else int(private),
            )
        )
    except BusUnavailable as exc:
        print(f"herald worker {worker}: {exc.message} (check HERALD_REDIS_URL)", file=sys.stderr)
        return 1
    except MappingInvalid as exc:
        for problem in exc.problems:
            print(f"herald worker {worker}: invalid mapping: {problem}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

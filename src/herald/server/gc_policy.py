"""Keep full garbage collections short while thousands of streams are open.

Each stream is a handful of long-lived objects (protocol, transport,
connection, index entries). Left to the default policy, every burst of
opened streams triggers full collections that walk all of them, and at
10,000 streams those took 130-190 ms (docs/benchmarks.md): every stream
stalls at once. After a burst, ``gc.freeze()`` moves what survived into the
permanent generation, which collections skip; objects still die by
reference counting (the server breaks its cycles on close), so memory is
returned as streams close.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import structlog

log = structlog.get_logger("herald.server")

#: Streams opened since the last freeze that make the next one worthwhile.
FREEZE_AFTER_OPENED = 500


class GcPolicy:
    def __init__(self, opened: Callable[[], int], *, after: int = FREEZE_AFTER_OPENED) -> None:
        self._opened = opened
        self._after = after
        self._frozen_at = 0

    def freeze_now(self) -> None:
        # Young generations first, so short-lived garbage is not made permanent.
        gc.collect(1)
        gc.freeze()
        self._frozen_at = self._opened()
        log.debug("gc_frozen", permanent=gc.get_freeze_count())

    def tick(self) -> bool:
        """Freeze if enough streams opened since the last time; whether it did."""
        if self._opened() - self._frozen_at < self._after:
            return False
        self.freeze_now()
        return True

"""Processes Herald starts die with the process that started them, even on SIGKILL.

Linux's ``PR_SET_PDEATHSIG`` has the kernel signal a child when its parent
dies, so a supervisor killed outright leaves neither workers nor its private
redis-server behind. Elsewhere this does nothing (the supervisor's normal
shutdown still stops them).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


def die_with_parent(expected_parent: int | None = None, sig: signal.Signals = signal.SIGTERM) -> None:
    """Be sent ``sig`` when the parent dies; exit at once if it already has (the parent
    is no longer ``expected_parent``: it died before this process could ask)."""
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)


def child_setup(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` for processes that cannot ask themselves (redis-server). The C
    function is looked up here, before the fork, so the child only makes the call."""
    prctl = _prctl()

    def setup() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return setup

"""A graceful stop: SIGINT or SIGTERM ends training after the current step, once last/ is written.

A run that spans sittings is stopped from outside (Ctrl-C, ``kill``, a job scheduler's SIGTERM).
Killed mid-step it loses everything since its last periodic checkpoint; stopped through this, it
loses nothing, and ``mtpeft train --resume RUN_DIR`` continues exactly where it stopped.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignal:
    """While active, the first SIGINT/SIGTERM only records itself (``received``); the handlers
    that were there before come back at once, so a second signal stops the process as usual.
    Inactive off the main thread (Python only delivers signals there) or when ``enabled`` is
    False (nothing to save, or several processes that must stop at the same step)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignal":
        if self.enabled:
            self.previous = {sig: signal.signal(sig, self.handle) for sig in STOP_SIGNALS}
        return self

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        self.restore()

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def __exit__(self, *exc: object) -> None:
        self.restore()

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""


@contextmanager
def interrupt_on_stop_signals() -> Iterator[None]:
    """While inside, SIGINT and SIGTERM raise KeyboardInterrupt (a command then exits with 130),
    whatever handlers the process inherited. A job started in the background by a shell
    (``nohup CMD &``) inherits SIGINT *ignored*: without this, a run past its training loop (its
    test pass) could not be stopped by ``kill -INT`` (what the study grid sends its cells), and
    ``kill PID`` would end it without Python's clean-up. The training loop's ``StopSignal`` takes
    over inside it and hands back to these handlers. Does nothing off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

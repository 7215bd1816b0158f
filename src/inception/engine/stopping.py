"""Why a run stops early: a signal (SIGTERM / SIGINT, e.g. preemption) or its time limit."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from ..config import parse_duration

log = logging.getLogger("inception")


class StopRequest:
    """The first SIGTERM/SIGINT asks the loop to stop after the current step (it writes a
    checkpoint and returns); a second one exits at once with 128 + the signal number."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict = {}

    def _handler(self, signum, frame) -> None:
        if self.signum is not None:
            os._exit(128 + signum)
        self.signum = signum
        log.warning("%s received: finishing this step, writing a checkpoint, then exiting "
                    "(send it again to exit at once)", signal.Signals(signum).name)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum else None


class Deadline:
    """``train.time_limit`` (3600, 90m, 1h30m...) counted from now; None: no limit."""

    def __init__(self, limit: str | None) -> None:
        self.seconds = parse_duration(limit, "train.time_limit") if limit else None
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def passed(self) -> bool:
        """A host clock read, no device sync."""
        return self.seconds is not None and self.elapsed() >= self.seconds

"""SIGINT/SIGTERM during a chaos run: stop the traffic early, then always clean up.

* While traffic runs, the first signal asks for an early stop: what was measured so
  far is still reported. A second one aborts (KeyboardInterrupt).
* At any other time a signal aborts at once (KeyboardInterrupt), and the cleanup
  runs as usual.
* Once a signal has aborted, and during cleanup, further signals are ignored, so
  pressing Ctrl-C again cannot leave leftovers.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
Handler = Callable[[int, FrameType | None], Any] | int | None


class SignalGate:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self._soft = False
        self._aborting = False
        self._saved: dict[int, Handler] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self._aborting:
            return  # already on the way out: let the cleanup finish
        if self._soft and not self.stop.is_set():
            self.stop.set()
            return
        self._aborting = True
        raise KeyboardInterrupt

    def install(self) -> None:
        for sig in SIGNALS:
            self._saved[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def ignore(self) -> None:
        """From now on until restore(): signals do nothing (cleanup in progress)."""
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    def restore(self) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        self._saved.clear()

    @contextlib.contextmanager
    def soft(self) -> Iterator[threading.Event]:
        """Inside: the first signal sets the returned event instead of raising."""
        self._soft = True
        try:
            yield self.stop
        finally:
            self._soft = False

"""``rate_limit``: a token bucket, as exporter-toolkit's (golang.org/x/time/rate) Allow().

The bucket starts full with *burst* tokens and gains one every *interval*
seconds, up to *burst*; a request takes one or is answered 429.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, interval: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Take a token if there is one."""
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._last)
            self._last = now
            self._tokens = min(float(self.burst), self._tokens + elapsed / self.interval)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False

"""Per-credential request rates: a token bucket per key (Turner 1986's leaky bucket as a meter, the way API
gateways meter callers).

Why: a holder of the feedback token flooding ``/feedback`` with unknown ids raised ``/predict``'s worst latency from
1.25 s to 29.8 s (each item is a database lookup on the same event loop and connection pool). Label senders get a
rate (``feedback_rate_per_s`` per worker process) with a burst; beyond it they get ``429`` and a ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``rate`` requests per second on average, up to ``burst`` at once, per key (keys are hashed: no token is
    kept in memory as it was sent)."""

    rate: float
    burst: float
    _levels: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, key: str, now: float | None = None) -> float:
        """0.0 when the request may go ahead (one token taken), else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        slot = hashlib.sha256(key.encode()).hexdigest()[:16]
        with self._lock:
            level, then = self._levels.get(slot, (self.burst, now))
            level = min(self.burst, level + (now - then) * self.rate)
            if level >= 1.0:
                self._levels[slot] = (level - 1.0, now)
                return 0.0
            self._levels[slot] = (level, now)
            return (1.0 - level) / self.rate

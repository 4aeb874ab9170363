"""Admin changes shared by worker processes: one small JSON file, written atomically, re-read when it changes.

With several uvicorn workers an admin call reaches only one of them; that worker writes the file and every worker
checks its modification time (at most every ``check_every_s``) before routing, so all of them follow within a
fraction of a second. A single worker without a file simply keeps the state in memory.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class ControlState:
    """What the admin API can change at run time."""

    weight: float
    mode: str
    reload_generation: int = 0


class ControlFile:
    """Read/write :class:`ControlState` at ``path`` (None: in-memory only)."""

    def __init__(self, path: str | None, initial: ControlState, check_every_s: float = 0.2) -> None:
        self.path = Path(path) if path else None
        self.state = initial
        self.check_every_s = check_every_s
        self._mtime_ns = -1
        self._next_check = 0.0
        if self.path is not None:
            if self.path.exists():
                self._read()
            else:
                self.write(initial)

    def write(self, state: ControlState) -> None:
        self.state = state
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".control-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(state), fh)
        os.replace(tmp, self.path)
        self._mtime_ns = self.path.stat().st_mtime_ns

    def poll(self) -> ControlState:
        """The current state, re-read from the file when another worker changed it."""
        if self.path is None:
            return self.state
        now = time.monotonic()
        if now < self._next_check:
            return self.state
        self._next_check = now + self.check_every_s
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return self.state
        if mtime != self._mtime_ns:
            self._read()
        return self.state

    def _read(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            self.state = ControlState(float(data["weight"]), str(data["mode"]), int(data.get("reload_generation", 0)))
            self._mtime_ns = self.path.stat().st_mtime_ns
        except (OSError, ValueError, KeyError):
            pass  # a half-visible file cannot happen with os.replace; anything else: keep the last good state

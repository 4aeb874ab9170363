"""``POST /admin/reload`` reaching every worker process: one small JSON file holding a counter, bumped by the worker
that got the call and re-read (by modification time) by the others.

It carries nothing else: the split (mode and weight) lives only in the rollout record
(:mod:`serving.rollout_follower`), which every worker and replica follows. With several uvicorn workers an admin
call reaches one of them; that worker bumps the counter, and every worker checks the file's modification time (at
most every ``check_every_s``) and re-reads its aliases when the counter moved. A single worker without a file keeps
the counter in memory.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path


class ReloadSignal:
    """The reload counter at ``path`` (None: in-memory only, for a single worker)."""

    def __init__(self, path: str | None, check_every_s: float = 0.2) -> None:
        self.path = Path(path) if path else None
        self.generation = 0
        self.check_every_s = check_every_s
        self._mtime_ns = -1
        self._next_check = 0.0
        if self.path is not None:
            if self.path.exists():
                self._read()
            else:
                self._write(0)

    def bump(self) -> int:
        """Ask every worker to reload; returns the new generation."""
        self._write(self.generation + 1)
        return self.generation

    def _write(self, generation: int) -> None:
        self.generation = generation
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".reload-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump({"reload_generation": generation}, fh)
        os.replace(tmp, self.path)
        self._mtime_ns = self.path.stat().st_mtime_ns

    def poll(self) -> int:
        """The current generation, re-read from the file when another worker changed it."""
        if self.path is None:
            return self.generation
        now = time.monotonic()
        if now < self._next_check:
            return self.generation
        self._next_check = now + self.check_every_s
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return self.generation
        if mtime != self._mtime_ns:
            self._read()
        return self.generation

    def _read(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            self.generation = int(data.get("reload_generation", 0))
            self._mtime_ns = self.path.stat().st_mtime_ns
        except (OSError, ValueError, AttributeError):
            pass  # a half-visible file cannot happen with os.replace; anything else: keep the last good counter

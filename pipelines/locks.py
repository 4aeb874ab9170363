"""File locks of one state directory: who runs what, decided by the operating system.

Why: two processes on one state directory must not both do a thing that only one may do — serve a rollout's
controller, refresh one model, create the MLflow store. An ``flock`` is released by the OS when its process ends,
however it ends, so a killed holder never leaves a stale lock; the holder writes who it is into the file, so a
refusal can name it. (A lock file is seen by processes that share the directory: on one host, or a shared volume
that supports ``flock``.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from pipelines.errors import UserError

__all__ = ["exclusive", "refresh_lock", "serialised"]


def _holder_line(note: str) -> str:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    return f"pid {os.getpid()} on {socket.gethostname()}, started {started}{f', {note}' if note else ''}\n"


@contextlib.contextmanager
def exclusive(path: Path, refusal: Callable[[str], str], note: str = "") -> Iterator[None]:
    """Hold ``path`` exclusively, or raise :class:`UserError` at once with ``refusal(holder)`` (the holder's line:
    pid, host, start, ``note``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")  # not "w": the holder's line must survive a refused opener
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise UserError(refusal(holder)) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(_holder_line(note))
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


@contextlib.contextmanager
def serialised(path: Path, what: str, timeout_s: float = 120.0) -> Iterator[None]:
    """Hold ``path`` exclusively, waiting (up to ``timeout_s``) for another holder to finish: for short critical
    sections that every process must pass once, such as creating a store."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with path.open("a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserError(f"waited {timeout_s:g} s for another process to finish {what} ({path}); "
                                    "check that no nasops command is stuck") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def refresh_lock(state_dir: Path, model_name: str) -> contextlib.AbstractContextManager[None]:
    """One refresh of a model at a time per state directory: a second is refused in one line naming the first.
    Two at once registered v3 and v4 and the first one's canary judged and promoted the second's version."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name)
    return exclusive(state_dir / "locks" / f"refresh-{safe}.lock", lambda holder: (
        f"a refresh of {model_name!r} is already running on this state directory ({holder}); wait for it (`nasops "
        "status`) or stop it — one refresh of a model at a time, so each canary judges the version it registered"),
        note=f"model {model_name}")

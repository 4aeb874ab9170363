"""Children die with their parent: a watchdog that stops whatever a ``nasops`` command started when the command
itself dies, ``kill -9`` included.

The command marks its environment with a random owner token before it starts anything, so every process it starts
— the gateway (in its own session), Prefect's temporary API server, Dask workers — inherits the mark. It then starts
the watchdog with the read end of a pipe whose write end only the command holds (close-on-exec: no child inherits
it). When the command exits normally it says ``done``; when it dies, the pipe reads EOF, and the watchdog stops
every process that carries the token (SIGTERM, then SIGKILL after a grace period). Processes without the token are
never touched, whatever their name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

OWNER_ENV = "NASOPS_OWNER_TOKEN"
GRACE_S = 5.0


def start() -> int | None:
    """Mark this process's environment and start its watchdog; returns the pipe's write end (None on non-Linux)."""
    if not Path("/proc/self/environ").exists() or OWNER_ENV in os.environ:
        return None  # no /proc to scan, or a parent nasops command already watches this tree
    token = secrets.token_hex(12)
    read_end, write_end = os.pipe()  # close-on-exec by default: children never hold the write end
    env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
    subprocess.Popen([sys.executable, "-m", "pipelines.supervisor", str(read_end), token, str(os.getpid())],
                     pass_fds=(read_end,), env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(read_end)
    os.environ[OWNER_ENV] = token
    return write_end


def done(write_end: int | None) -> None:
    """A normal end: the watchdog leaves without stopping anything (the command stopped its own children)."""
    if write_end is not None:
        try:
            os.write(write_end, b"done\n")
        finally:
            os.close(write_end)


def pids_with_env(entry: str, exclude: set[int] = frozenset()) -> list[int]:
    """Every live process whose environment holds ``entry`` (``NAME=value``) exactly."""
    marker = entry.encode()
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in exclude:
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                out.append(int(proc.name))
        except OSError:
            continue
    return out


def owned_pids(token: str, exclude: set[int]) -> list[int]:
    """Every live process whose environment carries ``token``."""
    return pids_with_env(f"{OWNER_ENV}={token}", exclude)


def stop_owned(token: str, exclude: set[int]) -> list[int]:
    """SIGTERM every owned process, SIGKILL what is left after :data:`GRACE_S`; returns the pids found."""
    pids = owned_pids(token, exclude)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and owned_pids(token, exclude):
        time.sleep(0.1)
    for pid in owned_pids(token, exclude):
        _signal(pid, signal.SIGKILL)
    return pids


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _watch(read_end: int, token: str, parent: int) -> None:
    data = b""
    with os.fdopen(read_end, "rb") as pipe:
        while chunk := pipe.read(64):
            data += chunk
    if b"done" in data:
        return
    stop_owned(token, exclude={os.getpid(), parent})


if __name__ == "__main__":
    _watch(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))

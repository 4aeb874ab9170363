"""Children die with their parent: a watchdog that stops whatever a ``nasops`` command started when the command
itself dies, ``kill -9`` included.

The command marks its environment with a random owner token before it starts anything, so every process it starts
— the gateway (in its own session), Prefect's temporary API server, Dask workers — inherits the mark. It then starts
the watchdog with the read end of a pipe whose write end only the command holds (close-on-exec: no child inherits
it). When the command exits normally it says ``done``; when it dies, the pipe reads EOF, and the watchdog stops
every process that carries the token (SIGTERM, then SIGKILL after a grace period). Processes without the token are
never touched, whatever their name.

SIGTERM is honoured within seconds (:func:`exit_on_sigterm`), whatever the command is doing: MLflow retrying
against a dead server, or Prefect, which swaps in its own SIGTERM handler while a flow runs and then reports the
crash to its API. The signal is seen through ``signal.set_wakeup_fd`` by a thread of ours (the C-level handler
writes the signal number there whichever Python handler is installed); the command gets a moment to unwind,
then its children are stopped, its gateway run directories removed, and it exits 143 with one line.

Ctrl-C (SIGINT) is the same stop, as a person expects it: the first one prints one line, raises
``KeyboardInterrupt`` in the command (a refresh records itself as interrupted, resumable with ``--resume``), gives
it :data:`INTERRUPT_UNWIND_S` to unwind, stops its children and exits 130; a second Ctrl-C exits at once. (Before,
SIGINT to the process group killed Prefect's temporary server while the search went on, and only SIGTERM stopped the
command, 4 min 19 s later, leaving its record "running".)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

OWNER_ENV = "NASOPS_OWNER_TOKEN"
GRACE_S = 5.0
UNWIND_S = 1.0  # SIGTERM: seconds the command gets to unwind on its own before its children are stopped
CHILDREN_GRACE_S = 1.5  # SIGTERM: seconds its children get after their own SIGTERM, before SIGKILL
INTERRUPT_UNWIND_S = 5.0  # Ctrl-C: seconds the command gets to record itself interrupted before the stop
SIGTERM_EXIT, SIGINT_EXIT = 143, 130  # 128 + the signal's number, as shells report them


_owned_token: str | None = None  # the token this process's watchdog acts on (None: not the owner of a tree)
_run_roots: list[str] = []  # where this process's gateway run directories live, besides the temp dir
_stop_requested = threading.Event()
_stop_lock = threading.Lock()
_unwound = threading.Event()  # the command reached done(): nothing of its own left to wait for
_sigterm_installed = False
_exit_code = SIGTERM_EXIT
_interrupts = 0


def start(run_roots: Sequence[Path] = ()) -> int | None:
    """Mark this process's environment, start its watchdog and honour SIGTERM (:func:`exit_on_sigterm`); returns
    the pipe's write end (None on non-Linux). ``run_roots``: directories, besides the temp dir, where this
    command's gateway keeps its run directories (the watchdog removes them if the command dies)."""
    global _owned_token
    _run_roots[:] = [str(p) for p in run_roots]
    exit_on_sigterm()
    if not Path("/proc/self/environ").exists() or OWNER_ENV in os.environ:
        return None  # no /proc to scan, or a parent nasops command already watches this tree
    token = secrets.token_hex(12)
    read_end, write_end = os.pipe()  # close-on-exec by default: children never hold the write end
    env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
    subprocess.Popen([sys.executable, "-m", "pipelines.supervisor", str(read_end), token, str(os.getpid()),
                      *_run_roots], pass_fds=(read_end,), env=env, start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(read_end)
    os.environ[OWNER_ENV] = token
    _owned_token = token
    return write_end


def exit_early_on_sigterm() -> None:
    """Until :func:`exit_on_sigterm` takes over: SIGTERM prints ``stopped by SIGTERM`` and exits 143 at once.

    For the first seconds of a command (imports, the store pre-flight), before it has started anything to stop;
    the Python handler raises ``SystemExit`` from whatever blocking call the main thread is in (a probe of a silent
    server included), so ``finally`` blocks still run. Without it, a SIGTERM there got the default action: no
    line, exit -15."""
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return

    def _early(_sig, _frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM while unwinding changes nothing
        with contextlib.suppress(OSError):
            os.write(2, b"stopped by SIGTERM\n")
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, _early)


def exit_on_sigterm(unwind_s: float = UNWIND_S, children_grace_s: float = CHILDREN_GRACE_S) -> None:
    """From now on, SIGTERM ends this process within ``unwind_s + children_grace_s`` (+ a little) seconds:
    one line ``stopped by SIGTERM`` on stderr, ``unwind_s`` for the command to unwind (a gateway drains, a flow
    records its crash), then every process carrying this command's owner token is stopped (SIGTERM, SIGKILL after
    ``children_grace_s``), this process's gateway run directories removed, and it exits 143 (128 + SIGTERM).
    Only from the main thread; once per process."""
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    _sigterm_installed = True
    import serving.server  # noqa: F401 - now, not in the stopper thread while the main thread may be importing

    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.signal(signal.SIGTERM, lambda _sig, _frame: _begin_stop(unwind_s, children_grace_s))
    signal.signal(signal.SIGINT, _on_sigint)
    previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    if previous != -1:  # an event loop's own wakeup fd: leave it; the Python handlers above still work
        signal.set_wakeup_fd(previous)
        os.close(read_fd)
        os.close(write_fd)
        return
    threading.Thread(target=_read_wakeups, args=(read_fd, unwind_s, children_grace_s), name="nasops-sigterm",
                     daemon=True).start()


_sigints_handled = 0


def _on_sigint(_sig: int, _frame: object) -> None:
    """The Python side of Ctrl-C: the first starts the stop and says so at once, a second exits (here, in the main
    thread, so no ``KeyboardInterrupt`` escapes half-way); each interrupts the main thread. The wakeup thread counts
    the same signals on its own (it sees them while another library's handler is installed): whichever of the two
    sees a signal first acts, the stop being started once. Leaving the first to the wakeup thread lost its line on
    a loaded machine, where a second Ctrl-C reached this handler before that thread had run."""
    global _sigints_handled
    _sigints_handled += 1
    if not _wakeup_thread_counts.is_set():
        _interrupted()
    elif _sigints_handled == 1:
        _begin_interrupt()
    else:
        _exit_now()
    raise KeyboardInterrupt


_wakeup_thread_counts = threading.Event()


def _read_wakeups(read_fd: int, unwind_s: float, children_grace_s: float) -> None:
    """Every signal with a Python handler writes its number here, even while Prefect's handler is the one
    installed: SIGTERM starts the stop, Ctrl-C is counted (the first stops, the second exits)."""
    _wakeup_thread_counts.set()
    while chunk := os.read(read_fd, 64):
        if signal.SIGTERM in chunk:
            _begin_stop(unwind_s, children_grace_s)
        for _ in range(chunk.count(signal.SIGINT)):
            _interrupted()


def _interrupted() -> None:
    """One Ctrl-C: the first starts the stop (exit 130), a second exits now."""
    global _interrupts
    _interrupts += 1
    if _interrupts == 1:
        _begin_interrupt()
    elif _interrupts >= 2:
        _exit_now()


def _begin_interrupt() -> None:
    _begin_stop(INTERRUPT_UNWIND_S, CHILDREN_GRACE_S, SIGINT_EXIT,
                b"interrupted (Ctrl-C): stopping; press Ctrl-C again to exit at once\n")


def _exit_now() -> None:
    """A second Ctrl-C: say so, stop the children without a grace period, exit 130."""
    with contextlib.suppress(OSError):
        os.write(2, b"interrupted again: exiting now\n")
    with contextlib.suppress(Exception):
        if _owned_token is not None:
            stop_owned(_owned_token, exclude={os.getpid()}, grace_s=0.2)
    os._exit(SIGINT_EXIT)


def _begin_stop(unwind_s: float, children_grace_s: float, code: int = SIGTERM_EXIT,
                line: bytes = b"stopped by SIGTERM\n") -> None:
    global _exit_code
    with _stop_lock:  # the main thread's handler and the wakeup thread may both start it: once
        if _stop_requested.is_set():
            return
        _exit_code = code
        _stop_requested.set()
    with contextlib.suppress(OSError):  # said now, not by the thread: a second Ctrl-C may end the process first
        os.write(2, line)
    # not a daemon: the interpreter's exit waits for it, so the exit status is the signal's even if main returns
    threading.Thread(target=_stop_and_exit, args=(unwind_s, children_grace_s, code), name="nasops-stop").start()


def _stop_and_exit(unwind_s: float, children_grace_s: float, code: int) -> None:
    _unwound.wait(unwind_s)
    with contextlib.suppress(Exception):
        if _owned_token is not None:
            stop_owned(_owned_token, exclude={os.getpid()}, grace_s=children_grace_s)
        _remove_run_dirs(os.getpid(), _run_roots)
    os._exit(code)


def stopping() -> bool:
    """Whether a SIGTERM stop is under way (the command should not start anything new)."""
    return _stop_requested.is_set()


def _remove_run_dirs(pid: int, roots: Sequence[str]) -> None:
    from serving.server import remove_run_dirs

    for root in (None, *roots):
        remove_run_dirs(pid, Path(root) if root else None)


def done(write_end: int | None) -> None:
    """A normal end: the watchdog leaves without stopping anything (the command stopped its own children).

    Under a SIGTERM stop, the end is the stopper's: it is told the command has unwound and this call waits for it
    to exit the process (143); the watchdog is not told ``done``, so it too stops what is left."""
    if _stop_requested.is_set():
        _unwound.set()
        time.sleep(INTERRUPT_UNWIND_S + CHILDREN_GRACE_S + 5)
        os._exit(_exit_code)
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


def stop_owned(token: str, exclude: set[int], grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM every owned process, SIGKILL what is left after ``grace_s``; returns the pids found."""
    pids = owned_pids(token, exclude)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and owned_pids(token, exclude):
        time.sleep(0.1)
    for pid in owned_pids(token, exclude):
        _signal(pid, signal.SIGKILL)
    return pids


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _watch(read_end: int, token: str, parent: int, run_roots: Sequence[str] = ()) -> None:
    data = b""
    with os.fdopen(read_end, "rb") as pipe:
        while chunk := pipe.read(64):
            data += chunk
    if b"done" in data:
        return
    stop_owned(token, exclude={os.getpid(), parent})
    _remove_run_dirs(parent, run_roots)  # the dead command's gateway run directories (metrics, control file)


if __name__ == "__main__":
    _watch(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:])

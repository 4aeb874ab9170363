"""A CPU load generator for benchmarks: one child process per core spinning numpy work, as on a busy shared host.

The children are owned by the process that starts them: stopped by their PIDs when the block ends, and each one
dies with its parent (``PR_SET_PDEATHSIG`` on Linux, and a check of its parent's PID between work items where that
is not available), so a benchmark killed mid-run leaves no spinner behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

# Matrix products on one BLAS thread: about one core per child, with the allocation churn of real numpy work.
_SPIN = """
import os, sys
import numpy as np
parent = int(sys.argv[1])
a = np.random.default_rng(os.getpid()).random((192, 192))
while os.getppid() == parent:
    for _ in range(50):
        a = np.tanh(a @ a.T / 192.0)
"""

_ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _die_with_parent() -> None:
    """In the child before exec: ask the kernel for SIGKILL when the parent dies (Linux only; elsewhere the
    spinner's own parent check ends it)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def cpu_load(processes: int | None = None) -> Iterator[list[int]]:
    """Keep ``processes`` cores busy (default: every core) for the block; yields the spinners' PIDs."""
    count = processes or os.cpu_count() or 1
    env = {**os.environ, **_ONE_THREAD}
    children: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            children.append(subprocess.Popen([sys.executable, "-c", _SPIN, str(os.getpid())], env=env,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                             preexec_fn=_die_with_parent))
        yield [child.pid for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()  # by its own PID: never a name or a process group
        for child in children:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

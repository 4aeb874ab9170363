"""Start the gateway: in a background thread of this process, or as uvicorn worker processes.

``start_gateway`` returns once ``/healthz`` answers (models loading was attempted by then) and gives a handle with
``.url`` and ``.stop()``; use it as a context manager. Thread mode is quick to start and is what tests and the
refresh flow use; process mode (``workers >= 2`` implies it) runs ``uvicorn --workers N`` with prometheus_client
multiprocess mode and a shared control file so admin changes reach every worker.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Literal

import httpx

from serving.backend import ModelBackend
from serving.config import GatewaySettings

RUN_DIR_PREFIX = "nasops-gateway-"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (someone else's process counts as alive). The one PID check of the project:
    serving cannot import pipelines, so pipelines use this one."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_dirs(root: Path | None = None, pid: int | None = None) -> list[Path]:
    """The gateway run directories under ``root`` (default: the temp dir), each ``nasops-gateway-<pid>-<random>``
    after the process that owns it; only those of ``pid`` if given."""
    base = Path(root or tempfile.gettempdir())
    found = []
    with contextlib.suppress(OSError):
        for path in base.iterdir():
            owner = path.name[len(RUN_DIR_PREFIX):].split("-", 1)[0]
            if path.name.startswith(RUN_DIR_PREFIX) and owner.isdigit() and path.is_dir() \
                    and (pid is None or int(owner) == pid):
                found.append(path)
    return found


def remove_run_dirs(pid: int, root: Path | None = None) -> list[Path]:
    """Remove every run directory of ``pid`` under ``root`` (its owner stopping, or its watchdog after it died)."""
    paths = run_dirs(root, pid)
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
    return paths


def sweep_run_dirs(root: Path | None = None) -> list[Path]:
    """Remove the run directories whose owner no longer runs: what a ``kill -9`` of the owner left behind."""
    stale = [p for p in run_dirs(root) if not pid_alive(int(p.name[len(RUN_DIR_PREFIX):].split("-", 1)[0]))]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def new_run_dir(root: Path | None = None) -> Path:
    """A private directory for one gateway run (its workers' Prometheus files, its control file and log), named
    after this process so that nothing is left behind: removed when the gateway stops and at exit; after a
    ``kill -9`` of this process, by its watchdog (``pipelines.supervisor``) or by the next start (stale
    directories of dead owners under the same root are swept here first)."""
    base = Path(root or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    sweep_run_dirs(base)
    path = Path(tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-", dir=base))
    atexit.register(shutil.rmtree, path, True)
    return path


class GatewayStartError(RuntimeError):
    """The gateway did not come up (the message carries its log tail)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class PortTaken(GatewayStartError):
    """Another server answered on the port chosen for this gateway (it was taken between choosing and binding)."""


def _wait_healthy(url: str, timeout: float, alive, instance_id: str) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            raise GatewayStartError(f"gateway at {url} exited while starting")
        try:
            response = httpx.get(f"{url}/healthz", timeout=1.0)
            body = response.json() if response.status_code == 200 else {}
            if body.get("instance") == instance_id:
                return
            raise PortTaken(f"another server answers on {url} (not the gateway started here)")
        except (httpx.HTTPError, ValueError) as exc:
            last = f"{type(exc).__name__}"
        time.sleep(0.05)
    raise GatewayStartError(f"gateway at {url} did not answer /healthz within {timeout:.0f}s ({last})")


class GatewayHandle:
    """A running gateway: ``url``, ``settings``, ``stop()``; a context manager that stops on exit."""

    def __init__(self, url: str, settings: GatewaySettings, stopper, mode: str) -> None:
        self.url = url
        self.settings = settings
        self.mode = mode
        self._stopper = stopper
        self._stopped = False

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._stopper()

    def __enter__(self) -> GatewayHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"GatewayHandle(url={self.url!r}, mode={self.mode!r})"


def _start_thread(settings: GatewaySettings, host: str, port: int, timeout: float,
                  backend: ModelBackend | None = None) -> GatewayHandle:
    import uvicorn

    from serving.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    actual_port = sock.getsockname()[1]
    from serving.connections import uvicorn_options

    config = uvicorn.Config(create_app(settings, backend=backend), log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=10, **uvicorn_options())
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="nasops-gateway", daemon=True)
    thread.start()
    url = f"http://{host}:{actual_port}"

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()

    try:
        _wait_healthy(url, timeout, thread.is_alive, settings.instance_id)
    except GatewayStartError:
        stop()
        raise
    return GatewayHandle(url, settings, stop, "thread")


def _start_process(settings: GatewaySettings, host: str, port: int, workers: int, timeout: float) -> GatewayHandle:
    run_dir = new_run_dir()
    metrics_dir = run_dir / "prometheus"
    metrics_dir.mkdir()
    if settings.control_file is None:
        settings = settings.model_copy(update={"control_file": str(run_dir / "control.json")})
    env = {**os.environ, **settings.to_env(), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    # Models are unpickled in the worker: it must import what the launching process can (its sys.path).
    env["PYTHONPATH"] = os.pathsep.join(p for p in [*sys.path, env.get("PYTHONPATH", "")] if p)
    log_path = run_dir / "gateway.log"
    attempts = 3 if port == 0 else 1
    for attempt in range(attempts):
        chosen = port or free_port(host)
        cmd = [sys.executable, "-m", "serving.workers", "--host", host, "--port", str(chosen), "--workers",
               str(workers), "--log-level", "warning", "--timeout-graceful-shutdown", "10"]
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://{host}:{chosen}"

        def stop(proc=proc, log_file=log_file) -> None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            log_file.close()
            shutil.rmtree(run_dir, ignore_errors=True)

        try:
            _wait_healthy(url, timeout, lambda proc=proc: proc.poll() is None, settings.instance_id)
            return GatewayHandle(url, settings, stop, "process")
        except GatewayStartError as exc:
            taken = isinstance(exc, PortTaken)
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: the uvicorn parent and its workers
                proc.wait(timeout=10)
            log_file.close()
            if attempt + 1 < attempts and (taken or "address already in use" in tail.lower()):
                continue
            shutil.rmtree(run_dir, ignore_errors=True)
            raise GatewayStartError(f"{exc}\n--- gateway log ---\n{tail}") from None
    raise GatewayStartError("no free port found for the gateway")


def start_gateway(
    settings: GatewaySettings | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    workers: int = 1,
    mode: Literal["thread", "process"] | None = None,
    timeout: float = 120.0,
    backend: ModelBackend | None = None,
) -> GatewayHandle:
    """Run the gateway on ``host:port`` (0: a free port) and return once ``/healthz`` answers.

    ``mode`` defaults to ``"thread"`` for one worker and ``"process"`` for several. ``backend``: where models come
    from (default: the MLflow registry); another one (a test's stand-in) is an object, so thread mode only.
    """
    settings = settings or GatewaySettings()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    mode = mode or ("thread" if workers == 1 else "process")
    if mode == "thread":
        if workers != 1:
            raise ValueError("thread mode runs exactly one worker; use mode='process' for several")
        return _start_thread(settings, host, port, timeout, backend)
    if backend is not None:
        raise ValueError("a model backend object can only be given to a thread-mode gateway")
    if mode == "process":
        return _start_process(settings, host, port, workers, timeout)
    raise ValueError(f"mode must be 'thread' or 'process', got {mode!r}")


SHUTDOWN_DRAIN_S = 2


def serve_forever(settings: GatewaySettings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
                  state_dir: Path | None = None) -> None:
    """Run the gateway in the foreground until interrupted (what ``nasops serve`` does)."""
    import uvicorn

    from serving.connections import raise_file_limit, uvicorn_options

    raise_file_limit()
    # Bounded drain: SIGTERM ends the process within seconds (an orchestrator's stop, `nasops serve` under a
    # supervisor), a slow client does not hold it.
    if workers > 1:
        base = new_run_dir(state_dir)  # this run's alone: two gateways on one NASOPS_HOME do not share metrics
        metrics_dir = base / "prometheus-multiproc"
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        if settings.control_file is None:
            settings = settings.model_copy(update={"control_file": str(base / "gateway-control.json")})
        control = Path(settings.control_file)
        control.unlink(missing_ok=True)
        os.environ.update(settings.to_env())
        try:
            uvicorn.run("serving.app:create_app_from_env", factory=True, host=host, port=port, workers=workers,
                        log_level="info", timeout_graceful_shutdown=SHUTDOWN_DRAIN_S, **uvicorn_options())
        finally:
            shutil.rmtree(base, ignore_errors=True)
        return
    from serving.app import create_app

    sys.setswitchinterval(settings.gil_switch_interval_s)  # this process is the gateway's alone (``nasops serve``)
    uvicorn.run(create_app(settings, freeze_gc=True), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=SHUTDOWN_DRAIN_S, **uvicorn_options())

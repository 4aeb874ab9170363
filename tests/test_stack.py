"""``infra/local/stack.sh`` for real: ``up`` in a temporary directory, every component answers, ``down`` leaves
no process and no listening port behind.

The stack is the one a team runs: MLflow on PostgreSQL with an artifact root, a Prefect server with a process
work-pool worker, a Dask scheduler with two workers, Prometheus scraping the gateway, and the gateway with two
uvicorn workers (unready until a champion is registered: that is asserted too). Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import pytest
from servers import free_port, postgres_binaries, require_binary, unavailable

pytestmark = pytest.mark.slow

STACK = Path(__file__).resolve().parent.parent / "infra" / "local" / "stack.sh"
PORTS = ("POSTGRES", "MLFLOW", "PREFECT", "PREFECT_WORKER", "DASK", "DASK_DASHBOARD", "PROMETHEUS", "GATEWAY")
COMPONENTS = ("postgres", "mlflow", "prefect", "prefect-worker", "dask-scheduler", "dask-worker-1", "dask-worker-2",
              "prometheus", "gateway")


def _stack(env: dict, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(STACK), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _require_servers() -> None:
    postgres_binaries()
    require_binary("prometheus", "Debian: apt-get install prometheus; `make system-deps` does it")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and no 'postgres' user exists to run PostgreSQL as (apt-get install "
                        "postgresql creates it)")


def _pids(state: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text().split()[0]) for p in (state / "run").glob("*.pid")}


def _processes(pids: dict[str, int]) -> list[psutil.Process]:
    """Every process of the stack: each leader's process group, and the postmaster's children (PostgreSQL puts
    each backend in a session of its own)."""
    found = {}
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) in pids.values():
                found[proc.pid] = proc
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pids["postgres"]).children(recursive=True):
            found[child.pid] = child
    return list(found.values())


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        return _alive(psutil.Process(pid))
    except psutil.Error:
        return False


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _get(url: str, **kw) -> httpx.Response:
    return httpx.get(url, timeout=10, **kw)

FLOW = """
import os
from pathlib import Path
from prefect import flow


@flow
def stack_smoke(out: str) -> None:
    # runs in a process the work-pool worker starts: it must see the stack through the worker's environment
    Path(out).write_text(os.environ.get("MLFLOW_TRACKING_URI", "unset"))
"""

DEPLOY = """
import sys
from prefect import flow
from prefect.deployments import run_deployment

flow.from_source(source=sys.argv[1], entrypoint="smoke_flow.py:stack_smoke").deploy(
    name="smoke", work_pool_name="nasops-process")
run = run_deployment("stack-smoke/smoke", parameters={"out": sys.argv[2]}, timeout=150)
print("STATE", run.state.type.value)
"""


def _start_flow_run_on_the_worker(src: Path, prefect_api: str) -> subprocess.Popen:
    """Deploy a one-line flow to the stack's work pool and run it (in a subprocess, so this test process's own
    Prefect settings stay untouched); the caller collects it with ``communicate``."""
    src.mkdir()
    (src / "smoke_flow.py").write_text(FLOW)
    (src / "deploy.py").write_text(DEPLOY)
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    env.pop("PREFECT_HOME", None)
    return subprocess.Popen([sys.executable, str(src / "deploy.py"), str(src), str(src / "ran.txt")], env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _check_components(ports: dict[str, int], state: Path) -> None:
    mlflow = f"http://127.0.0.1:{ports['MLFLOW']}"
    found = httpx.post(f"{mlflow}/api/2.0/mlflow/experiments/search", json={"max_results": 5}, timeout=10)
    assert found.status_code == 200 and found.json()["experiments"][0]["name"] == "Default", found.text
    # the tracking store really is PostgreSQL: MLflow's tables are in the `mlflow` database, and the prediction
    # log's database exists for the gateway
    import psycopg

    pg = {"host": "127.0.0.1", "port": ports["POSTGRES"], "user": "nasops",
          "passfile": str(state / "secrets" / "pgpass")}
    with psycopg.connect(dbname="mlflow", **pg) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"experiments", "registered_models", "model_versions"} <= tables
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        assert {"mlflow", "predictions", "prefect"} <= names

    prefect = f"http://127.0.0.1:{ports['PREFECT']}/api"
    assert _get(f"{prefect}/health").json() is True
    workers = httpx.post(f"{prefect}/work_pools/nasops-process/workers/filter", json={}, timeout=10)
    assert workers.status_code == 200 and any(w["status"] == "ONLINE" for w in workers.json()), workers.text

    from distributed import Client

    with Client(f"tcp://127.0.0.1:{ports['DASK']}", timeout=20) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6

    gateway = f"http://127.0.0.1:{ports['GATEWAY']}"
    assert _get(f"{gateway}/healthz").json()["status"] == "ok"
    ready = _get(f"{gateway}/readyz")
    assert ready.status_code == 503 and "champion" in ready.text  # no champion registered in a fresh stack

    prometheus = f"http://127.0.0.1:{ports['PROMETHEUS']}"
    assert _get(f"{prometheus}/-/ready").status_code == 200
    target = f"127.0.0.1:{ports['GATEWAY']}"
    deadline, health = time.monotonic() + 45, None
    while time.monotonic() < deadline and health != "up":
        active = _get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
        health = next((t["health"] for t in active if t["labels"]["instance"] == target), None)
        time.sleep(1)
    assert health == "up", f"Prometheus does not scrape the gateway at {target}: {active}"


def test_stack_up_status_down(tmp_path):
    _require_servers()
    state = Path(tempfile.mkdtemp(prefix="nasops-stack-"))
    state.chmod(0o711)  # as root, PostgreSQL runs as `postgres`, which must be able to traverse to its data
    ports = {name: free_port() for name in PORTS}
    assert len(set(ports.values())) == len(ports)
    env = {**os.environ, "NASOPS_STACK_DIR": str(state / "stack"),
           **{f"NASOPS_STACK_{name}_PORT": str(port) for name, port in ports.items()}}
    stack = state / "stack"
    pids: dict[str, int] = {}
    procs: list[psutil.Process] = []
    flow_run = None
    try:
        up = _stack(env, "up")
        assert up.returncode == 0, f"stack.sh up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
        assert f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{ports['MLFLOW']}" in up.stdout
        assert f"export PREFECT_API_URL=http://127.0.0.1:{ports['PREFECT']}/api" in up.stdout
        assert f"NASOPS_PREDICTION_LOG_URL=postgresql+psycopg://nasops@127.0.0.1:{ports['POSTGRES']}/predictions" \
            in up.stdout
        pids = _pids(stack)
        assert set(pids) == set(COMPONENTS)
        procs = _processes(pids)
        flow_run = _start_flow_run_on_the_worker(state / "flow-src", f"http://127.0.0.1:{ports['PREFECT']}/api")

        status = _stack(env, "status", timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        for name in COMPONENTS:
            line = next(ln for ln in status.stdout.splitlines() if ln.startswith(name + " "))
            assert str(pids[name]) in line
        assert "waiting for a champion" in status.stdout
        _check_components(ports, stack)
        out, _ = flow_run.communicate(timeout=180)
        assert "STATE COMPLETED" in out, out[-3000:]
        # the flow ran in a process of the worker, with the stack's tracking server in its environment
        assert (state / "flow-src" / "ran.txt").read_text() == f"http://127.0.0.1:{ports['MLFLOW']}"

        # every socket the stack listens on is on loopback
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                for conn in proc.net_connections(kind="inet"):
                    if conn.status == psutil.CONN_LISTEN:
                        assert conn.laddr.ip in ("127.0.0.1", "::1"), f"{proc.cmdline()[:3]} listens on {conn.laddr}"
        # secrets are the owner's only, and no token is on any command line
        for secret in (stack / "secrets").iterdir():
            assert secret.stat().st_mode & 0o077 == 0, f"{secret} is readable by others"
        token = (stack / "secrets" / "admin-token").read_text().strip()
        assert len(token) >= 32
        assert not any(token in " ".join(p.cmdline()) for p in procs if p.is_running())

        again = _stack(env, "up", timeout=120)  # idempotent: nothing started twice
        assert again.returncode == 0 and again.stdout.count("already running") == len(COMPONENTS), again.stdout
        assert _pids(stack) == pids
    finally:
        if flow_run is not None and flow_run.poll() is None:
            flow_run.kill()
        down = _stack(env, "down", timeout=240)
        leftovers = [p for p in procs if _alive(p)]
        for proc in leftovers:  # never leave a server behind, even when the test failed
            with contextlib.suppress(psutil.Error):
                proc.kill()
        shutil.rmtree(state, ignore_errors=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not leftovers, f"still running after down: {[p.pid for p in leftovers]}"
    listening = [name for name, port in ports.items() if _listening(port)]
    assert not listening, f"ports still listening after down: {listening}"
    assert procs and not [name for name, pid in pids.items() if _pid_alive(pid)]


def test_stack_up_that_fails_stops_what_it_started(tmp_path):
    """A component that dies during ``up`` (here a ``prometheus`` that exits at once): ``up`` exits 1 with that
    component's log, and stops every process it had started; nothing is left running or listening."""
    _require_servers()
    state = Path(tempfile.mkdtemp(prefix="nasops-stack-"))
    state.chmod(0o711)
    fake = tmp_path / "bin" / "prometheus"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'err: this prometheus refuses to start' >&2\nexit 1\n")
    fake.chmod(0o755)
    ports = {name: free_port() for name in PORTS}
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "NASOPS_STACK_DIR": str(state / "stack"),
           **{f"NASOPS_STACK_{name}_PORT": str(port) for name, port in ports.items()}}
    try:
        up = _stack(env, "up", timeout=180)
        started = {m.group(1): int(m.group(2)) for m in re.finditer(r"started ([\w-]+) \(pid (\d+)", up.stdout)}
    finally:
        _stack(env, "down", timeout=120)  # in case the test fails: never leave a server behind
        shutil.rmtree(state, ignore_errors=True)
    assert up.returncode == 1, up.stdout + up.stderr
    assert "prometheus exited during start-up" in up.stderr and "refuses to start" in up.stderr
    assert "stopping what this run started" in up.stderr
    assert {"postgres", "prometheus"} <= set(started)
    alive = [name for name, pid in started.items() if _pid_alive(pid)]
    assert not alive, f"left running after a failed up: {alive}"
    assert not [name for name, port in ports.items() if _listening(port)]

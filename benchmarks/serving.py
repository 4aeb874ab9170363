"""Serving overhead and throughput: the nasops gateway against the same model in-process and `mlflow models serve`.

All in one run, on this machine:

* latency: ``--requests`` sequential one-row requests over a keep-alive connection to the gateway, minus the same
  rows through the loaded model in-process (the gateway's own predict path: forward + softmax + labels);
  the gateway does everything it does in production (validation, routing, metrics, prediction log on SQLite).
* throughput: ``--concurrency`` closed-loop keep-alive clients for ``--seconds`` against the gateway and against
  ``mlflow models serve --env-manager local`` serving the same registered version, each one uvicorn worker in its
  own process. Both servers run side by side and are measured in ``--rounds`` interleaved rounds (median), so the
  load other programs put on the machine falls on both alike.

A small MLP trained on scikit-learn's digits is registered in a temporary MLflow store (MLflow's default ``pt2``
format, as the pipelines log it). ``--json`` prints exactly the keys the issue lists; details go to stderr.

    python benchmarks/serving.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

# Run as a script, this file's folder comes first on sys.path and its name would shadow the `serving` package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def register_model(home: Path) -> tuple[str, str, str, np.ndarray]:
    """Train a 64-64-10 MLP on digits for a few steps and register it; ``(tracking_uri, name, version, x)``."""
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.models import ModelSignature
    from mlflow.tracking import MlflowClient
    from mlflow.types import Schema, TensorSpec
    from sklearn.datasets import load_digits
    from torch import nn

    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()
    uri = f"sqlite:///{home / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri, uri)
    exp = client.create_experiment("bench-serving", artifact_location=(home / "artifacts").as_uri())
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 64))]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 10))]))
    name = "bench-classifier"
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.pytorch.log_model(model, name="model", signature=signature, input_example=x[:4],
                                        registered_model_name=name, pip_requirements=["torch", "numpy"])
    version = str(info.registered_model_version)
    client.set_model_version_tag(name, version, "nasops.classes", json.dumps(list(range(10))))
    for alias in ("champion", "challenger"):
        client.set_registered_model_alias(name, alias, version)
    return uri, name, version, x


def load_in_process(uri: str, name: str, version: str):
    """The registered version loaded here exactly as the gateway loads it."""
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient

    from serving.models import load_version

    torch.set_num_threads(1)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return load_version(MlflowClient(uri, uri), name, "champion", version)


def in_process_latencies(model, rows: np.ndarray) -> np.ndarray:
    """Seconds per one-row call of the gateway's own predict path (forward, softmax, labels), no HTTP."""
    out = []
    for row in rows:
        x = np.ascontiguousarray(row.reshape(1, -1), dtype=np.float32)
        t0 = time.perf_counter()
        model.labels(model.predict_proba(x))
        out.append(time.perf_counter() - t0)
    return np.asarray(out)


class RawHttpClient:
    """A lean keep-alive HTTP/1.1 client on asyncio streams: JSON POSTs with pre-encoded bodies.

    httpx costs more CPU per request than the servers measured here, so on a 2-core machine it would measure itself;
    this client does the minimum (write the request bytes, read the headers, read Content-Length body bytes).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def request_bytes(self, path: str, body: bytes) -> bytes:
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        return head.encode() + body

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = None
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length is None:
            raise RuntimeError("response without Content-Length")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


def _bodies(rows: np.ndarray) -> list[bytes]:
    return [json.dumps({"inputs": [row.tolist()]}).encode() for row in rows]


def _split(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def _sequential(url: str, path: str, bodies: list[bytes]) -> np.ndarray:
    client = RawHttpClient(*_split(url))
    await client.connect()
    raws = [client.request_bytes(path, b) for b in bodies]
    out = []
    try:
        for raw in raws:
            t0 = time.perf_counter()
            status, body = await client.send(raw)
            out.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"{url}{path} answered {status}: {body[:300]!r}")
    finally:
        await client.close()
    return np.asarray(out)


def http_latencies(url: str, path: str, rows: np.ndarray) -> np.ndarray:
    """Seconds per sequential one-row request over one keep-alive connection."""
    return asyncio.run(_sequential(url, path, _bodies(rows)))


async def _closed_loop(url: str, path: str, bodies: list[bytes], seconds: float, concurrency: int) -> tuple[int, int]:
    done = errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal done, errors
        client = RawHttpClient(*_split(url))
        await client.connect()
        raws = [client.request_bytes(path, b) for b in bodies]
        i = k
        try:
            while time.perf_counter() < stop_at:
                status, _ = await client.send(raws[i % len(raws)])
                if status == 200:
                    done += 1
                else:
                    errors += 1
                i += concurrency
        finally:
            await client.close()

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return done, errors


def throughput(url: str, path: str, rows: np.ndarray, seconds: float, concurrency: int) -> float:
    """Answered requests per second with ``concurrency`` closed-loop keep-alive clients."""
    bodies = _bodies(rows)
    asyncio.run(_closed_loop(url, path, bodies, min(1.0, seconds), concurrency))  # warm-up
    t0 = time.perf_counter()
    done, errors = asyncio.run(_closed_loop(url, path, bodies, seconds, concurrency))
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{errors} failed requests to {url}{path} during the throughput run")
    return done / elapsed


def wait_ready(url: str, path: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}{path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}{path} not ready within {timeout}s")


def log_loss_on_kill(uri: str, name: str, x: np.ndarray, home: Path, mode: str, seconds: float = 3.0) -> dict:
    """Answered requests missing from the prediction log after ``kill -9`` mid-load, for one ``log_mode``."""
    import signal
    import threading

    import sqlalchemy as sa

    from serving.config import GatewaySettings
    from serving.server import start_gateway

    log_url = f"sqlite:///{home / f'kill-{mode}.db'}"
    admin = secrets.token_urlsafe(32)
    settings = GatewaySettings(tracking_uri=uri, model_name=name, prediction_log_url=log_url, challenger_weight=0.0,
                               poll_interval_s=0, admin_token=admin, log_mode=mode)
    answered: list[str] = []
    stop = threading.Event()
    with start_gateway(settings, mode="process") as gw:
        pid = httpx.get(f"{gw.url}/admin/state", headers={"Authorization": f"Bearer {admin}"}).json()["pid"]

        def client(k: int) -> None:
            with httpx.Client(base_url=gw.url, timeout=10) as http:
                i = k
                while not stop.is_set():
                    try:
                        r = http.post("/predict", json={"inputs": [x[i % len(x)].tolist()]})
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200:
                        answered.append(r.json()["request_id"])
                    i += 4

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(seconds)
        os.kill(pid, signal.SIGKILL)  # mid-load: no flush, no shutdown hook
        stop.set()
        for t in threads:
            t.join(timeout=10)
    engine = sa.create_engine(log_url)
    with engine.connect() as conn:
        logged = {r[0] for r in conn.execute(sa.text("SELECT DISTINCT request_id FROM predictions"))}
    engine.dispose()
    lost = len(set(answered) - logged)
    return {"answered": len(answered), "lost": lost, "lost_share": round(lost / max(len(answered), 1), 4)}


def compare_trees(uri: str, name: str, x: np.ndarray, home: Path, other_tree: Path, rounds: int,
                  seconds: float, concurrency: int) -> dict:
    """This checkout's gateway against another source tree's (e.g. ``git archive REF serving monitoring``), side by
    side: same model, same client, interleaved rounds, so machine load falls on both alike."""
    from serving.config import GatewaySettings
    from serving.server import free_port

    procs, urls = {}, {}
    here = Path(__file__).resolve().parent.parent
    try:
        for tag, tree in (("other", other_tree.resolve()), ("this", here)):
            log_url = f"sqlite:///{home / tag}.db"
            settings = GatewaySettings(tracking_uri=uri, model_name=name, prediction_log_url=log_url,
                                       challenger_weight=0.0, poll_interval_s=0, admin_token=secrets.token_urlsafe(32),
                                       feedback_token=secrets.token_urlsafe(32))
            port = free_port()
            env = {**os.environ, **settings.to_env(), "PYTHONPATH": os.pathsep.join([str(tree), *sys.path])}
            procs[tag] = subprocess.Popen([sys.executable, "-m", "uvicorn", "serving.app:create_app_from_env",
                                           "--factory", "--port", str(port), "--log-level", "warning",
                                           "--no-access-log"], cwd=tree, env=env)
            urls[tag] = f"http://127.0.0.1:{port}"
            wait_ready(urls[tag], "/readyz", procs[tag])
        rows = x[np.random.default_rng(0).integers(0, len(x), size=600)]
        lat: dict[str, list] = {"other": [], "this": []}
        rps: dict[str, list] = {"other": [], "this": []}
        for r in range(rounds):
            for tag in (("other", "this") if r % 2 == 0 else ("this", "other")):
                lat[tag].append(http_latencies(urls[tag], "/predict", rows))
                rps[tag].append(throughput(urls[tag], "/predict", rows, seconds, concurrency))
    finally:
        for proc in procs.values():
            proc.terminate()
    return {tag: {"p50_ms": round(float(np.percentile(np.concatenate(lat[tag]), 50) * 1000), 3),
                  "p99_ms": round(float(np.percentile(np.concatenate(lat[tag]), 99) * 1000), 3),
                  "throughput_rps": round(float(np.median(rps[tag])), 1)} for tag in lat}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the result keys as JSON on stdout")
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests for the latency figures")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each throughput run")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (throughput: median of rounds)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients in the throughput runs")
    parser.add_argument("--kill-test", action="store_true", help="instead: answered requests the prediction log "
                        "loses when the gateway is killed with SIGKILL mid-load, batched vs sync log mode")
    parser.add_argument("--compare-tree", type=Path, default=None, help="instead: this gateway against the one in "
                        "another source tree (holding serving/ and monitoring/), side by side")
    args = parser.parse_args(argv)

    from serving.config import GatewaySettings
    from serving.server import free_port, start_gateway

    home = Path(tempfile.mkdtemp(prefix="nasops-bench-serving-"))
    log(f"registering a digits MLP in {home} ...")
    uri, name, version, x = register_model(home)
    rng = np.random.default_rng(0)
    rows = x[rng.integers(0, len(x), size=args.requests)]
    if args.compare_tree is not None:
        result = compare_trees(uri, name, x, home, args.compare_tree, args.rounds, args.seconds, args.concurrency)
        print(json.dumps(result))
        return result
    if args.kill_test:
        result = {f"{mode}_log": log_loss_on_kill(uri, name, x, home, mode) for mode in ("batched", "sync")}
        print(json.dumps(result))
        return result

    model = load_in_process(uri, name, version)
    in_process_latencies(model, rows[:100])  # warm-up
    base = []

    # Production settings: admin and feedback tokens on, bounded inputs, random 128-bit request ids, batched log.
    settings = GatewaySettings(tracking_uri=uri, model_name=name, prediction_log_url=f"sqlite:///{home / 'p.db'}",
                               challenger_weight=0.0, poll_interval_s=0, admin_token=secrets.token_urlsafe(32),
                               feedback_token=secrets.token_urlsafe(32))
    log("starting the gateway and mlflow models serve (one uvicorn worker process each) ...")
    port = free_port()
    # mlflow serve execs `uvicorn` by name: the interpreter's bin folder (the venv) must be on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path}
    serve_log = open(home / "mlflow-serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{name}/{version}", "--env-manager",
         "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env, stdout=serve_log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    mlflow_url = f"http://127.0.0.1:{port}"
    gw_lat, mlflow_lat, gw_rps, mlflow_rps = [], [], [], []
    try:
        with start_gateway(settings, mode="process") as gw:
            wait_ready(mlflow_url, "/ping", proc)
            http_latencies(gw.url, "/predict", rows[:200])  # warm-up (and proves it answers)
            http_latencies(mlflow_url, "/invocations", rows[:200])
            # Interleaved rounds: other load on the machine hits both servers alike.
            chunks = np.array_split(rows, args.rounds)
            for r, chunk in enumerate(chunks):
                base.append(in_process_latencies(model, chunk))
                gw_lat.append(http_latencies(gw.url, "/predict", chunk))
                mlflow_lat.append(http_latencies(mlflow_url, "/invocations", chunk))
                gw_rps.append(throughput(gw.url, "/predict", rows, args.seconds, args.concurrency))
                mlflow_rps.append(throughput(mlflow_url, "/invocations", rows, args.seconds, args.concurrency))
                log(f"round {r + 1}/{args.rounds}: gateway {gw_rps[-1]:.0f} req/s, mlflow serve "
                    f"{mlflow_rps[-1]:.0f} req/s")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        serve_log.close()
    base, gw_lat, mlflow_lat = np.concatenate(base), np.concatenate(gw_lat), np.concatenate(mlflow_lat)
    gw_rps, mlflow_rps = float(np.median(gw_rps)), float(np.median(mlflow_rps))

    def ms(values: np.ndarray, q: float) -> float:
        return float(np.percentile(values, q) * 1000.0)

    result = {
        "gateway_p50_overhead_ms": round(ms(gw_lat, 50) - ms(base, 50), 3),
        "gateway_p99_overhead_ms": round(ms(gw_lat, 99) - ms(base, 99), 3),
        "throughput_rps": round(gw_rps, 1),
        "mlflow_serve_throughput_rps": round(mlflow_rps, 1),
        "throughput_ratio_vs_mlflow_serve": round(gw_rps / mlflow_rps, 2),
    }
    log(f"in-process p50/p99 {ms(base, 50):.3f}/{ms(base, 99):.3f} ms; gateway p50/p99 {ms(gw_lat, 50):.3f}/"
        f"{ms(gw_lat, 99):.3f} ms; mlflow serve p50/p99 {ms(mlflow_lat, 50):.3f}/{ms(mlflow_lat, 99):.3f} ms; "
        f"{args.requests} requests per server; throughput median of {args.rounds} rounds of {args.seconds:g}s x "
        f"{args.concurrency} clients; cpus {os.cpu_count()}")
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:36s} {value}")
    return result


if __name__ == "__main__":
    main()

"""A PostgreSQL restart under load loses no answered prediction (issue 25, finding 3: a 17-second restart lost 310
of 1,795 answered predictions, because failed log batches were dropped).

Real parts: a PostgreSQL cluster (``servers.start_postgres``) stopped with a fast shutdown and started again on the
same data directory and port, the gateway under uvicorn on a loopback port with its prediction log on that server,
httpx callers on threads. The models are the stand-in backend (``support_backend``): what is measured is the log,
not a model. Answered requests (200s) are counted and compared with the log's rows after recovery: every one
there, once, in each caller's order.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest
import sqlalchemy as sa
from servers import PostgresServer, _server_account, postgres_binaries, start_postgres
from support_backend import StandInBackend, StandInModel
from support_metrics import metric

from monitoring.prediction_log import predictions
from serving.config import GatewaySettings
from serving.server import start_gateway

pytestmark = pytest.mark.slow  # starts PostgreSQL (twice) and a gateway

FEEDBACK = "outage-feedback-token-0123456789-abcdefghij"
CALLERS = 4
DOWN_S = 4.0


def restart(server: PostgresServer, down_s: float) -> tuple[PostgresServer, float]:
    """Stop ``server``'s postmaster (fast shutdown: sessions cut, as a failover does), wait ``down_s``, start it
    again on the same data directory and port: (the new server handle, seconds it refused connections)."""
    os.kill(server.pid, signal.SIGINT)  # our own handle's pid, never a name
    server.process.wait(timeout=30)
    stopped = time.monotonic()
    time.sleep(down_s)
    account = {k: v for k, v in _server_account().items() if not k.startswith("_")}
    argv = [postgres_binaries()["postgres"], "-D", str(server.workdir / "data"), "-h", "127.0.0.1", "-p",
            str(server.port), "-k", str(server.workdir), "-c", "fsync=off", "-c", "max_connections=60",
            "-c", "shared_buffers=16MB"]
    again = PostgresServer("postgres (restarted)", argv, workdir=server.workdir,
                           log_path=server.workdir / "postgres-restarted.log", env={**os.environ, "LC_ALL": "C"},
                           stop_signal=signal.SIGINT, signal_group=False, stop_timeout=30, remove_workdir=False,
                           **account)
    again.port, again.user, again.database = server.port, server.user, server.database

    def accepts() -> bool:
        with again.connect("postgres"):
            return True

    again.wait_ready(lambda: _quiet(accepts), 60, what="accepting connections again")
    return again, time.monotonic() - stopped


def _quiet(probe) -> bool:
    try:
        return probe()
    except Exception:
        return False


def test_a_postgres_restart_under_load_loses_no_answered_prediction(tmp_path):
    with start_postgres() as server:
        url = server.create_database("outage")
        settings = GatewaySettings(tracking_uri="sqlite:///unused-by-the-stand-in.db", model_name="standin",
                                   prediction_log_url=url, poll_interval_s=0, feedback_token=FEEDBACK,
                                   log_journal_dir=str(tmp_path / "journal"))
        backend = StandInBackend({"champion": StandInModel("1"), "challenger": None})
        answered: dict[int, list[str]] = {n: [] for n in range(CALLERS)}
        refused: list[int] = []
        stop = threading.Event()
        restarted = None
        with start_gateway(settings, backend=backend) as gateway:
            def call(n: int) -> None:
                with httpx.Client(base_url=gateway.url, timeout=10) as client:
                    i = 0
                    while not stop.is_set():
                        r = client.post("/predict", json={"inputs": [[0.1, 0.2, 0.3, float(i)]],
                                                          "request_id": f"c{n}-{i}"})
                        if r.status_code == 200:
                            answered[n].append(r.json()["request_id"])
                        else:
                            refused.append(r.status_code)
                        i += 1

            callers = [threading.Thread(target=call, args=(n,)) for n in range(CALLERS)]
            for t in callers:
                t.start()
            try:
                time.sleep(1.5)
                before = sum(map(len, answered.values()))
                os.kill(server.pid, 0)  # still ours
                restarted, outage_s = _restart_with_feedback_probe(server, gateway.url)
                time.sleep(1.5)
            finally:
                stop.set()
                for t in callers:
                    t.join(timeout=30)
            total = sum(map(len, answered.values()))
            engine = sa.create_engine(url)
            try:
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and _count(engine) < total:
                    time.sleep(0.2)
                with engine.connect() as conn:
                    logged = [r for (r,) in conn.execute(sa.select(predictions.c.request_id)
                                                         .order_by(predictions.c.id))]
            finally:
                engine.dispose()
            exposition = httpx.get(f"{gateway.url}/metrics").text
        if restarted is not None:
            restarted.stop()
    print(f"\noutage {outage_s:.1f} s; answered {total} (before the outage {before}), log rows {len(logged)}, "
          f"refused {len(refused)}; spilled {metric(exposition, 'nasops_log_spilled_rows_total')}")
    assert not refused and total > before > 0
    assert len(logged) == len(set(logged)) == total  # every answered prediction, once
    assert set(logged) == {rid for ids in answered.values() for rid in ids}
    for ids in answered.values():  # each caller's rows in the order it was answered
        position = {rid: k for k, rid in enumerate(logged)}
        assert [position[rid] for rid in ids] == sorted(position[rid] for rid in ids)
    assert metric(exposition, "nasops_log_spilled_rows_total", model="standin") > 0
    assert metric(exposition, "nasops_log_write_failures_total", model="standin") > 0
    assert metric(exposition, "nasops_log_spill_depth_rows", model="standin") == 0
    assert metric(exposition, "nasops_log_dropped_rows_total", model="standin") in (None, 0)
    assert list((tmp_path / "journal").glob("journal-*")) == []  # an empty journal is removed at stop


def _restart_with_feedback_probe(server: PostgresServer, gateway_url: str) -> tuple[PostgresServer, float]:
    """The restart, with one ``/feedback`` call while the database is down: a JSON 503, never a traceback."""
    probe: list[httpx.Response] = []

    def feedback_while_down() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not server.exited:
            time.sleep(0.05)
        time.sleep(0.5)
        probe.append(httpx.post(f"{gateway_url}/feedback", json={"request_id": "c0-0@anon", "label": 1},
                                headers={"Authorization": f"Bearer {FEEDBACK}"}, timeout=30))

    prober = threading.Thread(target=feedback_while_down)
    prober.start()
    restarted = restart(server, DOWN_S)
    prober.join(timeout=30)
    r = probe[0]
    assert r.status_code == 503 and r.headers["retry-after"] and set(r.json()) == {"error", "detail"}, r.text
    return restarted


def _count(engine) -> int:
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar()
    except sa.exc.OperationalError:
        return 0

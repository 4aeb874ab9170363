"""One execution path for champion and challenger, so that a latency difference the judge sees is the models'.

The defect (issue 22): champion batches of up to 64 rows ran inline on the event loop while every challenger call
went through a thread pool with a timeout; on a busy host the thread hop and the GIL wait cost the challenger alone
milliseconds, and an A/A canary (the champion registered again as the challenger) was rolled back on p99 47.9 vs
8.7 ms. Now both variants run on a pool thread of their own (same size), under a timeout (the champion's is
longer; on it the caller gets a 504 JSON error), and the model call's own time (``compute_ms``, measured on the
worker thread) is logged and exported beside the end-to-end latency; the judge's critical latency metric compares
it (``model_latency_ms``), the end-to-end one is a report row (``e2e_latency_ms``).

In-process (TestClient, stand-in models) for the path, the log and the metrics; one slow A/A test serves two
identical stand-in models from a gateway in its own process, under a CPU load that keeps every core busy, and runs
the real judge on what it logged.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from support_backend import StandInBackend, StandInModel
from support_metrics import metric
from test_gateway_contract import serve, settings_for

from monitoring.judge import Judge
from monitoring.judge_config import default_judge_config
from monitoring.prediction_log import create_log_engine, read_predictions
from monitoring.sources import PredictionLogSource
from serving.config import GatewaySettings

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

CALLS: list[tuple[str, str, bool]] = []
"""(alias the model serves as, thread name, whether an event loop runs on that thread) per predict_proba call."""


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class RecordingModel(StandInModel):
    """A stand-in that records where each of its calls ran."""

    def predict_proba(self, x):
        CALLS.append((self.alias, threading.current_thread().name, _on_event_loop()))
        return super().predict_proba(x)


class RecordingBackend(StandInBackend):
    def load(self, alias: str, version: str, load_as: str) -> RecordingModel:
        return RecordingModel(**super().load(alias, version, load_as).__dict__)


def test_both_variants_run_on_the_same_kind_of_pool_thread_and_log_their_compute_time(tmp_path):
    """Small batches too (the champion's used to run inline on the event loop): every call of either variant runs
    on a pool thread named after its variant, and every answered row carries the model's compute time, also in
    ``nasops_model_compute_seconds``."""
    CALLS.clear()
    backend = RecordingBackend({"champion": StandInModel("1"), "challenger": StandInModel("1")})
    rng = np.random.default_rng(0)
    with serve(settings_for(tmp_path, challenger_weight=0.5), backend) as client:
        for i in range(40):
            x = rng.normal(size=(int(rng.integers(1, 9)), 4)).round(3).tolist()
            r = client.post("/predict", json={"inputs": x}, headers={"X-Request-Key": f"caller-{i}"})
            assert r.status_code == 200, r.text
        exposition = client.get("/metrics").text
    served = {alias for alias, _, _ in CALLS}
    assert served == {"champion", "challenger"}, CALLS
    assert not [c for c in CALLS if c[2]], "a model call ran on the event loop's thread"
    assert all(name.startswith(f"model-{alias}_") for alias, name, _ in CALLS), CALLS
    for variant in ("champion", "challenger"):
        count = metric(exposition, "nasops_model_compute_seconds_count", variant=variant)
        assert count == sum(alias == variant for alias, _, _ in CALLS) > 0
    logged = read_predictions(create_log_engine(settings_for(tmp_path).prediction_log_url))
    assert len(logged) > 40 and set(logged.variant) == {"champion", "challenger"}
    assert logged.compute_ms.notna().all() and (logged.compute_ms <= logged.latency_ms).all()


def test_a_champion_past_its_timeout_is_a_504_not_a_hang(tmp_path):
    """The champion has a timeout too (``champion_timeout_s``): past it, the challenger answers for it, and without
    one the caller gets a 504 JSON error at once, the call logged as a timeout (no compute time: it did not end)."""
    slow = StandInBackend({"champion": StandInModel("1", fault="slow")})  # answers after 0.5 s
    with serve(settings_for(tmp_path, champion_timeout_s=0.1), slow) as client:
        t0 = time.perf_counter()
        r = client.post("/predict", json={"inputs": [[0.1, 0.2, 0.3, 0.4]]})
        waited = time.perf_counter() - t0
        exposition = client.get("/metrics").text
    assert r.status_code == 504 and "within 0.1s" in r.json()["error"] and r.json()["detail"], r.text
    assert waited < 0.45  # the timeout, not the model's 0.5 s
    assert metric(exposition, "nasops_model_faults_total", variant="champion", reason="timeout") == 1
    logged = read_predictions(create_log_engine(settings_for(tmp_path).prediction_log_url))
    assert logged.status.tolist() == ["timeout"] and logged.compute_ms.isna().all()

    answered = StandInBackend({"champion": StandInModel("1", fault="slow"), "challenger": StandInModel("2")})
    with serve(settings_for(tmp_path / "with-challenger", champion_timeout_s=0.1), answered) as client:
        r = client.post("/predict", json={"inputs": [[0.1, 0.2, 0.3, 0.4]]})
    assert r.status_code == 200 and r.json()["variant"] == "challenger", r.text


def test_the_inline_champion_setting_is_gone(monkeypatch):
    """``champion_inline_max_rows`` is removed; an old environment that still sets it starts as before (the
    settings ignore unknown variables) and changes nothing."""
    monkeypatch.setenv("NASOPS_GATEWAY_CHAMPION_INLINE_MAX_ROWS", "64")
    settings = GatewaySettings(tracking_uri="sqlite:///x.db", model_name="m", prediction_log_url="sqlite:///l.db")
    assert not hasattr(settings, "champion_inline_max_rows")
    assert settings.champion_timeout_s > settings.challenger_timeout_s


def test_the_judge_compares_compute_time_and_its_evidence_says_which_latency(tmp_path):
    """The prediction-log source reads ``compute_ms`` per answered request (rows without one, logged before schema
    0003, are no sample); the default critical latency metric compares it, the end-to-end rows are shown beside it
    without a say in the verdict, and every evidence row (the judge's table, the HTML report) names its measure."""
    from monitoring.prediction_log import PredictionLogWriter, prediction_rows
    from monitoring.report import canary_report_html

    engine = create_log_engine(f"sqlite:///{tmp_path / 'log.db'}")
    writer = PredictionLogWriter(engine)
    for i in range(60):
        for variant, e2e in (("champion", 2.0), ("challenger", 40.0)):  # the gateway, not the model, was slow
            writer.write(prediction_rows(request_id=f"{variant}-{i}", variant=variant, model_version="1",
                                         inputs=[[0.1, 0.2]] * 2, predictions_=[0, 1], probabilities=[[1, 0], [0, 1]],
                                         latency_ms=e2e + i % 3, status="ok", compute_ms=0.3 + 0.01 * (i % 5)))
    writer.write(prediction_rows(request_id="old", variant="challenger", model_version="1", inputs=[[0.1, 0.2]],
                                 predictions_=[0], probabilities=[[1, 0]], latency_ms=1.0, status="ok"))
    writer.write(prediction_rows(request_id="failed", variant="challenger", model_version="1", inputs=[[0.1, 0.2]],
                                 predictions_=None, probabilities=None, latency_ms=250.0, status="timeout"))
    writer.close()
    config = default_judge_config()
    samples = PredictionLogSource(engine).collect(config.metrics, None, None)
    champion, challenger = samples["model_latency_ms"]
    assert len(champion) == len(challenger) == 60  # one per request, not per row; "old" and "failed" give none
    verdict = Judge(config).judge(samples)
    rows = {r["name"]: r for r in verdict.table()}
    assert rows["model_latency_ms"]["classification"] == "Pass" and not rows["model_latency_ms"]["failed"]
    assert rows["e2e_latency_ms"]["classification"] == "High"  # shown: the end-to-end time differs ...
    assert "model_latency_ms" not in verdict.failed_metrics and verdict.verdict != "fail"  # ... and decides nothing
    assert verdict.group_scores.get("e2e") == 0.0 and verdict.score == 100.0
    assert {n: r["measure"] for n, r in rows.items() if "latency" in n} == {
        "model_latency_ms": "compute_ms", "model_latency_p99_ms": "compute_ms", "e2e_latency_ms": "latency_ms",
        "e2e_latency_p99_ms": "latency_ms"}
    page = canary_report_html({"decision": "promoted"}, verdict.table(), [])
    assert "<th>measure</th>" in page and "<td>model time (compute_ms)</td>" in page
    engine.dispose()


# -- A/A under CPU load -------------------------------------------------------------------------------------------

def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


GATEWAY_MAIN = """
import json, signal, sys, threading
from support_backend import StandInBackend, StandInModel
from serving.config import GatewaySettings
from serving.server import start_gateway

settings = GatewaySettings(**json.loads(sys.argv[1]))
sys.setswitchinterval(settings.gil_switch_interval_s)  # as a gateway worker process sets it
same = StandInModel("1", n_features=16, classes=list(range(10)))
backend = StandInBackend({"champion": same, "challenger": same})  # A/A: the champion again as the challenger
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
with start_gateway(settings, port=int(sys.argv[2]), backend=backend):
    stop.wait()
"""


REQUESTS = 1000


@pytest.mark.slow
def test_an_a_a_canary_under_cpu_load_shows_no_latency_difference(tmp_path):
    """Identical champion and challenger, served over HTTP by a gateway in its own process while every core is kept
    busy by a load generator: the real judge on the logged rows of both variants finds no latency difference (the
    critical ``model_latency_ms``, and the end-to-end rows beside it). Before, the challenger alone paid a thread
    hop and a GIL wait that the inline champion did not, and an A/A canary was rolled back on its latency."""
    from servers import ServerProcess, free_port, require_slow

    require_slow("starts a gateway and a CPU load")
    started = time.monotonic()
    log_url = f"sqlite:///{tmp_path / 'log.db'}"
    settings = dict(tracking_uri="sqlite:///unused.db", model_name="standin", prediction_log_url=log_url,
                    poll_interval_s=0, follow_rollouts=False, challenger_weight=0.5)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])}
    (tmp_path / "gateway_main.py").write_text(GATEWAY_MAIN)
    port = free_port()
    burners = [ServerProcess(f"cpu-load-{i}", [sys.executable, "-c", "while True: pass"], workdir=tmp_path,
                             stop_signal=signal.SIGKILL, remove_workdir=False)
               for i in range(max(2, os.cpu_count() or 2))]
    gateway = ServerProcess("a-a gateway", [sys.executable, str(tmp_path / "gateway_main.py"),
                                            json.dumps(settings), str(port)],
                            workdir=tmp_path, env=env, remove_workdir=False)
    try:
        gateway.wait_http(f"http://127.0.0.1:{port}/readyz", timeout=30)
        print(f"gateway ready after {time.monotonic() - started:.1f} s")
        rng = np.random.default_rng(1)
        batches = [rng.normal(size=(int(rng.integers(1, 33)), 16)).round(3).tolist() for _ in range(REQUESTS)]
        clients = threading.local()  # one keep-alive connection per caller thread

        def call(batch: list) -> str:
            if not hasattr(clients, "http"):
                clients.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
            r = clients.http.post("/predict", json={"inputs": batch})
            assert r.status_code == 200, r.text
            return r.json()["variant"]

        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as callers:  # a few callers at once: requests queue, as in production
            variants = list(callers.map(call, batches))
        print(f"{REQUESTS} requests in {time.monotonic() - t0:.1f} s under load")
    finally:
        for burner in burners:
            burner.stop()
        gateway.stop()  # SIGTERM: the gateway drains and flushes its log
    assert min(variants.count("champion"), variants.count("challenger")) > REQUESTS // 4

    samples = PredictionLogSource(log_url).collect(default_judge_config().metrics, None, None)
    verdict = Judge(default_judge_config()).judge(samples)
    rows = {r["name"]: r for r in verdict.table()}
    shown = {name: (rows[name]["measure"], _ms(rows[name]["champion_value"]), _ms(rows[name]["challenger_value"]),
                    rows[name]["classification"]) for name in rows if "latency" in name}
    print("A/A latency rows (measure, champion, challenger, class):", shown)
    model = rows["model_latency_ms"]
    assert model["measure"] == "compute_ms" and model["classification"] != "NoData", shown
    assert not model["failed"], shown
    assert not rows["e2e_latency_ms"]["failed"] and not rows["e2e_latency_p99_ms"]["failed"], shown
    assert "model_latency_ms" not in verdict.failed_metrics

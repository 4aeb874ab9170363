"""The canary on a gateway that real callers use, end to end (issue 11's done-means).

Every part is real and in its own process: the gateway with two uvicorn workers, a traffic process playing the
prod split with labels arriving 5 s late, Prometheus scraping the gateway, a Prefect server with its scheduler,
and ``nasops canary start --gateway URL`` serving the controller as a Prefect deployment on an interval. The
controller is killed with SIGKILL mid-rollout and restarted with ``nasops canary controller``; the rollout must
finish with the right decision, every interval judged once, both workers applying every weight, one champion.
Then ``abort`` of a second rollout must take the challenger's traffic away within one interval.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import yaml
from mlflow.tracking import MlflowClient
from servers import start_prefect, start_prometheus, wait_until

from monitoring.rollout_store import RolloutStore
from monitoring.sources import PROMETHEUS_QUERIES
from serving.server import start_gateway

pytestmark = pytest.mark.slow

ADMIN = "rollout-e2e-admin-token-0123456789abcdefgh"
FEEDBACK = "rollout-e2e-feedback-token-0123456789abcdef"
INTERVAL_S = 6.0


def _config(path, prometheus_url: str) -> str:
    cfg = {
        "profile": "demo",  # seconds-long looks on a real gateway: refused unless asked for
        "steps": [0.5, 1.0], "interval_s": INTERVAL_S, "label_wait_s": 6.0, "min_label_coverage": 0.5,
        "prometheus_url": prometheus_url, "max_intervals": 12,
        "judge": {"method": "fixed_horizon", "metrics": [
            {"name": "error_rate", "source": "prometheus", "query": PROMETHEUS_QUERIES["error_rate"],
             "direction": "increase", "critical": False, "group": "errors", "statistic": "mean",
             "effect": "absolute", "tolerance": 0.01, "min_samples": 1},
            {"name": "latency_ms", "source": "prediction_log", "measure": "latency_ms", "direction": "increase",
             "critical": True, "group": "latency", "statistic": "median", "effect": "relative", "tolerance": 0.5,
             "log_offset": 20.0},
            {"name": "online_accuracy", "source": "prediction_log", "measure": "correct", "direction": "decrease",
             "critical": True, "group": "accuracy", "statistic": "mean", "effect": "absolute", "tolerance": 0.02,
             "min_samples": 30},
        ]},
    }
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli.app", "canary", *args]


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_controller_deployment_survives_sigkill_and_every_worker_follows(tmp_path, monkeypatch):
    import support_models
    from fixtures_registry import build_registry

    from nas.data import TaskData

    reg = build_registry(tmp_path / "home")
    x_tr, y_tr, x_te, y_te = support_models.digits_data()
    half = len(x_te) // 2
    data = TaskData(x_tr, y_tr, x_te[:half], y_te[:half], (64,), 10, x_te[:half], y_te[:half], x_te[half:],
                    y_te[half:], meta={"classes": list(range(10))})
    data_path = str(data.save(tmp_path / "data.npz"))
    log_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    (tmp_path / "feedback-token").write_text(FEEDBACK)
    settings = reg.gateway_settings(admin_token=ADMIN, feedback_token=FEEDBACK, prediction_log_url=log_url,
                                    rollout_poll_s=0.5, challenger_weight=0.0)
    procs: list[subprocess.Popen] = []
    with start_gateway(settings, workers=2) as gateway, \
            start_prometheus([gateway.url.removeprefix("http://")], scrape_interval="1s") as prom, \
            start_prefect(services=True) as prefect:
        env = {**os.environ, "PREFECT_API_URL": prefect.api_url, "MLFLOW_TRACKING_URI": reg.tracking_uri,
               "NASOPS_HOME": str(reg.home), "NASOPS_MODEL_NAME": reg.model_name}
        env.pop("PYTEST_CURRENT_TEST", None)
        try:
            traffic = subprocess.Popen(
                [sys.executable, "-m", "pipelines.traffic", "--gateway", gateway.url, "--data", data_path,
                 "--rate", "40", "--label-delay-s", "5", "--feedback-token-file", str(tmp_path / "feedback-token"),
                 "--duration-s", "600"], env=env, start_new_session=True)
            procs.append(traffic)
            config = _config(tmp_path / "canary.yaml", prom.url)
            start = subprocess.Popen(_cli("start", "--gateway", gateway.url, "--config", config, "--data", data_path,
                                          "--prediction-log-url", log_url), env=env, start_new_session=True)
            procs.append(start)
            store = RolloutStore(log_url)
            rollout = wait_until(lambda: store.latest(reg.model_name), timeout=90, message="the rollout record")
            # mid-rollout: once the first interval is judged, SIGKILL the controller (runner and flow-run children)
            wait_until(lambda: store.get(rollout.rollout_id).intervals >= 1, timeout=120, interval=0.2,
                       message="the first judged interval")
            _kill_group(start)
            killed_at = store.get(rollout.rollout_id)
            assert killed_at.active, f"decided before the kill: {killed_at.reason}"
            restarted = subprocess.Popen(_cli("controller", "--prediction-log-url", log_url), env=env,
                                         start_new_session=True)
            procs.append(restarted)
            final = wait_until(lambda: (r := store.get(rollout.rollout_id)).terminal and r.applied and r,
                               timeout=180, interval=0.5, message="the rollout's decision")
            assert restarted.wait(timeout=60) == 0  # the controller stops by itself once the rollout is decided

            # the right decision, each interval judged once (numbers 1..n, one event each), every step judged
            assert final.decision == "promoted", final.reason
            judged = [s["interval"] for s in final.history]
            assert judged == list(range(1, final.intervals + 1)), judged
            events = store.events(rollout.rollout_id)
            assert [e["detail"]["interval"] for e in events if e["kind"] == "interval"] == judged
            assert {s["weight"] for s in final.history} == {0.5, 1.0}
            assert any(s["coverage"]["challenger"]["labelled"] > 0 for s in final.history)
            # exactly one champion, and it is the challenger that was promoted
            client = MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.tracking_uri)
            assert str(client.get_model_version_by_alias(reg.model_name, "champion").version) == reg.challenger_version

            # both workers applied every weight: per-worker counters, as Prometheus scraped them
            def applied() -> dict:
                rows = prom.query('sum by (worker, weight) (nasops_routed_requests_total{weight=~"0.5|1"})')
                return {(r["metric"]["worker"], r["metric"]["weight"]) for r in rows if float(r["value"][1]) > 0}
            pairs = wait_until(lambda: (p := applied()) and len({w for w, _ in p}) >= 2 and p, timeout=20,
                               message="per-worker routing counters in Prometheus")
            workers = {w for w, _ in pairs}
            assert len(workers) == 2 and pairs == {(w, x) for w in workers for x in ("0.5", "1")}, pairs

            # status shows the phase and the evidence
            shown = subprocess.run(_cli("status", "--prediction-log-url", log_url, "--json"), env=env,
                                   capture_output=True, text=True, timeout=60)
            assert shown.returncode == 0, shown.stderr
            record = json.loads(shown.stdout)
            assert record["phase"] == "promoted" and record["last_verdict"]["evidence"]

            # a second rollout, aborted: the challenger gets no traffic within one interval
            reg.register(support_models.train_small(support_models.mlp_classifier(), x_tr, y_tr, steps=30),
                         alias="challenger")
            second = subprocess.run(_cli("start", "--gateway", gateway.url, "--config", config, "--detach",
                                         "--prediction-log-url", log_url, "--json"),
                                    env=env, capture_output=True, text=True, timeout=120)
            assert second.returncode == 0, second.stderr
            aborted = subprocess.run(_cli("abort", "--prediction-log-url", log_url), env=env, capture_output=True,
                                     text=True, timeout=120)
            assert aborted.returncode == 0, aborted.stderr
            t0 = time.monotonic()
            auth = {"Authorization": f"Bearer {ADMIN}"}
            wait_until(lambda: all(httpx.get(f"{gateway.url}/admin/state", headers=auth).json()["weight"] == 0.0
                                   for _ in range(8)), timeout=INTERVAL_S, message="weight 0 on every worker")
            assert time.monotonic() - t0 < INTERVAL_S
            assert store.latest(reg.model_name).decision == "rolled_back"
        finally:
            for proc in procs:
                _kill_group(proc)

"""Prometheus for real: promtool validates the shipped config, rules and alert unit tests; a real Prometheus server
on a loopback port scrapes a real gateway and answers the PromQL from docs/serving.md and the Grafana dashboard."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from servers import require_binary, start_prometheus

from monitoring.prediction_log import create_log_engine, read_predictions
from serving.server import start_gateway

ROOT = Path(__file__).resolve().parents[1]
PROM = ROOT / "infra" / "prometheus"
pytestmark = [pytest.mark.prometheus, pytest.mark.slow]  # starts Prometheus and the gateway


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = require_binary("promtool", "Debian: apt-get install prometheus; `make system-deps` does it")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_promtool_accepts_config_rules_and_alert_unit_tests():
    for args in (("check", "config", str(PROM / "prometheus.yml")),
                 ("check", "config", str(PROM / "prometheus-compose.yml")),
                 ("check", "rules", str(PROM / "alerts.yml")),
                 ("test", "rules", str(PROM / "alerts_test.yml"))):
        out = promtool(*args)
        assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
        assert "SUCCESS" in out.stdout + out.stderr


def test_promtool_rejects_a_broken_rule(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: Bad\n        expr: sum(rate(x[5m]) \n")
    assert promtool("check", "rules", str(broken)).returncode != 0


def docs_queries() -> list[str]:
    text = (ROOT / "docs" / "serving.md").read_text()
    return [q.strip() for q in re.findall(r"```promql\n(.*?)```", text, flags=re.S)]


def dashboard() -> dict:
    return json.loads((ROOT / "infra" / "grafana" / "nasops-canary-dashboard.json").read_text())


def grafana_regex(value: str) -> str:
    """A multi-value variable's value as Grafana puts it in a PromQL regex: escaped, backslashes doubled."""
    return re.escape(value).replace("\\", "\\\\")


def dashboard_queries(model: str, instance: str = ".*") -> dict[str, str]:
    """Panel title (and refId) -> its expression with the dashboard's variables as Grafana substitutes them."""
    return {f"{panel['title']} {t['refId']}": t["expr"].replace("$model", model).replace("$instance", instance)
            for panel in dashboard()["panels"] for t in panel["targets"]}


def test_real_prometheus_scrapes_the_gateway_and_answers_the_documented_queries(shared_registry):
    assert len(docs_queries()) >= 3
    x, y = shared_registry.x_test[200:260], shared_registry.y_test[200:260]
    token = "prometheus-feedback-token-0123456789-abcdefghij"  # /feedback needs its bearer token
    admin = "prometheus-admin-token-0123456789-abcdefghij"
    settings = shared_registry.gateway_settings(challenger_weight=0.5, feedback_token=token, admin_token=admin)
    with start_gateway(settings) as gw:
        target = gw.url.removeprefix("http://")
        with start_prometheus([target], scrape_interval="1s", rule_files=[PROM / "alerts.yml"]) as prom:
            prom.wait_for('up{job="nasops-gateway"}', lambda v: v == 1)
            ids = []
            with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {token}"}) as client:
                # Two phases a few scrapes apart: rate() needs increases Prometheus saw happen, not series that
                # were born complete.
                for phase in (range(0, 30), range(30, len(x))):
                    for i in phase:
                        body = client.post("/predict", json={"inputs": [x[i].tolist()]},
                                           headers={"X-Request-Key": f"user-{i}"}).json()
                        ids.append(body["request_id"])
                        assert client.post("/feedback", json={"request_id": body["request_id"],
                                                              "label": int(y[i])}).status_code == 200
                    n = len(ids)
                    prom.wait_for("sum(nasops_feedback_total)", lambda v, n=n: v >= n)
                for _ in range(5):
                    client.post("/predict", json={"inputs": [[1.0, 2.0]]})
                client.post("/admin/drift", json={"variant": "challenger", "share": 0.4},
                            headers={"Authorization": f"Bearer {admin}"})
            ok = prom.wait_for('sum(nasops_requests_total{status="ok"})', lambda v: v >= len(x))
            assert ok == len(x)
            assert prom.wait_for('sum(nasops_requests_total{status="invalid"})', lambda v: v >= 5) == 5
            # exact online accuracy per variant equals what the prediction log says
            frame = read_predictions(create_log_engine(shared_registry.prediction_log_url))
            frame = frame[frame.request_id.isin(ids)]
            for variant, rows in frame.groupby("variant"):
                expected = rows.correct.astype(bool).mean()
                got = prom.value(f'sum(nasops_feedback_total{{correct="true",variant="{variant}"}}) / '
                                 f'sum(nasops_feedback_total{{variant="{variant}"}})')
                assert got == pytest.approx(expected)
            # every documented query and every dashboard query is valid PromQL and returns data where it should
            for query in docs_queries() + list(dashboard_queries(settings.model_name, grafana_regex(target)).values()):
                prom.query(query)  # raises on a syntax or evaluation error
            prom.wait_for("max(nasops_drift_share)", lambda v: v == 0.4)
            p99 = prom.query(docs_queries()[1])
            assert {r["metric"]["variant"] for r in p99} == {"champion", "challenger"}
            assert all(0 < float(r["value"][1]) < 5 for r in p99), p99
            accuracy = prom.query(docs_queries()[2])
            assert all(0.5 < float(r["value"][1]) <= 1.0 for r in accuracy)
            rules = prom.api("rules")["groups"]
            assert sum(len(g["rules"]) for g in rules) == 17


class Replica:
    """A stand-in gateway replica: the gateway's metric objects of one model served on a loopback port (what
    ``/metrics`` exposes), so Prometheus sees several models and replicas without starting gateways."""

    def __init__(self, model: str, weight: float) -> None:
        from prometheus_client import start_http_server
        from servers import free_port

        from monitoring.metrics import GatewayMetrics

        self.model, self.metrics = model, GatewayMetrics.create()
        port = free_port()
        self.server, _ = start_http_server(port, addr="127.0.0.1", registry=self.metrics.registry)
        self.target = f"127.0.0.1:{port}"
        m = self.metrics
        m.challenger_weight.labels(model).set(weight)
        for variant, version in (("champion", "1"), ("challenger", "2")):
            m.model_info.labels(model, variant, version).set(1)
            m.drift_share.labels(model, variant).set(0.1)
        m.rollout_active.labels(model).set(1)
        m.rollout_last_judged.labels(model).set(time.time())
        m.rollout_step_started.labels(model).set(time.time())
        m.rollout_interval.labels(model).set(60)

    def serve(self, failing: bool) -> None:
        """Some answers and labels; only a ``failing`` replica's challenger fails (and falls back)."""
        m = self.metrics
        for variant, version in (("champion", "1"), ("challenger", "2")):
            status = "error" if failing and variant == "challenger" else "ok"
            m.requests.labels(self.model, variant, version, status).inc(5)
            m.duration.labels(self.model, variant).observe(0.004)
            m.compute.labels(self.model, variant).observe(0.001)
            m.predictions.labels(self.model, variant, "3").inc(5)
            m.feedback.labels(self.model, variant, "true").inc(2)
        if failing:
            m.fallback.labels(self.model, "error").inc(5)


def test_every_dashboard_query_is_filtered_by_model_and_replica_and_evaluates_on_the_recording_rules():
    panels = dashboard()["panels"]
    names = {v["name"] for v in dashboard()["templating"]["list"]}
    assert {"datasource", "model", "instance"} <= names
    for panel in panels:
        for t in panel["targets"]:
            assert 'model="$model"' in t["expr"] and 'instance=~"$instance"' in t["expr"], (panel["title"], t["expr"])
    assert any("disagree" in panel["title"] for panel in panels)

    replicas = [Replica("m", 0.25), Replica("m", 0.5), Replica("other", 0.5)]  # m's two replicas disagree
    try:
        with start_prometheus([r.target for r in replicas], scrape_interval="1s",
                              rule_files=[PROM / "alerts.yml"]) as prom:
            prom.wait_for('count(up{job="nasops-gateway"} == 1)', lambda v: v == 3)
            deadline = time.monotonic() + 20
            while prom.value('count(nasops:error_ratio:rate5m{model="m"} >= 0)') != 4:  # 2 replicas x 2 variants
                assert time.monotonic() < deadline, "the recording rules never produced m's error ratio"
                for i, replica in enumerate(replicas):
                    replica.serve(failing=i == 2)  # only the other team's model fails
                time.sleep(0.5)
            a = grafana_regex(replicas[0].target)
            instances = prom.api("label/instance/values", **{"match[]": 'nasops_requests_total{model="m"}'})
            assert sorted(instances) == sorted(r.target for r in replicas[:2])  # the $instance variable's choices

            results = {}
            for instance in (".*", a):
                for title, expr in dashboard_queries("m", instance).items():
                    results[title, instance] = rows = prom.query(expr)  # raises on a parse or evaluation error
                    assert all(r["metric"].get("model", "m") == "m" for r in rows), (title, rows)
                    if instance == a:
                        assert all(r["metric"].get("instance", replicas[0].target) == replicas[0].target
                                   for r in rows), (title, rows)

            ratio = results["Error ratio by replica and variant (errors + timeouts) A", ".*"]
            assert len(ratio) == 4 and all(float(r["value"][1]) == 0 for r in ratio)  # 0 without errors: not "No data"
            spread = results["Replicas disagree on weight (max - min) A", ".*"]
            assert [float(r["value"][1]) for r in spread] == [0.25]
            assert [float(r["value"][1]) for r in results["Replicas disagree on weight (max - min) A", a]] == [0.0]
            heartbeat = results["Seconds since the rollout's last judged interval A", ".*"]
            assert len(heartbeat) == 1 and 0 <= float(heartbeat[0]["value"][1]) < 60
            versions = results["Served model versions A", ".*"]
            assert {(r["metric"]["variant"], r["metric"]["version"]) for r in versions} == {("champion", "1"),
                                                                                           ("challenger", "2")}
            assert prom.value('nasops:challenger_weight:spread{model="m"}') == 0.25
            assert prom.value('nasops:challenger_weight:spread{model="other"}') == 0
            assert prom.value('nasops:error_ratio:rate5m{model="other",variant="challenger"}') == 1
    finally:
        for replica in replicas:
            replica.server.shutdown()

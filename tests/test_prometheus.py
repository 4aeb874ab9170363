"""Prometheus for real: promtool validates the shipped config, rules and alert unit tests; a real Prometheus server
on a loopback port scrapes a real gateway and answers the PromQL from docs/serving.md and the Grafana dashboard."""

from __future__ import annotations

import json
import re
import subprocess
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


def dashboard_queries() -> list[str]:
    dashboard = json.loads((ROOT / "infra" / "grafana" / "nasops-canary-dashboard.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


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
            for query in docs_queries() + dashboard_queries():
                prom.query(query)  # raises on a syntax or evaluation error
            prom.wait_for("max(nasops_drift_share)", lambda v: v == 0.4)
            p99 = prom.query(docs_queries()[1])
            assert {r["metric"]["variant"] for r in p99} == {"champion", "challenger"}
            assert all(0 < float(r["value"][1]) < 5 for r in p99), p99
            accuracy = prom.query(docs_queries()[2])
            assert all(0.5 < float(r["value"][1]) <= 1.0 for r in accuracy)
            rules = prom.api("rules")["groups"]
            assert sum(len(g["rules"]) for g in rules) == 9

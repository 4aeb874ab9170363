"""Several uvicorn workers: /metrics reports the totals of all of them (prometheus_client multiprocess mode), and
an admin change made through one worker reaches the others."""

from __future__ import annotations

import re

import httpx
import pytest
from servers import wait_until
from test_gateway import metric_value

from serving.server import start_gateway

pytestmark = pytest.mark.slow  # starts gateways and trains models

TOKEN = "workers-admin-token-0123456789-abcdefghij"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_two_workers_report_correct_totals_and_share_admin_changes(shared_registry):
    settings = shared_registry.gateway_settings(admin_token=TOKEN, challenger_weight=0.5)
    rows = shared_registry.x_test[:40]
    with start_gateway(settings, workers=2) as gw:
        assert gw.mode == "process"
        pids = set()
        for row in rows:
            # a new connection per request, so the kernel spreads them over both workers
            assert httpx.post(f"{gw.url}/predict", json={"inputs": [row.tolist()]}).status_code == 200
            pids.add(httpx.get(f"{gw.url}/admin/state", headers=AUTH).json()["pid"])
        totals = {metric_value(httpx.get(f"{gw.url}/metrics").text, "nasops_requests_total", status="ok")
                  for _ in range(6)}
        assert totals == {40.0}, f"scrapes disagree or miss a worker: {totals} (pids seen: {pids})"
        histogram = metric_value(httpx.get(f"{gw.url}/metrics").text, "nasops_request_duration_seconds_count")
        assert histogram == 40
        assert httpx.post(f"{gw.url}/admin/weight", json={"weight": 1.0}, headers=AUTH).status_code == 200
        # workers re-read the control file at most every 0.2 s: wait until every worker reports the new weight
        wait_until(lambda: {(s["pid"], s["weight"]) for s in [httpx.get(f"{gw.url}/admin/state", headers=AUTH).json()
                                                               for _ in range(8)]} == {(p, 1.0) for p in pids},
                   timeout=10, message="both workers applying weight 1.0")
        served = {httpx.post(f"{gw.url}/predict", json={"inputs": [rows[0].tolist()]}).json()["variant"]
                  for _ in range(20)}
        assert served == {"challenger"}
        assert len(pids) == 2, f"only one worker answered 80 fresh connections: {pids}"
        # each live worker's weight is its own series (a disagreement would show), and the versions the merged
        # gauges say are served are the ones the workers serve (issue 25, finding 9)
        wait_until(lambda: weight_series(httpx.get(f"{gw.url}/metrics").text) == {(p, 1.0) for p in pids},
                   timeout=10, message="each worker's nasops_challenger_weight at 1.0")
        state = httpx.get(f"{gw.url}/admin/state", headers=AUTH).json()["models"]
        info = {(labels["variant"], labels["version"]) for labels, value in
                samples(httpx.get(f"{gw.url}/metrics").text, "nasops_model_version_info") if value == 1}
        assert info == {(v, m["version"]) for v, m in state.items() if m}, (info, state)


def samples(text: str, name: str) -> list[tuple[dict, float]]:
    return [(dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0])), float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines() if line.startswith(name + "{")]


def weight_series(text: str) -> set[tuple[int, float]]:
    return {(int(labels["pid"]), value) for labels, value in samples(text, "nasops_challenger_weight")}

"""Gauges of a multi-worker gateway (``PROMETHEUS_MULTIPROC_DIR``), in process: two "workers" are two gateways whose
metric values are written through prometheus_client's per-process files under two real, live pids, merged by
``render_latest`` as ``/metrics`` does. Finding 9 of issue 25: with ``--workers 2`` the merged gauges showed
challenger versions that /readyz said were not loaded (``Gauge.remove`` does nothing to a worker's file)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
from prometheus_client import values
from prometheus_client.values import MultiProcessValue
from support_backend import StandInBackend, StandInModel
from support_metrics import metric

from monitoring.metrics import GatewayMetrics, render_latest
from serving.config import GatewaySettings
from serving.gateway import Gateway

MODEL = "team-a-model"
DEAD_PID = 4_194_305 + 17  # above the kernel's largest pid_max (2^22): no process can have it


@pytest.fixture
def multiproc(tmp_path, monkeypatch) -> Iterator[None]:
    """Multiprocess mode for this test: metric values live in files under a temporary directory."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    (tmp_path / "metrics").mkdir()
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # restored after the test
    yield


@contextlib.contextmanager
def worker(pid: int) -> Iterator[None]:
    """Metric children created inside write to ``pid``'s files, as a worker process with that pid would."""
    before = values.ValueClass
    values.ValueClass = MultiProcessValue(lambda: pid)
    try:
        yield
    finally:
        values.ValueClass = before


def gateway(tmp_path, backend: StandInBackend) -> Gateway:
    settings = GatewaySettings(tracking_uri="sqlite:///unused.db", model_name=MODEL, poll_interval_s=0,
                               prediction_log_url=f"sqlite:///{tmp_path / 'log.db'}")
    return Gateway(settings, GatewayMetrics.create(), backend=backend)


def served(text: str, variant: str) -> set[str]:
    """The versions ``/metrics`` says ``variant`` is served in (nasops_model_version_info at 1)."""
    out = set()
    for line in text.splitlines():
        if line.startswith("nasops_model_version_info{") and f'variant="{variant}"' in line:
            assert f'model="{MODEL}"' in line
            if float(line.rsplit(" ", 1)[1]) == 1:
                out.add(line.split('version="')[1].split('"')[0])
    return out


def test_merged_version_gauge_shows_only_what_live_workers_serve(tmp_path, multiproc):
    a_pid, b_pid = os.getpid(), os.getppid()  # two live processes
    backend = StandInBackend({"champion": StandInModel("1"), "challenger": StandInModel("2")})
    with worker(a_pid):
        a = gateway(tmp_path, backend)
        a.reload()
    with worker(b_pid):
        b = gateway(tmp_path, backend)
        b.reload()
    text = render_latest(a.metrics.registry).decode()
    assert served(text, "champion") == {"1"} and served(text, "challenger") == {"2"}

    backend.point("challenger", StandInModel("3"))
    with worker(a_pid):
        a.reload()
    assert served(render_latest(a.metrics.registry).decode(), "challenger") == {"2", "3"}  # B still serves 2
    with worker(b_pid):
        b.reload()
    assert served(render_latest(a.metrics.registry).decode(), "challenger") == {"3"}  # was {"2", "3"}

    backend.point("challenger", None)  # the challenger alias removed: nobody serves a challenger
    for pid, gw in ((a_pid, a), (b_pid, b)):
        with worker(pid):
            gw.reload()
        assert gw.versions()["challenger"] is None and gw.ready() == (True, "ok")
    text = render_latest(a.metrics.registry).decode()
    assert not [line for line in text.splitlines()  # not even at 0
                if line.startswith("nasops_model_version_info{") and 'variant="challenger"' in line]
    assert served(text, "champion") == {"1"}


def test_a_dead_workers_gauges_leave_the_merge_and_live_workers_weights_all_show(tmp_path, multiproc):
    a_pid, b_pid = os.getpid(), os.getppid()
    with worker(DEAD_PID):  # a worker that was killed (uvicorn restarts it under a new pid)
        dead = GatewayMetrics.create()
        dead.model_info.labels(MODEL, "challenger", "9").set(1)
        dead.challenger_weight.labels(MODEL).set(1.0)
        dead.requests.labels(MODEL, "challenger", "9", "ok").inc(7)
    for pid, weight in ((a_pid, 0.25), (b_pid, 0.5)):  # the two live workers disagree on the split
        with worker(pid):
            GatewayMetrics.create().challenger_weight.labels(MODEL).set(weight)
    text = render_latest(dead.registry).decode()
    assert served(text, "challenger") == set()
    weights = sorted(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith("nasops_challenger_weight{"))
    assert weights == [0.25, 0.5]  # one series per live worker (pid label): a disagreement is visible
    assert metric(text, "nasops_requests_total", model=MODEL, version="9") == 7  # counters of the dead still count


def test_every_metric_carries_the_model_label_and_the_rollout_clock_is_published(tmp_path):
    backend = StandInBackend({"champion": StandInModel("1"), "challenger": StandInModel("2")})
    gw = gateway(tmp_path, backend)
    gw.reload()
    gw.rollouts.store.create(model_name=MODEL, champion_version="1", challenger_version="2", mode="split",
                             weight=0.1, config={"interval_s": 60.0}, now=1000.0)
    gw.rollouts.poll_once()
    text = render_latest(gw.metrics.registry).decode()
    samples = [line for line in text.splitlines() if line.startswith("nasops_")]
    assert samples and all(f'model="{MODEL}"' in line for line in samples), samples
    assert metric(text, "nasops_rollout_active", model=MODEL) == 1
    assert metric(text, "nasops_rollout_last_judged_timestamp_seconds") == 1000.0
    assert metric(text, "nasops_rollout_step_started_timestamp_seconds") == 1000.0
    assert metric(text, "nasops_rollout_interval_seconds") == 60.0
    assert metric(text, "nasops_challenger_weight") == 0.1

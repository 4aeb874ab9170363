"""A rollout handed over to a production gateway gets the production canary policy, not the demo's (issue 25,
finding 6: a hand-over ran with 4 s intervals and failure limit 1 and decided two minutes after its controller
started); the demo's seconds-long looks are refused there unless asked for; the controller runner's per-second
"at capacity" line is dropped. In-process, no server (the work-pool controller's one reconcile at a time is
tested on a real Prefect server in tests/test_control_plane.py)."""

from __future__ import annotations

import logging

import pytest
from support_cli import nasops

from pipelines.control.config import PRODUCTION_DEFAULTS, PRODUCTION_MIN_SAMPLES, for_gateway, load_canary_config
from pipelines.errors import UserError


def test_a_hand_over_fills_every_key_not_given_from_the_production_defaults():
    cfg = for_gateway(load_canary_config({"steps": [0.1, 1.0]}))
    assert cfg.profile == "production" and cfg.steps == [0.1, 1.0]
    assert {k: getattr(cfg, k) for k in PRODUCTION_DEFAULTS} == PRODUCTION_DEFAULTS
    assert cfg.interval_s >= 60 and cfg.failure_limit >= 2 and cfg.judge.min_samples == PRODUCTION_MIN_SAMPLES
    # what is given wins, and a config's own judge keeps its min_samples
    own = for_gateway(load_canary_config({"interval_s": 120, "failure_limit": 0, "judge": {"min_samples": 7}}))
    assert (own.interval_s, own.failure_limit, own.judge.min_samples) == (120, 0, 7)
    # the resolved policy is what the rollout record stores: it reads back the same
    assert load_canary_config(cfg.model_dump(mode="json")).interval_s == cfg.interval_s


def test_the_demos_seconds_are_refused_on_a_gateway_unless_asked_for():
    with pytest.raises(UserError, match="profile: demo") as refused:
        for_gateway(load_canary_config({"interval_s": 4}))
    assert "\n" not in str(refused.value) and "interval_s=4" in str(refused.value)
    demo = for_gateway(load_canary_config({"profile": "demo"}))
    assert (demo.interval_s, demo.failure_limit) == (4.0, 1)  # asked for: the demo's defaults, untouched
    assert load_canary_config({}).interval_s == 4.0  # the embedded canary keeps its minute-long demo


@pytest.mark.slow  # imports the controller (MLflow): seconds when nothing before it did
def test_hand_over_refuses_a_demo_policy_before_it_touches_the_gateway():
    from pipelines.control.handover import hand_over

    with pytest.raises(UserError, match="demo"):  # nothing listens on port 9: touching it would say so instead
        hand_over("m", "", load_canary_config({"interval_s": 4}), "http://127.0.0.1:9")


@pytest.mark.slow  # the command imports the controller and MLflow (seconds when cold)
def test_canary_start_refuses_demo_seconds_on_a_gateway_in_one_line(tmp_path):
    proc = nasops("canary", "start", "--gateway", "http://127.0.0.1:9", "--interval-s", "4", home=tmp_path)
    assert proc.returncode == 2 and "profile: demo" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "cannot reach" not in proc.stderr


@pytest.mark.slow  # imports Prefect (seconds when nothing before it did)
def test_the_runners_at_capacity_line_is_dropped_and_nothing_else():
    from pipelines.control.deployment import quiet_runner_capacity_log

    quiet_runner_capacity_log()
    quiet_runner_capacity_log()  # once, however often a controller starts
    runner_log = logging.getLogger("prefect.runner")
    assert len(runner_log.filters) == 1
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    runner_log.addHandler(handler)
    level = runner_log.level
    runner_log.setLevel(logging.INFO)
    try:
        runner_log.info("%d scheduled runs skipped (at capacity)", 3)
        runner_log.info("runner started")
    finally:
        runner_log.removeHandler(handler)
        runner_log.setLevel(level)
    assert seen == ["runner started"]


def test_a_long_lived_controller_waits_for_the_next_rollout_instead_of_exiting(tmp_path, monkeypatch):
    """``nasops canary controller --forever`` (the Kubernetes Deployment's command): with no active rollout it
    looks again after --wait-s, where a plain ``controller`` exits 2 (and a Deployment would restart it in a loop)."""
    import time

    from monitoring.rollout_store import RolloutStore
    from pipelines.cli.rollout import serve_forever

    class Slept(Exception):
        pass

    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        raise Slept

    store = RolloutStore(f"sqlite:///{tmp_path / 'p.db'}")
    monkeypatch.setattr(time, "sleep", sleep)
    with pytest.raises(Slept):
        serve_forever(store, "m", "sqlite:///unused", "unused", 12.5)
    assert waits == [12.5]


@pytest.mark.slow  # the command imports the controller and MLflow (seconds when cold)
def test_a_refresh_handing_over_with_demo_seconds_is_refused_before_its_data_is_read(tmp_path):
    config = tmp_path / "refresh.yaml"
    config.write_text("canary: {interval_s: 4}\n")
    args = ("refresh", "--data", str(tmp_path / "absent.csv"), "--target", "y", "--gateway", "http://127.0.0.1:9",
            "--config", str(config))
    refused = nasops(*args, home=tmp_path / "h")
    assert refused.returncode == 2 and "profile: demo" in refused.stderr, refused.stderr
    asked = nasops(*args, "--canary-profile", "demo", home=tmp_path / "h")  # asked for: on to the data check
    assert asked.returncode == 2 and "profile: demo" not in asked.stderr and "absent.csv" in asked.stderr, asked.stderr

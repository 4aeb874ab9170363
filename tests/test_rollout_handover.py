"""The refresh hands its challenger over to a running gateway instead of simulating traffic, and the gateway's
workers obey the rollout record, not one-process admin calls."""

from __future__ import annotations

import json

import httpx
import pytest
from servers import wait_until

from monitoring.rollout_store import RolloutStore
from pipelines.control.config import load_canary_config
from pipelines.errors import UserError
from serving.server import start_gateway

pytestmark = pytest.mark.slow

ADMIN = "handover-admin-token-0123456789-abcdefghij"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def test_hand_over_starts_the_rollout_on_the_gateway_and_operators_steer_it(registry, monkeypatch, tmp_path):
    from pipelines.control import commands as controller
    from pipelines.control.handover import hand_over

    monkeypatch.setenv("NASOPS_HOME", str(registry.home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    from mlflow.tracking import MlflowClient

    settings = registry.gateway_settings(admin_token=ADMIN, rollout_poll_s=0.3)  # alias poll off: reload only
    cfg = load_canary_config({"steps": [0.05, 0.5, 1.0]})  # a hand-over: the production intervals (minutes)
    client = MlflowClient(registry.tracking_uri)
    client.delete_registered_model_alias(registry.model_name, "champion")  # a fresh stack (issue 25, finding 5)
    with start_gateway(settings, workers=2) as gateway:
        assert httpx.get(f"{gateway.url}/readyz").status_code == 503  # live, waiting for its first champion
        client.set_registered_model_alias(registry.model_name, "champion", registry.champion_version)  # the refresh
        result = hand_over(registry.model_name, str(tmp_path / "absent.npz"), cfg, gateway.url,
                           prediction_log_url=registry.prediction_log_url, admin_token=ADMIN)  # reload, then start
        assert result.decision is None and result.handed_over
        assert "nasops canary controller" in result.reason and "status" in result.reason
        store = RolloutStore(registry.prediction_log_url)
        assert store.get(result.rollout_id).weight == 0.05

        def weights() -> set:
            return {(s["pid"], s["weight"]) for s in (httpx.get(f"{gateway.url}/admin/state", headers=AUTH).json()
                                                       for _ in range(10))}
        wait_until(lambda: {w for _, w in weights()} == {0.05}, timeout=10, message="every worker at 5%")
        # a rollout steers the split: the one-process admin call is refused, not silently applied to one worker
        refused = httpx.post(f"{gateway.url}/admin/weight", json={"weight": 0.9}, headers=AUTH)
        assert refused.status_code == 409 and "nasops canary" in refused.json()["detail"]

        controller.abort(store, registry.model_name)
        wait_until(lambda: {w for _, w in weights()} == {0.0}, timeout=5, message="every worker at 0% after abort")
        aborted = store.get(result.rollout_id)
        assert aborted.decision == "rolled_back" and aborted.decided_by == "operator" and aborted.applied
        assert [e["kind"] for e in store.events(aborted.rollout_id)][-2:] == ["abort", "applied"]
        from mlflow.tracking import MlflowClient

        mv = MlflowClient(registry.tracking_uri).get_model_version(registry.model_name, registry.challenger_version)
        assert mv.tags["nasops.decision"] == "rolled_back" and mv.tags["nasops.rollout_id"] == aborted.rollout_id
        history = json.loads(mv.tags["nasops.rollout_history"])  # the version's own record of its rollout
        assert [(e["kind"], e["actor"]) for e in history] == [("start", "refresh"), ("abort", "operator")]
        # after the rollout the admin API steers again
        assert httpx.post(f"{gateway.url}/admin/weight", json={"weight": 0.0}, headers=AUTH).status_code == 200


def test_a_gateway_on_another_rollout_store_is_refused_and_nothing_stays_active(registry, monkeypatch, tmp_path):
    from pipelines.control.handover import hand_over

    monkeypatch.setenv("NASOPS_HOME", str(registry.home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    settings = registry.gateway_settings(rollout_poll_s=0.3)
    other = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    with start_gateway(settings) as gateway, pytest.raises(UserError, match="does not follow"):
        hand_over(registry.model_name, "", load_canary_config({}), gateway.url, prediction_log_url=other)
    assert RolloutStore(other).active(registry.model_name) is None


def test_hand_over_to_a_dead_gateway_is_one_clear_error(registry, monkeypatch):
    from pipelines.control.handover import hand_over

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    with pytest.raises(UserError, match="cannot reach the gateway"):
        hand_over(registry.model_name, "", load_canary_config({}), "http://127.0.0.1:9")

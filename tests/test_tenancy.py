"""Several gateways on one shared rollout store (issue 25): an embedded canary's rollout never steers a production
gateway, a shared store used wrongly is refused in one line, and the first refresh on a fresh stack (a live gateway
without a champion yet) is not refused.

The cheap layers first: the follower on a real SQLite store, the real app in-process (TestClient, the stand-in model
backend), the pre-flight's decision on that app's own ``/readyz`` answer. End to end, the real embedded canary (its
gateway and traffic processes, the controller, a real MLflow registry) runs beside a production gateway on the same
database in ``tests/test_canary.py::test_better_challenger_is_promoted_with_evidence_in_mlflow``
(``support_tenancy.watch_production``): the proof costs no canary run of its own.
"""

from __future__ import annotations

import time

import pytest
from support_backend import StandInBackend
from support_tenancy import AUTH, production_settings, serve

from monitoring.rollout_store import PRODUCTION_TARGET, RolloutStore, embedded_target
from pipelines.errors import UserError
from serving.rollout_follower import RolloutFollower


def _embedded_rollout(store: RolloutStore, model_name: str = "m", session: str = "s1"):
    """A rollout as the embedded canary starts it (its first step), on its private gateway's target."""
    return store.create(model_name=model_name, champion_version="1", challenger_version="2", mode="split",
                        weight=0.05, config={}, actor="refresh", target=embedded_target(session))


def test_a_production_follower_never_applies_an_embedded_canarys_rollout(tmp_path):
    """Finding 2, at the follower: gateways followed the newest rollout of their model name, whoever it was for."""
    store = RolloutStore(f"sqlite:///{tmp_path / 'log.db'}")
    applied: list = []
    production = RolloutFollower(store, "m", 1.0, lambda _previous, current: applied.append(current))
    embedded = RolloutFollower(store, "m", 1.0, lambda _previous, _current: None, target=embedded_target("s1"))
    rollout = _embedded_rollout(store)
    rollout = store.update(rollout, {"weight": 0.25, "step_index": 1}, kind="judged", actor="controller")
    assert production.poll_once() is None and applied == []
    production.observe(rollout)  # an admin call's record of another target is not applied either
    assert production.current is None and applied == []
    assert embedded.poll_once().weight == 0.25  # its own gateway follows it
    assert store.latest_routing("m", PRODUCTION_TARGET) is None and store.latest("m").target == "embedded:s1"


@pytest.mark.slow  # two polls per step and an app start: about 0.5 s
def test_a_production_gateway_stays_at_weight_0_while_an_embedded_rollout_steps(tmp_path):
    """The real app in-process: its split, /readyz and the admin API, beside an embedded rollout on its store."""
    log_url = f"sqlite:///{tmp_path / 'log.db'}"
    with serve(production_settings(log_url)) as production:
        store = RolloutStore(log_url)
        rollout = _embedded_rollout(store)
        for weight in (0.25, 0.5, 1.0):
            rollout = store.update(rollout, {"weight": weight}, kind="judged", actor="controller")
            time.sleep(0.06)  # three polls of the production gateway
            state = production.get("/admin/state", headers=AUTH).json()
            assert state["weight"] == 0.0 and state["rollout"] is None
        ready = production.get("/readyz").json()
        assert ready["rollout"] is None and ready["rollout_target"] == PRODUCTION_TARGET
        # one rollout per model at a time: an operator's split beside it is refused, naming the other target
        response = production.post("/admin/weight", json={"weight": 0.3}, headers=AUTH)
        assert response.status_code == 409 and "embedded:s1" in response.text
        assert all(r.json()["variant"] == "champion" for r in
                   (production.post("/predict", json={"inputs": [[0.1, 0.2, 0.3, 0.4]]}) for _ in range(20)))


@pytest.mark.slow  # two app starts: about 0.5 s
def test_a_production_rollout_is_followed_by_production_gateways_only(tmp_path):
    log_url = f"sqlite:///{tmp_path / 'log.db'}"
    with serve(production_settings(log_url)) as production, \
            serve(production_settings(log_url, rollout_target=embedded_target("s2"))) as private:
        store = RolloutStore(log_url)
        store.create(model_name="m", champion_version="1", challenger_version="2", mode="split", weight=0.5,
                     config={}, actor="operator")
        time.sleep(0.08)
        assert production.get("/admin/state", headers=AUTH).json()["weight"] == 0.5
        assert private.get("/admin/state", headers=AUTH).json()["weight"] == 0.0


def test_an_embedded_canary_refuses_a_production_target():
    """``run_canary(target=...)`` checks this first, before anything starts (the end-to-end test below runs it)."""
    from pipelines.gateway_admin import refuse_production_target

    with pytest.raises(UserError, match="cannot publish its rollout to 'production'"):
        refuse_production_target(PRODUCTION_TARGET)
    refuse_production_target(embedded_target("s1"))
    refuse_production_target(None)  # the session's own


def test_a_hand_over_to_a_private_gateway_is_refused_and_old_gateways_are_production():
    from pipelines.gateway_admin import rollout_target

    with pytest.raises(UserError, match="embedded canary's private gateway"):
        rollout_target({"rollout_target": "embedded:abc"}, "http://gw")
    assert rollout_target({"status": "ready"}, "http://gw") == PRODUCTION_TARGET  # a gateway before the target
    assert rollout_target({"rollout_target": "eu-west"}, "http://gw") == "eu-west"


# -- the first refresh on a fresh stack (finding 5) ---------------------------------------------------------------

def test_the_pre_flight_accepts_a_gateway_waiting_for_its_first_champion_only(tmp_path):
    """``eval "$(stack.sh env)"`` exports a gateway URL before any champion exists: the gateway is live and answers
    503 "champion model is not loaded"; the refresh was refused there, though it is the one registering it."""
    from pipelines.gateway_admin import readiness

    with serve(production_settings(f"sqlite:///{tmp_path / 'log.db'}"), StandInBackend({})) as fresh:
        answer = fresh.get("/readyz")
    assert answer.status_code == 503 and "champion model is not loaded" in answer.text
    assert readiness(answer, "http://gw", awaiting_champion=True) is None  # no champion in the registry: go on
    with pytest.raises(UserError, match=r"not ready \(503\).*champion model is not loaded"):
        readiness(answer, "http://gw", awaiting_champion=False)  # a champion exists: the gateway should have it


def test_the_pre_flight_still_refuses_a_gateway_that_is_down():
    from servers import free_port

    from pipelines.gateway_admin import gateway_ready, wait_ready

    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UserError, match="cannot reach the gateway"):
        gateway_ready(down, awaiting_champion=True)
    started = time.monotonic()
    with pytest.raises(UserError, match="cannot reach the gateway"):  # the hand-over's wait: refused at once
        wait_ready(down, timeout_s=30.0)
    assert time.monotonic() - started < 5


def test_a_fresh_state_dir_has_no_champion(tmp_path, monkeypatch):
    from pipelines.cli.refresh import has_champion
    from pipelines.settings import Settings

    monkeypatch.setenv("NASOPS_HOME", str(tmp_path / "fresh"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert has_champion(Settings(), "m") is False
    assert not (tmp_path / "fresh").exists()  # a look creates nothing

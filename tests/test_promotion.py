"""Promotion and rollback on a real MLflow SQLite registry, including a crash injected between every two steps."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from pipelines.promotion import PROMOTION_TAG, aliases, promote, roll_back

STEPS = ["marked", "previous-champion", "champion", "tagged", "done"]


class Crash(RuntimeError):
    """Stands in for the process dying between two registry writes."""


@pytest.fixture(scope="module")
def registry_db(tmp_path_factory) -> str:
    """One real SQLite registry per module (creating its tables is the slow part); each test its own model."""
    return f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"


class Store(MlflowClient):
    """The registry client plus the name of this test's model."""

    model: str


@pytest.fixture
def store(registry_db, request, tmp_path) -> Store:
    """A registered model with versions 1 (champion), 2 (challenger) and 3 (spare)."""
    client = Store(tracking_uri=registry_db, registry_uri=registry_db)
    client.model = f"model-{request.node.name}"
    client.create_registered_model(client.model)
    for i in range(3):
        client.create_model_version(client.model, source=str(tmp_path / f"model-{i}"))
    client.set_registered_model_alias(client.model, "champion", "1")
    client.set_registered_model_alias(client.model, "challenger", "2")
    return client


def champions(client: Store) -> list[str]:
    """Every version that carries the 'champion' alias (must always be exactly one)."""
    return [str(v) for v in range(1, 4) if "champion" in client.get_model_version(client.model, str(v)).aliases]


def decide(client: Store, **kw):
    return promote(client, client.model, "2", reason="passed every step", verdict="pass", score=100.0,
                   canary_run_id="run-1", **kw)


def test_promotion_moves_aliases_and_tags(store):
    after = decide(store)
    assert after == {"champion": "2", "challenger": None, "previous-champion": "1"}
    tags = store.get_model_version(store.model, "2").tags
    assert tags["nasops.decision"] == "promoted"
    assert tags["nasops.verdict"] == "pass" and tags["nasops.verdict_score"] == "100.0"
    assert tags["nasops.canary_run_id"] == "run-1" and tags["nasops.decision_time"].endswith("+00:00")
    assert tags[PROMOTION_TAG] == "complete"
    assert "rejected" not in tags


@pytest.mark.parametrize("crash_after", STEPS[:-1])
def test_a_crash_between_steps_leaves_one_champion_and_a_rerun_finishes(store, crash_after):
    def progress(step: str) -> None:
        assert champions(store) in (["1"], ["2"]), f"not exactly one champion after {step}"
        if step == crash_after:
            raise Crash(step)

    with pytest.raises(Crash):
        decide(store, progress=progress)
    assert len(champions(store)) == 1
    now = aliases(store, store.model)
    if STEPS.index(crash_after) >= STEPS.index("previous-champion"):
        assert now["previous-champion"] == "1"  # the old champion is reachable from here on
    expected = "complete" if crash_after == "tagged" else "in_progress"
    assert store.get_model_version(store.model, "2").tags[PROMOTION_TAG] == expected
    # Recovery: running the promotion again completes it without losing the old champion.
    assert decide(store) == {"champion": "2", "challenger": None, "previous-champion": "1"}
    assert champions(store) == ["2"]


def test_promoting_twice_does_not_lose_the_previous_champion(store):
    decide(store)
    decide(store)
    assert aliases(store, store.model)["previous-champion"] == "1"


def test_rollback_rejects_and_keeps_the_champion(store):
    after = roll_back(store, store.model, "2", reason="error_rate higher on the challenger", verdict="fail", score=20.0,
                      canary_run_id="run-2")
    assert after == {"champion": "1", "challenger": None, "previous-champion": None}
    tags = store.get_model_version(store.model, "2").tags
    assert tags["nasops.decision"] == "rolled_back"
    assert tags["rejected"] == "error_rate higher on the challenger"
    assert tags["nasops.decision_reason"] == tags["rejected"]
    kept = roll_back(store, store.model, "3", reason="r", verdict="fail", score=0.0, canary_run_id="run-3",
                     keep_challenger_alias=True)
    assert kept["champion"] == "1"


def test_a_rolled_back_version_is_nobodys_candidate_any_more(store):
    """Issue 24: a rolled-back version kept its `candidate-1` alias, so the registry still offered it."""
    store.set_registered_model_alias(store.model, "candidate-1", "2")
    store.set_registered_model_alias(store.model, "candidate-2", "3")
    roll_back(store, store.model, "2", reason="worse", verdict="fail", score=0.0, canary_run_id="run-4")
    assert store.get_model_version(store.model, "2").aliases == []
    assert store.get_model_version(store.model, "3").aliases == ["candidate-2"]  # another version's: kept


def test_the_champion_itself_cannot_be_rolled_back(store):
    with pytest.raises(ValueError, match="is the champion"):
        roll_back(store, store.model, "1", reason="r", verdict="fail", score=0.0, canary_run_id="x")

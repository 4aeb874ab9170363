"""The whole refresh on digits, small budget, against real MLflow, real Prefect and the real gateway over HTTP."""

from __future__ import annotations

import json

import mlflow
import pytest

from pipelines.settings import Settings
from pipelines.tracking import client as tracking_client

pytestmark = pytest.mark.slow


@pytest.fixture
def refresh_result(nasops_home, prefect_server):
    from pipelines.refresh import RefreshConfig, model_refresh

    config = RefreshConfig(
        data="digits",
        seed=7,  # not the default: the seed must reach the split, the search and every training (lineage bug)
        top_k=2,
        # plumbing, not quality: the smallest pool the checks below accept, a few epochs (was 200 and 12)
        search={"pool_size": 100, "budget": 4},
        retrain={"epochs": 4, "patience": 2},
    )
    return model_refresh(config)


def test_refresh_end_to_end(refresh_result, nasops_home):
    from pipelines import registry

    result = json.loads(json.dumps(refresh_result.model_dump(mode="json")))  # plain, serialisable values only
    _renders_the_cli_summary(refresh_result)
    settings = Settings()
    assert result["tracking_uri"] == settings.tracking_uri
    assert (nasops_home / "mlflow.db").exists()
    client = tracking_client(Settings())
    name = result["model_name"]

    # stage 1 + 2: data fingerprint and a real search over a real space
    fp = result["data"]["fingerprint"]
    assert len(fp) == 16
    search = result["search"]
    assert search["space"] == "nb201" and search["evaluations"] >= 1 and search["pool_size"] >= 100
    assert search["candidates"][0]["proxy_scores"]

    # stage 3: baseline champion (first run) and a NAS challenger with lineage tags
    assert result["baseline"]["version"] == "1"
    chall_version = result["challenger"]["version"]
    mv = client.get_model_version(name, chall_version)
    tags = registry.version_tags(mv)
    for key in ("dataset_fingerprint", "code_version", "search_run_id", "arch", "proxy_scores", "seed",
                "classes", "features", "role", "training_run_id", "calibration"):
        assert tags.get(key), f"missing lineage tag nasops.{key}"
    assert tags["dataset_fingerprint"] == fp
    assert tags["arch"] == search["candidates"][0]["arch"] or tags["arch"] in [c["arch"] for c in search["candidates"]]
    assert tags["role"] == "nas"
    assert json.loads(tags["proxy_scores"])
    run = client.get_run(tags["training_run_id"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/learning_curves.png", "evaluation/confusion_matrix.png"} <= artifacts
    assert any(m.key == "val_accuracy" for m in client.get_metric_history(run.info.run_id, "val_accuracy"))
    # the refresh's seed reached every stage: the split, the search, every training and every version's lineage
    assert result["data"]["path"].endswith("-seed7.npz")
    assert client.get_run(search["search_run_id"]).data.params["seed"] == "7"
    for version in registry.list_versions(client, name):
        assert version["tags"]["seed"] == "7", version
        assert client.get_run(version["tags"]["training_run_id"]).data.params["seed"] == "7"
    from pipelines.tracking import Tracking

    with Tracking.open(settings).fluent():  # a refresh leaves no process-global store behind: name it
        model_info = mlflow.models.get_model_info(f"models:/{name}/{chall_version}")
    assert model_info.signature is not None and model_info.saved_input_example_info is not None

    # stage 4: both variants served traffic, a decision was taken, recorded, and the aliases agree with it
    # every retrained candidate is registered once; candidate-1 is the challenger; the tournament ran when >= 2
    candidates = result["challenger"]["candidates"]
    assert candidates[0]["alias"] == "candidate-1" and candidates[0]["version"] == chall_version
    assert len({c["version"] for c in candidates}) == len(candidates) == result["challenger"]["retrained"] == 2
    tournament = result["tournament"]
    assert tournament["error"] is None and tournament["skipped"] is None, tournament  # typed: the keys are always there
    assert {c["alias"] for c in tournament["candidates"]} == {"candidate-1", "candidate-2"}
    for row in tournament["candidates"]:  # each candidate saw the whole replay in shadow, with labels joined
        assert row["requests"] > 0 and row["labelled_rows"] > 0 and row["online_accuracy"] is not None
    assert tournament["winner"]["offline_winner"] == "candidate-1"

    canary = result["canary"]
    assert canary["decision"] in ("promoted", "rolled_back")
    assert canary["online"]["champion"]["requests"] > 0
    assert canary["online"]["challenger"]["requests"] > 0
    # the label-free estimate, from each version's registered calibration map, beside the realised accuracy
    assert all(0 < canary["online"][v]["estimated_accuracy"] <= 1 for v in ("champion", "challenger"))
    decided = registry.version_tags(client.get_model_version(name, chall_version))
    assert decided["decision"] == canary["decision"] and decided["decision_reason"]
    champion = registry.alias_version(client, name, registry.CHAMPION)
    if canary["decision"] == "promoted":
        assert str(champion.version) == chall_version
        assert str(registry.alias_version(client, name, registry.PREVIOUS_CHAMPION).version) == "1"
    else:
        assert str(champion.version) == "1"
        assert client.get_model_version(name, chall_version).tags.get("rejected")
    assert "drift" in canary and 0.0 <= canary["drift"]["share"] <= 1.0
    assert canary["drift"]["distinct_rows"] <= len(canary["online"]) * 10_000  # counted on distinct inputs
    # the refresh run carries the quality figures and the versions, in the model's own experiment; the model is
    # described (issue 24)
    parent = client.get_run(result["refresh_run_id"])
    assert parent.data.metrics["test_accuracy"] == result["challenger"]["test_accuracy"]
    assert "champion.test_accuracy" in parent.data.metrics
    assert chall_version in parent.data.tags["nasops.registered_versions"].split(",")
    assert client.get_experiment(parent.info.experiment_id).name == f"nasops/{name}"
    description = client.get_registered_model(name).description
    assert f"Champion: v{champion.version}" in description and canary["decision"] in description
    canary_artifacts = [a.path for a in client.list_artifacts(canary["canary_run_id"])]
    assert any(p.endswith(".html") for p in _walk(client, canary["canary_run_id"], canary_artifacts))


def _walk(client, run_id, paths):
    out = []
    for path in paths:
        children = client.list_artifacts(run_id, path)
        if children and not (len(children) == 1 and children[0].path == path):
            out.extend(_walk(client, run_id, [c.path for c in children]))
        else:
            out.append(path)
    return out


def _renders_the_cli_summary(result) -> None:
    """What `nasops refresh` prints at the end renders from the typed result (a crash here once ended make demo)."""
    from rich.console import Console

    from pipelines.summary import refresh_details, refresh_table

    console = Console(record=True, width=120)
    console.print(refresh_table(result))
    for line in refresh_details(result):
        console.print(line)
    text = console.export_text()
    assert "architecture found" in text and "decision" in text and result.challenger.arch in text.replace("\n", "")

"""Shadow tournament: real registry (SQLite), real gateway over HTTP, real replay with feedback.

Candidates are real trained models with known, clearly different accuracies; their offline (validation) accuracy
tags are set so the offline winner is the worst model online, which the tournament must report as a winner that
falls behind, with the rank correlations that ordering implies.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest
from fixtures_registry import build_registry, register_version
from mlflow.tracking import MlflowClient
from support_models import FlakyModel, SlowModel, digits_data, linear_classifier, mlp_classifier, train_small

from monitoring.prediction_log import create_log_engine, read_predictions
from nas.data import TaskData
from pipelines.errors import UserError
from pipelines.settings import Settings
from pipelines.tournament import TournamentConfig, analyse, mcnemar_exact, parse_config, run_tournament
from pipelines.tracking import client as tracking_client
from serving.config import GatewaySettings
from serving.server import start_gateway


def _prepared_digits(path) -> str:
    x_tr, y_tr, x_te, y_te = digits_data()
    data = TaskData(x_tr, y_tr, x_te[:100], y_te[:100], (64,), 10, x_test=x_te, y_test=y_te, x_prod=x_te,
                    y_prod=y_te, meta={"classes": list(range(10))})
    return str(data.save(path / "digits.npz"))


def _tag(reg, version: str, **tags) -> None:
    client = MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(reg.model_name, version, f"nasops.{key}", str(value))


@pytest.mark.slow  # trains and registers models
def test_tournament_reports_a_winner_that_falls_behind(nasops_home):
    reg = build_registry(nasops_home, challenger=None)
    x_tr, y_tr, _, _ = digits_data()
    bad = train_small(linear_classifier(seed=5), x_tr, y_tr, steps=2, lr=0.01)
    good = train_small(mlp_classifier(seed=2), x_tr, y_tr, steps=80)
    mid = train_small(linear_classifier(seed=6), x_tr, y_tr, steps=12)
    # offline ranking (validation accuracy tags): bad 1st, good 2nd, mid 3rd
    for alias, module, val in (("candidate-1", bad, 0.99), ("candidate-2", good, 0.95), ("candidate-3", mid, 0.90)):
        version = register_version(reg.tracking_uri, reg.model_name, module, alias=alias, role="candidate")
        _tag(reg, version, val_accuracy=val, latency_ms=0.1)
    data_path = _prepared_digits(nasops_home)

    output = run_tournament(reg.model_name, data_path, {"rate": 200, "max_rows": 300})

    report = json.loads(json.dumps(output.model_dump(mode="json")))  # strict JSON, read as --json readers do
    by_alias = {c["alias"]: c for c in report["candidates"]}
    assert list(by_alias) == ["candidate-1", "candidate-2", "candidate-3"]
    for cand in by_alias.values():
        assert cand["labelled_rows"] == 300, cand  # every candidate saw and was labelled on every row
        assert cand["online_latency_ms"] is not None and cand["online_latency_ms"] > 0
    acc = {a: c["online_accuracy"] for a, c in by_alias.items()}
    assert acc["candidate-2"] > acc["candidate-3"] > acc["candidate-1"], acc
    assert [by_alias[a]["offline_rank"] for a in by_alias] == [1, 2, 3]
    assert [by_alias[a]["online_rank"] for a in by_alias] == [3, 1, 2]
    # offline ranks [1, 2, 3] vs online [3, 1, 2]: rho = 1 - 6 * 6 / 24 = -0.5, tau = (1 - 2) / 3
    assert report["accuracy_correlation"]["spearman"] == pytest.approx(-0.5)
    assert report["accuracy_correlation"]["kendall_tau"] == pytest.approx(-1 / 3)
    winner = report["winner"]
    assert winner["offline_winner"] == "candidate-1" and winner["online_winner"] == "candidate-2"
    assert winner["falls_behind"] and winner["significant"]
    assert winner["gap"] == pytest.approx(acc["candidate-2"] - acc["candidate-1"])
    assert winner["test"]["test"] == "mcnemar_exact" and winner["test"]["p_value"] < 1e-6
    assert report["champion"]["requests"] == report["replay"]["ok"] > 0  # every caller served by the champion
    # the evidence is in MLflow: plot, table, report, headline metrics
    client = MlflowClient(tracking_uri=reg.tracking_uri)
    run = client.get_run(report["tournament_run_id"])
    assert run.data.tags["nasops.winner_falls_behind"] == "true"
    assert run.data.metrics["spearman"] == pytest.approx(-0.5)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "tournament")}
    assert {"tournament/offline_vs_online.png", "tournament/table.json", "tournament/report.json"} <= artifacts


def _frame(correct: dict[str, list[bool]], latency: dict[str, float]) -> pd.DataFrame:
    rows = []
    for variant, flags in correct.items():
        for i, ok in enumerate(flags):
            rows.append({"request_id": f"r{i}", "row": 0, "variant": variant, "status": "ok", "correct": ok,
                         "latency_ms": latency[variant], "shadow": variant != "champion"})
    return pd.DataFrame(rows)


def test_analyse_when_the_offline_ranking_holds():
    rng = np.random.default_rng(0)
    correct = {v: list(rng.random(400) < p) for v, p in
               (("champion", 0.8), ("candidate-1", 0.95), ("candidate-2", 0.85), ("candidate-3", 0.6))}
    frame = _frame(correct, {"champion": 1.0, "candidate-1": 3.0, "candidate-2": 2.0, "candidate-3": 1.0})
    cands = [{"alias": f"candidate-{i}", "version": str(i), "val_accuracy": v, "offline_latency_ms": lat}
             for i, v, lat in ((1, 0.97, 0.3), (2, 0.9, 0.2), (3, 0.7, 0.1))]
    output = analyse(frame, cands, {"alias": "champion", "version": "9"})
    report = output.model_dump()
    assert report["accuracy_correlation"]["spearman"] == pytest.approx(1.0)
    assert report["accuracy_correlation"]["kendall_tau"] == pytest.approx(1.0)
    assert report["latency_correlation"]["spearman"] == pytest.approx(1.0)
    assert report["winner"] == {"offline_winner": "candidate-1", "online_winner": "candidate-1",
                                "falls_behind": False, "significant": False, "gap": 0.0, "test": None,
                                "winner_vs_champion_gap": pytest.approx(report["candidates"][0]["online_accuracy"]
                                                                        - report["champion"]["online_accuracy"])}
    from pipelines.tournament import summary_line

    line = summary_line(output)  # the refresh summary's tournament line
    assert line.endswith("offline winner candidate-1 also wins online") and "Spearman 1.00" in line


def test_mcnemar_counts_only_discordant_pairs():
    a = np.array([True] * 30 + [False] * 2 + [True] * 60)
    b = np.array([False] * 30 + [True] * 2 + [True] * 60)
    result = mcnemar_exact(a, b)
    assert (result.only_first_correct, result.only_second_correct) == (30, 2)
    assert result.p_value < 1e-5
    assert mcnemar_exact(a, a).p_value == 1.0


@pytest.mark.slow  # trains and registers models
def test_config_mistakes_are_user_errors(nasops_home):
    with pytest.raises(UserError, match="rate"):
        parse_config({"rate": -1})
    with pytest.raises(UserError, match="ratee"):
        parse_config({"ratee": 10})
    assert parse_config(None) == TournamentConfig()
    data_path = _prepared_digits(nasops_home)
    reg = build_registry(nasops_home / "reg", challenger=None)
    with pytest.raises(UserError, match="at least 2 candidate aliases"):
        run_tournament(reg.model_name, data_path, {})


@pytest.mark.slow  # trains and registers models
def test_shadow_aliases_never_affect_the_caller(tmp_path):
    reg = build_registry(tmp_path / "reg", challenger=None)
    x_tr, y_tr, _, _ = digits_data()
    inner = train_small(linear_classifier(seed=3), x_tr, y_tr, steps=20)
    register_version(reg.tracking_uri, reg.model_name, FlakyModel(inner, period=1), alias="candidate-1")  # raises
    register_version(reg.tracking_uri, reg.model_name, SlowModel(inner, delay_s=0.2), alias="candidate-2")
    register_version(reg.tracking_uri, reg.model_name, inner, alias="candidate-3")
    settings = reg.gateway_settings(challenger_weight=0.0, shadow_aliases=["candidate-1", "candidate-2", "candidate-3"],
                                    challenger_timeout_s=0.05, shadow_max_in_flight=4,
                                    feedback_token="tournament-feedback-token-0123456789-abcdefghij",
                                    admin_token="tournament-admin-token-0123456789-abcdefghij")
    rows = reg.x_test[:40]
    with start_gateway(settings) as gw, httpx.Client(base_url=gw.url, timeout=30) as client:
        assert set(client.get("/readyz").json()["versions"]) >= {"champion", "candidate-1", "candidate-2"}
        answers = [client.post("/predict", json={"inputs": [r.tolist()]}) for r in rows]
        assert all(a.status_code == 200 for a in answers)
        assert {a.json()["variant"] for a in answers} == {"champion"}
        labels = [{"request_id": a.json()["request_id"], "labels": [int(y)]}
                  for a, y in zip(answers, reg.y_test[:40], strict=True)]
        assert client.post("/feedback", json=labels, headers={
            "Authorization": "Bearer tournament-feedback-token-0123456789-abcdefghij"}).status_code == 200
        metrics = client.get("/metrics").text
        # hot reload follows the shadow aliases too
        MlflowClient(tracking_uri=reg.tracking_uri).set_registered_model_alias(reg.model_name, "candidate-3",
                                                                               reg.champion_version)
        admin = {"Authorization": "Bearer tournament-admin-token-0123456789-abcdefghij"}
        state = client.post("/admin/reload", headers=admin).json()
        assert state["shadow_models"]["candidate-3"]["version"] == reg.champion_version
    frame = read_predictions(create_log_engine(reg.prediction_log_url))
    shadow = frame[frame["shadow"].astype(bool)]
    assert set(shadow["variant"]) <= {"candidate-1", "candidate-2", "candidate-3"}
    flaky = shadow[shadow["variant"] == "candidate-1"]
    assert "error" in set(flaky["status"]) and "ok" not in set(flaky["status"])
    slow = shadow[shadow["variant"] == "candidate-2"]
    assert len(slow) > 0 and set(slow["status"]) == {"timeout"}
    good = shadow[shadow["variant"] == "candidate-3"]
    assert len(good) > 0 and good["correct"].notna().all()  # feedback reached the shadow rows
    assert 'variant="candidate-3"' in metrics and 'variant="candidate-1"' in metrics


def test_shadow_aliases_setting_parses_env(monkeypatch):
    monkeypatch.setenv("NASOPS_GATEWAY_SHADOW_ALIASES", "candidate-1, candidate-2")
    assert GatewaySettings().shadow_aliases == ["candidate-1", "candidate-2"]
    monkeypatch.setenv("NASOPS_GATEWAY_SHADOW_ALIASES", '["a", "b"]')
    settings = GatewaySettings()
    assert settings.shadow_aliases == ["a", "b"]
    assert json.loads(settings.to_env()["NASOPS_GATEWAY_SHADOW_ALIASES"]) == ["a", "b"]
    with pytest.raises(ValueError, match="collide"):
        GatewaySettings(shadow_aliases=["challenger"])


@pytest.mark.slow  # trains and registers models
def test_retrain_registers_every_candidate_once_with_ranked_aliases(nasops_home):
    import mlflow

    from pipelines import registry
    from pipelines.config import RetrainConfig
    from pipelines.contracts import Candidate, Lineage, RetrainInput, SearchOutput
    from pipelines.data import DataSpec, prepare
    from pipelines.retrain import retrain_and_register
    from pipelines.tracking import configure_mlflow

    settings = Settings()
    configure_mlflow(settings)
    prepared = prepare(DataSpec(source="digits", max_rows=300), settings.data_dir)
    archs = ["depth=1|widths=32|act=relu|norm=none|dropout=0|residual=0",
             "depth=2|widths=64-32|act=relu|norm=none|dropout=0|residual=0",
             "depth=1|widths=32|act=tanh|norm=none|dropout=0|residual=0"]
    search = SearchOutput(
        search_run_id="s1", space="mlp", space_config={}, input_shape=[64], num_classes=10, pool_size=3,
        evaluations=3, seconds=0.0, prefilter_seconds=0.0, journal="",
        candidates=[Candidate(arch=a, val_accuracy=0.5, proxy_scores={"synflow": 1.0}) for a in archs])
    lineage = Lineage(dataset_fingerprint=prepared.fingerprint, data_source="digits", refresh_run_id="r")
    inputs = RetrainInput(data=prepared, search=search, model_name=settings.model_name, lineage=lineage)
    with mlflow.start_run(run_name="refresh"):
        out = retrain_and_register(inputs, RetrainConfig(epochs=2, top_k=3)).model_dump()
    client = tracking_client(Settings())
    cands = out["candidates"]
    assert [c["alias"] for c in cands] == ["candidate-1", "candidate-2", "candidate-3"]
    assert len({c["version"] for c in cands}) == 3 == len(registry.list_versions(client, settings.model_name))
    assert [c["val_accuracy"] for c in cands] == sorted((c["val_accuracy"] for c in cands), reverse=True)
    assert out["version"] == cands[0]["version"]  # backward compatible: the challenger is the offline winner
    assert str(registry.alias_version(client, settings.model_name, "challenger").version) == cands[0]["version"]
    for rank, cand in enumerate(cands, start=1):
        mv = registry.alias_version(client, settings.model_name, cand["alias"])
        tags = registry.version_tags(mv)
        assert str(mv.version) == cand["version"] and tags["tournament_rank"] == str(rank)
        assert tags["role"] == ("nas" if rank == 1 else "candidate")
        assert tags["dataset_fingerprint"] == prepared.fingerprint and tags["search_run_id"] == "s1"
    # a later refresh with a smaller k drops the stale candidate-3 alias
    with mlflow.start_run(run_name="refresh-2"):
        retrain_and_register(inputs, RetrainConfig(epochs=1, top_k=2))
    aliases = client.get_registered_model(settings.model_name).aliases
    assert {"candidate-1", "candidate-2"} <= set(aliases) and "candidate-3" not in aliases

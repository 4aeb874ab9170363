"""The refresh's NAS stage as a real Prefect flow with a real MLflow SQLite store (tiny budgets)."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pipelines.config import SearchStageConfig
from pipelines.contracts import PreparedData, SearchInput, SearchOutput
from pipelines.errors import UserError
from pipelines.nas_stage import parse_config, resolve_space, search_architectures

TINY = {"pool_size": 12, "prefilter_keep": 4, "budget": 3, "warm_start": 2,
        "fidelity": {"epochs": 1, "data_fraction": 0.3}, "workers": 2, "top_k": 2, "seed": 0}


@pytest.fixture(scope="module")
def digits_path(tmp_path_factory):
    from nas.datasets import bundled_task

    path = tmp_path_factory.mktemp("data") / "digits.npz"
    bundled_task("digits", seed=0).save(path)
    return str(path)


def _inputs(path: str) -> SearchInput:
    data = PreparedData(path=path, fingerprint="digits-test", source="digits", input_shape=[1, 8, 8],
                        num_classes=10, classes=list(range(10)), feature_names=[])
    return SearchInput(data=data)


def test_config_errors_name_the_key_and_the_choices():
    with pytest.raises(UserError, match=r"unknown key 'budgett' \(valid: space, space_config"):
        parse_config({"budgett": 3})
    with pytest.raises(UserError, match="unknown strategy 'bayes'; choose one of: random, evolution"):
        parse_config({"strategy": "bayes"})
    with pytest.raises(UserError, match="budget"):
        parse_config({"budget": 0})
    with pytest.raises(UserError, match="unknown fidelity keys"):
        parse_config({"fidelity": {"epoch": 2}})
    assert parse_config(None) == SearchStageConfig()


def test_flat_data_gets_the_tabular_space_and_weight_sharing_the_mlp_space():
    cfg = parse_config({})
    assert resolve_space(cfg, (1, 8, 8)).name == "nb201"
    assert resolve_space(cfg, (64,)).name == "tabular"  # the papers' space (issue 23)
    assert resolve_space(parse_config({"fidelity": "supernet"}), (64,)).name == "mlp"  # what a supernet knows
    assert resolve_space(parse_config({"strategy": "darts"}), (64,)).name == "mlp"
    with pytest.raises(UserError, match="cannot take inputs"):
        resolve_space(parse_config({"space": "nb201"}), (1, 2, 2))


def test_an_explicit_image_space_on_tabular_data_is_an_error_not_a_silent_swap():
    """Defect: `--space nb201` on tabular data silently ran `mlp`."""
    with pytest.raises(UserError, match="'nb201' cannot take inputs shaped \\(64,\\)"):
        resolve_space(parse_config({"space": "nb201"}), (64,))


def test_an_unknown_space_is_refused_when_the_config_is_read():
    with pytest.raises(UserError, match="unknown search space 'foo'; choose one of: mlp, nb201"):
        parse_config({"space": "foo"})


def _check(result: SearchOutput, budget: int) -> None:
    assert isinstance(result, SearchOutput)
    out = result.model_dump(mode="json")
    assert set(out) >= {"search_run_id", "space", "space_config", "input_shape", "num_classes", "pool_size",
                        "evaluations", "seconds", "candidates"}
    assert out["space"] == "nb201" and out["space_config"] == {"C": 8, "N": 1}
    assert out["input_shape"] == [1, 8, 8] and out["num_classes"] == 10
    assert out["evaluations"] == budget and len(out["candidates"]) == 2
    assert result.best.arch == out["candidates"][0]["arch"]
    assert out["candidates"][0]["val_accuracy"] >= out["candidates"][1]["val_accuracy"]
    for cand in out["candidates"]:
        assert cand["arch"].startswith("|") and cand["params"] > 0 and cand["latency_ms"] > 0
        assert cand["fidelity"] == {"epochs": 1, "data_fraction": 0.3}
    json.dumps(out)  # plain JSON


@pytest.mark.slow
def test_flow_logs_a_search_run_with_nested_evaluations(prefect_server, nasops_home, digits_path):
    from pipelines.tracking import configure_mlflow

    configure_mlflow()
    with mlflow.start_run(run_name="refresh") as parent:
        out = search_architectures(_inputs(digits_path), {**TINY, "strategy": "predictor"})
    _check(out, 3)
    client = MlflowClient()
    out = out.model_dump()
    search = client.get_run(out["search_run_id"])
    assert search.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert search.data.metrics["evaluations"] == 3
    children = client.search_runs([search.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{out['search_run_id']}'")
    assert len(children) == 3
    assert {c.data.tags["nasops.arch"] for c in children} >= {c["arch"] for c in out["candidates"]}
    assert all("val_accuracy" in c.data.metrics and "latency_ms" in c.data.metrics for c in children)
    plots = {f.path for f in client.list_artifacts(out["search_run_id"], "plots")}
    assert {"plots/search_trajectory.png", "plots/pareto_front.png", "plots/proxy_vs_accuracy.png"} <= plots


@pytest.mark.slow
def test_flow_on_a_two_worker_dask_cluster(prefect_server, nasops_home, digits_path):
    from pipelines.tracking import configure_mlflow

    configure_mlflow()
    out = search_architectures(_inputs(digits_path), {**TINY, "strategy": "evolution", "runner": "dask"})
    _check(out, 3)
    run = MlflowClient().get_run(out.search_run_id)
    assert run.data.params["runner"] == "dask"
    assert "mlflow.parentRunId" not in run.data.tags  # no active run: a top-level search run


@pytest.mark.slow
def test_impossible_constraints_are_a_clear_error(prefect_server, nasops_home, digits_path):
    with pytest.raises(UserError, match="no evaluated architecture meets the constraints"):
        search_architectures(_inputs(digits_path), {**TINY, "budget": 2, "max_latency_ms": 1e-6, "strategy": "random"})


def test_a_compound_scaled_refresh_searches_a_table_in_the_mlp_space():
    from pipelines.config import RefreshConfig

    scaled = RefreshConfig(retrain={"scale_phis": [1.0]})
    assert resolve_space(scaled.search, (64,)).name == "mlp"  # compound scaling knows mlp, not tabular
    assert resolve_space(RefreshConfig().search, (64,)).name == "tabular"


def test_a_resumed_search_reads_its_pre_filter_back_instead_of_scoring_the_pool_again(tmp_path, monkeypatch):
    """Issue 24: a resumed refresh's search stage scored its whole pool again (benchmarks/resume_cost.py: 11 s of
    a ~100 s stage). The survivors and their scores are kept beside the journal and read back when the space, the
    data and the pre-filter's settings are the same; other settings score anew."""
    import pipelines.nas_stage as stage
    from nas.datasets import bundled_task
    from pipelines.config import SearchStageConfig

    data = bundled_task("digits", seed=0)
    cfg = SearchStageConfig(space="mlp", pool_size=6, prefilter_keep=3, seed=0, workers=1)
    space = stage.resolve_space(cfg, data.input_shape)
    cache = tmp_path / "search.pool.json"
    pool, scores = stage.zero_cost_pool(space, data, cfg, cache=cache)
    scored_again = []
    real = stage._score_pool
    monkeypatch.setattr(stage, "_score_pool", lambda *a, **k: scored_again.append(1) or real(*a, **k))
    again, again_scores = stage.zero_cost_pool(space, data, cfg, cache=cache)
    assert not scored_again and [a.string for a in again] == [a.string for a in pool] and again_scores == scores
    stage.zero_cost_pool(space, data, cfg.model_copy(update={"seed": 1}), cache=cache)
    assert scored_again == [1]  # another seed: another pool, scored

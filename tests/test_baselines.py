"""Baselines as contenders (issue 23): LightGBM and a linear model fitted on a table's split inside the networks'
preprocessing, served through the same module seam, ranked with the NAS finalists, and the NAS winner measured
against the best one with a paired bootstrap interval on the test rows.

The cheap layer: tiny synthetic tables in memory (fits take milliseconds). The slow test at the end runs a small
tabular refresh and serves a baseline version from the real MLflow registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from monitoring.core.tasks import get_task
from nas.data import TaskData
from nas.estimator_module import EstimatorModule
from pipelines.baselines import (
    EARLY_STOPPING_ROUNDS,
    LIGHTGBM_MAX_ROUNDS,
    evaluate_module,
    fit_lightgbm,
    fit_linear,
    headline_metric,
    is_tabular,
    paired_bootstrap_ci,
    rank_contenders,
    served,
)
from pipelines.contracts import BaselineGap, Contender, OfflineMetrics


def table(rows: int = 400, classes: int = 3, seed: int = 0, regression: bool = False) -> TaskData:
    """A table whose label is a noisy function of two of five features, split 60/20/20, raw (unstandardised)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=5.0, scale=3.0, size=(rows, 5)).astype(np.float32)
    signal = x[:, 0] - 0.5 * x[:, 1] + rng.normal(scale=0.5, size=rows)
    if regression:
        y = (10 * signal + 100).astype(np.float32)
    else:
        y = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, classes + 1)[1:-1])).astype(np.int64)
    a, b = int(rows * 0.6), int(rows * 0.8)
    mean, std = x[:a].mean(0), x[:a].std(0)
    meta = {"task": "regression"} if regression else {"classes": [f"c{i}" for i in range(classes)]}
    return TaskData(x[:a], y[:a], x[a:b], y[a:b], (5,), 1 if regression else classes, x[b:], y[b:],
                    meta=meta, feature_mean=mean, feature_std=std)


@pytest.mark.parametrize("fit", [fit_lightgbm, fit_linear])
def test_a_baseline_fits_and_answers_probabilities_of_the_same_classes(fit):
    data = table()
    estimator, info = fit(data, 0)
    module = served(estimator, data)
    with torch.inference_mode():
        logits = module(torch.from_numpy(data.x_test))
    probs = torch.softmax(logits, dim=1).numpy()  # what serving.models.LoadedModel.predict_proba does
    assert probs.shape == (len(data.x_test), data.num_classes)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # the module standardises raw rows itself: the same probabilities as the estimator on standardised rows
    np.testing.assert_allclose(probs, estimator.predict_proba(data.standardize(data.x_test)), atol=1e-5)
    assert (probs.argmax(1) == data.y_test).mean() > 0.6  # learnt, not chance (1/3)
    assert info["params"] > 0 and info["arch"]


@pytest.mark.slow  # the heaviest of the fast layer (keeps `make test-fast` under its 90 s)
def test_lightgbm_stops_early_on_the_validation_split():
    data = table(rows=600)
    estimator, info = fit_lightgbm(data, 0)
    assert 1 <= info["best_iteration"] < LIGHTGBM_MAX_ROUNDS - EARLY_STOPPING_ROUNDS
    assert estimator.best_iteration_ == info["best_iteration"]
    assert "valid_0" in estimator.evals_result_  # stopped on the validation rows, not the training rows
    assert estimator.get_params()["n_jobs"] == 1  # served a row at a time: no OpenMP pool per call
    assert info["arch"] == f"lightgbm(defaults, {info['best_iteration']} rounds by early stopping)"


def test_a_class_missing_from_the_training_rows_keeps_its_column_at_zero():
    data = table(classes=3)
    keep = data.y_train != 2
    data = TaskData(data.x_train[keep], data.y_train[keep], data.x_val, data.y_val, (5,), 3, data.x_test,
                    data.y_test, meta=data.meta, feature_mean=data.feature_mean, feature_std=data.feature_std)
    estimator, _ = fit_linear(data, 0)
    with torch.inference_mode():
        probs = torch.softmax(served(estimator, data)(torch.from_numpy(data.x_test)), dim=1).numpy()
    assert probs.shape[1] == 3 and probs[:, 2].max() < 1e-9 and np.isfinite(probs).all()


@pytest.mark.parametrize("fit", [fit_lightgbm, fit_linear])
def test_a_regression_baseline_answers_values_in_the_targets_units(fit):
    data = table(regression=True)
    estimator, _ = fit(data, 0)
    module = served(estimator, data)
    with torch.inference_mode():
        out = module(torch.from_numpy(data.x_test))
    assert out.shape == (len(data.x_test), 1)
    metrics = evaluate_module(module, data, get_task("regression"))
    assert metrics["test_rmse"] < 0.5 * float(np.std(data.y_test))  # in units, and far better than the mean
    assert metrics["val_neg_rmse"] == pytest.approx(-metrics["val_rmse"])


def test_baselines_are_for_tables_only():
    assert is_tabular([12]) and not is_tabular([1, 8, 8])


def test_the_estimator_module_pickles_and_runs_like_a_network(tmp_path):
    """mlflow.pytorch logs a float-matrix model with torch.save; the module must survive it."""
    data = table()
    module = served(fit_lightgbm(data, 0)[0], data)
    torch.save(module, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    assert isinstance(loaded, EstimatorModule) and loaded.num_features == 5
    x = torch.from_numpy(data.x_test[:4])
    torch.testing.assert_close(loaded(x), module(x))


# -- ranking -------------------------------------------------------------------------------------------------------

def _c(version: str, kind: str, score: float) -> Contender:
    return Contender(version=version, model_kind=kind, arch=kind, run_id="r", score=score, offline=OfflineMetrics())


def test_baselines_rank_with_the_nas_finalists_and_a_tie_keeps_nas_ahead():
    nas = [_c("5", "nas", 0.90), _c("6", "nas", 0.85)]
    bases = [_c("3", "baseline-linear", 0.85), _c("2", "baseline-lightgbm", 0.93)]
    assert [c.version for c in rank_contenders(nas, bases)] == ["2", "5", "6", "3"]
    assert [c.version for c in rank_contenders(nas, [])] == ["5", "6"]
    # a missing score ranks last
    assert rank_contenders(nas, [_c("9", "baseline-linear", float("nan"))])[-1].version == "9"


def test_the_nas_order_of_a_pareto_ranking_is_kept():
    """A scaled family's Pareto order is not by score: a baseline goes before the first model it out-scores."""
    nas = [_c("5", "nas", 0.88), _c("6", "nas", 0.91)]
    assert [c.version for c in rank_contenders(nas, [_c("2", "baseline-lightgbm", 0.89)])] == ["2", "5", "6"]
    assert [c.version for c in rank_contenders(nas, [_c("2", "baseline-lightgbm", 0.87)])] == ["5", "6", "2"]


# -- the paired interval -------------------------------------------------------------------------------------------

def test_identical_models_differ_by_exactly_nothing():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    out = rng.normal(size=(200, 3))
    assert paired_bootstrap_ci(y, out, out, headline_metric(get_task("classification"))) == (0.0, 0.0, 0.0)


def test_the_paired_interval_excludes_zero_for_a_clear_winner_and_matches_the_normal_approximation():
    rng = np.random.default_rng(1)
    n = 2000
    y = rng.integers(0, 2, n)
    right = np.eye(2)[y]
    a = np.where(rng.random(n)[:, None] < 0.85, right, 1 - right)  # 85 % correct
    b = np.where(rng.random(n)[:, None] < 0.80, right, 1 - right)  # 80 % correct, independent errors
    diff, low, high = paired_bootstrap_ci(y, a, b, headline_metric(get_task("classification")), seed=3)
    d = (a.argmax(1) == y).astype(float) - (b.argmax(1) == y)
    half = 1.96 * d.std(ddof=1) / np.sqrt(n)  # the paired (per-row difference) normal interval
    assert diff == pytest.approx(d.mean())
    assert low > 0 and low == pytest.approx(diff - half, abs=0.006) and high == pytest.approx(diff + half, abs=0.006)


def test_the_interval_of_a_regression_is_on_the_rmse():
    rng = np.random.default_rng(2)
    y = rng.normal(size=500)
    close, far = y + rng.normal(scale=0.5, size=500), y + rng.normal(scale=1.0, size=500)
    diff, low, high = paired_bootstrap_ci(y, close[:, None], far[:, None], headline_metric(get_task("regression")))
    assert diff < 0 and low < diff < high < 0  # the NAS side's RMSE is lower: negative difference


def test_the_gap_reads_the_same_in_the_summary_and_in_status():
    from pipelines.summary import gap_line, gap_short

    gap = BaselineGap(nas_version="7", baseline_version="3", baseline_kind="baseline-lightgbm",
                      metric="test_accuracy", nas_value=0.91, baseline_value=0.93, advantage=-0.02, low=-0.035,
                      high=-0.005, rows=450, resamples=2000, p_value=0.01)
    assert gap.verdict == "trails"
    line = gap_line(gap)
    for needle in ("v7 trails the best baseline (baseline-lightgbm v3)", "accuracy", "-0.0200",
                   "95% CI -0.0350 … -0.0050", "paired bootstrap", "450 rows", "McNemar p 0.01"):
        assert needle in line, line
    assert gap_short(gap.model_dump_json()) == "trails -0.020 [-0.035, -0.005]"
    assert gap.model_copy(update={"low": -0.01, "high": 0.02}).verdict == "ties"
    assert gap_short(None) == "" and gap_short("not json") == ""


def test_the_summary_says_when_a_baseline_is_the_challenger():
    from test_typed_outputs import _render, _result

    from pipelines.summary import refresh_details, refresh_table

    result = _result()
    gap = BaselineGap(nas_version="5", baseline_version="3", baseline_kind="baseline-lightgbm",
                      metric="test_accuracy", nas_value=0.88, baseline_value=0.92, advantage=-0.04, low=-0.06,
                      high=-0.02, rows=300, resamples=2000)
    ranking = [_c("3", "baseline-lightgbm", 0.93), _c("5", "nas", 0.90), _c("4", "baseline-linear", 0.80)]
    result.challenger = result.challenger.model_copy(update={
        "version": "3", "model_kind": "baseline-lightgbm", "nas_version": "5", "ranking": ranking,
        "versus_baseline": gap})
    lines = "\n".join(refresh_details(result))
    assert "1. v3 baseline-lightgbm" in lines and "2. v5 nas" in lines
    assert "NAS winner v5 trails the best baseline (baseline-lightgbm v3)" in lines
    assert "baseline-lightgbm v3: a baseline ranked above the NAS winner (v5)" in lines
    assert "baseline-lightgbm" in _render(refresh_table(result))  # the challenger's kind in the table


@pytest.mark.slow
def test_a_float_matrix_baseline_is_registered_pickled_and_served(tmp_path):
    """MLflow's default pytorch serialization (torch.export) cannot trace a call into LightGBM: a baseline on a
    plain numeric table must be pickled, and the gateway's loader must answer through the one path."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from pipelines import registry
    from serving.models import load_version

    data = table()
    module = served(fit_lightgbm(data, 0)[0], data)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = MlflowClient(uri, uri).create_experiment("flat-baseline")  # not a global left by another test
    try:
        with mlflow.start_run(experiment_id=experiment):
            version = registry.log_and_register(module, model_name="flat", num_classes=3,
                                                input_example=data.x_val[:2], tags={"classes": [0, 1, 2]})
    finally:
        mlflow.set_tracking_uri("")
        mlflow.set_registry_uri("")
    loaded = load_version(MlflowClient(uri, uri), "flat", "champion", version)
    probs = loaded.predict_proba(data.x_test)
    with torch.inference_mode():
        expected = torch.softmax(module(torch.from_numpy(data.x_test)), dim=1).numpy()
    assert loaded.n_features == 5 and loaded.classes == [0, 1, 2]
    np.testing.assert_allclose(probs, expected, atol=1e-6)


# -- a small tabular refresh: the baselines are registered, tagged and served --------------------------------------

@pytest.fixture(scope="module")
def refreshed(tmp_path_factory, prefect_api_env) -> dict:
    from servers import require_slow
    from test_raw_tables import raw_table, write_csv

    require_slow("runs a whole refresh (trains and registers models)")
    root = tmp_path_factory.mktemp("baseline-refresh")
    csv = write_csv(raw_table(rows=400), root / "customers.csv")
    env = {**os.environ, "NASOPS_HOME": str(root / "home"), **prefect_api_env}
    for leaked in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"):
        env.pop(leaked, None)
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli.app", "refresh", "--data", csv, "--target", "label",
                           "--model-name", "shop", "--pool-size", "40", "--budget", "3", "--epochs", "3",
                           "--top-k", "2", "--seed", "1", "--skip-tournament", "--skip-canary", "--json"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"home": root / "home", "env": env, "result": json.loads(proc.stdout)}


@pytest.mark.slow
def test_a_table_refresh_registers_ranks_and_serves_its_baselines(refreshed):
    from mlflow.tracking import MlflowClient

    from pipelines import registry
    from serving.registry_backend import MlflowRegistryBackend

    result, home = refreshed["result"], refreshed["home"]
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = {v["version"]: v for v in registry.list_versions(client, "shop")}
    kinds = sorted(v["tags"].get("model_kind") for v in versions.values())
    assert kinds == ["baseline-lightgbm", "baseline-linear", "baseline-mlp", "nas", "nas"], kinds
    base = {m["model_kind"]: m for m in result["baselines"]["models"]}
    lgbm = versions[base["baseline-lightgbm"]["version"]]
    for key in ("dataset_fingerprint", "code_version", "refresh_run_id", "seed", "classes", "features", "input_schema",
                "training_run_id", "test_accuracy", "boosting_rounds"):
        assert lgbm["tags"].get(key), f"missing nasops.{key} on the LightGBM version"
    assert lgbm["tags"]["input_form"] == "table" and lgbm["tags"]["role"] == "baseline"
    # the first champion is the best baseline; the challenger the best model overall that is not champion
    chall = result["challenger"]
    ranking = chall["ranking"]
    assert {c["model_kind"] for c in ranking} == {"nas", "baseline-lightgbm", "baseline-linear"}
    assert result["baseline"]["model_kind"] in ("baseline-lightgbm", "baseline-linear", "baseline-mlp")
    champion = str(registry.alias_version(client, "shop", registry.CHAMPION).version)
    assert champion == result["baseline"]["version"]
    assert result["baseline"]["score"] >= max(m["score"] for m in result["baselines"]["models"])
    assert chall["version"] == next(c["version"] for c in ranking if c["version"] != champion)
    assert str(registry.alias_version(client, "shop", registry.CHALLENGER).version) == chall["version"]
    # the NAS winner against the best baseline, paired on the test rows: in the result, on the version
    gap = chall["versus_baseline"]
    assert gap["nas_version"] == chall["nas_version"] and gap["low"] <= gap["advantage"] <= gap["high"]
    assert gap["rows"] == result["data"]["rows"]["test"]
    nas_mv = client.get_model_version("shop", chall["nas_version"])
    assert json.loads(nas_mv.tags["nasops.vs_best_baseline"])["baseline_version"] == gap["baseline_version"]
    assert "best baseline" in nas_mv.description and "CI" in nas_mv.description
    # the gateway's own backend loads the LightGBM version from the registry and answers through the one path
    served_model = MlflowRegistryBackend(uri, "shop").load("challenger", lgbm["version"], "challenger")
    records = [{"color": "red", "size": 1.2, "weight": 0.1, "member": True},
               {"color": None, "weight": -0.3, "member": False}]
    probs = served_model.predict_proba(records)
    assert probs.shape == (2, 2) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert set(served_model.labels(probs)) <= {"yes", "no"}
    # `nasops status` names each version's kind and the NAS winner's gap
    from support_cli import nasops

    out = nasops("status", "--model-name", "shop", home=home, env={"COLUMNS": "200"}).stdout
    assert "baseline-lightgbm" in out and "baseline-linear" in out and "vs best baseline" in out

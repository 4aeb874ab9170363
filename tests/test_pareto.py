"""Search objectives and the Pareto view: the front over accuracy / latencies / params, its MLflow table and plot,
``--objective latency_int8`` through the search stage (a real Prefect flow, a real MLflow store) and ``nasops
search`` (a real subprocess)."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from nas.pareto import axes, front_indices, objective_spec, pareto_plot, pareto_rows
from pipelines.errors import UserError
from pipelines.nas_stage import parse_config

POINTS = [
    {"arch": "a", "val_accuracy": 0.90, "latency_ms": 1.0, "params": 100.0},
    {"arch": "b", "val_accuracy": 0.95, "latency_ms": 2.0, "params": 100.0},
    {"arch": "c", "val_accuracy": 0.89, "latency_ms": 1.5, "params": 150.0},  # dominated by a on every axis
    {"arch": "d", "val_accuracy": 0.80, "latency_ms": 3.0, "params": 10.0},   # worst accuracy, fewest params
    {"arch": "e", "val_accuracy": 0.95, "latency_ms": 2.0, "params": 120.0},  # dominated by b (params only)
]


def test_front_over_three_axes_keeps_only_the_non_dominated():
    keep = front_indices(POINTS, "val_accuracy", ["latency_ms", "params"])
    assert sorted(POINTS[i]["arch"] for i in keep) == ["a", "b", "d"]
    # on two axes alone d (slow) drops out, and ties count as dominated only if strictly worse somewhere
    assert sorted(POINTS[i]["arch"] for i in front_indices(POINTS, "val_accuracy", ["latency_ms"])) == \
        ["a", "b", "e"]


def test_int8_latency_is_an_axis_only_when_the_objective_asks():
    assert axes("accuracy") == ("val_accuracy", ["latency_ms", "params"])
    assert axes("latency_int8")[1] == ["latency_ms", "params", "latency_int8_ms"]
    pts = [dict(p, latency_int8_ms=5.0) for p in POINTS] + [
        {"arch": "f", "val_accuracy": 0.85, "latency_ms": 4.0, "params": 200.0, "latency_int8_ms": 0.1}]
    rows = pareto_rows(pts, "latency_int8")
    assert {r["arch"] for r in rows if r["on_front"]} == {"a", "b", "d", "f"}  # f: the fastest int8
    assert [r["on_front"] for r in rows] == sorted((r["on_front"] for r in rows), reverse=True)  # front first
    with pytest.raises(ValueError, match="unknown objective 'fast'; choose one of: accuracy, latency_int8"):
        objective_spec("fast")


def test_failed_and_repeated_evaluations(tmp_path):
    from nas.evaluators import Result
    from nas.search import Record

    recs = [Record(0, "a", Result({"val_accuracy": 0.5, "latency_ms": 1, "params": 9}), 0.5, 0.0),
            Record(1, "a", Result({"val_accuracy": 0.9, "latency_ms": 1, "params": 9}), 0.9, 0.0),  # higher rung
            Record(2, "b", Result({}), float("-inf"), 0.0, state="fail", error="boom")]
    rows = pareto_rows(recs)
    assert rows == [{"arch": "a", "val_accuracy": 0.9, "latency_ms": 1.0, "params": 9.0, "on_front": True}]
    assert pareto_plot(rows, tmp_path / "p.png").stat().st_size > 1000


def test_objective_is_checked_and_sets_metric_and_latency_bound():
    cfg = parse_config({"objective": "latency_int8", "max_latency_ms": 2.0})
    assert cfg.metric == "accuracy_int8" and cfg.constraints.latency_key == "latency_int8_ms"
    assert not cfg.constraints.satisfied({"params": 1, "latency_ms": 0.1, "latency_int8_ms": 3.0})
    assert parse_config({}).metric == "val_accuracy"
    with pytest.raises(UserError, match="objective"):
        parse_config({"objective": "fastest"})
    with pytest.raises(UserError, match="does not work with strategy darts or fidelity supernet"):
        parse_config({"objective": "latency_int8", "fidelity": "supernet"})


def test_log_pareto_writes_a_table_and_a_plot(nasops_home):
    from pipelines.pareto_report import log_pareto
    from pipelines.tracking import configure_mlflow

    configure_mlflow()
    with mlflow.start_run() as run:
        rows = log_pareto(POINTS)
    client = MlflowClient()
    files = {f.path for f in client.list_artifacts(run.info.run_id, "pareto")}
    assert files == {"pareto/pareto_table.json", "pareto/pareto_front.png"}
    table = mlflow.load_table("pareto/pareto_table.json", run_ids=[run.info.run_id])
    assert set(table["arch"]) == {p["arch"] for p in POINTS} and table["on_front"].sum() == 3
    assert client.get_run(run.info.run_id).data.metrics["pareto_front_size"] == 3 == sum(r["on_front"] for r in rows)


@pytest.mark.slow
def test_int8_search_stage_logs_the_front_and_ranks_int8_accuracy(prefect_server, nasops_home, tmp_path):
    from nas.datasets import bundled_task
    from pipelines.contracts import PreparedData, SearchInput
    from pipelines.nas_stage import search_architectures
    from pipelines.tracking import configure_mlflow

    path = tmp_path / "digits.npz"
    bundled_task("digits", seed=0).save(path)
    data = PreparedData(path=str(path), fingerprint="digits-test", source="digits", input_shape=[1, 8, 8],
                        num_classes=10, classes=list(range(10)), feature_names=[])
    configure_mlflow()
    cfg = {"pool_size": 10, "prefilter_keep": 4, "budget": 3, "warm_start": 2, "strategy": "random",
           "fidelity": {"epochs": 1, "data_fraction": 0.3}, "workers": 2, "top_k": 2, "seed": 0,
           "objective": "latency_int8"}
    with mlflow.start_run(run_name="refresh"):
        out = search_architectures(SearchInput(data=data), cfg)
    assert out.objective == "latency_int8"
    client = MlflowClient()
    children = client.search_runs([client.get_run(out.search_run_id).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{out.search_run_id}'")
    assert len(children) == 3
    assert all({"latency_int8_ms", "accuracy_int8", "int8_accuracy_drop"} <= set(c.data.metrics) for c in children)
    best = max(children, key=lambda c: c.data.metrics["accuracy_int8"])
    assert out.candidates[0].arch == best.data.tags["nasops.arch"]  # ranked by the int8 accuracy
    files = {f.path for f in client.list_artifacts(out.search_run_id, "pareto")}
    assert files == {"pareto/pareto_table.json", "pareto/pareto_front.png"}
    table = mlflow.load_table("pareto/pareto_table.json", run_ids=[out.search_run_id])
    assert "latency_int8_ms" in table.columns and table["on_front"].any()


@pytest.mark.slow
def test_nasops_search_objective_prints_the_front(tmp_path):
    from support_cli import nasops  # in-process: the console script's own run(argv) and exit-code mapping

    home, env = tmp_path / "home", {"COLUMNS": "200"}
    args = ["search", "--data", "digits", "--strategy", "random", "--epochs", "1", "--data-fraction", "0.3",
            "--pool-size", "8", "--prefilter-keep", "3", "--budget", "3", "--objective", "latency_int8"]
    done = nasops(*args, home=home, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Pareto front" in done.stdout and "latency_int8_ms" in done.stdout
    as_json = nasops(*args, "--json", home=home, env=env)
    assert as_json.returncode == 0, as_json.stderr[-3000:]
    summary = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert summary["objective"] == "latency_int8" and summary["pareto"]
    assert all("latency_int8_ms" in r and r["on_front"] for r in summary["pareto"])
    assert list(home.rglob("pareto_front.png"))
    bad = nasops("search", "--objective", "fastest", home=home, env=env)
    assert bad.returncode == 2 and "objective" in bad.stderr and "Traceback" not in bad.stderr

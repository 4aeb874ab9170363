"""Learning-curve early stopping wired into the search (opt-in): poor candidates stop early, the search still
returns its best, and a default search is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.datasets import bundled_task
from nas.evaluators import CurveBar, CurveStop, TrainingEvaluator
from nas.search import run_search
from nas.spaces import get_space
from nas.strategies import get_strategy
from pipelines.config import SearchStageConfig
from pipelines.errors import UserError
from pipelines.nas_stage import parse_config

FIDELITY = {"epochs": 8, "data_fraction": 0.3}


def test_the_option_is_off_by_default_and_its_mistakes_are_named():
    cfg = SearchStageConfig()
    assert cfg.early_stop == "none" and cfg.curve_stop is None
    on = parse_config({"early_stop": "learning_curve", "fidelity": FIDELITY})
    assert on.curve_stop == CurveStop(threshold=0.05, min_epochs=3)
    with pytest.raises(UserError, match="never stops a 3-epoch training"):
        parse_config({"early_stop": "learning_curve"})  # default fidelity: 3 epochs, nothing to stop
    with pytest.raises(UserError, match="does not work with strategy darts or fidelity supernet"):
        parse_config({"early_stop": "learning_curve", "fidelity": "supernet"})
    with pytest.raises(UserError, match="early_stop"):
        parse_config({"early_stop": "domhan"})


def test_a_bar_only_rises_on_feasible_trials():
    bar = CurveBar()
    bar.raise_bar({"val_accuracy": 0.8})
    bar.raise_bar({"val_accuracy": 0.95}, feasible=False)  # over a latency limit: not a bar to beat
    bar.raise_bar({"val_accuracy": 0.7})
    assert bar.bar == 0.8


@pytest.fixture(scope="module")
def digits():
    return bundled_task("digits", seed=0)


def _search(data, curve_stop: CurveStop | None, budget: int = 6):
    torch.manual_seed(0)
    evaluator = TrainingEvaluator(data, measure_latency=False, curve_stop=curve_stop)
    bar = CurveBar()

    def on_result(rec) -> None:
        bar.raise_bar(rec.result.metrics)
        evaluator.bar = bar.bar

    return run_search(get_strategy("random", get_space("nb201", C=8, N=1), seed=0), evaluator, budget=budget,
                      fidelity=FIDELITY, on_result=on_result)


@pytest.mark.slow  # among the heaviest of the fast layer (`make test-fast` stays under 90 s)
def test_a_seeded_search_stops_poor_candidates_early_and_still_returns_its_best(digits):
    result = _search(digits, CurveStop())
    saved = [r.result.metrics["epochs_saved"] for r in result.records]
    assert saved[0] == 0  # the first training has no bar to beat: it runs every epoch
    assert sum(saved) > 0
    for r in result.records:
        m = r.result.metrics
        assert m["epochs_run"] + m["epochs_saved"] == FIDELITY["epochs"]
        if m["epochs_saved"] > 0:  # a stopped training was predicted to stay below the bar
            assert 0 < m["lc_predicted_final"] < 1
    assert result.best is not None
    assert result.best.result.metrics["epochs_saved"] == 0  # the winner trained fully
    assert result.best.score == max(r.score for r in result.records)


def test_without_the_option_the_evaluator_reports_what_it_always_did(digits):
    arch = get_space("nb201", C=8, N=1).sample(np.random.default_rng(0))
    metrics = TrainingEvaluator(digits, measure_latency=False).evaluate(arch, {"epochs": 1, "data_fraction": 0.2})
    assert set(metrics.metrics) == {"val_accuracy", "params", "train_seconds"}


@pytest.mark.slow
def test_the_search_flow_records_epochs_saved_per_trial_and_in_total(prefect_server, nasops_home, tmp_path):
    from mlflow.tracking import MlflowClient

    from pipelines.contracts import PreparedData, SearchInput
    from pipelines.nas_stage import search_architectures
    from pipelines.tracking import configure_mlflow

    path = tmp_path / "digits.npz"
    bundled_task("digits", seed=0).save(path)
    data = PreparedData(path=str(path), fingerprint="digits-test", source="digits", input_shape=[1, 8, 8],
                        num_classes=10, classes=list(range(10)), feature_names=[])
    journal = tmp_path / "journal.jsonl"
    configure_mlflow()
    out = search_architectures(SearchInput(data=data), {
        "pool_size": 12, "prefilter_keep": 8, "budget": 6, "warm_start": 2, "strategy": "random",
        "fidelity": FIDELITY, "workers": 2, "top_k": 2, "seed": 0, "early_stop": "learning_curve",
        "journal": str(journal)})
    assert out.evaluations == 6 and len(out.candidates) == 2
    run = MlflowClient().get_run(out.search_run_id)
    assert run.data.params["early_stop"] == "learning_curve"
    rows = [json.loads(line) for line in Path(journal).read_text().splitlines()]
    saved = [r["metrics"]["epochs_saved"] for r in rows if r["type"] == "result"]
    assert len(saved) == 6 and saved[:2] == [0, 0]  # the first two ran in parallel with no bar yet
    assert run.data.metrics["epochs_saved_total"] == sum(saved) > 0
    assert run.data.metrics["epochs_run_total"] == 6 * FIDELITY["epochs"] - sum(saved)
    children = MlflowClient().search_runs([run.info.experiment_id],
                                          f"tags.mlflow.parentRunId = '{out.search_run_id}'")
    assert all("epochs_saved" in c.data.metrics for c in children)
    # a resumed search takes its bar from the journal (replayed trials never reach on_result): it runs and goes on
    more = search_architectures(SearchInput(data=data), {
        "pool_size": 12, "prefilter_keep": 8, "budget": 7, "warm_start": 2, "strategy": "random",
        "fidelity": FIDELITY, "workers": 2, "top_k": 2, "seed": 0, "early_stop": "learning_curve",
        "journal": str(journal), "resume": True})
    assert more.evaluations == 7
    rows = [json.loads(line) for line in Path(journal).read_text().splitlines()]
    assert sum(r["type"] == "result" for r in rows) == 7 and "epochs_saved" in rows[-1]["metrics"]

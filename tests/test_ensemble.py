"""Rank aggregation, named ensembles and calibrated weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from nas.ensemble import ENSEMBLES, CalibratedEnsemble, calibrate, ensemble_score, proxy_ranks, rank_aggregate
from nas.proxies import WORST_SCORE, list_proxies


def test_log_rank_aggregation_by_hand():
    scores = {"a": [3.0, 1.0, 2.0], "b": [10.0, 30.0, 20.0]}
    agg = rank_aggregate(scores)
    # ranks/n: a -> (1, 1/3, 2/3), b -> (1/3, 1, 2/3)
    expected = [math.log(1) + math.log(1 / 3), math.log(1 / 3) + math.log(1), 2 * math.log(2 / 3)]
    assert np.allclose(agg, expected)
    assert int(np.argmax(agg)) == 2  # good on both beats great on one, bad on the other
    mean = rank_aggregate(scores, method="mean")
    assert np.allclose(mean, [4 / 3, 4 / 3, 4 / 3])


def test_ties_average_and_worst_values_rank_last():
    assert np.allclose(proxy_ranks([1.0, 1.0, 2.0, 0.0], method="mean"), [2.5 / 4, 2.5 / 4, 1.0, 0.25])
    scores = {"a": [5.0, WORST_SCORE, 1.0, float("nan")], "b": [1.0, 9.0, 2.0, 3.0]}
    agg = rank_aggregate(scores)
    assert np.all(np.isfinite(agg))
    assert set(np.argsort(agg)[:2]) == {1, 3}


def test_weights_select_proxies_and_bad_weights_are_errors():
    scores = {"a": [1.0, 2.0, 3.0], "b": [3.0, 2.0, 1.0]}
    assert np.argmax(rank_aggregate(scores, {"a": 1.0})) == 2
    assert np.argmax(rank_aggregate(scores, {"a": 0.0, "b": 1.0})) == 0
    with pytest.raises(KeyError, match="c"):
        rank_aggregate(scores, {"c": 1.0})
    # A negative weight reads the proxy reversed: b reversed is a.
    assert np.allclose(rank_aggregate(scores, {"b": -1.0}), rank_aggregate(scores, {"a": 1.0}))
    with pytest.raises(ValueError, match="finite"):
        rank_aggregate(scores, {"a": float("nan")})
    with pytest.raises(ValueError, match="same architectures"):
        rank_aggregate({"a": [1.0], "b": [1.0, 2.0]})


def test_named_ensembles_use_registered_proxies():
    known = set(list_proxies())
    for name, members in ENSEMBLES.items():
        assert members and set(members) <= known, name
    scores = {p: list(np.arange(5.0)) for p in ENSEMBLES["ensemble"]}
    assert np.argmax(ensemble_score("ensemble", scores)) == 4
    with pytest.raises(KeyError, match="ensemble"):
        ensemble_score("nope", scores)


def test_calibration_weights_the_informative_proxy():
    rng = np.random.default_rng(0)
    acc = rng.uniform(0.5, 0.9, 20)
    scores = {"good": acc + rng.normal(0, 0.02, 20), "noise": rng.normal(size=20), "anti": -acc}
    weights = calibrate(scores, acc, ridge=0.1, signed=False)
    assert set(weights) == set(scores)
    assert all(w >= 0 for w in weights.values()) and sum(weights.values()) == pytest.approx(1.0)
    assert weights["good"] > abs(weights["noise"]) and weights["anti"] == 0.0
    signed = calibrate(scores, acc, ridge=0.1)
    assert signed["anti"] < 0 < signed["good"]  # a proxy that ranks backwards on this task is read reversed
    assert sum(abs(w) for w in signed.values()) == pytest.approx(1.0)
    model = CalibratedEnsemble.fit(scores, acc, ridge=0.1)
    assert spearmanr(model.score(scores), acc).statistic > 0.9
    with pytest.raises(ValueError, match="at least 3"):
        calibrate({"good": [1.0, 2.0]}, [0.1, 0.2])


def test_calibrated_ensemble_round_trips_through_json(tmp_path):
    model = CalibratedEnsemble({"synflow": 0.7, "nwot": 0.3, "zen": 0.0}, "log", {"fitted_on": 12})
    path = model.save(tmp_path / "ens.json")
    loaded = CalibratedEnsemble.load(path)
    assert loaded == model and loaded.proxies == ["synflow", "nwot"]
    scores = {"synflow": [1.0, 2.0, 3.0], "nwot": [3.0, 1.0, 2.0], "zen": [0.0, 0.0, 0.0]}
    assert np.array_equal(loaded.score(scores), model.score(scores))
    with pytest.raises(ValueError, match="weights"):
        CalibratedEnsemble.from_json('{"method": "log"}')


def test_ensembles_live_in_one_registry_with_metadata():
    from nas.ensemble import ENSEMBLE_REGISTRY
    from nas.proxies import needs_data

    rows = {row["name"]: row for row in ENSEMBLE_REGISTRY.describe()}
    assert list(rows) == list(ENSEMBLES)
    for name, row in rows.items():
        assert row["summary"] and row["chosen_on"] and row["paper"], name
        assert row["needs_data"] == any(needs_data(m) for m in ENSEMBLES[name]), name
    assert "nb201_data_free" in ENSEMBLES and not rows["nb201_data_free"]["needs_data"]
    with pytest.raises(KeyError, match="choose one of: ensemble"):
        ENSEMBLE_REGISTRY.get("nope")
    assert "nope" not in ENSEMBLES and len(ENSEMBLES) == len(rows)


def test_table_benchmark_measures_cached_scores_per_dataset(tmp_path):
    # A tiny table whose synflow orders cells exactly as CIFAR-10 and reversed to CIFAR-100; params is noise.
    import csv
    import gzip
    import importlib.util
    from argparse import Namespace
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("bench_proxies", root / "benchmarks" / "proxies.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    n = 30
    rng = np.random.default_rng(0)
    table, scores = tmp_path / "t.csv.gz", tmp_path / "s.csv"
    with gzip.open(table, "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "ArchitectureString", "cifar10-test", "cifar100-test", "imagenet-test"])
        for i in range(n):
            w.writerow([i, f"cell{i}", i, n - i, rng.uniform()])
    with scores.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "ArchitectureString", "canonical", "params", "synflow"])
        for i in range(n):
            w.writerow([i, f"cell{i}", f"cell{i}", rng.uniform(), float(i)])
    result = bench.table_benchmark(Namespace(table=table, scores=scores))
    assert result["proxies"]["synflow"]["cifar10"]["spearman"] == pytest.approx(1.0)
    assert result["proxies"]["synflow"]["cifar100"]["kendall"] == pytest.approx(-1.0)
    tuned = result["ensembles"]["tuned_on_cifar10"]
    assert tuned["members"] == ["synflow"] and tuned["cifar10"]["spearman"] == pytest.approx(1.0)
    assert "cifar100 and imagenet16-120 are held out" in tuned["tuned_on"]

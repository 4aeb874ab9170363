"""Zero-cost features of table rows (shipped scores as cache, computed + cached otherwise), the validation/test
regret convention of table searches, and ``nasops bench search --space nb201 --zc`` on the public NB201 table."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support_cli import CliResult, nasops

from nas.benchmarking import compare_strategies, reach_ratios, summary, table_search
from nas.tabular import BenchmarkTable, load_table, percent_to_fraction
from nas.zc_features import NB201_SCORING, Scoring, read_cache, zc_features

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "benchmarks" / "tables" / "nb201_12epoch.csv.gz"
SHIPPED = ROOT / "benchmarks" / "tables" / "nb201_proxy_scores.csv.gz"


def _rows(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def shipped_rows() -> list[dict[str, str]]:
    return _rows(SHIPPED)


def test_computed_scores_equal_the_shipped_ones_so_the_shipped_file_is_a_valid_cache(shipped_rows):
    torch.set_num_threads(1)
    archs = [r["ArchitectureString"] for r in shipped_rows[:3]]
    computed, counts = zc_features(archs, ["synflow", "params", "l2_norm"])
    assert counts == {"shipped": 0, "cache": 0, "computed": 9}
    cached, counts = zc_features(archs, ["synflow", "params", "l2_norm"], shipped=SHIPPED)
    assert counts == {"shipped": 9, "cache": 0, "computed": 0}
    for name in computed:
        np.testing.assert_allclose(computed[name], cached[name], rtol=1e-9)


def test_missing_scores_are_computed_once_then_read_from_the_cache(tmp_path, shipped_rows):
    torch.set_num_threads(1)
    with_zen = [r["ArchitectureString"] for r in shipped_rows if r["zen"]][:2]
    without = [r["ArchitectureString"] for r in shipped_rows if not r["zen"]][:1]
    archs = with_zen + without
    cache = tmp_path / "zc.jsonl"
    first, counts = zc_features(archs, ["zen"], shipped=SHIPPED, cache=cache)
    assert counts == {"shipped": 2, "cache": 0, "computed": 1}
    assert np.isfinite(first["zen"]).all()
    assert list(read_cache(cache, NB201_SCORING)) == without
    again, counts = zc_features(archs, ["zen"], shipped=SHIPPED, cache=cache)
    assert counts == {"shipped": 2, "cache": 1, "computed": 0}
    np.testing.assert_array_equal(first["zen"], again["zen"])
    with pytest.raises(ValueError, match=r"was scored on .* not"):  # a cache of another network is not mixed in
        zc_features(archs, ["zen"], cache=cache, scoring=Scoring(space_kwargs=(("C", 8), ("N", 1))))


def test_meco_from_the_strings_equals_the_shipped_scores_and_is_cached(tmp_path, shipped_rows):
    """The search defaults use meco as a feature: computed from a string it must be the shipped value (so the shipped
    file is its valid cache) and, once computed, come from the on-disk cache, not be recomputed."""
    torch.set_num_threads(1)
    rows = [r for r in shipped_rows if float(r["meco"]) > -1e299][:2]
    archs = [r["ArchitectureString"] for r in rows]
    cache = tmp_path / "zc.jsonl"
    computed, counts = zc_features(archs, ["meco"], cache=cache)
    assert counts == {"shipped": 0, "cache": 0, "computed": 2}
    # the shipped value was scored on the canonical form of the cell (same function, other float32 rounding)
    np.testing.assert_allclose(computed["meco"], [float(r["meco"]) for r in rows], rtol=1e-6)
    again, counts = zc_features(archs, ["meco"], cache=cache)
    assert counts == {"shipped": 0, "cache": 2, "computed": 0}
    np.testing.assert_array_equal(again["meco"], computed["meco"])
    _, counts = zc_features(archs, ["meco", "synflow"], shipped=SHIPPED, cache=cache)
    assert counts == {"shipped": 4, "cache": 0, "computed": 0}


def test_data_needing_and_unknown_proxies_are_refused():
    with pytest.raises(ValueError, match="snip need data"):
        zc_features(["x"], ["snip"])
    with pytest.raises(KeyError):
        zc_features(["x"], ["no_such_proxy"])


def _toy_val_test() -> BenchmarkTable:
    archs = [f"{a}|{b}" for a in "abcd" for b in "wxyz"]
    rng = np.random.default_rng(0)
    val = rng.permutation(len(archs)) / 100.0
    test = rng.permutation(len(archs)) / 100.0
    return BenchmarkTable(archs, {"val": val, "test": test})


def test_report_trace_is_the_test_value_of_the_best_by_validation_row():
    table = _toy_val_test()
    trace, _ = table_search(table, "val", "random", seed=3, budget=10, report="test")
    plain, _ = table_search(table, "val", "random", seed=3, budget=10)
    # replay: the same seed proposes the same rows; map each best-so-far validation value back to its row
    best_rows = [int(np.flatnonzero(table.metrics["val"] == v)[0]) for v in plain]
    np.testing.assert_array_equal(trace, table.metrics["test"][best_rows])
    assert not np.array_equal(trace, plain)


def test_summary_reports_how_many_times_fewer_evaluations_than_the_baselines():
    table = _toy_val_test()
    curves = compare_strategies(table, "val", ["random", "evolution", "local"], budget=16, seeds=4, report="test")
    s = summary(curves, table.optimum("test"), checkpoints=[5, 10])
    assert set(s["ratios"]) == {"local_vs_random", "local_vs_evolution"}
    r = s["ratios"]["local_vs_random"]["evals_to_0.005"]
    want = (s["strategies"]["random"]["evals_to_0.005"]["mean_censored"]
            / s["strategies"]["local"]["evals_to_0.005"]["mean_censored"])
    assert r == pytest.approx(want)
    assert reach_ratios(s) == s["ratios"]


def test_percent_tables_become_fractions_and_other_scales_are_refused(tmp_path):
    table = percent_to_fraction(load_table(TABLE, "ArchitectureString", ["cifar100-val", "cifar100-test"]))
    assert table.optimum("cifar100-test") == pytest.approx(0.6118, abs=1e-4)
    assert percent_to_fraction(table) is table
    bad = BenchmarkTable(["a|b"], {"m": np.array([250.0])})
    with pytest.raises(ValueError, match="neither fractions nor percentages"):
        percent_to_fraction(bad)


def _nasops(*args: str, home: Path) -> CliResult:
    """``nasops ARGS`` in-process (``support_cli``: the console script's own exit-code mapping)."""
    return nasops(*args, home=home)


def test_bench_search_with_zc_features_on_a_slice_of_the_public_table(tmp_path):
    rows = _rows(TABLE)[:80]
    sub = tmp_path / "nb201_slice.csv.gz"
    with gzip.open(sub, "wt", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    args = ["bench", "search", "--table", str(sub), "--arch-column", "ArchitectureString",
            "--metric-column", "cifar100-val", "--report-column", "cifar100-test", "--space", "nb201",
            "--zc", "synflow,params", "--strategy", "{}", "--budget", "20", "--seeds", "2", "--json"]
    curves = {}
    for name in ("random", "evolution", "predictor"):
        extra = ["--predictor", "lgbm", "--acquisition", "ucb"] if name == "predictor" else []
        done = _nasops(*[a.replace("{}", name) for a in args], *extra, home=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "160 values from the shipped scores" in done.stderr and "0 computed" in done.stderr
        out = json.loads(done.stdout)
        assert out["optimum"] == pytest.approx(max(float(r["cifar100-test"]) for r in rows) / 100)
        curves[name] = out["strategies"][name]
    pred = curves["predictor"]
    assert pred["budgets"] == list(range(1, 21)) and len(pred["mean_regret"]) == 20
    assert set(pred["regret_at"]) == {"10"} and set(pred["evals_to_0.005"]) >= {"reached", "mean_censored"}
    unknown = _nasops(*[a.replace("{}", "random").replace("synflow,params", "synflow,nope") for a in args],
                      home=tmp_path)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "--zc nope: unknown proxy" in unknown.stderr
    data = _nasops(*[a.replace("{}", "random").replace("synflow,params", "snip") for a in args], home=tmp_path)
    assert data.returncode == 2 and "need data" in data.stderr and "Traceback" not in data.stderr
    acq = _nasops(*[a.replace("{}", "predictor") for a in args], "--acquisition", "pi", home=tmp_path)
    assert acq.returncode == 2 and "--acquisition 'pi': choose one of its, ucb, ei" in acq.stderr


def test_bench_search_on_nb201_defaults_to_the_features_tuned_on_cifar10(tmp_path):
    from nas.zc_features import SEARCH_FEATURES

    rows = _rows(TABLE)[:40]
    sub = tmp_path / "nb201_slice.csv"
    with sub.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    args = ["bench", "search", "--table", str(sub), "--arch-column", "ArchitectureString", "--metric-column",
            "cifar10-val", "--report-column", "cifar10-test", "--space", "nb201", "--strategy", "random",
            "--budget", "5", "--seeds", "1", "--json"]
    done = _nasops(*args, home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{40 * len(SEARCH_FEATURES['nb201'])} values from the shipped scores" in done.stderr
    none = _nasops(*args, "--zc", "", home=tmp_path)  # '' asks for no features: nothing is read or computed
    assert none.returncode == 0 and "zero-cost features" not in none.stderr


def test_bench_search_prints_the_ratio_to_each_baseline(tmp_path):
    rows = _rows(TABLE)[:50]
    sub = tmp_path / "slice.csv"
    with sub.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    done = _nasops("bench", "search", "--table", str(sub), "--arch-column", "ArchitectureString",
                   "--metric-column", "cifar10-val", "--report-column", "cifar10-test", "--strategy", "all",
                   "--budget", "10", "--seeds", "2", "--json", home=tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert {"local_vs_random", "local_vs_evolution", "predictor_vs_random"} <= set(out["ratios"])
    assert all(v["evals_to_0.005"] > 0 for v in out["ratios"].values())


def test_each_seed_searches_its_own_subsample_and_regret_is_against_that_subsample():
    from nas.benchmarking import compare_on_subsamples

    table = _toy_val_test()  # 16 rows
    curves = compare_on_subsamples(table, "val", ["random"], fraction=0.5, seeds=5, budget=8)
    best = curves["random"].best
    assert best.shape == (5, 8)
    # every seed evaluates all 8 rows of its subsample: its regret against its own subsample's optimum is 0
    np.testing.assert_allclose(best[:, -1], table.optimum("val"))
    # and the subsamples differ: before the end, the seeds' traces are not all the same
    assert len({tuple(row) for row in best[:, :4]}) > 1
    with pytest.raises(ValueError, match="fraction must be in"):
        compare_on_subsamples(table, "val", ["random"], fraction=0.0, seeds=1, budget=2)

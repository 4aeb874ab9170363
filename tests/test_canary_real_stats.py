"""The real-path canary benchmark's arithmetic: Wilson intervals, the goals, and how a decided rollout record is
classed (promoted / rolled back as worse / kept as not better). No server: the benchmark itself runs for hours."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks.{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_wilson_intervals_match_the_textbook_values_and_stay_inside_zero_one():
    stats = _load("decision_stats")
    assert stats.wilson(0, 30) == pytest.approx((0.0, 0.1135), abs=1e-4)
    assert stats.wilson(30, 30) == pytest.approx((0.8865, 1.0), abs=1e-4)
    assert stats.wilson(15, 30) == pytest.approx((0.3315, 0.6685), abs=1e-4)
    assert stats.wilson(0, 0) == (0.0, 1.0)


def test_the_summary_counts_each_kind_and_checks_the_goal():
    stats = _load("decision_stats")
    rows = ([{"scenario": "aa", "load": True, "kind": "promoted", "intervals": 5, "seconds": 20.0,
              "loadavg_1m": 9.0}] * 19 + [{"scenario": "aa", "load": True, "kind": "rolled_back_worse",
                                           "intervals": 3, "seconds": 10.0, "loadavg_1m": 11.0}])
    (entry,) = stats.summarize(rows, {"aa": "not_worse"})
    assert entry["n"] == 20 and entry["promoted"]["count"] == 19 and entry["rolled_back_worse"]["rate"] == 0.05
    assert entry["met"] is True and entry["met_by_interval"] is False  # 1/20: upper bound 0.24
    assert entry["goal"] == "rolled back as worse <= 5%"
    assert "| `aa` | on | 20 | 0.95 [" in stats.table([entry])


def test_a_rollback_is_classed_by_what_failed():
    real = _load("canary_real")

    def record(decision, reason, failed):
        return SimpleNamespace(decision=decision, reason=reason, last_verdict={"metrics": failed})

    assert real.kind_of(record("promoted", "passed every step", [])) == "promoted"
    assert real.kind_of(record("rolled_back", "judge failed 2 interval(s)",
                               [{"failed": True, "outcome": "inferior"}])) == "rolled_back_worse"
    assert real.kind_of(record("rolled_back", "judge failed 2 interval(s)",
                               [{"failed": True, "outcome": ""}])) == "rolled_back_worse"  # fixed horizon
    assert real.kind_of(record("rolled_back", "judge failed 2 interval(s)",
                               [{"failed": True, "outcome": "not_superior"}])) == "kept_not_better"
    assert real.kind_of(record("rolled_back", "no passing decision within 14 intervals", [])) == "kept_not_better"

"""The time-matched comparison (monitoring.samples) and the faster always-valid tests (one-sided mixture, count
test) of the sequential judge. Cheap layer: numpy, a SQLite prediction log, small simulations (seconds)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from monitoring import sequential as seq
from monitoring.judge import Judge, mann_whitney, van_elteren
from monitoring.judge_config import JudgeConfig, MetricConfig
from monitoring.prediction_log import create_log_engine, prediction_rows, predictions
from monitoring.rollout_store import RolloutStore
from monitoring.samples import MetricSamples, matched_stats, stratify, weighted_quantile, weighted_stats
from monitoring.sources import PredictionLogSource, collect_samples
from pipelines.control.config import load_canary_config
from pipelines.control.controller import reconcile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import canary_sim

STEPS = (0.05, 0.25, 0.5, 1.0)


def latency_judge(method: str) -> JudgeConfig:
    return JudgeConfig(method=method, metrics=[MetricConfig(
        name="latency", measure="latency_ms", critical=True, statistic="median", effect="relative", tolerance=0.2,
        log_offset=0.0, rule="non_inferiority")])


def drifting_rollout(seed: int = 0, per_interval: int = 400):
    """Identical models on a host getting slower: median latency 10 ms in the first interval, x1.5 each interval.
    The challenger's share grows 5 -> 25 -> 50 -> 100 %, so its rows are mostly late (slow), the champion's early."""
    rng = np.random.default_rng(seed)
    ts_b, ts_c, lat_b, lat_c = [], [], [], []
    for i, share in enumerate(STEPS):
        n_c = int(per_interval * share)
        lat = 10.0 * 1.5**i * np.exp(0.2 * rng.standard_normal(per_interval))
        ts = 100.0 * i + rng.uniform(0, 100, per_interval)
        lat_c.append(lat[:n_c])
        ts_c.append(ts[:n_c])
        lat_b.append(lat[n_c:])
        ts_b.append(ts[n_c:])
    return [np.concatenate(x) for x in (ts_b, ts_c, lat_b, lat_c)]


@pytest.mark.parametrize("method", ["sequential", "fixed_horizon"])
def test_late_slow_challenger_is_worse_cumulatively_but_not_time_matched(method):
    ts_b, ts_c, lat_b, lat_c = drifting_rollout()
    judge = Judge(latency_judge(method))
    cumulative = judge.judge({"latency": (lat_b, lat_c)})
    assert cumulative.verdict == "fail" and cumulative.failed_metrics == ["latency"]
    w_b, w_c, s_b, s_c = stratify(ts_b, ts_c, [0.0, 100.0, 200.0, 300.0])
    matched = judge.judge({"latency": MetricSamples(lat_b, lat_c, w_b, w_c, s_b, s_c)})
    assert matched.failed_metrics == [] and matched.verdict != "fail"
    row = matched.metrics[0]
    assert abs(row.challenger_value / row.champion_value - 1) < 0.1  # medians of the same time mix
    assert row.n_challenger < len(lat_c)  # the 100 % interval has no champion rows to compare with: weight 0


def test_metric_samples_unpack_as_a_pair_and_weights_reduce_to_plain_statistics():
    samples = MetricSamples([1.0, 2.0], [3.0])
    b, c = samples
    assert b.tolist() == [1.0, 2.0] and c.tolist() == [3.0] and samples[1].tolist() == [3.0]
    x = np.array([1.0, 2.0, 4.0])
    assert weighted_stats(x, np.ones(3)) == pytest.approx((3, 7.0, 21.0))
    n_eff, total, _ = weighted_stats(x, np.array([2.0, 1.0, 1.0]))
    assert n_eff == pytest.approx(16 / 6) and total / n_eff == pytest.approx(2.0)  # Kish n, weighted mean
    assert weighted_quantile(x, np.ones(3), 0.5) == pytest.approx(np.median(x))
    assert weighted_quantile(x, np.array([1.0, 1.0, 10.0]), 0.5) > 3.0  # the heavy row pulls the median
    with pytest.raises(ValueError, match="weights"):
        MetricSamples([1.0], [2.0], champion_weights=[1.0, 1.0])


def test_matched_stats_give_the_champion_the_challengers_time_mix():
    # stratum 0: champion mean 1 (90 rows), challenger 10 rows; stratum 1: champion mean 3 (10 rows), challenger 90
    n_b, n_c = np.array([90.0, 10.0]), np.array([10.0, 90.0])
    champion, challenger = matched_stats(n_b, n_c, np.array([90.0, 30.0]), np.array([10.0, 270.0]),
                                         np.array([90.0, 90.0]), np.array([10.0, 810.0]))
    assert champion[1] / champion[0] == pytest.approx(0.1 * 1 + 0.9 * 3)  # re-weighted to 10 % / 90 %
    assert challenger[0] == pytest.approx(100.0)
    # a stratum with no champion rows drops out for both
    champion, challenger = matched_stats(np.array([90.0, 0.0]), np.array([10.0, 90.0]), np.array([90.0, 0.0]),
                                         np.array([10.0, 270.0]), np.array([90.0, 0.0]), np.array([10.0, 810.0]))
    assert challenger[0] == pytest.approx(10.0) and challenger[1] / challenger[0] == pytest.approx(1.0)


def test_prediction_log_source_fills_time_matched_weights_from_strata(tmp_path):
    engine = create_log_engine(f"sqlite:///{tmp_path / 'log.db'}")
    x = [[0.0]]
    rows = []
    # interval [0, 10): 3 champion, 1 challenger; [10, 20): 1 champion, 3 challenger; [20, 30): challenger only
    plan = [("champion", 1.0), ("champion", 2.0), ("champion", 3.0), ("challenger", 4.0), ("champion", 11.0)] + [
        ("challenger", t) for t in (12.0, 13.0, 14.0, 21.0)]
    for i, (variant, ts) in enumerate(plan):
        rows += prediction_rows(request_id=f"r{i}", variant=variant, model_version="1", inputs=x, predictions_=[0],
                                probabilities=[[1.0]], latency_ms=ts, status="ok", ts=1000.0 + ts)
    with engine.begin() as conn:
        conn.execute(predictions.insert(), rows)
    metric = MetricConfig(name="latency", measure="latency_ms")
    plain = collect_samples([metric], {"prediction_log": PredictionLogSource(engine)}, 1000.0, 1030.0)
    b, c = plain["latency"]
    assert len(b) == 4 and len(c) == 5
    matched = collect_samples([metric], {"prediction_log": PredictionLogSource(engine)}, 1000.0, 1030.0,
                              strata=[1000.0, 1010.0, 1020.0])["latency"]
    weights = dict(zip(matched.champion.tolist(), matched.champion_weights.tolist(), strict=True))
    assert weights == pytest.approx({1.0: 1 / 3, 2.0: 1 / 3, 3.0: 1 / 3, 11.0: 3.0})
    late = dict(zip(matched.challenger.tolist(), matched.challenger_weights.tolist(), strict=True))
    assert late[21.0] == 0.0 and late[4.0] == late[12.0] == 1.0  # nothing of the champion's to compare in [20, 30)


def test_one_sided_radius_reaches_one_over_alpha_and_is_narrower_than_two_sided():
    v, tau2, alpha = np.array([1e-4, 4e-4]), 4e-4, 0.05
    r = seq.one_sided_radius(v, alpha, tau2)
    assert np.exp(seq.one_sided_log_lr(r, v, tau2)) == pytest.approx(1 / alpha, rel=1e-6)
    assert np.all(r < seq.mixture_radius(v, alpha, tau2)) and np.all(r >= seq.mixture_radius(v, 2 * alpha, tau2))


def test_one_sided_bounds_keep_alpha_with_a_look_after_every_batch():
    rng = np.random.default_rng(3)
    b = rng.normal(0, 1, (4000, 30, 40))
    c = rng.normal(0, 1, (4000, 30, 40))
    n = 40 * np.arange(1, 31)
    stats = [(n, x.sum(2).cumsum(1), (x**2).sum(2).cumsum(1)) for x in (b, c)]
    _, lo, _ = seq.difference_bounds(*stats, sign=1.0, alpha=0.05, beta=0.05, tau2=0.1, binary=False)
    assert (lo > 0).any(axis=1).mean() <= 0.05


def test_count_test_keeps_beta_on_aa_and_catches_a_rate_increase_early():
    rng = np.random.default_rng(5)
    looks, runs, n_c, n_b = 30, 4000, 100, 1900
    e_b = rng.poisson(0.005 * n_b, (runs, looks)).cumsum(1)
    e_c = rng.poisson(0.005 * n_c, (runs, looks)).cumsum(1)
    exposure = np.arange(1, looks + 1)
    worse = seq.count_worse((n_b * exposure, e_b), (n_c * exposure, e_c), beta=0.05)
    assert worse.any(axis=1).mean() <= 0.05  # Ville: at most beta over all 30 looks
    e_c = rng.poisson(0.025 * n_c, (runs, looks)).cumsum(1)  # +2 points at a 5 % share
    worse = seq.count_worse((n_b * exposure, e_b), (n_c * exposure, e_c), beta=0.05)
    assert worse[:, 2].mean() > 0.6  # proven within 3 intervals (300 challenger requests) in most runs
    # The null share comes from the cumulative exposures: with the split changing 5 -> 25 -> 50 % (a rollout's
    # steps) the A/A rate over all looks still stays under beta (measured 1-2 %).
    share = np.repeat([0.05, 0.25, 0.5], [3, 3, looks - 6])
    c_n, b_n = (2000 * share).astype(int), 2000 - (2000 * share).astype(int)
    e_b = rng.poisson(0.005 * b_n, (runs, looks)).cumsum(1)
    e_c = rng.poisson(0.005 * c_n, (runs, looks)).cumsum(1)
    assert seq.count_worse((b_n.cumsum(), e_b), (c_n.cumsum(), e_c), beta=0.05).any(axis=1).mean() <= 0.05


def test_simulated_aa_canaries_are_not_rolled_back_as_worse_even_with_a_trend(monkeypatch):
    """A few hundred simulated A/A canaries under the packaged sequential judge (the judge's own decision code),
    without and with a latency/accuracy trend over the rollout, time-matched: never rolled back as worse beyond the
    1 % rate, and promoted at most at alpha."""
    args = canary_sim.parse_args(["--runs", "300", "--requests", "1000"])
    for scenario in ("aa_identical", "aa_trend"):
        row = canary_sim.simulate("sequential", canary_sim.SCENARIOS[scenario], 300, args,
                                  np.random.default_rng(0), window="matched")
        assert row["rollback_worse_rate"] <= 0.01, scenario
        assert row["promote_rate"] <= 0.05, scenario


def test_van_elteren_with_one_stratum_is_the_mann_whitney_test_and_ignores_a_shift_between_strata():
    rng = np.random.default_rng(2)
    b, c = rng.normal(0, 1, 300), rng.normal(0.2, 1, 200)
    _, p_ve = van_elteren(b, c, np.zeros(300, int), np.zeros(200, int))
    assert p_ve == pytest.approx(mann_whitney(b, c)[1], rel=0.05)
    # stratum 1 is 3 units higher for both; the champion lives mostly in stratum 0, the challenger in stratum 1
    b = np.concatenate([rng.normal(0, 1, 270), rng.normal(3, 1, 30)])
    c = np.concatenate([rng.normal(0, 1, 20), rng.normal(3, 1, 180)])
    s_b, s_c = np.repeat([0, 1], [270, 30]), np.repeat([0, 1], [20, 180])
    assert mann_whitney(b, c)[1] < 1e-6 and van_elteren(b, c, s_b, s_c)[1] > 0.05
    # small or sparse samples: the stratified permutation distribution
    _, p_small = van_elteren(b[:30], c[:8], s_b[:30], s_c[:8])
    assert 0 < p_small <= 1


def _served(store, t0: float, t1: float, n: int, variants: tuple[str, ...], latency_ms: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = [{"request_id": f"{v}-{t0}-{i}", "row": 0, "ts": t0 + (t1 - t0) * i / n, "variant": v, "shadow": False,
             "model_version": "1" if v == "champion" else "2", "inputs": "[0]", "prediction": "1",
             "probabilities": "[0.1,0.9]", "latency_ms": latency_ms * (1 + 0.2 * rng.random()), "status": "ok"}
            for v in variants for i in range(n)]
    with store.engine.begin() as conn:
        conn.execute(sa.insert(predictions), rows)


@pytest.mark.parametrize("window", ["cumulative", "matched"])
def test_the_controller_compares_the_challenger_with_the_champion_of_the_same_intervals(tmp_path, window):
    """Identical models on a host that gets slow after the 50 % step: the 100 % interval's slow rows have no
    champion rows beside them. Cumulatively they make the challenger 'slower'; time-matched they are left out."""
    store = RolloutStore(f"sqlite:///{tmp_path / 'predictions.db'}")
    judge = {"method": "fixed_horizon", "metrics": [{
        "name": "latency", "measure": "latency_ms", "critical": True, "statistic": "median", "tolerance": 0.5}]}
    # two 100 % steps, so that the pass at the first one does not promote (no registry in this test)
    cfg = load_canary_config({"steps": [0.5, 1.0, 1.0], "interval_s": 5.0, "window": window, "judge": judge})
    rollout = store.create(model_name="m", champion_version="1", challenger_version="2", mode="split", weight=0.5,
                           config=cfg.model_dump(mode="json"), now=1000.0)
    _served(store, 1000.0, 1005.0, 200, ("champion", "challenger"), 2.0, seed=0)
    assert reconcile(store, rollout.rollout_id, now=1005.5).outcome == "pass"
    _served(store, 1005.6, 1010.5, 400, ("challenger",), 30.0, seed=1)  # 100 %: the challenger alone, slow host
    report = reconcile(store, rollout.rollout_id, now=1011.0)
    if window == "cumulative":
        assert report.verdict == "fail"
    else:
        assert report.verdict == "pass" and report.outcome == "pass"
    store.engine.dispose()

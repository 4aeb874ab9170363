"""Simulated canaries: the sequential judge and the fixed-horizon Mann-Whitney judge under the same rollout policy.

Each canary draws per-request samples from stated distributions (no servers): errors and labels are Bernoulli,
latency is log-normal with scheduler noise (stalls on single requests and bursts hitting one variant in one
interval, as on a loaded 2-core machine), prediction drift is one value per 100-request chunk. Both judges look
after every interval at the cumulative samples since the canary started and drive the real rollout state machine
(``pipelines.control.rollout.RolloutState``, steps 5/25/50/100 %). The sequential judge's decisions come from
``monitoring.sequential`` (the code the judge runs); the fixed-horizon judge's from a vectorised copy of
``monitoring.judge.classify_metric`` (asymptotic U test, exact hypergeometric test for sparse binary samples) scored
by the real ``Judge.score``.

    python benchmarks/canary_sim.py --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitoring import sequential as seq
from monitoring.judge import (
    HIGH,
    LOW,
    NODATA,
    ROBUST_RATIO,
    Judge,
    MetricResult,
    Verdict,
    fixed_class,
    sequential_decision,
)
from monitoring.judge_config import default_judge_config
from monitoring.samples import matched_stats
from monitoring.vocabulary import PROMOTED
from pipelines.control.config import load_canary_config
from pipelines.control.rollout import RolloutState, schedule

CHUNK = 100  # requests per prediction-drift chunk
# sequential: the always-valid judge (method: sequential); fixed_horizon: the Mann-Whitney "not worse" judge;
# fixed_horizon_better: the sequential judge's promotion rule with fixed-horizon z bounds read at every look.
POLICIES = ("sequential", "sequential_cumulative", "fixed_horizon", "fixed_horizon_better")
# sequential judges the time-matched window (the controller's default ``window: matched``); sequential_cumulative is
# the same judge on the cumulative window as served; the two fixed-horizon policies judge the cumulative window.


@dataclass(frozen=True)
class Variant:
    """The distribution one variant's requests are drawn from."""

    accuracy: float = 0.85
    error_rate: float = 0.005
    latency_median_ms: float = 50.0
    latency_sigma: float = 0.35
    drift_mean: float = 0.10
    drift_sd: float = 0.03
    # A trend of the whole traffic over the rollout (both variants; set on the scenario's challenger): latency times
    # (1 + latency_trend * interval), accuracy minus accuracy_trend * interval (a host and a day getting busier).
    latency_trend: float = 0.0
    accuracy_trend: float = 0.0
    # The share of ``--requests`` served per interval (both variants): below 1 a host under CPU load answers fewer
    # requests, so every interval holds less evidence (the real path served ~160 per 2 s interval, fewer under load).
    traffic: float = 1.0


CHAMPION = Variant()
SCENARIOS = {
    "aa_identical": CHAMPION,
    "better_1pt": replace(CHAMPION, accuracy=0.86),
    "better_3pt": replace(CHAMPION, accuracy=0.88),
    "worse_1pt": replace(CHAMPION, accuracy=0.84),
    "errors_2pct": replace(CHAMPION, error_rate=0.025),
    "latency_x2": replace(CHAMPION, latency_median_ms=100.0),
    "drifted": replace(CHAMPION, drift_mean=0.25, drift_sd=0.05, accuracy=0.83),
    "aa_trend": replace(CHAMPION, latency_trend=1.0),
    # Thin intervals (5 % of --requests: 100 at the default 2000, ~8 of them the challenger's at the 5 % step), as
    # benchmarks/canary_real.py under CPU load, where the fixed-horizon judge promoted an erroring challenger.
    "aa_loaded": replace(CHAMPION, traffic=0.05),
    "better_3pt_loaded": replace(CHAMPION, accuracy=0.88, traffic=0.05),
    "errors_2pct_loaded": replace(CHAMPION, error_rate=0.025, traffic=0.05),
}
STALL_P, STALL_MAX = 0.02, 50.0  # 2 % of requests stall 2-50x
BURST_P, BURST_SHARE, BURST_MAX = 0.2, 0.1, 10.0  # a variant's interval is noisy w.p. 0.2: 10 % of it 2-10x


def draw_interval(rng, chal: Variant, n_b: np.ndarray, requests: int, coverage: float, index: int = 0) -> dict:
    """One interval (number ``index``) of traffic for ``len(n_b)`` canaries: ``n_b`` requests to the champion, the
    rest challenger."""
    s = len(n_b)
    n_c = requests - n_b
    cols = np.arange(requests)[None, :]
    is_c = cols >= n_b[:, None]
    slow = 1.0 + chal.latency_trend * index
    med = slow * np.where(is_c, chal.latency_median_ms, CHAMPION.latency_median_ms)
    sig = np.where(is_c, chal.latency_sigma, CHAMPION.latency_sigma)
    lat = med * np.exp(sig * rng.standard_normal((s, requests)))
    stall = rng.random((s, requests)) < STALL_P
    lat = np.where(stall, lat * rng.uniform(2, STALL_MAX, (s, requests)), lat)
    noisy = rng.random((s, 2)) < BURST_P  # per variant
    burst = (rng.random((s, requests)) < BURST_SHARE) & np.where(is_c, noisy[:, 1:2], noisy[:, :1])
    lat = np.where(burst, lat * rng.uniform(2, BURST_MAX, (s, requests)), lat)
    out = {"latency": lat, "is_c": is_c, "n_b": n_b, "n_c": n_c}
    for key, p_b, p_c in (("errors", CHAMPION.error_rate, chal.error_rate),):
        out[key] = (rng.binomial(n_b, p_b), rng.binomial(n_c, p_c))
    lab_b, lab_c = rng.binomial(n_b, coverage), rng.binomial(n_c, coverage)
    out["labels"] = (lab_b, lab_c)
    worse = chal.accuracy_trend * index
    out["correct"] = (rng.binomial(lab_b, max(CHAMPION.accuracy - worse, 0.5)),
                      rng.binomial(lab_c, max(chal.accuracy - worse, 0.5)))
    kmax = requests // CHUNK
    k_b, k_c = n_b // CHUNK, n_c // CHUNK
    d_b = np.clip(rng.normal(CHAMPION.drift_mean, CHAMPION.drift_sd, (s, kmax)), 0, 1)
    d_c = np.clip(rng.normal(chal.drift_mean, chal.drift_sd, (s, kmax)), 0, 1)
    out["drift"] = (np.where(np.arange(kmax) < k_b[:, None], d_b, np.nan),
                    np.where(np.arange(kmax) < k_c[:, None], d_c, np.nan))
    return out


class Cumulative:
    """Everything since the canary started, for a fixed set of canaries: running totals, and per interval (the
    strata of the time-matched window) the same sufficient statistics."""

    def __init__(self, s: int, keep_raw: bool, log_offset: float = 0.0, window: str = "cumulative"):
        z = np.zeros(s)
        self.log_offset = log_offset
        self.window = window
        self.n = {"errors": [z.copy(), z.copy()], "labels": [z.copy(), z.copy()], "latency": [z.copy(), z.copy()],
                  "drift": [z.copy(), z.copy()]}
        self.sums = {k: [z.copy(), z.copy()] for k in ("errors", "correct", "latency", "drift")}
        self.sq = {k: [z.copy(), z.copy()] for k in ("latency", "drift")}
        self.parts: list[dict] = []  # per interval: {"n"|"sums"|"sq": {key: (champion, challenger)}}
        self.keep_raw = keep_raw
        self.raw: list[dict] = []

    def add(self, it: dict) -> None:
        part: dict = {"n": {}, "sums": {}, "sq": {}}
        part["n"]["errors"] = part["n"]["latency"] = (it["n_b"].astype(float), it["n_c"].astype(float))
        part["n"]["labels"] = tuple(np.asarray(x, dtype=float) for x in it["labels"])
        part["sums"]["errors"] = tuple(np.asarray(x, dtype=float) for x in it["errors"])
        part["sums"]["correct"] = tuple(np.asarray(x, dtype=float) for x in it["correct"])
        part["n"]["drift"] = tuple(np.isfinite(d).sum(1).astype(float) for d in it["drift"])
        part["sums"]["drift"] = tuple(np.nansum(d, 1) for d in it["drift"])
        part["sq"]["drift"] = tuple(np.nansum(d**2, 1) for d in it["drift"])
        offset = self.log_offset
        centre = np.log(CHAMPION.latency_median_ms + offset)  # the champion's median (the judge: sample median)
        logs = np.clip(np.log(it["latency"] + offset), centre - np.log(ROBUST_RATIO), centre + np.log(ROBUST_RATIO))
        masks = (~it["is_c"], it["is_c"])
        part["sums"]["latency"] = tuple(np.where(mask, logs, 0).sum(1) for mask in masks)
        part["sq"]["latency"] = tuple(np.where(mask, logs**2, 0).sum(1) for mask in masks)
        for name, table in (("n", self.n), ("sums", self.sums), ("sq", self.sq)):
            for key, pair in table.items():
                for side in (0, 1):
                    pair[side] += part[name][key][side]
        self.parts.append(part)
        if self.keep_raw:
            self.raw.append(it)

    def stats(self, nk: str, sk: str, qk: str | None) -> tuple[tuple, tuple]:
        """``(n, sum, sum of squares)`` of champion and challenger in this window (see monitoring.samples)."""
        if self.window == "cumulative":
            q = self.sq[qk] if qk else self.sums[sk]
            return (self.n[nk][0], self.sums[sk][0], q[0]), (self.n[nk][1], self.sums[sk][1], q[1])
        stack = [np.stack([p[t][k][side] for p in self.parts], -1) for t, k in
                 (("n", nk), ("sums", sk), ("sq" if qk else "sums", qk or sk)) for side in (0, 1)]
        return matched_stats(*stack)

    def select(self, keep: np.ndarray) -> None:
        for table in (self.n, self.sums, self.sq):
            for pair in table.values():
                pair[0], pair[1] = pair[0][keep], pair[1][keep]
        self.parts = [{t: {k: (v[0][keep], v[1][keep]) for k, v in d.items()} for t, d in p.items()}
                      for p in self.parts]
        self.raw = [{k: (tuple(x[keep] for x in v) if isinstance(v, tuple) else v[keep]) for k, v in it.items()}
                    for it in self.raw]


# -- the sequential judge -------------------------------------------------------------------------------------------
def peeking_bounds(champion, challenger, *, sign, alpha, beta, tau2, binary):
    """Fixed-horizon normal bounds (z quantiles) read at every look: the naive "better" judge without the
    sequential correction, to show what peeking costs at the same nominal alpha and beta."""
    mean_b, var_b = seq.mean_and_variance(*champion, binary=binary)
    mean_c, var_c = seq.mean_and_variance(*challenger, binary=binary)
    sd = np.sqrt(var_b / np.maximum(champion[0], 1) + var_c / np.maximum(challenger[0], 1))
    g = sign * (mean_c - mean_b)
    return g, g - stats.norm.ppf(1 - alpha) * sd, g + stats.norm.ppf(1 - beta) * sd


def simulated(measure: str | None) -> str | None:
    """The simulated stream of a measure: one latency per request stands for the model's compute time and the
    end-to-end latency alike (the simulation has no gateway)."""
    return "latency_ms" if measure == "compute_ms" else measure


def sequential_verdicts(cum: Cumulative, cfg, bounds=seq.difference_bounds) -> tuple[np.ndarray, np.ndarray]:
    """Verdict codes (monitoring.sequential.combine) and whether a rejection was 'not better' only; each metric is
    decided by the judge's own ``sequential_decision``."""
    rules, crit, codes, ramps, futile = [], [], [], [], []
    keys = {"error": ("errors", "errors", None), "correct": ("labels", "correct", None),
            "latency_ms": ("latency", "latency", "latency"), "prediction_drift": ("drift", "drift", "drift")}
    for m in cfg.metrics:
        rule = m.effective_rule
        if rule == "report":
            continue
        nk, sk, qk = keys[simulated(m.measure)]
        champion, challenger = cum.stats(nk, sk, qk)
        _, _, _, code, ramp = sequential_decision(m, cfg, champion, challenger, bounds=bounds)
        need = m.min_samples or cfg.min_samples
        short = (cum.n[nk][0] < need) | (cum.n[nk][1] < need)
        code[short] = seq.NODATA
        if ramp is not None:
            ramp = ramp & ~short
        rules.append(rule)
        crit.append(m.critical)
        codes.append(code)
        ramps.append(ramp)
        if m.critical:
            futile.append((rule, code))
    verdict = seq.combine(rules, crit, codes, ramps)
    guard_bad = np.zeros(len(verdict), dtype=bool)
    for rule, code in futile:
        if rule == seq.NON_INFERIORITY:
            guard_bad |= seq.bad(rule, code)
    return verdict, (verdict == seq.REJECT) & ~guard_bad


SEQ_NAMES = {seq.HOLD: "nodata", seq.RAMP: "marginal", seq.PROMOTE: "pass", seq.REJECT: "fail"}


# -- the fixed-horizon judge (vectorised classify_metric) -----------------------------------------------------------
def binary_p(k_b, n_b, k_c, n_c):
    """Two-sided Mann-Whitney p of two 0/1 samples, as monitoring.judge.mann_whitney decides it: asymptotic with
    tie correction when trustworthy, else the exact permutation (hypergeometric) distribution."""
    n_b, n_c, k_b, k_c = (np.asarray(x, dtype=float) for x in (n_b, n_c, k_b, k_c))
    big_n, k = n_b + n_c, k_b + k_c
    u = k_c * (n_b - k_b) + 0.5 * (k_c * k_b + (n_c - k_c) * (n_b - k_b))
    ties = (k**3 - k + (big_n - k) ** 3 - (big_n - k)) / np.maximum(big_n * (big_n - 1), 1)
    sd = np.sqrt(np.maximum(n_b * n_c / 12 * ((big_n + 1) - ties), 1e-300))
    p_asym = 2 * stats.norm.sf(np.maximum(np.abs(u - n_b * n_c / 2) - 0.5, 0) / sd)
    expect = n_c * k / np.maximum(big_n, 1)
    d = np.abs(k_c - expect)
    lo, hi = np.floor(expect - d + 1e-9), np.ceil(expect + d - 1e-9)
    hyp = stats.hypergeom(big_n.astype(int), k.astype(int), n_c.astype(int))
    p_exact = hyp.cdf(lo) + hyp.sf(hi - 1)
    approx = (np.minimum(n_b, n_c) >= 50) & (np.minimum(k, big_n - k) >= 20)
    p = np.where(approx, p_asym, p_exact)
    return np.where((k == 0) | (k == big_n), 1.0, np.minimum(p, 1.0))


def continuous(values: np.ndarray, is_c: np.ndarray):
    """U-test p (normal approximation, continuity corrected) and the per-variant arrays (NaN padded)."""
    ranks = np.argsort(np.argsort(values, axis=1), axis=1) + 1.0
    n_c = is_c.sum(1).astype(float)
    n_b = is_c.shape[1] - n_c
    u = np.where(is_c, ranks, 0).sum(1) - n_c * (n_c + 1) / 2
    sd = np.sqrt(np.maximum(n_b * n_c * (n_b + n_c + 1) / 12, 1e-300))
    p = 2 * stats.norm.sf(np.maximum(np.abs(u - n_b * n_c / 2) - 0.5, 0) / sd)
    return p, np.where(is_c, np.nan, values), np.where(is_c, values, np.nan)


def fixed_rows(cum: Cumulative, cfg) -> dict[str, tuple]:
    """Per metric: (n_b, n_c, champion value, challenger value, p) for every canary."""
    raw = cum.raw
    lat = np.concatenate([it["latency"] for it in raw], 1)
    is_c = np.concatenate([it["is_c"] for it in raw], 1)
    p_lat, lb, lc = continuous(lat, is_c)
    drift_b = np.concatenate([it["drift"][0] for it in raw], 1)
    drift_c = np.concatenate([it["drift"][1] for it in raw], 1)
    both = np.concatenate([drift_b, drift_c], 1)
    nd_b, nd_c = np.isfinite(drift_b).sum(1), np.isfinite(drift_c).sum(1)
    p_drift = _drift_p(both, np.isfinite(both), drift_b.shape[1])
    e_b, e_c = cum.sums["errors"]
    n_b, n_c = cum.n["errors"]
    c_b, c_c = cum.sums["correct"]
    l_b, l_c = cum.n["labels"]
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "error": (n_b, n_c, e_b / n_b, e_c / n_c, binary_p(e_b, n_b, e_c, n_c)),
            "correct": (l_b, l_c, c_b / l_b, c_c / l_c, binary_p(c_b, l_b, c_c, l_c)),
            "latency_ms:median": (n_b, n_c, np.nanmedian(lb, 1), np.nanmedian(lc, 1), p_lat),
            "latency_ms:p99": (n_b, n_c, np.nanpercentile(lb, 99, 1), np.nanpercentile(lc, 99, 1), p_lat),
            "prediction_drift:mean": (nd_b, nd_c, np.nanmean(drift_b, 1), np.nanmean(drift_c, 1), p_drift),
        }


def _drift_p(both: np.ndarray, fin: np.ndarray, width_b: int) -> np.ndarray:
    """U-test p of the drift chunks, row by row (few chunks, variable counts)."""
    out = np.ones(both.shape[0])
    for i in range(both.shape[0]):
        b = both[i, :width_b][fin[i, :width_b]]
        c = both[i, width_b:][fin[i, width_b:]]
        if len(b) and len(c):
            out[i] = float(stats.mannwhitneyu(c, b, alternative="two-sided", method="asymptotic").pvalue)
    return out


def fixed_verdicts(cum: Cumulative, cfg, judge: Judge) -> list[Verdict]:
    """The fixed-horizon judge's verdict per canary, scored by the real Judge.score."""
    rows = fixed_rows(cum, cfg)
    per_metric = []
    for m in cfg.metrics:
        key = m.measure if m.measure in ("error", "correct") else f"{simulated(m.measure)}:{m.statistic}"
        if key not in rows:  # not simulated (the label-free estimate needs probabilities): NoData, as unscored
            continue
        n_b, n_c, v_b, v_c, p = rows[key]
        eff = v_c - v_b if m.effect == "absolute" else (v_c - v_b) / np.abs(v_b)
        need = m.min_samples or cfg.min_samples
        worse = seq.count_worse((n_b, v_b * n_b), (n_c, v_c * n_c), beta=cfg.alpha) if m.count else None
        cls = fixed_class(m, p, eff, cfg.alpha, worse)  # the judge's own rule (an undecided guard: NoData, hold)
        undecided = cls == NODATA
        short = (n_b < need) | (n_c < need)
        cls = np.where(short, NODATA, cls)
        per_metric.append((m, cls, undecided & ~short))
    verdicts = []
    for i in range(len(cum.n["errors"][0])):
        results = []
        for m, cls, undecided in per_metric:
            c = str(cls[i])
            failed = (c == HIGH and m.direction in ("increase", "either")) or (
                c == LOW and m.direction in ("decrease", "either"))
            results.append(_row(m, c, failed, "undecided" if undecided[i] else ""))
        verdicts.append(judge.score(results))
    return verdicts


def _row(m, cls: str, failed: bool, outcome: str = "") -> MetricResult:
    nan = float("nan")
    return MetricResult(m.name, m.group, m.critical, m.direction, m.statistic, 0, 0, nan, nan, nan, nan, nan,
                        m.effect, m.tolerance, nan, cls, failed, f"{m.name}: {cls}", outcome=outcome)


# -- the rollout ---------------------------------------------------------------------------------------------------
def simulate(policy: str, chal: Variant, runs: int, args, rng, window: str | None = None) -> dict:
    """``runs`` canaries of one scenario under one policy; rates and intervals to decision. ``window``: the
    sequential judge's window (default: matched for ``sequential``, cumulative otherwise)."""
    rollout = load_canary_config({"max_intervals": args.max_intervals, "failure_limit": 1,
                                  "on_marginal": "hold" if policy == "fixed_horizon" else "advance"})
    cfg = default_judge_config().model_copy(update={"method": "sequential"})
    fixed_cfg = cfg.model_copy(update={"method": "fixed_horizon"})
    judge = Judge(fixed_cfg)
    states = [RolloutState(schedule(rollout), rollout) for _ in range(runs)]
    kinds = np.array([""] * runs, dtype=object)
    exposure = np.zeros(runs)
    active = np.arange(runs)
    latency = next(m for m in cfg.metrics if simulated(m.measure) == "latency_ms" and m.effective_rule != "report")
    window = window or ("matched" if policy == "sequential" else "cumulative")
    cum = Cumulative(runs, keep_raw=policy == "fixed_horizon", log_offset=latency.log_offset, window=window)
    rule_based = policy != "fixed_horizon"
    index = 0
    requests = max(round(args.requests * chal.traffic), 1)
    while len(active):
        weights = np.array([states[i].phase.weight for i in active])
        n_c = np.rint(requests * weights).astype(int)
        it = draw_interval(rng, chal, requests - n_c, requests, args.label_coverage, index)
        index += 1
        cum.add(it)
        exposure[active] += n_c
        if rule_based:
            codes, futile = sequential_verdicts(cum, cfg, peeking_bounds if policy == "fixed_horizon_better" else
                                                seq.difference_bounds)
            verdicts = [Verdict(SEQ_NAMES[int(c)], 100.0, [], {}, ["not better" if f else SEQ_NAMES[int(c)]],
                                method="sequential") for c, f in zip(codes, futile, strict=True)]
        else:
            verdicts = fixed_verdicts(cum, fixed_cfg, judge)
        still = []
        for j, i in enumerate(active):
            state, verdict = states[i], verdicts[j]
            outcome = state.advance(verdict)  # the real rollout rule (sequential: marginal holds before 100 %)
            if state.decision is None:
                still.append(j)
            elif state.decision != PROMOTED:
                kinds[i] = ("budget" if outcome != "fail" else
                            "not_better" if verdict.reasons == ["not better"] else "worse")
        keep = np.array(still, dtype=int)
        active = active[keep]
        cum.select(keep)
    promoted = np.array([s.decision == PROMOTED for s in states])
    intervals = np.array([s.intervals for s in states])
    return {
        "promote_rate": float(promoted.mean()),
        "rollback_rate": float(1 - promoted.mean()),
        "rollback_worse_rate": float((kinds == "worse").mean()),
        "rollback_not_better_rate": float((kinds == "not_better").mean()),
        "rollback_budget_rate": float((kinds == "budget").mean()),
        "mean_intervals_to_decision": float(intervals.mean()),
        "mean_challenger_requests": float(exposure.mean()),
    }


def goals(result: dict) -> dict:
    seqr = result["policies"]["sequential"]
    fixed = result["policies"]["fixed_horizon"]
    same_claim = result["policies"]["fixed_horizon_better"]
    harmful = ("worse_1pt", "errors_2pct", "latency_x2", "drifted")
    issue = ("better_3pt", "worse_1pt", "errors_2pct")  # issue 22's three scenarios
    return {
        "aa_false_rollback_worse_le_1pct": all(seqr[s]["rollback_worse_rate"] <= 0.01
                                               for s in ("aa_identical", "aa_trend")),
        "aa_false_promotion_le_5pct": all(seqr[s]["promote_rate"] <= 0.05 for s in ("aa_identical", "aa_trend")),
        "harmful_rolled_back_ge_99pct": all(seqr[s]["rollback_rate"] >= 0.99 for s in harmful),
        "better_3pt_promoted_ge_95pct": seqr["better_3pt"]["promote_rate"] >= 0.95,
        "no_more_intervals_than_fixed_horizon": {
            s: seqr[s]["mean_intervals_to_decision"] <= fixed[s]["mean_intervals_to_decision"] for s in issue},
        "no_more_intervals_than_fixed_horizon_better": {
            s: seqr[s]["mean_intervals_to_decision"] <= same_claim[s]["mean_intervals_to_decision"] for s in issue},
        "aa_trend_cumulative_rollback_worse_rate": result["policies"]["sequential_cumulative"]["aa_trend"][
            "rollback_worse_rate"],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="simulated canaries per scenario and policy")
    parser.add_argument("--requests", type=int, default=2000, help="requests per interval (both variants)")
    parser.add_argument("--label-coverage", type=float, default=0.5, help="share of requests that get a label")
    parser.add_argument("--max-intervals", type=int, default=40, help="interval budget of the rollout")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset")
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated subset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    policies = [s.strip() for s in args.policies.split(",") if s.strip()]
    unknown = [s for s in names if s not in SCENARIOS]
    unknown_policies = [p for p in policies if p not in POLICIES]
    if unknown or unknown_policies or args.runs < 1 or args.requests < 40 or not 0 < args.label_coverage <= 1:
        print(f"error: bad arguments (unknown scenarios {unknown}, policies {unknown_policies}; need --runs >= 1, "
              f"--requests >= 40, "
              f"0 < --label-coverage <= 1); scenarios: {', '.join(SCENARIOS)}; policies: {', '.join(POLICIES)}",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    result: dict = {"policies": {}, "settings": {k: v for k, v in vars(args).items() if k != "json"}}
    for policy in policies:
        rng = np.random.default_rng(args.seed)
        result["policies"][policy] = {s: simulate(policy, SCENARIOS[s], args.runs, args, rng) for s in names}
    if set(names) == set(SCENARIOS) and set(policies) == set(POLICIES):
        result["goals"] = goals(result)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for policy, table in result["policies"].items():
            print(policy)
            for s, row in table.items():
                print(f"  {s:14s} promote {row['promote_rate']:.3f} rollback {row['rollback_rate']:.3f} "
                      f"(worse {row['rollback_worse_rate']:.3f}, not better {row['rollback_not_better_rate']:.3f}, "
                      f"budget {row['rollback_budget_rate']:.3f}) intervals {row['mean_intervals_to_decision']:.1f}")
        print(json.dumps(result.get("goals", {})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

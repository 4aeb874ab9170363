"""The statistical canary judge: challenger samples against champion samples, one metric at a time, then a score.

After Kayenta's design (Netflix/Google automated canary analysis):

1. per metric, a two-sided Mann-Whitney U test (``scipy.stats.mannwhitneyu``) asks whether the challenger's
   samples come from a shifted distribution, and an effect size (difference or ratio of a summary statistic) asks
   whether the shift is large enough to matter: only a significant shift *beyond the tolerance* is classified
   ``High`` or ``Low``; everything else is ``Pass``; too few samples on either side is ``NoData``;
2. a metric fails when its class is the bad direction (``High`` for errors/latency, ``Low`` for accuracy);
3. each group scores the share of its metrics (with data) that did not fail; the total score is the weighted mean
   of the group scores (0-100); ``pass_threshold`` and ``marginal_threshold`` turn it into pass / marginal / fail;
4. a failing critical metric fails the canary whatever the score.

Every verdict carries its evidence table (samples, statistic, p-value, effect, class per metric).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from monitoring.judge_config import JudgeConfig, MetricConfig

PASS, HIGH, LOW, NODATA = "Pass", "High", "Low", "NoData"
# At most this many pairwise differences for the Hodges-Lehmann shift estimate (a random subsample beyond it).
_MAX_PAIRS = 250_000
# Below these sizes the U test's normal approximation is not trusted (see mann_whitney).
_MIN_ASYMPTOTIC = 50
_MIN_ASYMPTOTIC_MINORITY = 20
PERMUTATIONS = 1000


@dataclass
class MetricResult:
    """One row of the evidence table."""

    name: str
    group: str
    critical: bool
    direction: str
    statistic: str
    n_champion: int
    n_challenger: int
    champion_value: float
    challenger_value: float
    u_statistic: float
    p_value: float
    effect: float
    effect_kind: str
    tolerance: float
    shift: float  # Hodges-Lehmann estimate of the location shift (challenger - champion)
    classification: str
    failed: bool
    reason: str

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass
class Verdict:
    """The judge's answer for one window: pass / marginal / fail (or nodata when no metric had data)."""

    verdict: str
    score: float
    metrics: list[MetricResult]
    group_scores: dict[str, float]
    reasons: list[str] = field(default_factory=list)

    @property
    def critical_nodata(self) -> list[str]:
        """Critical metrics without enough samples (a promotion should not rest on them)."""
        return [m.name for m in self.metrics if m.critical and m.classification == NODATA]

    @property
    def failed_metrics(self) -> list[str]:
        return [m.name for m in self.metrics if m.failed]

    def table(self) -> list[dict]:
        """The evidence as rows (one per metric), JSON-serialisable."""
        return [m.to_dict() for m in self.metrics]

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "score": round(self.score, 2),
            "group_scores": {k: round(v, 2) for k, v in self.group_scores.items()},
            "reasons": list(self.reasons),
            "metrics": self.table(),
        }

    def summary(self) -> str:
        """One sentence a person can read in a tag: the verdict, the score and what drove it."""
        head = f"{self.verdict} (score {self.score:.0f}/100)"
        return head + (": " + "; ".join(self.reasons) if self.reasons else "")


def summarize(values: np.ndarray, statistic: str) -> float:
    """The summary statistic a metric's effect compares (mean, median or a percentile)."""
    if len(values) == 0:
        return float("nan")
    if statistic == "mean":
        return float(np.mean(values))
    if statistic == "median":
        return float(np.median(values))
    return float(np.percentile(values, float(statistic[1:])))


def effect_size(champion: float, challenger: float, kind: str) -> float:
    """``absolute``: challenger - champion; ``relative``: (challenger - champion) / |champion| (0/0 -> 0)."""
    if kind == "absolute":
        return challenger - champion
    if champion == 0:
        if challenger == 0:
            return 0.0
        return math.copysign(math.inf, challenger)
    return (challenger - champion) / abs(champion)


def hodges_lehmann_shift(champion: np.ndarray, challenger: np.ndarray, seed: int = 0) -> float:
    """Median of all pairwise differences challenger - champion: the shift estimate that goes with the U test."""
    n, m = len(champion), len(challenger)
    if n == 0 or m == 0:
        return float("nan")
    if n * m <= _MAX_PAIRS:
        return float(np.median(np.subtract.outer(challenger, champion)))
    rng = np.random.default_rng(seed)
    i = rng.integers(0, m, _MAX_PAIRS)
    j = rng.integers(0, n, _MAX_PAIRS)
    return float(np.median(challenger[i] - champion[j]))


def mann_whitney(champion: np.ndarray, challenger: np.ndarray, *, seed: int = 0) -> tuple[float, float]:
    """Two-sided Mann-Whitney U of the challenger against the champion: ``(U, p)``.

    The normal approximation (with tie correction) is used when it is trustworthy; with a small sample or a
    heavily tied binary one (e.g. 1 error among 10 requests against none among 200) it is far too confident, so
    there the p-value comes from a permutation test of U (``PERMUTATIONS`` random relabellings).
    Two samples that are one identical constant (e.g. no errors anywhere) are no evidence of a shift: p = 1.
    """
    both = np.concatenate([champion, challenger])
    if np.all(both == both[0]):
        return float(len(champion) * len(challenger) / 2.0), 1.0
    _, counts = np.unique(both, return_counts=True)
    approximate = min(len(champion), len(challenger)) >= _MIN_ASYMPTOTIC and not (
        len(counts) <= 2 and counts.min() < _MIN_ASYMPTOTIC_MINORITY
    )
    method = "asymptotic" if approximate else stats.PermutationMethod(n_resamples=PERMUTATIONS, random_state=seed)
    result = stats.mannwhitneyu(challenger, champion, alternative="two-sided", method=method)
    p = float(result.pvalue)
    return float(result.statistic), (1.0 if not math.isfinite(p) else min(1.0, p))


def classify_metric(
    metric: MetricConfig, champion: np.ndarray, challenger: np.ndarray, *, alpha: float, min_samples: int
) -> MetricResult:
    """Compare one metric's samples; see the module docstring for the rule."""
    champion = _clean(champion)
    challenger = _clean(challenger)
    need = metric.min_samples or min_samples
    base = {
        "name": metric.name, "group": metric.group, "critical": metric.critical, "direction": metric.direction,
        "statistic": metric.statistic, "n_champion": len(champion), "n_challenger": len(challenger),
        "champion_value": summarize(champion, metric.statistic),
        "challenger_value": summarize(challenger, metric.statistic),
        "effect_kind": metric.effect, "tolerance": metric.tolerance,
    }
    if len(champion) < need or len(challenger) < need:
        return MetricResult(
            **base, u_statistic=float("nan"), p_value=float("nan"), effect=float("nan"), shift=float("nan"),
            classification=NODATA, failed=metric.must_have_data,
            reason=f"{metric.name}: not enough samples ({len(champion)} champion, {len(challenger)} challenger; "
                   f"need {need} each)",
        )
    u, p = mann_whitney(champion, challenger)
    effect = effect_size(base["champion_value"], base["challenger_value"], metric.effect)
    shift = hodges_lehmann_shift(champion, challenger)
    significant = p < alpha
    if significant and effect > metric.tolerance:
        cls = HIGH
    elif significant and effect < -metric.tolerance:
        cls = LOW
    else:
        cls = PASS
    failed = (cls == HIGH and metric.direction in ("increase", "either")) or (
        cls == LOW and metric.direction in ("decrease", "either")
    )
    unit = "" if metric.effect == "absolute" else " (relative)"
    if cls == PASS:
        why = "no significant shift" if not significant else f"shift within tolerance {metric.tolerance:g}{unit}"
    else:
        why = (f"{'higher' if cls == HIGH else 'lower'} on the challenger: {metric.statistic} "
               f"{base['challenger_value']:.4g} vs {base['champion_value']:.4g}, effect {effect:+.4g}{unit} beyond "
               f"tolerance {metric.tolerance:g}, p={p:.2g}")
    return MetricResult(**base, u_statistic=u, p_value=p, effect=effect, shift=shift, classification=cls,
                        failed=failed, reason=f"{metric.name}: {why}")


def _clean(values) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    return array[np.isfinite(array)]


class Judge:
    """Scores per-variant samples against a :class:`JudgeConfig`."""

    def __init__(self, config: JudgeConfig) -> None:
        self.config = config

    def judge(self, samples: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Verdict:
        """``samples``: metric name -> (champion samples, challenger samples). A metric left out is NoData."""
        cfg = self.config
        empty = np.array([])
        results = [
            classify_metric(m, *samples.get(m.name, (empty, empty)), alpha=cfg.alpha, min_samples=cfg.min_samples)
            for m in cfg.metrics
        ]
        return self.score(results)

    def score(self, results: list[MetricResult]) -> Verdict:
        cfg = self.config
        groups: dict[str, list[MetricResult]] = {}
        for r in results:
            if r.classification != NODATA or r.failed:  # must_have_data NoData counts as a failed metric
                groups.setdefault(r.group, []).append(r)
        group_scores = {g: 100.0 * sum(not r.failed for r in rs) / len(rs) for g, rs in groups.items()}
        reasons = [r.reason for r in results if r.failed]
        if not group_scores:
            return Verdict("nodata", 0.0, results, {}, ["no metric had enough samples to judge"])
        total_weight = sum(cfg.group_weight(g) for g in group_scores)
        if total_weight > 0:
            score = sum(cfg.group_weight(g) * s for g, s in group_scores.items()) / total_weight
        else:
            score = float(np.mean(list(group_scores.values())))
        critical = [r for r in results if r.failed and r.critical]
        if critical:
            verdict = "fail"
            reasons = [f"critical metric failed: {r.reason}" for r in critical] + [
                r.reason for r in results if r.failed and not r.critical
            ]
        elif score >= cfg.pass_threshold:
            verdict = "pass"
        elif score >= cfg.marginal_threshold:
            verdict = "marginal"
        else:
            verdict = "fail"
        return Verdict(verdict, float(score), results, group_scores, reasons)

"""The statistical canary judge: challenger samples against champion samples, one metric at a time, then a score.

After Kayenta's design (Netflix/Google automated canary analysis):

1. per metric, a two-sided Mann-Whitney U test (``scipy.stats.mannwhitneyu``) asks whether the challenger's
   samples come from a shifted distribution, and an effect size (difference or ratio of a summary statistic) asks
   whether the shift is large enough to matter: only a significant shift *beyond the tolerance* is classified
   ``High`` or ``Low``; everything else is ``Pass`` -- except a critical error guard beyond its tolerance without
   proof, which is undecided (``NoData``: the step holds, :func:`fixed_class`); too few samples on either side is
   ``NoData``;
2. a metric fails when its class is the bad direction (``High`` for errors/latency, ``Low`` for accuracy);
3. each group scores the share of its metrics (with data) that did not fail; the total score is the weighted mean
   of the group scores (0-100); ``pass_threshold`` and ``marginal_threshold`` turn it into pass / marginal / fail;
4. a failing critical metric fails the canary whatever the score.

Every verdict carries its evidence table (samples, statistic, p-value, effect, class per metric).

That is ``method: fixed_horizon``. With ``method: sequential`` (the packaged default) each metric is instead decided
by an always-valid confidence sequence (:mod:`monitoring.sequential`) under its rule -- non-inferiority with a
margin, or superiority powered for a minimum effect -- and the verdict is the promotion rule over the critical
metrics (:func:`monitoring.sequential.combine`): ``pass`` = proven non-inferior everywhere and superior on the
primary metric; ``marginal`` = no guard proven bad and each guard's estimate inside its margin (``ramp:
within_margin``; ``ramp: proof``: guards proven non-inferior), primary still undecided (safe to ramp, not to
promote); ``fail`` = a critical metric proven bad; ``nodata`` = undecided (hold). ``Verdict.decided_by`` names the
rule that decided. Samples may carry time-matched weights (:class:`monitoring.samples.MetricSamples`): both methods
then compare the champion over the challenger's mix of intervals.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

import numpy as np
from scipy import stats

from monitoring import sequential as seq
from monitoring.core.enums import VerdictKind
from monitoring.judge_config import JudgeConfig, MetricConfig
from monitoring.samples import MetricSamples, weighted_quantile, weighted_stats

PASS, HIGH, LOW, NODATA = "Pass", "High", "Low", "NoData"
# At most this many pairwise differences for the Hodges-Lehmann shift estimate (a random subsample beyond it).
_MAX_PAIRS = 250_000
# Below these sizes the U test's normal approximation is not trusted (see mann_whitney).
_MIN_ASYMPTOTIC = 50
_MIN_ASYMPTOTIC_MINORITY = 20
PERMUTATIONS = 1000
_PERMUTATION_CHUNK = 50  # relabellings drawn at once (van_elteren: chunk x stratum rows in memory)
# Sequential relative metrics (latency): log values clipped at this ratio around the champion's median.
ROBUST_RATIO = 10.0


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
    # Sequential method only (NaN / "" under fixed_horizon): the rule, its threshold on the compared scale, the
    # good-direction difference with its always-valid bounds, and the outcome (monitoring.sequential.OUTCOME_NAMES).
    rule: str = ""
    threshold: float = float("nan")
    estimate: float = float("nan")
    lower: float = float("nan")
    upper: float = float("nan")
    outcome: str = ""
    # What was compared: the prediction-log measure (e.g. compute_ms: model time, latency_ms: end to end) or
    # "promql", so a reader of the table knows which latency a latency row is.
    measure: str = ""
    log_offset: float = 0.0  # a relative effect's offset: the values compared are value + log_offset

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


_METRIC_FIELDS = {f.name for f in fields(MetricResult)}


@dataclass
class Verdict:
    """The judge's answer for one window: pass / marginal / fail (or nodata when no metric had data)."""

    verdict: VerdictKind
    score: float
    metrics: list[MetricResult]
    group_scores: dict[str, float]
    reasons: list[str] = field(default_factory=list)
    method: str = "fixed_horizon"
    decided_by: str = ""  # which rule decided (sequential), e.g. "superiority on online_accuracy"

    @property
    def critical_nodata(self) -> list[str]:
        """Critical metrics without enough samples, or undecided (an error guard beyond its tolerance without
        proof, :func:`fixed_class`): a promotion should not rest on them."""
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
            "method": self.method,
            "decided_by": self.decided_by,
            "metrics": self.table(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Verdict:
        """The verdict :meth:`to_dict` wrote (e.g. into the rollout record), so a report can show the one that
        decided instead of judging again on data that kept arriving."""
        floats = {f.name for f in fields(MetricResult) if f.type in ("float", float)}
        metrics = [MetricResult(**{k: (float("nan") if v is None and k in floats else v) for k, v in m.items()
                                   if k in _METRIC_FIELDS}) for m in data.get("metrics", [])]
        return cls(verdict=VerdictKind(data["verdict"]), score=float(data["score"]), metrics=metrics,
                   group_scores=dict(data.get("group_scores") or {}), reasons=list(data.get("reasons") or []),
                   method=data.get("method", "fixed_horizon"), decided_by=data.get("decided_by", ""))

    def summary(self) -> str:
        """One sentence a person can read in a tag: the verdict, the score and what drove it."""
        head = f"{self.verdict} (score {self.score:.0f}/100)"
        if self.decided_by:
            head += f" [{self.decided_by}]"
        return head + (": " + "; ".join(self.reasons) if self.reasons else "")


def summarize(values: np.ndarray, statistic: str, weights: np.ndarray | None = None) -> float:
    """The summary statistic a metric's effect compares (mean, median, a percentile, or ``rms``: the root of the
    mean square, e.g. a regression's RMSE from its absolute errors); weighted when ``weights`` are given (the
    time-matched comparison, :mod:`monitoring.samples`)."""
    if len(values) == 0:
        return float("nan")
    if weights is not None:
        if statistic in ("rms", "mean"):
            mean = float(np.average(np.square(values) if statistic == "rms" else values, weights=weights))
            return math.sqrt(mean) if statistic == "rms" else mean
        return weighted_quantile(values, weights, 0.5 if statistic == "median" else float(statistic[1:]) / 100)
    if statistic == "rms":
        return float(np.sqrt(np.mean(np.square(values))))
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


def van_elteren(champion: np.ndarray, challenger: np.ndarray, champion_strata: np.ndarray,
                challenger_strata: np.ndarray, *, seed: int = 0) -> tuple[float, float]:
    """Van Elteren's stratified Wilcoxon test, two-sided: ``(T, p)``.

    van Elteren, P. H. (1960). "On the combination of independent two-sample tests of Wilcoxon." Bull. Int.
    Statist. Inst. 37. Per stratum (a rollout step) the challenger's rank sum ``W_s`` among the stratum's ``N_s``
    rows; ``T = sum W_s / (N_s + 1)`` weights each stratum by its size (locally most powerful for a common shift),
    with mean ``sum n_c,s / 2`` and the tie-corrected variance. Only strata where both variants served count. As
    :func:`mann_whitney`: the normal approximation when the pooled samples allow it, else ``PERMUTATIONS``
    relabellings within each stratum.
    """
    obs = exp = var = 0.0
    perm = np.zeros(PERMUTATIONS)
    rng = np.random.default_rng(seed)
    both = np.concatenate([champion, challenger])
    _, counts = np.unique(both, return_counts=True) if len(both) else (None, np.array([0]))
    approximate = min(len(champion), len(challenger)) >= _MIN_ASYMPTOTIC and not (
        len(counts) <= 2 and counts.min() < _MIN_ASYMPTOTIC_MINORITY)
    for s in np.intersect1d(champion_strata, challenger_strata):
        b, c = champion[champion_strata == s], challenger[challenger_strata == s]
        n = len(b) + len(c)
        ranks = stats.rankdata(np.concatenate([b, c]))
        _, ties = np.unique(ranks, return_counts=True)
        obs += ranks[len(b):].sum() / (n + 1)
        exp += len(c) / 2.0
        var += len(b) * len(c) / 12.0 * ((n + 1) - (ties**3 - ties).sum() / (n * (n - 1))) / (n + 1) ** 2
        for start in range(0, PERMUTATIONS if not approximate else 0, _PERMUTATION_CHUNK):  # bounded memory
            rows = min(_PERMUTATION_CHUNK, PERMUTATIONS - start)
            perm[start:start + rows] += rng.permuted(np.tile(ranks, (rows, 1)), axis=1)[:, len(b):].sum(1) / (n + 1)
    if var <= 0:
        return obs, 1.0
    if approximate:
        return obs, float(min(1.0, 2 * stats.norm.sf(abs(obs - exp) / math.sqrt(var))))
    return obs, float((1 + np.sum(np.abs(perm - exp) >= abs(obs - exp) - 1e-12)) / (PERMUTATIONS + 1))


def classify_metric(
    metric: MetricConfig, champion: np.ndarray, challenger: np.ndarray, *, alpha: float, min_samples: int,
    samples: MetricSamples | None = None,
) -> MetricResult:
    """Compare one metric's samples; see the module docstring for the rule. With weighted ``samples`` (the
    time-matched window) the summaries are weighted, rows of weight 0 are left out, and the test is van Elteren's
    stratified one where the rows carry their strata."""
    w_b = w_c = s_b = s_c = None
    if samples is not None and samples.weighted:
        (champion, w_b, s_b), (challenger, w_c, s_c) = samples.side(0), samples.side(1)
    else:
        champion = _clean(champion)
        challenger = _clean(challenger)
    need = metric.min_samples or min_samples
    base = {
        "name": metric.name, "group": metric.group, "critical": metric.critical, "direction": metric.direction,
        "statistic": metric.statistic, "n_champion": len(champion), "n_challenger": len(challenger),
        "champion_value": summarize(champion, metric.statistic, w_b),
        "challenger_value": summarize(challenger, metric.statistic, w_c),
        "effect_kind": metric.effect, "tolerance": metric.tolerance,
        "measure": metric.measure if metric.source == "prediction_log" else "promql",
        "log_offset": metric.log_offset if metric.effect == "relative" else 0.0,
    }
    if len(champion) < need or len(challenger) < need:
        return MetricResult(
            **base, u_statistic=float("nan"), p_value=float("nan"), effect=float("nan"), shift=float("nan"),
            classification=NODATA, failed=metric.must_have_data,
            reason=f"{metric.name}: not enough samples ({len(champion)} champion, {len(challenger)} challenger; "
                   f"need {need} each)",
        )
    if s_b is not None and s_c is not None:
        u, p = van_elteren(champion, challenger, s_b, s_c)
    else:
        u, p = mann_whitney(champion, challenger)
    # A relative effect is taken on value + log_offset, as the sequential test does: a 0.3 ms vs 0.5 ms model pair is
    # not "68% slower" for anyone who waits on it (the noise of a busy 2-core machine is larger than both).
    offset = metric.log_offset if metric.effect == "relative" else 0.0
    effect = effect_size(base["champion_value"] + offset, base["challenger_value"] + offset, metric.effect)
    shift = hodges_lehmann_shift(champion, challenger)
    worse = None
    if metric.count:  # errors: also the exact conditional count test (monitoring.sequential), powerful at few events
        worse = bool(seq.count_worse(weighted_stats(champion, w_b)[:2], weighted_stats(challenger, w_c)[:2],
                                     beta=alpha))
    significant = p < alpha or bool(worse)
    cls = str(fixed_class(metric, p, effect, alpha, worse))
    failed = (cls == HIGH and metric.direction in ("increase", "either")) or (
        cls == LOW and metric.direction in ("decrease", "either")
    )
    why = _why(metric, base, cls, effect, p, offset, significant)
    if cls == NODATA:  # a guard that looks worse than its tolerance without proof either way: hold the step
        return MetricResult(**base, u_statistic=u, p_value=p, effect=effect, shift=shift, classification=cls,
                            failed=False, reason=f"{metric.name}: {why}", outcome="undecided")
    return MetricResult(**base, u_statistic=u, p_value=p, effect=effect, shift=shift, classification=cls,
                        failed=failed, reason=f"{metric.name}: {why}")


def _why(metric: MetricConfig, base: dict, cls: str, effect: float, p: float, offset: float,
         significant: bool) -> str:
    """The reason a compared metric got its class, in words (the rule stated where it is applied)."""
    unit = "" if metric.effect == "absolute" else " (relative)"
    if cls == NODATA:
        return (f"undecided: {metric.statistic} {base['challenger_value']:.4g} vs {base['champion_value']:.4g}, "
                f"effect {effect:+.4g}{unit} beyond tolerance {metric.tolerance:g} but not significant (p={p:.2g}): "
                "not enough samples to tell, hold")
    if cls != PASS:
        return (f"{'higher' if cls == HIGH else 'lower'} on the challenger: {metric.statistic} "
                f"{base['challenger_value']:.4g} vs {base['champion_value']:.4g}, effect {effect:+.4g}{unit} beyond "
                f"tolerance {metric.tolerance:g}, p={p:.2g}")
    why = "no significant shift" if not significant else f"shift within tolerance {metric.tolerance:g}{unit}"
    if metric.effect == "relative":  # the rule where it is applied: which scale, what ratio (issue 24)
        from monitoring.decision_reason import MS_MEASURES, relative_rule

        why += ": " + relative_rule(metric.statistic, base["champion_value"], base["challenger_value"],
                                    offset, effect, metric.tolerance, " ms" if base["measure"] in MS_MEASURES else "")
    return why


def fixed_class(metric: MetricConfig, p, effect, alpha: float, worse=None):
    """The fixed-horizon class of one metric from its p-value and effect (arrays: vectorised over canaries, so
    benchmarks/canary_sim.py classifies with this very function): ``High`` / ``Low`` for a significant shift beyond
    the tolerance, else ``Pass`` -- except a critical non-inferiority guard whose effect lies beyond its tolerance
    in the bad direction without being significant, which is ``NoData`` (undecided: the step holds).

    Why: "no significant shift" is not evidence of "no harm" when the sample is too small to show the harm. A
    challenger failing 2 % of requests serves ~8 requests in a 5 % step of a thin interval (a loaded host), far too
    few for a significant difference, and was promoted as "passed every step" in 17 % of real-path rollouts under
    load. A non-inferiority conclusion needs the data to be compatible with a difference inside the margin (ICH E9
    and the CONSORT extension for non-inferiority trials: Piaggio et al. (2012), JAMA 308(24), where a confidence
    interval that crosses the margin is "inconclusive", never "non-inferior"); requiring the whole interval inside
    the margin would hold an A/A canary for hundreds of requests at 5 %, so the fixed-horizon judge asks only that
    the point estimate be inside it and holds otherwise -- the sequential judge's ``ramp: within_margin`` rule
    (:func:`monitoring.sequential.within_margin`). Holding lets the cumulative window gather the evidence that
    then proves the harm (rollback) or puts the estimate back inside the margin (pass)."""
    p, effect = np.asarray(p, dtype=float), np.asarray(effect, dtype=float)
    significant = p < alpha
    if worse is not None and metric.direction == "increase":  # the count test's proof of "worse" (errors)
        significant = significant | np.asarray(worse, dtype=bool)
    cls = np.where(significant & (effect > metric.tolerance), HIGH,
                   np.where(significant & (effect < -metric.tolerance), LOW, PASS)).astype(object)
    if metric.critical and metric.count and metric.effective_rule == seq.NON_INFERIORITY:
        cls[(effect > metric.tolerance) & ~significant] = NODATA
    return cls if cls.ndim else cls[()]


def compared_values(metric: MetricConfig, values: np.ndarray, champion: np.ndarray,
                    champion_weights: np.ndarray | None = None) -> np.ndarray:
    """What the sequential test averages: the values, or for a relative effect the logs of ``value + log_offset``,
    winsorised at ``ROBUST_RATIO`` times / divided by the champion's (weighted) median (a stall counts as at most
    10x slow)."""
    if metric.effect != "relative":
        return values
    floor = 1e-9
    logs = np.log(np.maximum(values + metric.log_offset, floor))
    if len(champion) == 0:
        return logs
    median = weighted_quantile(champion, champion_weights, 0.5)
    centre = float(np.log(max(median + metric.log_offset, floor)))
    return np.clip(logs, centre - math.log(ROBUST_RATIO), centre + math.log(ROBUST_RATIO))


def sequential_decision(metric: MetricConfig, cfg: JudgeConfig, champion: tuple, challenger: tuple, *,
                        bounds=seq.difference_bounds) -> tuple:
    """One metric's sequential decision from sufficient statistics ``(n, sum, sum of squares)`` of the compared
    values (arrays: vectorised over canaries, so benchmarks/canary_sim.py decides with this very function).

    Returns ``(estimate, lower, upper, outcome codes, ramp_ok)``; ``ramp_ok`` is None under ``ramp: proof``.
    ``bounds`` is the bound function of a mean difference (the simulation swaps in fixed-horizon bounds).
    """
    rule = metric.effective_rule
    sign = 1.0 if metric.direction == "decrease" else -1.0
    tau2 = (seq.TAU_SCALE * metric.threshold) ** 2
    if metric.statistic == "rms":  # a regression's RMSE: the log ratio of the two roots of mean squares
        g, lo, hi = seq.log_rms_ratio_bounds(champion, challenger, sign=sign, alpha=cfg.alpha, beta=cfg.beta,
                                             tau2=tau2)
    else:
        g, lo, hi = bounds(champion, challenger, sign=sign, alpha=cfg.alpha, beta=cfg.beta, tau2=tau2,
                           binary=metric.binary)
    worse = seq.count_worse(champion[:2], challenger[:2], beta=cfg.beta) if metric.count else None
    code = seq.decide(rule, lo, hi, metric.threshold, g, worse=worse)
    ramp = seq.within_margin(rule, code, g, metric.threshold) if cfg.ramp == "within_margin" else None
    return g, lo, hi, code, ramp


def sequential_metric(metric: MetricConfig, fixed: MetricResult, champion, challenger, cfg: JudgeConfig,
                      samples: MetricSamples | None = None) -> MetricResult:
    """One metric under its sequential rule; ``fixed`` (the fixed-horizon row) supplies the descriptive columns.
    With weighted ``samples`` (time-matched) the sufficient statistics are weighted (Kish's effective n)."""
    rule = metric.effective_rule
    if fixed.classification == NODATA or rule == "report":
        outcome = "nodata" if fixed.classification == NODATA else "report"
        return dataclasses.replace(fixed, rule=rule, threshold=metric.threshold, outcome=outcome)
    samples = samples if samples is not None else MetricSamples(champion, challenger)
    (champion, w_b, _), (challenger, w_c, _) = samples.side(0), samples.side(1)
    w_b, w_c = (w_b, w_c) if samples.weighted else (None, None)
    if metric.statistic == "rms":
        b, c = np.square(champion), np.square(challenger)
    else:
        b = compared_values(metric, champion, champion, w_b)
        c = compared_values(metric, challenger, champion, w_b)
    g, lo, hi, code, _ = sequential_decision(metric, cfg, weighted_stats(b, w_b), weighted_stats(c, w_c))
    code = int(code)
    outcome = seq.OUTCOME_NAMES[code]
    worse, better = (HIGH, LOW) if metric.direction == "increase" else (LOW, HIGH)
    failed = bool(seq.bad(rule, code))
    cls = worse if failed else better if code == seq.SUPERIOR else PASS
    scale = "log " if metric.effect == "relative" else ""
    matched = ", time-matched" if samples.weighted else ""
    counts = ", worse tested on the event counts" if metric.count else ""
    reason = (f"{metric.name}: {outcome.replace('_', '-')} ({rule.replace('_', '-')}, {scale}threshold "
              f"{metric.threshold:.3g}{matched}{counts}): good-direction difference {float(g):+.4g}, always-valid "
              f"bounds [{float(lo):+.4g}, {float(hi):+.4g}]")
    return dataclasses.replace(fixed, classification=cls, failed=failed, reason=reason, rule=rule,
                               threshold=metric.threshold, estimate=float(g), lower=float(lo), upper=float(hi),
                               outcome=outcome)


def _code(result: MetricResult) -> int:
    """The outcome code of a sequential row ("report" rows decide nothing: NoData)."""
    names = seq.OUTCOME_NAMES
    return names.index(result.outcome) if result.outcome in names else seq.NODATA


def _as_samples(pair) -> MetricSamples:
    return pair if isinstance(pair, MetricSamples) else MetricSamples(*pair)


def _clean(values) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    return array[np.isfinite(array)]


class Judge:
    """Scores per-variant samples against a :class:`JudgeConfig`."""

    def __init__(self, config: JudgeConfig) -> None:
        self.config = config

    def judge(self, samples: Mapping[str, tuple[np.ndarray, np.ndarray] | MetricSamples]) -> Verdict:
        """``samples``: metric name -> (champion samples, challenger samples), or a :class:`MetricSamples` with
        the time-matched weights. A metric left out is NoData."""
        cfg = self.config
        empty = np.array([])
        pairs = {m.name: _as_samples(samples.get(m.name, (empty, empty))) for m in cfg.metrics}
        results = [
            classify_metric(m, *pairs[m.name], alpha=cfg.alpha, min_samples=cfg.min_samples, samples=pairs[m.name])
            for m in cfg.metrics
        ]
        if cfg.method == "sequential":
            results = [sequential_metric(m, r, *pairs[m.name], cfg, samples=pairs[m.name])
                       for m, r in zip(cfg.metrics, results, strict=True)]
            return self.sequential_verdict(results)
        return self.score(results)

    def _weighted(self, results: list[MetricResult]) -> tuple[float, dict[str, float]]:
        """The 0-100 score: per group the share of metrics (with data) that did not fail, weighted over groups."""
        cfg = self.config
        groups: dict[str, list[MetricResult]] = {}
        for r in results:
            if r.classification != NODATA or r.failed:  # must_have_data NoData counts as a failed metric
                groups.setdefault(r.group, []).append(r)
        group_scores = {g: 100.0 * sum(not r.failed for r in rs) / len(rs) for g, rs in groups.items()}
        if not group_scores:
            return 0.0, {}
        total_weight = sum(cfg.group_weight(g) for g in group_scores)
        if total_weight > 0:
            return sum(cfg.group_weight(g) * s for g, s in group_scores.items()) / total_weight, group_scores
        return float(np.mean(list(group_scores.values()))), group_scores

    def sequential_verdict(self, results: list[MetricResult]) -> Verdict:
        """The promotion rule (:func:`monitoring.sequential.combine`) over the sequential outcomes of one look."""
        ramp = ([seq.within_margin(r.rule, _code(r), r.estimate, r.threshold) for r in results]
                if self.config.ramp == "within_margin" else None)
        code = int(seq.combine([r.rule for r in results], [r.critical for r in results],
                               [np.array(_code(r)) for r in results], ramp))
        score, group_scores = self._weighted(results)
        deciding = [r for r in results if r.critical and r.rule in (seq.SUPERIORITY, seq.NON_INFERIORITY)]
        bad = [r for r in deciding if seq.bad(r.rule, _code(r))]
        open_ = [r for r in deciding if not seq.good(r.rule, _code(r))]
        guards = ", ".join(r.name for r in deciding if r.rule == seq.NON_INFERIORITY)
        if code == seq.REJECT:
            verdict, reasons = VerdictKind.FAIL, [f"critical metric failed: {r.reason}" for r in bad]
            decided_by = "; ".join(f"{r.rule} on {r.name} ({r.outcome})" for r in bad)
        elif code == seq.PROMOTE:
            verdict, reasons = VerdictKind.PASS, []
            sup = ", ".join(r.name for r in deciding if r.rule == seq.SUPERIORITY)
            decided_by = (f"superiority on {sup} and " if sup else "") + f"non-inferiority on {guards}"
        elif code == seq.RAMP:
            verdict, reasons = VerdictKind.MARGINAL, [f"undecided: {r.reason}" for r in open_]
            how = "within their margins" if self.config.ramp == "within_margin" else "non-inferiority"
            decided_by = f"{how} on {guards} (safe to ramp; not yet proven better)"
        else:
            verdict, reasons = VerdictKind.NODATA, [f"undecided: {r.reason}" for r in open_]
            decided_by = "undecided (hold)"
        reasons += [r.reason for r in results if r.failed and not r.critical]
        return Verdict(verdict, float(score), results, group_scores, reasons, method="sequential",
                       decided_by=decided_by)

    def score(self, results: list[MetricResult]) -> Verdict:
        cfg = self.config
        score, group_scores = self._weighted(results)
        reasons = [r.reason for r in results if r.failed]
        if not group_scores:
            return Verdict(VerdictKind.NODATA, 0.0, results, {}, ["no metric had enough samples to judge"])
        critical = [r for r in results if r.failed and r.critical]
        if critical:
            verdict = VerdictKind.FAIL
            reasons = [f"critical metric failed: {r.reason}" for r in critical] + [
                r.reason for r in results if r.failed and not r.critical
            ]
        elif score >= cfg.marginal_threshold and (held := [r for r in results if r.critical
                                                             and r.outcome == "undecided"]):
            verdict, reasons = VerdictKind.NODATA, [r.reason for r in held] + reasons  # a guard undecided: hold
        elif score >= cfg.pass_threshold:
            verdict = VerdictKind.PASS
        elif score >= cfg.marginal_threshold:
            verdict = VerdictKind.MARGINAL
        else:
            verdict = VerdictKind.FAIL
        return Verdict(verdict, float(score), results, group_scores, reasons)

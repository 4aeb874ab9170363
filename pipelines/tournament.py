"""The shadow tournament: does the offline ranking of the NAS candidates hold on production traffic?

One run serves ``@champion`` to every caller and mirrors each request to the retrained candidates (aliases
``candidate-1`` .. ``candidate-k``, see :mod:`pipelines.retrain`) through the gateway's ``shadow_aliases``; the
``prod`` split is replayed once with feedback, so every candidate answers the same rows and gets the same labels.
From the prediction log it ranks the candidates online (accuracy from feedback, median latency) and compares with
their offline ranking (validation accuracy and latency from the version tags): Spearman's rho and Kendall's tau,
and whether the offline winner is also the online winner; when it is not, the gap and an exact McNemar test on
the rows both answered (paired: same inputs, same labels) tell whether the winner *significantly* falls behind.
A PNG plot and a JSON table go to an MLflow run nested under the active run.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from prefect import flow
from scipy import stats

from monitoring.online import summarize
from monitoring.vocabulary import CHAMPION, candidate_rank, tag
from pipelines import registry
from pipelines.config import TournamentConfig
from pipelines.contracts import (
    PairedTest,
    RankCorrelation,
    TournamentOutput,
    TournamentRow,
    TournamentWinner,
)
from pipelines.errors import UserError, parse_model
from pipelines.gateway_session import gateway_session
from pipelines.tracking import ensure_tracking

REPORT_DIR = "tournament"


def parse_config(config: dict[str, Any] | TournamentConfig | None) -> TournamentConfig:
    """Validate the tournament options; a mistake becomes a UserError naming the option."""
    return parse_model(TournamentConfig, config, "tournament options")


def candidate_aliases(client, model_name: str) -> list[str]:
    """Every ``candidate-N`` alias of the model, ordered by N (its offline rank)."""
    try:
        aliases = client.get_registered_model(model_name).aliases or {}
    except Exception:
        return []
    ranked = [(candidate_rank(a), a) for a in aliases if candidate_rank(a) is not None]
    return [a for _, a in sorted(ranked)]


def _tag_float(tags: dict[str, str], key: str) -> float | None:
    try:
        value = float(tags[key])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _offline(client, model_name: str, alias: str, metric: str = "accuracy") -> TournamentRow:
    mv = registry.alias_version(client, model_name, alias)
    if mv is None:
        raise UserError(f"model {model_name!r} has no alias {alias!r}; run a refresh (it registers candidate-1.."
                        "candidate-k) or list existing aliases in the tournament option 'aliases'")
    tags = registry.version_tags(mv)
    return TournamentRow(alias=alias, version=str(mv.version), arch=tags.get("arch", ""),
                         val_accuracy=_tag_float(tags, "val_accuracy"),
                         val_metric=_tag_float(tags, f"val_{metric}") if metric != "accuracy" else None,
                         offline_latency_ms=_tag_float(tags, "latency_ms"))


def _online(frame: pd.DataFrame, variant: str) -> dict[str, Any]:
    """The shared online summary (monitoring.online), named as the tournament's table reports it."""
    facts = summarize(frame, variant)
    return {"requests": facts["requests"], "errors": facts["errors"], "fallbacks": facts["fallbacks"],
            "labelled_rows": facts["labelled_rows"], "correct_rows": facts["correct_rows"],
            "online_accuracy": facts["accuracy"], "online_latency_ms": facts["p50_ms"]}


def _ranks(values: list[float | None], higher_is_better: bool) -> list[int | None]:
    """1-based ranks (ties share the better rank); None where the value is missing."""
    present = [v for v in values if v is not None]
    ordered = sorted(present, reverse=higher_is_better)
    return [None if v is None else ordered.index(v) + 1 for v in values]


def _correlation(offline: list[float | None], online: list[float | None]) -> RankCorrelation:
    pairs = [(a, b) for a, b in zip(offline, online, strict=True) if a is not None and b is not None]
    if len(pairs) < 2:
        return RankCorrelation(n=len(pairs), note="fewer than 2 candidates with both values")
    a, b = (np.array(v, dtype=float) for v in zip(*pairs, strict=True))
    if np.ptp(a) == 0 or np.ptp(b) == 0:  # a constant side has no ranking to correlate
        return RankCorrelation(n=len(pairs), note="all tied " + ("offline" if np.ptp(a) == 0 else "online"))
    rho = stats.spearmanr(a, b)
    tau = stats.kendalltau(a, b)
    return RankCorrelation(n=len(pairs), spearman=float(rho.statistic), spearman_p=_finite(rho.pvalue),
                           kendall_tau=float(tau.statistic), kendall_p=_finite(tau.pvalue))


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> PairedTest:
    """Exact McNemar test on paired correctness (same rows): a two-sided binomial test on the discordant pairs.

    Paired beats a two-proportion test here: both candidates answered the same inputs, so only the rows where they
    disagree carry evidence (McNemar 1947)."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(stats.binomtest(only_a, discordant, 0.5).pvalue)
    return PairedTest(test="mcnemar_exact", paired_rows=len(a), only_first_correct=only_a,
                      only_second_correct=only_b, p_value=p)


def _paired_correct(frame: pd.DataFrame, first: str, second: str) -> tuple[np.ndarray, np.ndarray]:
    rows = frame[frame["correct"].notna()]
    a = rows[rows["variant"] == first].drop_duplicates(["request_id", "row"]).set_index(["request_id", "row"])
    b = rows[rows["variant"] == second].drop_duplicates(["request_id", "row"]).set_index(["request_id", "row"])
    joined = a[["correct"]].join(b[["correct"]], how="inner", lsuffix="_a", rsuffix="_b")
    return joined["correct_a"].astype(bool).to_numpy(), joined["correct_b"].astype(bool).to_numpy()


def _row(offline: TournamentRow | Mapping[str, Any], frame: pd.DataFrame, role: str,
         ranking: MetricRanking | None = None) -> TournamentRow:
    """An offline row with what its variant (its alias) did online (and its metric's value, ranking by one)."""
    row = TournamentRow.model_validate(offline)
    metric = {"online_metric": ranking.value(frame, row.alias)} if ranking is not None else {}
    return row.model_copy(update={"role": role, **_online(frame, row.alias), **metric})


def _winner(frame: pd.DataFrame, table: list[TournamentRow], champion: TournamentRow,
            alpha: float, ranking: MetricRanking | None = None) -> TournamentWinner:
    """The offline winner, the online winner and, when they differ, whether the first falls significantly behind
    (on accuracy: an exact McNemar test; on another metric: :meth:`MetricRanking.paired_test`)."""
    online = ranking.online if ranking is not None else (lambda c: c.online_accuracy)
    sign = 1.0 if ranking is None or ranking.higher_is_better else -1.0
    ranked = [c for c in table if c.offline_rank is not None and online(c) is not None]
    if not ranked:
        return TournamentWinner()
    offline_best = min(ranked, key=lambda c: c.offline_rank)  # ties: the first alias (offline order)
    online_best = max(ranked, key=lambda c: (sign * online(c), -c.offline_rank))
    winner = TournamentWinner(offline_winner=offline_best.alias, online_winner=online_best.alias)
    gap = sign * (online(online_best) - online(offline_best))  # how much better the online winner is
    if online_best.alias != offline_best.alias and gap > 0:
        test = (mcnemar_exact(*_paired_correct(frame, online_best.alias, offline_best.alias)) if ranking is None
                else ranking.paired_test(frame, online_best.alias, offline_best.alias))
        winner = winner.model_copy(update={"falls_behind": True, "gap": float(gap), "test": test,
                                           "significant": test is not None and test.p_value < alpha})
    if online(champion) is not None:
        winner.winner_vs_champion_gap = float(sign * (online(offline_best) - online(champion)))
    return winner


class MetricRanking:
    """The tournament's ranking on the refresh-level metric (``monitoring.core.metrics``) instead of accuracy:
    offline from the versions' ``val_<metric>`` tags, online from the offline scorer itself on each variant's
    labelled rows (the tournament replays a fixed set of rows, so no per-row form is needed: ROC AUC and F1 rank
    here too); a falling-behind winner is tested with a paired t-test on the per-row terms where the metric has
    them (log loss, cost, balanced accuracy), and not tested otherwise (said by ``test`` None)."""

    def __init__(self, metric: str, classes: Sequence[Any], params: Mapping[str, Any] | None = None,
                 reference: Mapping[str, float] | None = None) -> None:
        from monitoring.core.metrics import get_metric

        self.entry, self.classes, self.params = get_metric(metric), list(classes), dict(params or {})
        self.reference = dict(reference or {})
        self.higher_is_better = self.entry.higher_is_better

    def online(self, row: TournamentRow) -> float | None:
        return row.online_metric

    def value(self, frame: pd.DataFrame, variant: str) -> float | None:
        """The metric on the variant's labelled rows with probabilities (None without any)."""
        from monitoring.core.metrics import class_index

        rows = _labelled(frame, variant)
        rows = rows[rows["probabilities"].map(bool)]
        if rows.empty:
            return None
        y = np.array([class_index(v, self.classes) for v in rows["label"]])
        value = self.entry.score(y, np.array(rows["probabilities"].tolist(), dtype=float), self.classes,
                                 **self.params)
        return float(value) if math.isfinite(value) else None

    def paired_test(self, frame: pd.DataFrame, first: str, second: str) -> PairedTest | None:
        from monitoring.online import LABEL_MEASURES, label_measure

        if self.entry.online_measure not in LABEL_MEASURES:
            return None
        a, b = (_labelled(frame, v).set_index(["request_id", "row"]) for v in (first, second))
        both = a.index.intersection(b.index)
        if len(both) < 2:
            return None
        terms = [label_measure(self.entry.online_measure, rows.loc[both].reset_index(), classes=self.classes,
                               reference=self.reference, params=self.params) for rows in (a, b)]
        if len(terms[0]) != len(terms[1]) or np.ptp(terms[0] - terms[1]) == 0:
            return None
        p = float(stats.ttest_rel(terms[0], terms[1]).pvalue)
        return PairedTest(test="paired_t", paired_rows=len(both), only_first_correct=0, only_second_correct=0,
                          p_value=p)


def _labelled(frame: pd.DataFrame, variant: str) -> pd.DataFrame:
    rows = frame[(frame["variant"] == variant) & frame["correct"].notna() & frame["label"].notna()]
    return rows.drop_duplicates(["request_id", "row"])


def analyse(frame: pd.DataFrame, candidates: Sequence[TournamentRow | Mapping[str, Any]],
            champion: TournamentRow | Mapping[str, Any], alpha: float = 0.05,
            ranking: MetricRanking | None = None) -> TournamentOutput:
    """Rankings, rank correlations and the 'winner falls behind' test from the logged rows of one tournament.

    ``candidates`` carry the offline facts (alias, version, val_accuracy, offline_latency_ms); each alias is also
    the variant its shadow rows are logged under. ``ranking``: rank by the refresh-level metric (None: accuracy)."""
    table = [_row(cand, frame, "candidate", ranking) for cand in candidates]
    if ranking is None:
        offline_acc, online_acc, higher = [c.val_accuracy for c in table], [c.online_accuracy for c in table], True
    else:
        offline_acc, online_acc = [c.val_metric for c in table], [c.online_metric for c in table]
        higher = ranking.higher_is_better
    offline_lat = [c.offline_latency_ms for c in table]
    online_lat = [c.online_latency_ms for c in table]
    table = [row.model_copy(update={"offline_rank": r_off, "online_rank": r_on, "offline_latency_rank": l_off,
                                    "online_latency_rank": l_on})
             for row, r_off, r_on, l_off, l_on in zip(table, _ranks(offline_acc, higher), _ranks(online_acc, higher),
                                                      _ranks(offline_lat, False), _ranks(online_lat, False),
                                                      strict=True)]
    champion_row = _row({**_as_dict(champion), "alias": CHAMPION}, frame, CHAMPION, ranking)
    return TournamentOutput(
        candidates=table, champion=champion_row, metric=ranking.entry.name if ranking is not None else "accuracy",
        accuracy_correlation=_correlation(offline_acc, online_acc),
        latency_correlation=_correlation(offline_lat, online_lat),
        winner=_winner(frame, table, champion_row, alpha, ranking), alpha=alpha)


def _as_dict(row: TournamentRow | Mapping[str, Any]) -> dict[str, Any]:
    return row.model_dump(exclude_unset=True) if isinstance(row, TournamentRow) else dict(row)


def plot_png(report: TournamentOutput, path: Path) -> Path:
    """Offline (validation) vs online accuracy per candidate, the champion as a reference line, y = x dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    points = [c for c in report.candidates if c.val_accuracy is not None and c.online_accuracy is not None]
    for c in points:
        winner = c.alias == report.winner.offline_winner
        ax.scatter(c.val_accuracy, c.online_accuracy, s=70, marker="*" if winner else "o",
                   color="tab:orange" if winner else "tab:blue", zorder=3)
        ax.annotate(f"{c.alias} (v{c.version})", (c.val_accuracy, c.online_accuracy),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    values = [v for c in points for v in (c.val_accuracy, c.online_accuracy)]
    champ = report.champion
    if champ is not None and champ.online_accuracy is not None:
        ax.axhline(champ.online_accuracy, color="tab:gray", linestyle=":", label=f"champion v{champ.version} online")
        values.append(champ.online_accuracy)
    if values:
        lo, hi = min(values) - 0.02, max(values) + 0.02
        ax.plot([lo, hi], [lo, hi], color="lightgray", linestyle="--", label="online = offline")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    corr = report.accuracy_correlation
    ax.set_title("Shadow tournament: offline vs online accuracy\n"
                 f"Spearman {_num(corr.spearman)}, Kendall tau {_num(corr.kendall_tau)}", fontsize=10)
    ax.set_xlabel("validation accuracy (offline)")
    ax.set_ylabel("accuracy on production traffic (online)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _tournament_inputs(client: Any, model_name: str, cfg: TournamentConfig, metric: str = "accuracy",
                       fingerprint: str | None = None) -> tuple[list[str], list[TournamentRow], TournamentRow]:
    """The aliases served, their offline facts, and the champion's row: its offline figures only when they are from
    this data's rows (``fingerprint``); after the data changed they are from other rows, so left out (issue 24)."""
    aliases = cfg.aliases if cfg.aliases is not None else candidate_aliases(client, model_name)
    if len(aliases) < 2:
        raise UserError(f"a tournament needs at least 2 candidate aliases of {model_name!r}, found {aliases}; "
                        "retrain with top_k >= 2 (--top-k) or pass the option 'aliases'")
    champion = registry.alias_version(client, model_name, CHAMPION)
    if champion is None:
        raise UserError(f"model {model_name!r} has no 'champion' alias; the tournament serves callers from it")
    candidates = [_offline(client, model_name, a, metric) for a in aliases]
    champion_tags = registry.version_tags(champion)
    if fingerprint and champion_tags.get("dataset_fingerprint") not in (None, fingerprint):
        champion_tags = {k: v for k, v in champion_tags.items() if not k.startswith("val_")}
    champion_row = TournamentRow(alias=CHAMPION, role=CHAMPION, version=str(champion.version),
                                 val_accuracy=_tag_float(champion_tags, "val_accuracy"),
                                 val_metric=_tag_float(champion_tags, f"val_{metric}") if metric != "accuracy"
                                 else None)
    return aliases, candidates, champion_row


def _metric_ranking(data: Any, classes: list[Any]) -> MetricRanking | None:
    """The ranking on the data's refresh-level metric (None: accuracy, the tournament's own)."""
    metric = data.meta.get("metric") or "accuracy"
    if metric == "accuracy":
        return None
    counts = np.bincount(np.asarray(data.y_train, dtype=int), minlength=len(classes)).astype(float)
    mix = {str(c): float(n / counts.sum()) for c, n in zip(classes, counts, strict=True)}
    return MetricRanking(metric, classes, data.meta.get("metric_params") or {}, reference=mix)


def run_tournament(model_name: str, data_path: str, config: dict | TournamentConfig | None = None
                   ) -> TournamentOutput:
    """The body of :func:`shadow_tournament` (no Prefect needed)."""
    from pipelines.prepared import load_prepared

    cfg = parse_config(config)
    data = load_prepared(data_path)
    ensure_tracking()
    classes = list(data.meta.get("classes") or range(data.num_classes))
    ranking = _metric_ranking(data, classes)
    aliases, candidates, champion = _tournament_inputs(registry.client_for_active(), model_name, cfg,
                                                       ranking.entry.name if ranking is not None else "accuracy",
                                                       data.meta.get("fingerprint"))
    x, y = data.x_prod, data.y_prod
    if cfg.max_rows is not None and len(x) > cfg.max_rows:
        idx = np.sort(np.random.default_rng(cfg.seed).choice(len(x), cfg.max_rows, replace=False))
        x, y = x[idx], y[idx]
    parent = mlflow.active_run()
    started_clock = time.perf_counter()
    with mlflow.start_run(run_name=f"tournament-{model_name}", nested=parent is not None) as run, \
            gateway_session(model_name, shadow_aliases=aliases, challenger_timeout_s=cfg.shadow_timeout_s,
                            shadow_max_in_flight=cfg.shadow_max_in_flight) as session:
        mlflow.set_tags({tag("stage"): "tournament", tag("champion_version"): champion.version})
        mlflow.log_params({"aliases": json.dumps(aliases), "rate": cfg.rate, "rows": len(x),
                           "batch_size": cfg.batch_size, "alpha": cfg.alpha})
        session.admin.wait_loaded(aliases, cfg.ready_timeout_s)
        if cfg.warmup_requests:
            session.replay(x[np.arange(cfg.warmup_requests) % len(x)], None, rate=cfg.rate, feedback=False,
                           seed=cfg.seed)
            session.admin.wait_shadow_drained()
            time.sleep(0.3)  # the warm-up's mirrored calls land before the window opens
        since = time.time()
        summary = session.replay(x, y, rate=cfg.rate, batch_size=cfg.batch_size, feedback=True, seed=cfg.seed,
                                 classes=classes)
        session.admin.wait_shadow_drained()
        frame = session.frame(since, time.time() + 1.0)
        report = analyse(frame, candidates, champion, alpha=cfg.alpha, ranking=ranking).model_copy(update={
            "model_name": model_name, "aliases": aliases, "tournament_run_id": run.info.run_id,
            "replay": {"sent": summary.sent, "ok": summary.ok, "rows": summary.rows,
                       "feedback_errors": summary.feedback_errors, "errors": dict(summary.errors)},
            "seconds": round(time.perf_counter() - started_clock, 2)})
        report.plot_uri = _log_report(report)
        mlflow.log_dict(report.model_dump(mode="json"), f"{REPORT_DIR}/report.json")
    return report


def _log_report(report: TournamentOutput) -> str:
    """Plot and per-candidate table as artifacts, headline numbers as metrics and tags; returns the plot's URI."""
    rows = [c.model_dump(mode="json") for c in [*report.candidates, report.champion] if c is not None]
    mlflow.log_table(pd.DataFrame(rows), artifact_file=f"{REPORT_DIR}/table.json")
    with tempfile.TemporaryDirectory(prefix="nasops-tournament-") as tmp:
        plot = plot_png(report, Path(tmp) / "offline_vs_online.png")
        mlflow.log_artifact(str(plot), REPORT_DIR)
    corr, win = report.accuracy_correlation, report.winner
    metrics = {"spearman": corr.spearman, "kendall_tau": corr.kendall_tau, "winner_gap": win.gap}
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
    mlflow.set_tags({tag("winner_falls_behind"): str(win.falls_behind).lower(),
                     tag("offline_winner"): str(win.offline_winner), tag("online_winner"): str(win.online_winner)})
    return f"{mlflow.get_artifact_uri(REPORT_DIR)}/offline_vs_online.png"


@flow(name="shadow_tournament", log_prints=True)
def shadow_tournament(model_name: str, data_path: str, config: TournamentConfig | dict | None = None
                      ) -> TournamentOutput:
    """Serve the retrained candidates in shadow next to the champion and compare offline with online ranking."""
    return run_tournament(model_name, data_path, config)


def summary_line(report: TournamentOutput | None) -> str:
    """One line for the refresh summary: why it did not run, or the correlation and the winner's fate."""
    if report is None:
        return "tournament skipped"
    if report.skipped:
        return f"tournament skipped: {report.skipped}"
    if report.error:
        return f"tournament failed: {report.error}"
    corr, win = report.accuracy_correlation, report.winner
    note = f" ({corr.note})" if corr.note else ""
    head = (f"{len(report.candidates)} candidates, Spearman {_num(corr.spearman)}, "
            f"Kendall {_num(corr.kendall_tau)}{note}; ")
    if win.falls_behind:
        p = win.test.p_value if win.test is not None else float("nan")
        return head + (f"offline winner {win.offline_winner} falls behind {win.online_winner} by "
                       f"{win.gap:.3f} {report.metric} (p={p:.3g}, "
                       f"{'significant' if win.significant else 'not significant'})")
    return head + f"offline winner {win.offline_winner} also wins online"

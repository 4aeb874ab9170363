"""Why a rollout was decided, in one sentence: the metric that decided, its evidence, and how the variants were
compared (which latency, which samples, at what share and interval).

The sentence is built from the verdict's evidence rows (:meth:`monitoring.judge.Verdict.table`, as the rollout
record and the canary result store them), so ``nasops canary status`` and the HTML report say the same thing, and
a reader never has to work out from a table whether "latency" meant the model or the whole gateway, or whether
the samples were taken over the same time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["comparison", "decision_sentence", "measure_label", "relative_rule", "rollout_sentence"]

# What each prediction-log measure is, as the sentence names it.
MEASURES = {
    "compute_ms": "model compute time on the same worker path for both variants",
    "latency_ms": "end-to-end time in the gateway (queueing and post-processing included)",
}
# The latency rows' measure, as the evidence tables label it.
LABELS = {"compute_ms": "model time (compute_ms)", "latency_ms": "end to end (latency_ms)"}
MS_MEASURES = ("compute_ms", "latency_ms")


def measure_label(measure: str | None) -> str:
    """A latency row's measure as a reader needs it (model time or end to end); other measures as logged."""
    return LABELS.get(measure or "", measure or "")


def comparison(window: str | None) -> str:
    """How the judge's samples were taken, from the rollout's ``window`` setting (empty when unknown)."""
    if window == "matched":
        return ("time-matched samples (since the rollout started, the champion weighted to the challenger's "
                "intervals)")
    if window == "interval":
        return "time-matched samples (the same interval for both variants)"
    if window == "cumulative":
        return "samples since the rollout started (the same window, not time-matched)"
    return f"{window} samples" if window else ""


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _scale(row: Mapping[str, Any]) -> str:
    if row.get("effect_kind") == "relative":
        return "log ms" if row.get("measure") in MS_MEASURES else "log scale"
    return "rate" if row.get("measure") in ("error", "correct") else "difference"


def relative_rule(statistic: str, champion: float, challenger: float, offset: float | None, effect: float,
                  tolerance: float, unit: str = "") -> str:
    """A relative comparison as the judge applied it: the raw values and their ratio, the ratio on ``value +
    offset`` (the log offset) and its log, the relative effect and the tolerance it is held to (issue 24: "shift
    within tolerance" for a 12x median did not say the comparison was on ms + 20)."""
    raw = f"×{challenger / champion:.3g}" if champion else "champion 0"
    ratio = 1.0 + effect
    on = f"{unit.strip() or 'value'} + {offset:g}" if offset else (unit.strip() or "value")
    log_ratio = f", log ratio {math.log(ratio):+.2f}" if ratio > 0 else ""
    return (f"{statistic} {challenger:.3g}{unit} vs {champion:.3g}{unit} on the champion ({raw} raw); compared on "
            f"{on}: ratio ×{ratio:.3g}{log_ratio}, relative effect {effect:+.2f} against tolerance {tolerance:g}")


def _offset(row: Mapping[str, Any], champ: float, chall: float, effect: float) -> float | None:
    """The row's log offset, or (a row recorded before it was stored) the one its effect implies."""
    offset = _num(row.get("log_offset"))
    if offset is None and effect:
        offset = (chall - champ * (1 + effect)) / effect
    return offset


def _sequential_clause(row: Mapping[str, Any]) -> str:
    """A sequential row: its outcome and always-valid bounds on challenger - champion."""
    name, outcome = row["name"], row.get("outcome") or ""
    lo, hi, threshold = _num(row.get("lower")), _num(row.get("upper")), _num(row.get("threshold"))
    if outcome == "nodata" or lo is None or hi is None:
        return f"{name} without enough samples ({row.get('n_champion', 0)} champion, {row.get('n_challenger', 0)} " \
               "challenger)"
    if row.get("direction") == "increase":  # the judge's bounds are on the good-direction difference
        lo, hi = -hi, -lo
    verb = {"inferior": "worse", "not_superior": "not proven better", "superior": "better",
            "non_inferior": "not worse"}.get(outcome, "undecided")
    bound = "minimum gain" if row.get("rule") == "superiority" else "margin"
    limit = f", {bound} {threshold:.2f}" if threshold is not None else ""
    return f"{name} {verb} (always-valid bounds [{lo:+.2f}, {hi:+.2f}] on {_scale(row)}{limit})"


def _fixed_clause(row: Mapping[str, Any]) -> str:
    """A fixed-horizon row: the summary statistics, the effect against the tolerance and the U test's p."""
    name, cls = row["name"], row.get("classification")
    if cls == "NoData":
        return f"{name} without enough samples ({row.get('n_champion', 0)} champion, {row.get('n_challenger', 0)} " \
               "challenger)"
    unit = " ms" if row.get("measure") in MS_MEASURES else ""
    champ, chall = _num(row.get("champion_value")), _num(row.get("challenger_value"))
    values = (f"{row.get('statistic')} {chall:.3g}{unit} vs {champ:.3g}{unit} on the champion"
              if None not in (champ, chall) else "")
    effect, tolerance = _num(row.get("effect")), _num(row.get("tolerance"))
    if row.get("effect_kind") == "relative" and None not in (champ, chall, effect, tolerance):
        rule = relative_rule(str(row.get("statistic")), champ, chall, _offset(row, champ, chall, effect), effect,
                             tolerance, unit)
        return f"{name} {'worse' if row.get('failed') else 'not worse'} ({rule})"
    if not row.get("failed"):  # High / Low without failing: a significant shift the good way
        verb = "better" if cls in ("High", "Low") else "not worse"
        return f"{name} {verb} ({values})" if values else f"{name} {verb}"
    effect, p = _num(row.get("effect")), _num(row.get("p_value"))
    relative = " relative" if row.get("effect_kind") == "relative" else ""
    detail = [values] if values else []
    if effect is not None:
        detail.append(f"effect {effect:+.2f}{relative} beyond tolerance {row.get('tolerance')}")
    if p is not None:
        detail.append(f"Mann-Whitney p={p:.2g}")
    return f"{name} worse ({', '.join(detail)})"


def _clause(row: Mapping[str, Any]) -> str:
    sequential = bool(row.get("rule")) and row.get("rule") != "report" and row.get("outcome") not in (None, "")
    return _sequential_clause(row) if sequential else _fixed_clause(row)


def _deciding(decision: str, rows: Sequence[Mapping[str, Any]], budget: bool) -> list[Mapping[str, Any]]:
    """The rows that decided: what failed (critical first) for a rollback, what was still open when the budget
    ran out, and the critical rows for a promotion."""
    critical = [r for r in rows if r.get("critical")]
    if decision == "promoted":
        return critical or list(rows)
    failed = [r for r in critical if r.get("failed")] or [r for r in rows if r.get("failed")]
    if budget and not failed:
        return [r for r in critical if r.get("outcome") not in ("non_inferior", "superior")
                and r.get("classification") != "Pass"] or critical
    return failed


def _where(mode: str | None, weight: float | None) -> str:
    if mode == "shadow":
        return "in shadow"
    return f"at {weight:.0%} traffic" if weight is not None else ""


def decision_sentence(decision: str | None, rows: Sequence[Mapping[str, Any]] | None, *, reason: str = "",
                      decided_by: str | None = None, mode: str | None = None, weight: float | None = None,
                      interval: int | None = None, window: str | None = None) -> str:
    """One sentence: what was decided, the metric(s) that decided with their evidence, then what was compared —
    which latency (model time or end to end), which samples (``window``), at what share and interval.

    ``rows``: the deciding verdict's evidence rows; ``reason``: the rollout's own reason (an operator's decision,
    or a budget spent, is told from it)."""
    head = {"promoted": "promoted", "rolled_back": "rolled back"}.get(decision or "", decision or "undecided")
    if decided_by and decided_by != "controller":
        return f"{head} by the {decided_by}: {reason}" if reason else f"{head} by the {decided_by}"
    rows = [r for r in rows or [] if r.get("name")]
    budget = reason.startswith("no passing decision")
    deciding = _deciding(decision or "", rows, budget)
    if not deciding:
        return f"{head}: {reason}" if reason else head
    clauses = "; ".join(_clause(r) for r in deciding)
    if budget:
        clauses = f"no passing verdict before the interval budget ran out: {clauses}"
    elif decision == "promoted":
        clauses = f"no critical metric worse at any step: {clauses}"
    latency = {r.get("measure") for r in deciding if r.get("measure") in MEASURES}
    context = [MEASURES[m] for m in sorted(latency)] + [comparison(window), _where(mode, weight)]
    if interval is not None:
        context.append(f"interval {interval}")
    context = [c for c in context if c]
    return f"{head}: {clauses}" + (f" — {', '.join(context)}" if context else "")


def rollout_sentence(rollout: Any) -> str:
    """:func:`decision_sentence` of a decided rollout record (:class:`monitoring.rollout_store.Rollout`): its last
    verdict's evidence, the step that verdict judged, and its window setting."""
    verdict = rollout.last_verdict or {}
    step = rollout.history[-1] if rollout.history else {}
    return decision_sentence(rollout.decision, verdict.get("evidence") or verdict.get("metrics"),
                             reason=rollout.reason or "", decided_by=rollout.decided_by, mode=step.get("mode"),
                             weight=step.get("weight"), interval=verdict.get("interval") or rollout.intervals,
                             window=(rollout.config or {}).get("window"))

"""Decision rates of many real rollouts, with Wilson 95 % intervals: the table of ``benchmarks/canary_real.py``.

A rate from 30 rollouts is an estimate; the Wilson score interval says how far it can be from the true rate (it
stays inside [0, 1] and is honest at 0/30 and 30/30, where the normal approximation collapses to a point).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

KINDS = ("promoted", "rolled_back_worse", "kept_not_better")
Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ``successes / n`` ((0, 1) when ``n`` is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def target(scenario_expected: str, counts: Mapping[str, int], n: int) -> tuple[str, bool | None, bool | None]:
    """The issue's goal for a scenario, whether the point estimate meets it, and whether the whole Wilson interval
    does (None: no rollout)."""
    if n == 0:
        return "", None, None
    if scenario_expected == "not_worse":
        bad = counts["rolled_back_worse"]
        return "rolled back as worse <= 5%", bad / n <= 0.05, wilson(bad, n)[1] <= 0.05
    if scenario_expected == "promoted":
        good, goal = counts["promoted"], 0.90
        return "promoted >= 90%", good / n >= goal, wilson(good, n)[0] >= goal
    rolled = counts["rolled_back_worse"] + counts["kept_not_better"]
    return "rolled back >= 95%", rolled / n >= 0.95, wilson(rolled, n)[0] >= 0.95


def summarize(rows: Sequence[Mapping], expected: Mapping[str, str]) -> list[dict]:
    """One entry per (scenario, load): n, each decision kind's count, rate and Wilson interval, the median
    intervals and seconds to a decision, the load average the rollouts ran at, and the goal."""
    groups: dict[tuple[str, bool], list[Mapping]] = {}
    for row in rows:
        groups.setdefault((row["scenario"], bool(row["load"])), []).append(row)
    out = []
    for (scenario, load), group in sorted(groups.items(), key=lambda kv: (list(expected).index(kv[0][0])
                                                                          if kv[0][0] in expected else 99, kv[0][1])):
        n = len(group)
        counts = {k: sum(r["kind"] == k for r in group) for k in KINDS}
        goal, met, proven = target(expected.get(scenario, ""), counts, n)
        loads = [float(r["loadavg_1m"]) for r in group]
        out.append({
            "scenario": scenario, "load": load, "n": n,
            **{k: {"count": c, "rate": round(c / n, 3), "wilson95": [round(v, 3) for v in wilson(c, n)]}
               for k, c in counts.items()},
            "median_intervals": statistics.median(r["intervals"] for r in group),
            "median_seconds": statistics.median(r["seconds"] for r in group),
            "loadavg_1m": {"median": round(statistics.median(loads), 2), "min": min(loads), "max": max(loads)},
            "goal": goal, "met": met, "met_by_interval": proven,
        })
    return out


def _yes(flag: bool | None) -> str:
    return "–" if flag is None else "yes" if flag else "no"


def _cell(entry: Mapping) -> str:
    lo, hi = entry["wilson95"]
    return f"{entry['rate']:.2f} [{lo:.2f}, {hi:.2f}]"


def table(summary: Sequence[Mapping]) -> str:
    """The summary as a Markdown table (rates with their Wilson 95 % intervals)."""
    head = ("| scenario | CPU load | n | promoted | rolled back as worse | kept as not better | median intervals | "
            "median s | load avg (median, min–max) | goal | met (rate) | met (whole interval) |")
    lines = [head, "|" + " --- |" * 12]
    for e in summary:
        load = e["loadavg_1m"]
        lines.append(f"| `{e['scenario']}` | {'on' if e['load'] else 'off'} | {e['n']} | {_cell(e['promoted'])} | "
                     f"{_cell(e['rolled_back_worse'])} | {_cell(e['kept_not_better'])} | {e['median_intervals']:g} | "
                     f"{e['median_seconds']:.0f} | {load['median']:.1f} ({load['min']:.1f}–{load['max']:.1f}) | "
                     f"{e['goal']} | {_yes(e['met'])} | {_yes(e['met_by_interval'])} |")
    return "\n".join(lines)

"""Reading the gateway's Prometheus text exposition in tests."""

from __future__ import annotations

import re


def metric(text: str, name: str, **labels) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0.0 when none)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            got = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(got.get(k) == v for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total

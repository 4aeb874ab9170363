"""Zero-cost proxy features of benchmark-table rows, computed from the architecture strings and cached on disk.

A table search with proxies as features (White et al., NeurIPS 2021, "How powerful are performance predictors
in NAS?"; Abdelfattah et al., ICLR 2021, "Zero-cost proxies for lightweight NAS", zero-cost warm start) needs one
score per proxy and row. Scoring 15,625 NAS-Bench-201 cells takes CPU-hours, so scores are never recomputed:

1. a *shipped* scores CSV (``benchmarks/tables/nb201_proxy_scores.csv.gz``: ``ArchitectureString`` + one column
   per proxy) is read first; it was scored on the same network as step 3 (:data:`NB201_SCORING`), so its values
   are the ones step 3 would produce and it serves as the cache for the proxies it holds;
2. a JSON-lines *cache* (one ``{"arch", "scores"}`` line per scored row, a header line naming the scoring
   network) holds what earlier runs computed; it is appended to as rows are scored, so an interrupted run
   resumes, and a cache made for another network is refused rather than mixed in;
3. what is still missing is computed with :func:`nas.proxies.compute_scores` on the space's network (NB201:
   C=16, N=5, 3x32x32 inputs, 10 classes, seed 0, the network the published proxy papers score).
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nas.proxies import compute_scores, get_proxy


@dataclass(frozen=True)
class Scoring:
    """The network the proxies are scored on; a cache records it and is only reused for the same one."""

    space: str = "nb201"
    space_kwargs: tuple[tuple[str, int], ...] = (("C", 16), ("N", 5))
    input_shape: tuple[int, ...] = (3, 32, 32)
    num_classes: int = 10
    seed: int = 0

    def header(self) -> dict:
        out = asdict(self)
        out["space_kwargs"] = dict(self.space_kwargs)
        out["input_shape"] = list(self.input_shape)
        return out


NB201_SCORING = Scoring()
"""The shipped NB201 scores' network (see ``benchmarks/tables/score_nb201.py``)."""

SEARCH_FEATURES: dict[str, tuple[str, ...]] = {"nb201": ("meco", "synflow")}
"""The default zero-cost features (and warm-start / pool ranking) of a table search per space: chosen on the
public NB201 table's CIFAR-10 columns only, out of every feature set of ``benchmarks/search.py --tune``
(docs/benchmarks-search.md: MeCo, Jiang et al., NeurIPS 2023, with SynFlow, Tanaka et al., NeurIPS 2020)."""


def read_shipped(path: str | Path, names: Sequence[str], arch_column: str = "ArchitectureString"
                 ) -> dict[str, dict[str, float]]:
    """``{arch: {proxy: score}}`` for the requested proxies the shipped CSV holds (empty cells are left out)."""
    path = Path(path)
    out: dict[str, dict[str, float]] = {}
    with gzip.open(path, "rt", newline="") if path.suffix == ".gz" else path.open(newline="") as f:
        reader = csv.DictReader(f)
        if arch_column not in (reader.fieldnames or []):
            raise ValueError(f"shipped scores {path.name} have no {arch_column!r} column; columns: "
                             f"{', '.join(reader.fieldnames or [])}")
        held = [n for n in names if n in (reader.fieldnames or [])]
        for row in reader:
            scores = {n: float(row[n]) for n in held if row[n] not in ("", None)}
            if scores:
                out[row[arch_column].strip()] = scores
    return out


def read_cache(path: str | Path, scoring: Scoring) -> dict[str, dict[str, float]]:
    """Scores a JSON-lines cache holds; ``ValueError`` when it was made for another network."""
    path = Path(path)
    out: dict[str, dict[str, float]] = {}
    if not path.exists():
        return out
    lines = path.read_text().splitlines()
    if not lines:
        return out
    header = json.loads(lines[0])
    if header.get("scoring") != scoring.header():
        raise ValueError(f"proxy cache {path} was scored on {header.get('scoring')}, not {scoring.header()}; "
                         "point --zc-cache at another file or delete this one")
    for line in lines[1:]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by an interrupted run: its row is scored again
            continue
        out.setdefault(row["arch"], {}).update(row["scores"])
    return out


def _scorer(scoring: Scoring) -> Callable[[str, Sequence[str]], dict[str, float]]:
    from nas.spaces import get_space

    space = get_space(scoring.space, **dict(scoring.space_kwargs))

    def score(text: str, names: Sequence[str]) -> dict[str, float]:
        arch = space.from_string(text)
        return compute_scores(lambda: arch.build(scoring.num_classes, scoring.input_shape), list(names),
                              input_shape=scoring.input_shape, num_classes=scoring.num_classes, seed=scoring.seed)

    return score


def zc_features(
    archs: Sequence[str],
    names: Sequence[str],
    *,
    shipped: str | Path | None = None,
    cache: str | Path | None = None,
    scoring: Scoring = NB201_SCORING,
    progress: Callable[[int, int], None] | None = None,
    score: Callable[[str, Sequence[str]], Mapping[str, float]] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Per-proxy score arrays aligned with ``archs``, and how many values came from where
    (``{"shipped": n, "cache": n, "computed": n}``).

    Only data-free proxies can be scored from a string (no dataset goes with a table); a data-needing one raises
    ``ValueError`` naming it. ``score(arch, names)`` overrides the scorer (default: :func:`compute_scores` on
    ``scoring``'s network); ``progress(done, total)`` is called after each computed row.
    """
    names = list(dict.fromkeys(names))
    if not names:
        raise ValueError("name at least one proxy")
    needing = [n for n in names if get_proxy(n).needs_data]  # also raises KeyError for an unknown name
    if needing:
        raise ValueError(f"{', '.join(needing)} need data; a table's rows are scored with data-free proxies only "
                         "(e.g. synflow, params, flops, l2_norm)")
    known = {"shipped": read_shipped(shipped, names) if shipped else {},
             "cache": read_cache(cache, scoring) if cache else {}}
    values = {n: np.full(len(archs), np.nan) for n in names}
    counts = {"shipped": 0, "cache": 0, "computed": 0}
    todo: list[tuple[int, list[str]]] = []
    for i, a in enumerate(archs):
        missing = []
        for n in names:
            for source in ("shipped", "cache"):
                v = known[source].get(a, {}).get(n)
                if v is not None:
                    values[n][i] = v
                    counts[source] += 1
                    break
            else:
                missing.append(n)
        if missing:
            todo.append((i, missing))
    if not todo:
        return values, counts
    scorer = score or _scorer(scoring)
    out = None
    if cache:
        cache = Path(cache)
        cache.parent.mkdir(parents=True, exist_ok=True)
        fresh = not cache.exists() or cache.stat().st_size == 0
        out = cache.open("a")
        if fresh:
            out.write(json.dumps({"scoring": scoring.header()}) + "\n")
    try:
        for done, (i, missing) in enumerate(todo, 1):
            got = scorer(archs[i], missing)
            for n in missing:
                values[n][i] = float(got[n])
            counts["computed"] += len(missing)
            if out is not None:
                out.write(json.dumps({"arch": archs[i], "scores": {n: float(got[n]) for n in missing}}) + "\n")
                out.flush()
            if progress is not None:
                progress(done, len(todo))
    finally:
        if out is not None:
            out.close()
    return values, counts

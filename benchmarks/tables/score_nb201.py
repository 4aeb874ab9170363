"""Score every NAS-Bench-201 cell of the 12-epoch table with the data-free zero-cost proxies, once, on disk.

Makes ``benchmarks/tables/nb201_proxy_scores.csv.gz`` (one row per cell of ``nb201_12epoch.csv.gz``), which
``benchmarks/proxies.py --table`` reads so that a benchmark or a search never recomputes a proxy:

- ``params`` and ``flops`` are exact per string. An NB201 network's size depends only on how many ``nor_conv_3x3``
  and ``nor_conv_1x1`` edges its cell has (every cell of a stage has the same shape), so each (#3x3, #1x1) pair is
  scored once with :func:`nas.proxies.compute_scores` and the script checks that claim on ``--verify`` random
  strings scored directly before it writes anything.
- Every other proxy is scored once per *network function*: strings with the same canonical form
  (:meth:`NB201Space.canonicalize`, 4,930 classes) differ only by dead edges, whose weights get no gradient and
  do not change the output, so the class representative's score is given to each of its strings.
- The network is the published one (C=16, N=5, 3x32x32 inputs, 10 classes, seed 0). The CIFAR-100 and
  ImageNet16-120 networks differ only in the classifier: ``params``, ``flops`` and ``zen`` rank cells exactly as
  at 10 classes, ``synflow`` and ``meco`` nearly so (docs/benchmarks-proxies.md gives the measured agreement).

Scoring goes through :func:`nas.prefilter.prefilter` with a JSON-lines journal, so an interrupted run resumes
where it stopped and proxies can be added in later runs (``--proxies zen``). Classes are scored in a seeded
random order, so a journal that is not finished yet is a uniform random sample of the space.

``--random-input B`` scores a proxy that needs a batch (``nwot``, NASWOT, Mellor et al. 2021: log|K| of the
binary ReLU codes of a mini-batch) on ``B`` seeded standard-normal 3x32x32 inputs instead of images (labels
``i % 10``, which ``nwot`` does not read), so it is data-free too; its column is ``<proxy>_random``
(``nwot_random``). These runs are sequential (one process, one thread) with their own journal, in the same
seeded class order, so a run stopped early has scored a uniform random sample of the classes; with
``--largest-first`` the classes holding the most cells come first (50 classes hold 6,252 of the 15,625 cells,
3,724 classes a single cell each), so a stopped run has scored every class above some size plus whatever it
had scored before.

``--write`` merges: every column of the existing CSV is kept, and the journals' values are written into the
columns named by ``--columns`` (added at the end when new; a cell the journals lack keeps the CSV's value). The
CSV is the only copy of scores whose journal is gone, so it is never rebuilt from the journals alone.

    nice -n 10 .venv/bin/python benchmarks/tables/score_nb201.py --proxies synflow,l2_norm --workers 2
    nice -n 15 .venv/bin/python benchmarks/tables/score_nb201.py --proxies nwot --random-input 32 \
        --journal /tmp/nasops-nb201-nwot-random.jsonl
    .venv/bin/python benchmarks/tables/score_nb201.py --write --columns nwot_random \
        --journal /tmp/nasops-nb201-nwot-random.jsonl                # merge the journal's column into the CSV
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from nas.prefilter import prefilter  # noqa: E402
from nas.proxies import compute_scores, get_proxy  # noqa: E402
from nas.spaces import get_space  # noqa: E402

TABLE = HERE / "nb201_12epoch.csv.gz"
OUT = HERE / "nb201_proxy_scores.csv.gz"
JOURNAL = Path(tempfile.gettempdir()) / "nasops-nb201-proxy-scores.jsonl"
SHAPE, CLASSES, SEED = (3, 32, 32), 10, 0
COSTS = ("params", "flops")


def read_strings(path: Path) -> list[tuple[str, str]]:
    """(NATS-Bench index, architecture string) of every row of the table."""
    with gzip.open(path, "rt", newline="") if path.suffix == ".gz" else path.open(newline="") as f:
        return [(row["arch"], row["ArchitectureString"]) for row in csv.DictReader(f)]


def conv_counts(ops: tuple[str, ...]) -> tuple[int, int]:
    return sum(op == "nor_conv_3x3" for op in ops), sum(op == "nor_conv_1x1" for op in ops)


def cost_table(space, strings: list[str], verify: int) -> dict[str, dict[str, float]]:
    """Exact params and flops per string, scored once per (#3x3, #1x1) pair and checked on ``verify`` strings."""
    def score(text: str) -> dict[str, float]:
        arch = space.from_string(text)
        return compute_scores(lambda: arch.build(CLASSES, SHAPE), list(COSTS), input_shape=SHAPE, seed=SEED)

    by_pair: dict[tuple[int, int], dict[str, float]] = {}
    for text in strings:
        pair = conv_counts(space.to_ops(space.from_string(text)))
        if pair not in by_pair:
            by_pair[pair] = score(text)
    rng = np.random.default_rng(SEED)
    for i in rng.choice(len(strings), size=min(verify, len(strings)), replace=False):
        text = strings[int(i)]
        direct, shared = score(text), by_pair[conv_counts(space.to_ops(space.from_string(text)))]
        if direct != shared:
            raise SystemExit(f"params/flops of {text} are {direct}, not the {shared} of its conv counts")
    return {t: by_pair[conv_counts(space.to_ops(space.from_string(t)))] for t in strings}


def read_journal(path: Path) -> dict[str, dict[str, float]]:
    scores: dict[str, dict[str, float]] = {}
    if not path.exists():
        return scores
    for line in path.read_text().splitlines()[1:]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        scores.setdefault(row["arch"], {}).update(row["scores"])
    return scores


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Columns and rows of an existing scores CSV (none when there is no file yet)."""
    if not path.exists():
        return [], []
    with gzip.open(path, "rt", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def write_csv(
    space, rows: list[tuple[str, str]], proxies: list[str], verify: int, out: Path, journal_paths: list[Path]
) -> int:
    """Write ``out``: the existing CSV's columns and values, with the journals' values for ``proxies`` merged in.

    Returns how many proxy values of the written CSV are empty.
    """
    strings = [s for _, s in rows]
    costs = cost_table(space, strings, verify)
    journal: dict[str, dict[str, float]] = {}
    for path in journal_paths:
        for arch, scores in read_journal(path).items():
            journal.setdefault(arch, {}).update(scores)
    fields, old_rows = read_csv(out)
    old = {r["ArchitectureString"]: r for r in old_rows}
    if old and set(old) != set(strings):
        raise SystemExit(f"{out} does not hold the cells of the table one to one; not merging into it")
    kept = [c for c in fields if c not in ("arch", "ArchitectureString", "canonical", *COSTS)]
    columns = kept + [p for p in proxies if p not in kept]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["arch", "ArchitectureString", "canonical", *COSTS, *columns])
    missing = 0
    for index, text in rows:
        canonical = space.canonicalize(space.from_string(text)).string
        scored = journal.get(canonical, {}) if proxies else {}
        previous = old.get(text, {})
        values = [repr(float(costs[text][c])) for c in COSTS]
        for name in columns:
            if name in proxies and name in scored:
                values.append(repr(float(scored[name])))
            else:
                values.append(previous.get(name, ""))
                missing += values[-1] == ""
        writer.writerow([index, text, canonical, *values])
    partial = out.with_name(out.name + ".partial")
    with gzip.open(partial, "wt", newline="") as f:  # written whole, after everything is known: no partial file
        f.write(buffer.getvalue())
    os.replace(partial, out)
    return missing


def random_batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` seeded standard-normal inputs (seed ``SEED``) and labels ``i % CLASSES`` (nwot ignores them)."""
    x = torch.randn((size, *SHAPE), generator=torch.Generator().manual_seed(SEED))
    return x, torch.arange(size) % CLASSES


def score_random_input(space, pool, names: list[str], size: int, journal: Path) -> int:
    """Score ``names`` on :func:`random_batch` for each class of ``pool`` not yet in ``journal``, one at a time,
    appending ``{"arch", "scores": {"<proxy>_random": value}}`` lines; returns how many were scored now."""
    header = {"header": {"random_input": size, "proxies": names, "input_shape": list(SHAPE), "num_classes": CLASSES,
                         "seed": SEED, "space_config": space.config()}}
    if journal.exists() and journal.stat().st_size > 0:
        found = json.loads(journal.read_text().splitlines()[0])
        if found != header:
            raise SystemExit(f"journal {journal} was written with other settings ({found}); pass another --journal")
    else:
        journal.write_text(json.dumps(header) + "\n")
    done = read_journal(journal)
    batch = random_batch(size)
    todo = [a for a in pool if any(f"{n}_random" not in done.get(a.string, {}) for n in names)]
    started = time.perf_counter()
    for i, arch in enumerate(todo, start=1):
        scores = compute_scores(lambda a=arch: a.build(CLASSES, SHAPE), names, batch=batch, input_shape=SHAPE,
                                num_classes=CLASSES, seed=SEED)
        with journal.open("a") as f:
            f.write(json.dumps({"arch": arch.string, "scores": {f"{n}_random": v for n, v in scores.items()}}) + "\n")
        if i % 100 == 0:
            print(f"{i}/{len(todo)} scored ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    return len(todo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--proxies", default="synflow", help="comma-separated data-free proxies to score now")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="score only this many classes (random order)")
    parser.add_argument("--reverse", action="store_true",
                        help="take the random order from its end (a second run on its own journal shares the work)")
    parser.add_argument("--largest-first", action="store_true",
                        help="score the classes with the most cells first (covers the table's cells fastest)")
    parser.add_argument("--start", type=int, default=0, help="skip this many classes of the order (share the work)")
    parser.add_argument("--write", action="store_true", help="assemble the CSV from the journal (no scoring)")
    parser.add_argument("--columns", default="synflow,zen,meco,l2_norm",
                        help="with --write: proxy columns to take from the journals (the CSV's others are kept)")
    parser.add_argument("--random-input", type=int, default=None, metavar="B",
                        help="score data proxies (nwot) on B seeded Gaussian inputs; column <proxy>_random")
    parser.add_argument("--verify", type=int, default=50, help="strings whose params/flops are checked directly")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--journal", type=Path, nargs="+", default=[JOURNAL],
                        help="resumable JSON-lines journal of scores (--write merges several)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    space = get_space("nb201", C=16, N=5)
    rows = read_strings(args.table)
    if args.write:
        columns = [c for c in args.columns.split(",") if c]
        missing = write_csv(space, rows, columns, args.verify, args.out, args.journal)
        print(f"wrote {args.out} ({len(rows)} rows, {missing} missing proxy values)")
        return 0
    names = [n for n in args.proxies.split(",") if n]
    for name in names:
        if get_proxy(name).needs_data and args.random_input is None:
            raise SystemExit(f"--proxies: {name!r} needs real images; this table is scored with data-free proxies")
    canonical = [space.canonicalize(space.from_string(s)).string for _, s in rows]
    classes = sorted(set(canonical))
    order = np.random.default_rng(SEED).permutation(len(classes))
    order = order[::-1] if args.reverse else order
    if args.largest_first:  # most cells first; classes of the same size keep the seeded random order
        size = Counter(canonical)
        order = np.array(sorted(order, key=lambda i: -size[classes[i]]), dtype=int)
    order = order[args.start:]
    pool = [space.from_string(classes[i]) for i in order[: args.limit]]
    started = time.perf_counter()
    if args.random_input is not None:
        if args.random_input < 2:
            raise SystemExit("--random-input needs a batch of at least 2 inputs")
        count = score_random_input(space, pool, names, args.random_input, args.journal[0])
        print(f"scored {count} classes with {names} on {args.random_input} Gaussian inputs in "
              f"{time.perf_counter() - started:.0f} s")
        return 0

    def progress(done: int, total: int) -> None:
        if done % 100 == 0:
            print(f"{done}/{total} scored ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    prefilter(space, pool, None, keep=1, cheap=names, costly=[], ensemble=names, workers=args.workers,
              journal=args.journal[0], progress=progress, input_shape=SHAPE, num_classes=CLASSES, seed=SEED)
    print(f"scored {len(pool)} classes with {names} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

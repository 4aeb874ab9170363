"""score_nb201.py --write merges a journal's new column into the scores CSV without losing the columns it holds."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "tables" / "score_nb201.py"


@pytest.fixture(scope="module")
def score_nb201():
    spec = importlib.util.spec_from_file_location("score_nb201", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_gz(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with gzip.open(path, "wt", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _read_gz(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


def test_write_merges_a_new_column_and_keeps_the_old_ones(tmp_path, score_nb201):
    from nas.spaces import get_space

    space = get_space("nb201", C=16, N=5)
    strings = [  # three cells of the table with different canonical forms, the last with a dead edge
        "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
        "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|skip_connect~2|",
    ]
    rows = [(str(i), s) for i, s in enumerate(strings)]
    canon = [space.canonicalize(space.from_string(s)).string for s in strings]
    assert len(set(canon)) == 3
    out = tmp_path / "scores.csv.gz"
    # an existing CSV whose journal is gone: its meco column (one cell empty) must survive the merge as written
    _write_gz(out, ["arch", "ArchitectureString", "canonical", "params", "flops", "meco"],
              [[i, s, c, "0", "0", m] for (i, s), c, m in zip(rows, canon, ["0.5", "", "0.25"], strict=True)])
    journal = tmp_path / "journal.jsonl"
    journal.write_text(json.dumps({"header": {}}) + "\n"
                       + json.dumps({"arch": canon[0], "scores": {"nwot_random": 3.0}}) + "\n"
                       + json.dumps({"arch": canon[2], "scores": {"nwot_random": 1.0}}) + "\n")
    missing = score_nb201.write_csv(space, rows, ["nwot_random"], 0, out, [journal])
    merged = _read_gz(out)
    assert list(merged[0]) == ["arch", "ArchitectureString", "canonical", "params", "flops", "meco", "nwot_random"]
    assert [r["meco"] for r in merged] == ["0.5", "", "0.25"]
    assert [r["nwot_random"] for r in merged] == ["3.0", "", "1.0"]
    assert missing == 2
    assert all(float(r["params"]) > 0 for r in merged)  # costs are recomputed exactly, not copied
    # a second merge with nothing new changes nothing
    score_nb201.write_csv(space, rows, ["nwot_random"], 0, out, [journal])
    assert _read_gz(out) == merged


def test_random_input_batch_is_seeded(score_nb201):
    x1, y1 = score_nb201.random_batch(4)
    x2, _ = score_nb201.random_batch(4)
    assert x1.shape == (4, 3, 32, 32) and (x1 == x2).all() and y1.tolist() == [0, 1, 2, 3]

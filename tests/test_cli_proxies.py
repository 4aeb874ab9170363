"""``nasops proxies``: scores as JSON lines, and every user mistake as one message with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support_cli import console_main

from nas.spaces import get_space

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
SMALL = ["--space-config", '{"C": 4, "N": 1}']


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The real console-script entry point, in-process: (exit code, stdout, stderr)."""
    return console_main(monkeypatch, capsys, "proxies", *args)


def test_one_architecture_as_json(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "--arch", BEST, *SMALL, "--input-shape", "1,8,8", "--num-classes", "10",
                       "--proxies", "synflow,params", "--json")
    assert code == 0
    row = json.loads(out.strip())
    assert row["arch"] == BEST and set(row["scores"]) == {"synflow", "params"} and row["seconds"] > 0
    space = get_space("nb201", C=4, N=1)
    assert row["scores"]["params"] == space.count_params(space.from_string(BEST), 10, (1, 8, 8))
    assert row["scores"]["synflow"] > 0


def test_arch_file_keeps_the_file_order_with_data(monkeypatch, capsys, tmp_path):
    archs = [BEST, "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
             "|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+|none~0|none~1|nor_conv_3x3~2|"]
    path = tmp_path / "archs.txt"
    path.write_text("\n".join(archs) + "\n")
    code, out, _ = run(monkeypatch, capsys, "--arch-file", str(path), *SMALL, "--data", "digits",
                       "--proxies", "nwot,params", "--batch-size", "16", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["arch"] for r in rows] == archs
    assert all(set(r["scores"]) == {"nwot", "params"} for r in rows)
    assert rows[0]["scores"]["params"] > rows[2]["scores"]["params"] > rows[1]["scores"]["params"]


def test_sample_and_table_output(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "--space", "mlp", "--sample", "2", "--input-shape", "20",
                       "--proxies", "params,synflow")
    assert code == 0
    assert out.count("depth=") == 2 and out.count("params") == 2 and "synflow" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arch", BEST, "--proxies", "synflow,magic"], "unknown proxy 'magic'; valid proxies: epe_nas"),
        (["--arch", BEST, "--proxies", "nwot"], "need data: add --data digits"),
        (["--arch", BEST.replace("skip_connect", "skip")], "valid operations: none, skip_connect, nor_conv_1x1"),
        (["--arch", "|none~0|+|none~0|"], "malformed nb201 architecture"),
        (["--space", "darts", "--arch", BEST], "choose one of: mlp, nb201, tabular, vit"),
        (["--arch", BEST, "--sample", "3"], "exactly one of --arch"),
        (["--arch", BEST, "--input-shape", "64"], "channels, height, width"),
        (["--arch", BEST, "--data", "cifar10"], "digits, mnist5k"),
        (["--arch", BEST, "--space-config", "{C: 8}"], "must be a JSON object"),
        (["--arch", BEST, "--data", "digits", "--num-classes", "3"], "disagrees with --data"),
    ],
)
def test_user_mistakes_exit_2_naming_the_fix(monkeypatch, capsys, args, message):
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err


def test_bad_line_of_an_arch_file_is_named(monkeypatch, capsys, tmp_path):
    path = tmp_path / "archs.txt"
    path.write_text(BEST + "\n|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|\n")
    code, _, err = run(monkeypatch, capsys, "--arch-file", str(path))
    assert code == 2 and "line 2 of" in err and "nor_conv_5x5" in err


@pytest.mark.slow  # among the heaviest of the fast layer (`make test-fast` stays under 90 s)
def test_console_script_exit_code():
    exe = Path(sys.executable).with_name("nasops")
    proc = subprocess.run([str(exe), "proxies", "--arch", "|bad|"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "malformed nb201" in proc.stderr and "Traceback" not in proc.stderr

"""CLI output in logs: no cropped cells when stdout is not a terminal (issue 24: a cron job's log read `versi`,
`candida`, `rolled_ba` because rich laid tables out for 80 columns)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from rich.table import Table

from pipelines.cli.output import make_console

ROOT = Path(__file__).resolve().parent.parent
CELLS = {"model": "nasops-classifier-with-a-long-name", "version": "12", "aliases": "candidate-1, challenger",
         "kind": "baseline-lightgbm", "metric": "log_loss", "accuracy": "0.9734", "rmse": "-",
         "decision": "rolled_back", "reason": "model_latency_ms worse than the champion", "created": "2026-12-05 11:00",
         "run": "abcdef1234567890", "dataset": "deadbeefcafe0123"}


def test_a_wide_table_outside_a_terminal_is_printed_whole(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    table = Table(title="versions")
    for name in CELLS:
        table.add_column(name)
    table.add_row(*CELLS.values())
    make_console().print(table)
    out = capsys.readouterr().out
    assert "…" not in out
    for header, cell in CELLS.items():
        assert header in out and cell in out, (header, cell)
    assert len([line for line in out.splitlines() if "rolled_back" in line]) == 1  # one line per row


def test_columns_still_sets_the_width(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    assert make_console().width == 60


def test_every_cli_module_prints_through_the_factory():
    for path in (ROOT / "pipelines" / "cli").glob("*.py"):
        if path.name == "output.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Console":
                raise AssertionError(f"{path.name}:{node.lineno} builds its own rich Console; use make_console()")


def test_print_json_is_strict_for_numpy_and_non_finite_numbers(capsys):
    import json

    import numpy as np

    from pipelines.cli.output import print_json

    print_json({"a": float("nan"), "b": np.float32("inf"), "c": np.int64(3), "d": [np.float64(0.5), np.nan],
                "e": np.array([1.0, np.inf])})
    out = capsys.readouterr().out
    assert json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}")) == {
        "a": None, "b": None, "c": 3, "d": [0.5, None], "e": [1.0, None]}


def test_every_json_output_of_the_cli_goes_through_print_json():
    """Issue 24: `--json` outputs built with json.dumps printed bare NaN for a regression (not JSON)."""
    for path in (ROOT / "pipelines" / "cli").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if ((isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("echo", "print"))
                    or getattr(node.func if isinstance(node, ast.Call) else None, "id", None) == "print"):
                text = ast.unparse(node)
                assert "json.dumps" not in text, f"{path.name}:{node.lineno}: {text}; use print_json"


def test_status_shows_each_versions_own_metric(capsys, monkeypatch):
    """Issue 24: `status` showed no metric for a regression model (only a `test acc` column)."""
    from pipelines.summary import status_table

    monkeypatch.delenv("COLUMNS", raising=False)
    versions = [
        {"version": "3", "aliases": ["champion"], "tags": {"task": "regression", "test_rmse": "12.41"}},
        {"version": "2", "aliases": [], "tags": {"task": "classification", "metric": "log_loss",
                                                 "test_log_loss": "0.2315", "test_accuracy": "0.97"}},
        {"version": "1", "aliases": [], "tags": {"task": "classification", "test_accuracy": "0.9"}},
    ]
    make_console().print(status_table("m", versions))
    out = capsys.readouterr().out
    assert "rmse 12.41" in out and "log_loss 0.2315" in out and "accuracy 0.9" in out

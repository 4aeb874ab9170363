"""Where the CLI prints: one console factory, so that a log file reads what a terminal shows.

Why: outside a terminal (cron, CI logs, ``| tee``) rich lays tables out for 80 columns and crops their cells
(``versi``, ``candida``, ``rolled_ba`` in a weekly job's log). There the console is as wide as its content — a table
is one line per row, however many columns it has — unless ``COLUMNS`` says otherwise. In a terminal, rich's own
width detection stays.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

UNBOUNDED = 100_000
"""Columns of a console that is not a terminal: rich pads nothing, so a line is as long as its content."""


def make_console(*, stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr) that never crops a cell when its output is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    columns = os.environ.get("COLUMNS", "")
    return Console(stderr=stderr, width=int(columns) if columns.isdigit() else UNBOUNDED)


def print_json(data: Any) -> None:
    """One line of strict JSON on stdout (machine-readable output of every ``--json``), never wrapped or coloured:
    a NaN or infinite number (a regression's accuracy, a champion without a metric tag) is ``null``, since ``NaN``
    is not JSON and strict parsers (``jq``, JavaScript) refuse it."""
    sys.stdout.write(json.dumps(strict_json(data), default=_json_default, allow_nan=False) + "\n")
    sys.stdout.flush()


def strict_json(data: Any) -> Any:
    """``data`` with every non-finite number replaced by None (models dumped, numpy scalars unwrapped first)."""
    if hasattr(data, "model_dump"):
        data = data.model_dump(mode="json")
    if hasattr(data, "item") and not isinstance(data, dict | list | tuple | str | bytes):
        with contextlib.suppress(TypeError, ValueError):
            data = data.item()  # a numpy scalar (a 0-d array too)
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: strict_json(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [strict_json(v) for v in data]
    return data


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if hasattr(value, "tolist"):
        return strict_json(value.tolist())
    return str(value)

"""Where the CLI prints: one console factory, so that a log file reads what a terminal shows.

Why: outside a terminal (cron, CI logs, ``| tee``) rich lays tables out for 80 columns and crops their cells
(``versi``, ``candida``, ``rolled_ba`` in a weekly job's log). There the console is as wide as its content — a table
is one line per row, however many columns it has — unless ``COLUMNS`` says otherwise. In a terminal, rich's own
width detection stays.
"""

from __future__ import annotations

import os
import sys

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

"""One ISO-8601 date or timestamp cell -> a UTC ``datetime``: the one parser of training, pyfunc and the gateway.

Each cell is parsed on its own. pandas 2.3's ``to_datetime(..., format="ISO8601", utc=True)`` over a column carries
an explicit offset from one string to the naive strings after it (``["...T23:30+02:00", "2024-03-05 07:00"]``
gives 05:00 UTC for the second, ``07:00`` when the order is reversed), so a batch's encoding would depend on the
other rows in it; cell by cell, a naive time is UTC and an offset applies to its own cell only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd


def parse_iso_utc(value: Any) -> datetime | None:
    """``value`` (ISO text, a ``datetime`` or ``pandas.Timestamp``) in UTC (naive = UTC); None when it is missing
    or not a date (what Python's ``fromisoformat`` does not take is left to pandas' ISO-8601 parser, alone)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, datetime):
        stamp = value
    else:
        text = str(value).strip()
        if not text:
            return None
        try:
            stamp = datetime.fromisoformat(text)
        except ValueError:
            parsed = pd.to_datetime(pd.Series([text], dtype=object), errors="coerce", format="ISO8601", utc=True)[0]
            if pd.isna(parsed):
                return None
            stamp = parsed.to_pydatetime()
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)

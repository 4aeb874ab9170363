"""Reading a YAML/JSON file of options: the one reader every ``--config`` uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipelines.errors import UserError


class ConfigFileError(UserError, ValueError):
    """A config file that is missing, not YAML, or not a mapping (a user mistake, and a ValueError for libraries)."""


def read_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping a YAML/JSON file holds; ``what`` names it in the message (e.g. ``--config x.yaml``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigFileError(f"{what} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{what}: not valid YAML/JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{what}: expected a mapping of options, got {type(data).__name__}")
    return data

"""Before anything trains: is the new data the same table the registered model was trained on?

A champion answers the columns it was trained on. A refresh that registers a challenger on other columns under the
same model name leaves a canary that cannot compare the two (the champion cannot answer the new rows: nothing is
served, nothing judged). :func:`check_schema_change` compares the champion's input schema (the ``input_schema``
tag, or for older float-matrix versions the ``features`` tag) with the prepared data's, by column name and type,
and stops the refresh with one line naming the added, removed and retyped columns and the two fixes: another
``--model-name`` (a new lineage), or ``--allow-schema-change`` (retrain this model on the new columns anyway).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitoring.vocabulary import CHAMPION
from pipelines import registry
from pipelines.errors import UserError

log = logging.getLogger("nasops.refresh.schema")


@dataclass
class SchemaDiff:
    """How the new data's columns differ from the registered model's (empty lists: the same table)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    retyped: list[tuple[str, str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.retyped)

    def describe(self, limit: int = 8) -> str:
        def names(items: list[str]) -> str:
            more = f", … ({len(items) - limit} more)" if len(items) > limit else ""
            return ", ".join(map(repr, items[:limit])) + more

        parts = []
        if self.added:
            parts.append(f"added {names(self.added)}")
        if self.removed:
            parts.append(f"removed {names(self.removed)}")
        if self.retyped:
            parts.append("retyped " + ", ".join(f"{n!r} ({old} -> {new})" for n, old, new in self.retyped[:limit]))
        return "; ".join(parts)


def compare(registered: list[dict], new: list[dict]) -> SchemaDiff:
    """Column names and types (whether a column may be missing is not a change of table)."""
    old_types = {c["name"]: c["type"] for c in registered}
    new_types = {c["name"]: c["type"] for c in new}
    return SchemaDiff(
        added=[n for n in new_types if n not in old_types],
        removed=[n for n in old_types if n not in new_types],
        retyped=[(n, old_types[n], new_types[n]) for n in new_types if n in old_types and old_types[n] != new_types[n]],
    )


def registered_schema(tags: dict[str, str]) -> list[dict] | None:
    """A version's input schema from its ``nasops.*`` tags (without prefix); None when it records none."""
    for key in ("input_schema", "features"):
        raw = tags.get(key)
        if not raw:
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        if key == "input_schema" and isinstance(value, list) and value:
            return [{"name": str(c["name"]), "type": str(c["type"])} for c in value]
        if key == "features" and isinstance(value, list) and value:
            return [{"name": str(n), "type": "double"} for n in value]
    return None


def check_schema_change(model_name: str, schema: list[dict], source: str, allow: bool = False,
                        client: Any = None) -> SchemaDiff | None:
    """Raise :class:`UserError` (exit 2) when ``schema`` (the new data's columns) differs from the champion's of
    ``model_name``; with ``allow`` log the difference and return it. None when there is no champion or nothing to
    compare. ``client``: the registry to read (default: the one MLflow is configured for)."""
    if not schema:
        return None
    mv = registry.alias_version(client or registry.client_for_active(), model_name, CHAMPION)
    if mv is None:
        return None
    old = registered_schema(registry.version_tags(mv))
    if old is None:
        return None
    diff = compare(old, schema)
    if not diff:
        return None
    what = (f"{source} has other columns than model {model_name!r} (champion version {mv.version}) was "
            f"trained on: {diff.describe()}")
    if allow:
        log.warning("%s; --allow-schema-change: retraining %r on the new columns; the champion cannot answer them, "
                    "so the tournament and the canary are skipped (promote the challenger by hand once it is "
                    "checked)", what, model_name)
        return diff
    raise UserError(f"{what}. A champion cannot be compared with a model of other columns; register a new model "
                    f"with --model-name NEW_NAME, or pass --allow-schema-change to retrain {model_name!r} on the new "
                    "columns anyway")


def preflight_schema(config: Any, x: Any) -> None:
    """The same check from the CLI, before Prefect starts (one line, no flow run): reads the registry only when
    one exists, so a first refresh creates nothing here."""
    from mlflow.tracking import MlflowClient

    from pipelines.data import BUNDLED, input_schema
    from pipelines.settings import Settings

    settings = Settings()
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return
    source = config.data if config.data in BUNDLED else Path(config.data).name
    schema = input_schema(x, source)
    check_schema_change(config.model_name or settings.model_name, schema, source, config.allow_schema_change,
                        client=MlflowClient(tracking_uri=uri, registry_uri=uri))

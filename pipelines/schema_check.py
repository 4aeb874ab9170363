"""Before anything trains: is the new data the same table the registered model was trained on?

A champion answers the columns it was trained on. A refresh that registers a challenger on other columns under the
same model name leaves a canary that cannot compare the two (the champion cannot answer the new rows: nothing is
served, nothing judged). :func:`check_schema_change` compares the champion's input schema (the ``input_schema``
tag, or for older float-matrix versions the ``features`` tag) with the prepared data's, by column name and type,
and stops the refresh with one line naming the added, removed and retyped columns and the two fixes: another
``--model-name`` (a new lineage), or ``--allow-schema-change`` (retrain this model on the new columns anyway).

The same read of the champion also compares the dataset fingerprints (:func:`compare_with_champion`): the refresh
says "same data as the champion" or "data changed since the champion" and records it as the parent run's
``nasops.data_vs_champion`` tag, so a scheduled refresh that retrains on unchanged data is visible.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitoring.vocabulary import CHAMPION
from pipelines import registry
from pipelines.errors import UserError

if TYPE_CHECKING:
    from pipelines.settings import Settings

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


def registered_schema(tags: dict[str, str], optional: bool = False) -> list[dict] | None:
    """A version's input schema from its ``nasops.*`` tags (without prefix); None when it records none. With
    ``optional`` each column also says whether the version imputes it when absent (float-matrix versions: never)."""
    for key in ("input_schema", "features"):
        raw = tags.get(key)
        if not raw:
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        if key == "input_schema" and isinstance(value, list) and value:
            return [{"name": str(c["name"]), "type": str(c["type"]),
                     **({"optional": bool(c.get("optional"))} if optional else {})} for c in value]
        if key == "features" and isinstance(value, list) and value:
            return [{"name": str(n), "type": "double", **({"optional": False} if optional else {})} for n in value]
    return None


def traffic_columns(champion: list[dict], challenger: list[dict]) -> tuple[list[str] | None, str | None]:
    """Which traffic a canary can judge two schemas (with ``optional``) on: ``(None, None)`` when they take the same
    columns (all of it); ``(the columns both take, None)`` when they differ but a request of only those suits both
    (every column only one of them takes is optional for it: imputed when absent); ``(None, why not)`` otherwise."""
    diff = compare(champion, challenger)
    if not diff:
        return None, None
    shared = [c["name"] for c in challenger if c["name"] in {o["name"] for o in champion}]
    needed = [f"{c['name']!r} (the {who}'s)" for who, schema in (("champion", champion), ("challenger", challenger))
              for c in schema if c["name"] not in shared and not c.get("optional")]
    if diff.retyped:
        return None, f"they take other columns ({diff.describe()}), some of other types"
    if needed or not shared:
        why = f"required columns only one of them takes: {', '.join(needed)}" if needed else "no shared column"
        return None, f"they take other columns ({diff.describe()}) and no request suits both ({why})"
    return shared, None


def judgeable_columns(model_name: str, champion: Any, challenger: Any) -> list[str] | None:
    """:func:`traffic_columns` of two registered versions; :class:`UserError` when no traffic suits both: the
    canary refuses to judge them (it would serve nothing, or judge one variant on rows it cannot answer)."""
    old = registered_schema(registry.version_tags(champion), optional=True)
    new = registered_schema(registry.version_tags(challenger), optional=True)
    if old is None or new is None:
        return None
    shared, refusal = traffic_columns(old, new)
    if refusal:
        raise UserError(f"the canary refuses to judge challenger v{challenger.version} against champion "
                        f"v{champion.version} of {model_name!r}: {refusal}; check the challenger offline and promote "
                        "it by hand, or register it under another --model-name")
    return shared


SAME, CHANGED, NO_CHAMPION, UNKNOWN = "same", "changed", "no_champion", "unknown"
"""Values of the ``nasops.data_vs_champion`` tag."""


@dataclass
class ChampionComparison:
    """The new data against the registered champion's: its columns (``diff``) and its content (fingerprints)."""

    model_name: str
    version: str | None = None
    diff: SchemaDiff = field(default_factory=SchemaDiff)
    champion_fingerprint: str | None = None
    fingerprint: str | None = None
    champion_schema: list[dict] | None = None
    """The champion's columns with ``optional`` (what :func:`traffic_columns` needs)."""

    @property
    def data(self) -> str:
        """:data:`SAME`, :data:`CHANGED`, :data:`NO_CHAMPION`, or :data:`UNKNOWN` (a champion without one)."""
        if self.version is None:
            return NO_CHAMPION
        if not self.champion_fingerprint or not self.fingerprint:
            return UNKNOWN
        return SAME if self.champion_fingerprint == self.fingerprint else CHANGED

    def describe(self) -> str:
        """The line the refresh prints about its data."""
        if self.data == NO_CHAMPION:
            return f"no champion of {self.model_name!r} yet: nothing to compare the data with"
        if self.data == UNKNOWN:
            return (f"the champion (version {self.version}) records no dataset fingerprint: cannot tell whether "
                    "the data changed")
        if self.data == SAME:
            return (f"same data as the champion (fingerprint {self.fingerprint}, version {self.version}): this "
                    "refresh retrains on the table the champion was trained on")
        return (f"data changed since the champion (fingerprint {self.champion_fingerprint} -> {self.fingerprint}, "
                f"version {self.version})")


def compare_with_champion(model_name: str, schema: list[dict], source: str, fingerprint: str | None = None,
                          allow: bool = False, client: Any = None) -> ChampionComparison:
    """Read ``model_name``'s champion once and compare the new data with it: raise :class:`UserError` (exit 2) when
    ``schema`` (the new data's columns) differs, unless ``allow`` (then log the difference, in ``diff``); compare
    ``fingerprint`` with the champion's ``dataset_fingerprint`` tag. ``client``: the registry to read (default:
    the one MLflow is configured for)."""
    mv = registry.alias_version(client or registry.client_for_active(), model_name, CHAMPION)
    if mv is None:
        return ChampionComparison(model_name, fingerprint=fingerprint)
    tags = registry.version_tags(mv)
    found = ChampionComparison(model_name, str(mv.version), champion_fingerprint=tags.get("dataset_fingerprint"),
                               fingerprint=fingerprint, champion_schema=registered_schema(tags, optional=True))
    old = registered_schema(tags)
    if not schema or old is None:
        return found
    found.diff = diff = compare(old, schema)
    if not diff:
        return found
    what = (f"{source} has other columns than model {model_name!r} (champion version {mv.version}) was "
            f"trained on: {diff.describe()}")
    if allow:
        log.warning("%s; --allow-schema-change: retraining %r on the new columns; the champion cannot answer them, "
                    "so the tournament is skipped and the canary judges only traffic that suits both, if any",
                    what, model_name)
        return found
    raise UserError(f"{what}. A champion cannot be compared with a model of other columns; register a new model "
                    f"with --model-name NEW_NAME, or pass --allow-schema-change to retrain {model_name!r} on the new "
                    "columns anyway")


def check_schema_change(model_name: str, schema: list[dict], source: str, allow: bool = False,
                        client: Any = None) -> SchemaDiff | None:
    """:func:`compare_with_champion` for the columns only: the difference (with ``allow``), or None when there is
    no champion, nothing to compare, or no difference."""
    if not schema:
        return None
    diff = compare_with_champion(model_name, schema, source, allow=allow, client=client).diff
    return diff or None


def preflight_schema(config: Any, x: Any, settings: Settings) -> None:
    """The same check from the CLI, before Prefect starts (one line, no flow run): reads the registry only when
    one exists, so a first refresh creates nothing here."""
    from mlflow.tracking import MlflowClient

    from pipelines.data import BUNDLED, input_schema, source_label
    from pipelines.preprocessing import plan_columns

    uri = settings.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return
    source = source_label(config.data)
    plan = None if config.data in BUNDLED else plan_columns(x, config.categorical)
    schema = input_schema(x, source, plan)
    check_schema_change(config.model_name or settings.model_name, schema, source, config.allow_schema_change,
                        client=MlflowClient(tracking_uri=uri, registry_uri=uri))

"""The two versions a rollout compares, read from the registry's aliases and tags (no model is loaded)."""

from __future__ import annotations

from typing import Any

from monitoring.core.model_ref import ModelRef
from monitoring.vocabulary import CHALLENGER, CHAMPION
from pipelines import registry
from pipelines.errors import UserError

__all__ = ["model_ref", "variants"]


def variants(client: Any, model_name: str) -> tuple[Any, Any]:
    """The champion and challenger versions of ``model_name`` (both aliases must exist and differ)."""
    champion = registry.alias_version(client, model_name, CHAMPION)
    challenger = registry.alias_version(client, model_name, CHALLENGER)
    if champion is None or challenger is None:
        missing = [a for a, v in ((CHAMPION, champion), (CHALLENGER, challenger)) if v is None]
        raise UserError(f"model {model_name!r} has no {' and no '.join(missing)} alias; register versions and set "
                        "the aliases 'champion' and 'challenger' before running the canary")
    if str(champion.version) == str(challenger.version):
        raise UserError(f"'champion' and 'challenger' of {model_name!r} both point at version {champion.version}; "
                        "register a new version as challenger")
    from pipelines.schema_check import judgeable_columns

    judgeable_columns(model_name, champion, challenger)  # other columns that no request suits both: refused here
    return champion, challenger


def model_ref(mv: Any) -> ModelRef:
    """A version's :class:`ModelRef`; an unreadable task tag is a UserError naming the version."""
    try:
        return ModelRef.from_version(mv)
    except ValueError as exc:
        raise UserError(f"version {mv.version} of {mv.name!r} has an unusable nasops.task tag: {exc}") from None

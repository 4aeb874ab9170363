"""The canary's decision written to the MLflow registry: promote (aliases move) or roll back (version rejected).

Crash safety of a promotion rests on the order of alias operations. ``set_registered_model_alias`` on an alias
that exists *moves* it in one write, so ``champion`` is never absent and never on two versions. The order is:

1. mark the challenger ``nasops.promotion=in_progress`` (an audit trail of an interrupted promotion);
2. ``previous-champion`` -> the current champion (champion unchanged: the old model still serves);
3. ``champion`` -> the challenger (one atomic move: from here on the new model serves);
4. decision tags on the new champion, ``nasops.promotion=complete``;
5. drop the ``challenger`` alias (it is the champion now).

A crash between any two steps leaves exactly one ``champion`` (old or new) and the old one reachable as
``previous-champion`` from step 2 on; running :func:`promote` again finishes the job (it is idempotent: when
``champion`` already points at the version it does not touch ``previous-champion`` again).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from mlflow.tracking import MlflowClient

from monitoring import vocabulary as v
from monitoring.core.enums import Decision
from monitoring.vocabulary import CHALLENGER, CHAMPION, PREVIOUS_CHAMPION
from pipelines.errors import UserError
from pipelines.registry import alias_version

PROMOTION_TAG = v.tag(v.PROMOTION)

Progress = Callable[[str], None]


def _alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    mv = alias_version(client, model_name, alias)
    return None if mv is None else str(mv.version)


def decision_tags(decision: str, reason: str, verdict: str, score: float, canary_run_id: str) -> dict[str, str]:
    """The contract's decision tags (see docs/canary.md)."""
    return {
        v.tag(v.DECISION): decision,
        v.tag(v.DECISION_REASON): reason,
        v.tag(v.DECISION_TIME): datetime.now(UTC).isoformat(timespec="seconds"),
        v.tag(v.VERDICT): verdict,
        v.tag(v.VERDICT_SCORE): f"{max(0.0, min(100.0, float(score))):.1f}",
        v.tag(v.CANARY_RUN_ID): canary_run_id,
    }


def _tag(client: MlflowClient, model_name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)


def _drop_challenger_alias(client: MlflowClient, model_name: str, version: str) -> None:
    if _alias_version(client, model_name, CHALLENGER) == version:
        client.delete_registered_model_alias(model_name, CHALLENGER)


class ChampionMoved(UserError):
    """The champion alias no longer points at the version a rollout judged its challenger against: promoting would
    replace a model nobody compared it with, so the decision is refused (and recorded) instead."""


def promote(
    client: MlflowClient,
    model_name: str,
    version: str,
    *,
    reason: str,
    verdict: str,
    score: float,
    canary_run_id: str,
    keep_challenger_alias: bool = False,
    progress: Progress | None = None,
    judged_against: str | None = None,
) -> dict[str, str | None]:
    """Make ``version`` the champion (crash-safe, idempotent); returns the aliases afterwards. ``judged_against``:
    the champion version the evidence compared ``version`` with; if ``champion`` has moved elsewhere since, nothing
    is written and :class:`ChampionMoved` is raised (a check-then-set: the registry has no compare-and-set)."""
    version = str(version)
    step = progress or (lambda _name: None)
    old = _alias_version(client, model_name, CHAMPION)
    if judged_against is not None and old not in (str(judged_against), version):
        raise ChampionMoved(f"champion of {model_name!r} is now v{old}, not v{judged_against} that the rollout "
                            f"compared v{version} with; the promotion is refused (start a new rollout against v{old})")
    client.set_model_version_tag(model_name, version, PROMOTION_TAG, "in_progress")
    step("marked")
    if old != version:
        if old is not None:
            client.set_registered_model_alias(model_name, PREVIOUS_CHAMPION, old)
        step("previous-champion")
        client.set_registered_model_alias(model_name, CHAMPION, version)
    step("champion")
    _tag(client, model_name, version, decision_tags(Decision.PROMOTED, reason, verdict, score, canary_run_id))
    client.set_model_version_tag(model_name, version, PROMOTION_TAG, "complete")
    step("tagged")
    if not keep_challenger_alias:
        _drop_challenger_alias(client, model_name, version)
    step("done")
    return aliases(client, model_name)


def roll_back(
    client: MlflowClient,
    model_name: str,
    version: str,
    *,
    reason: str,
    verdict: str,
    score: float,
    canary_run_id: str,
    keep_challenger_alias: bool = False,
) -> dict[str, str | None]:
    """Reject ``version``: decision tags plus ``rejected`` = the reasons; the champion stays where it is."""
    version = str(version)
    if _alias_version(client, model_name, CHAMPION) == version:
        raise ValueError(f"version {version} of {model_name!r} is the champion; only a challenger can be rolled back")
    _tag(client, model_name, version, decision_tags(Decision.ROLLED_BACK, reason, verdict, score, canary_run_id))
    client.set_model_version_tag(model_name, version, v.REJECTED, reason)
    if not keep_challenger_alias:
        _drop_challenger_alias(client, model_name, version)
    _drop_candidate_aliases(client, model_name, version)
    return aliases(client, model_name)


def _drop_candidate_aliases(client: MlflowClient, model_name: str, version: str) -> None:
    """A rejected version is nobody's candidate any more: its ``candidate-N`` aliases go (issue 24: a rolled-back
    version kept ``candidate-1``, so the registry still offered it)."""
    for alias in client.get_model_version(model_name, version).aliases or []:
        if v.candidate_rank(alias) is not None:
            client.delete_registered_model_alias(model_name, alias)


def aliases(client: MlflowClient, model_name: str) -> dict[str, str | None]:
    """The three aliases the canary manages and the version each points at (None: not set)."""
    return {a: _alias_version(client, model_name, a) for a in (CHAMPION, CHALLENGER, PREVIOUS_CHAMPION)}

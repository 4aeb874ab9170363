"""The registry vocabulary: alias names, variant names and tag keys, defined once.

Every room that reads or writes the registry or the prediction log imports these names from here. They live in
``monitoring`` because it is the one room every other room may import under the house's arrows (``serving`` and
``pipelines`` import ``monitoring``; ``monitoring`` imports nothing of ours), so one spelling serves the gateway,
the judge, the refresh and the CLI alike.
"""

from __future__ import annotations

from typing import Final, Literal

# -- aliases: the only pointers serving follows --------------------------------------------------------------------
CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"
PREVIOUS_CHAMPION: Final = "previous-champion"
CANDIDATE_ALIAS_PREFIX: Final = "candidate-"

# -- variants: how the gateway, the prediction log and the judge name the two sides of a canary ---------------------
Variant = Literal["champion", "challenger"]
VARIANTS: Final[tuple[str, str]] = (CHAMPION, CHALLENGER)

# -- tags on model versions and runs (all prefixed) -----------------------------------------------------------------
TAG_PREFIX: Final = "nasops."


def tag(key: str) -> str:
    """The full MLflow tag key of a nasops tag (``decision`` -> ``nasops.decision``)."""
    return key if key.startswith(TAG_PREFIX) else TAG_PREFIX + key


def candidate_alias(rank: int) -> str:
    """``candidate-<rank>``: the alias of the retrained candidate with this offline rank (1 = the challenger)."""
    if rank < 1:
        raise ValueError(f"candidate rank must be >= 1, got {rank}")
    return f"{CANDIDATE_ALIAS_PREFIX}{rank}"


def candidate_rank(alias: str) -> int | None:
    """The rank of a ``candidate-N`` alias, or None for any other alias."""
    if not alias.startswith(CANDIDATE_ALIAS_PREFIX):
        return None
    suffix = alias[len(CANDIDATE_ALIAS_PREFIX):]
    return int(suffix) if suffix.isdigit() and int(suffix) >= 1 else None


# Tag keys (without the prefix; write them with :func:`tag`).
STAGE: Final = "stage"
DECISION: Final = "decision"
DECISION_REASON: Final = "decision_reason"
DECISION_TIME: Final = "decision_time"
VERDICT: Final = "verdict"
VERDICT_SCORE: Final = "verdict_score"
CANARY_RUN_ID: Final = "canary_run_id"
REJECTED: Final = "rejected"
PROMOTION: Final = "promotion"
SEED: Final = "seed"
ARCH: Final = "arch"
SPACE: Final = "space"
ROLE: Final = "role"
DATASET_FINGERPRINT: Final = "dataset_fingerprint"
PREFECT_FLOW_RUN_ID: Final = "prefect_flow_run_id"
CHAMPION_VERSION: Final = "champion_version"
CHALLENGER_VERSION: Final = "challenger_version"

# Decisions a version can carry.
PROMOTED: Final = "promoted"
ROLLED_BACK: Final = "rolled_back"
ABANDONED: Final = "abandoned"

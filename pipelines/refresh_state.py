"""The durable record of one refresh: its id, its MLflow parent run, its state — what ``nasops refresh --resume``
continues from.

Each refresh owns ``$NASOPS_HOME/refreshes/<id>/``: ``refresh.json`` (this record), the search journal, and the
Prefect result store of its cached stages. A killed refresh leaves a record whose status is still ``running``; the
next ``--resume`` reuses its id, so its cache keys and its journal match: finished stages are read back, the search
continues where the journal stops, and the same MLflow parent run collects everything.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import UserError
from serving.server import pid_alive

RUNNING, COMPLETED, FAILED = "running", "completed", "failed"


@dataclass
class RefreshRecord:
    refresh_id: str
    status: str = RUNNING
    started: float = field(default_factory=time.time)
    finished: float | None = None
    parent_run_id: str | None = None
    config: dict = field(default_factory=dict)
    error: str | None = None
    attempts: int = 1
    pid: int = field(default_factory=os.getpid)
    stages_done: list[str] = field(default_factory=list)  # in order, as each stage ends (what a resume reuses)

    def directory(self, home: Path) -> Path:
        return refreshes_dir(home) / self.refresh_id

    @property
    def journal_name(self) -> str:
        return "search.jsonl"


def refreshes_dir(home: Path) -> Path:
    return Path(home) / "refreshes"


def new_refresh_id() -> str:
    """Sortable by start time, unique across machines."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def save(home: Path, record: RefreshRecord) -> Path:
    """Write the record atomically (rename), so a kill never leaves half a file."""
    directory = record.directory(home)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "refresh.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(record), indent=1, default=str))
    os.replace(tmp, path)
    return path


def load(home: Path, refresh_id: str) -> RefreshRecord:
    path = refreshes_dir(home) / refresh_id / "refresh.json"
    if not path.is_file():
        known = ", ".join(r.refresh_id for r in list_records(home)[-5:]) or "none"
        raise UserError(f"no refresh {refresh_id!r} under {refreshes_dir(home)} (recent: {known})")
    try:
        return RefreshRecord(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise UserError(f"refresh record {path} is unreadable ({exc}); start a new refresh without --resume") from None


def list_records(home: Path) -> list[RefreshRecord]:
    """Every readable refresh record, oldest first."""
    out = []
    base = refreshes_dir(home)
    for path in sorted(base.glob("*/refresh.json")) if base.is_dir() else []:
        try:
            out.append(RefreshRecord(**json.loads(path.read_text())))
        except (ValueError, TypeError):
            continue
    return out


def latest_unfinished(home: Path) -> RefreshRecord:
    """The newest refresh that did not complete: what a bare ``--resume`` continues."""
    for record in reversed(list_records(home)):
        if record.status != COMPLETED:
            return record
    raise UserError(f"no unfinished refresh to resume under {refreshes_dir(home)}; run `nasops refresh` without "
                    "--resume")


def dead_unfinished(home: Path, keep: str | None = None) -> list[RefreshRecord]:
    """Refreshes still marked running whose process is gone (killed): what a new refresh cleans up."""
    return [r for r in list_records(home)
            if r.status == RUNNING and r.refresh_id != keep and not pid_alive(r.pid)]


def conflicts(recorded: dict, given: dict, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """``dotted.field -> (recorded, given)`` for every value ``given`` changes; a field the record does not hold (a
    refresh recorded before the field existed) is not a conflict."""
    out: dict[str, tuple[Any, Any]] = {}
    for key, old in recorded.items():
        if key not in given:
            continue
        new = given[key]
        if isinstance(old, dict) and isinstance(new, dict):
            out.update(conflicts(old, new, f"{prefix}{key}."))
        elif old != new:
            out[f"{prefix}{key}"] = (old, new)
    return out


def resumed_config(record: RefreshRecord, given: Any | None = None) -> Any:
    """The configuration a resumed refresh runs with: the recorded, resolved one, never a mix (its id keys the
    stage cache, the journal and the registered versions). ``given`` that changes a recorded value is refused in one
    line; only its database password (never recorded) carries over."""
    from pipelines.config import RefreshConfig

    recorded = RefreshConfig.model_validate(record.config)
    if given is None:
        return recorded
    changed = conflicts(record.config, given.model_dump(mode="json"))
    if changed:
        field, (old, new) = next(iter(changed.items()))
        raise UserError(f"refresh {record.refresh_id} was started with {field}={old!r}, not {new!r}; a resumed refresh "
                        "continues its recorded configuration: resume it without a new configuration, or start a new "
                        "refresh for this one")
    return recorded.model_copy(update={"data_password": given.data_password})


# The stages whose result the refresh's own store keeps (pipelines.refresh._cached): a resume reads them back.
CACHED_STAGES = ("prepare_data", "train_baselines", "register_baseline_champion", "retrain_and_register")
SEARCH_STAGE = "search_architectures"


def journal_trials(path: Path) -> int:
    """Finished trials in a search journal (its ``result`` lines; a torn last line does not count)."""
    if not path.is_file():
        return 0
    count = 0
    for line in path.read_text(errors="replace").splitlines():
        try:
            count += json.loads(line).get("type") == "result"
        except (ValueError, AttributeError):
            continue
    return count


def resume_plan(home: Path, record: RefreshRecord) -> str:
    """One line saying what ``--resume`` reuses and what runs again: stages read back from the refresh's store, the
    search's finished trials (continued from its journal), the stages that run from the start."""
    done = [s for s in record.stages_done if s in CACHED_STAGES]
    trials = journal_trials(record.directory(home) / record.journal_name)
    search = record.config.get("search", {}) if isinstance(record.config, dict) else {}
    budget = search.get("budget")
    parts = [f"read back: {', '.join(done)}" if done else "no finished stage to read back"]
    if SEARCH_STAGE in record.stages_done:
        parts.append(f"search: {trials} trials in its journal, not run again")
    elif trials:
        parts.append(f"search: continues from {trials}" + (f" of {budget}" if budget else "") + " trials")
    return f"resuming refresh {record.refresh_id} (attempt {record.attempts + 1}): " + "; ".join(parts) + \
        "; the stages after run again"


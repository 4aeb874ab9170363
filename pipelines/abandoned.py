"""Cleaning up after a refresh that was killed: what ``kill -9`` left behind in the registry and tracking store.

A killed refresh cannot mark its own MLflow runs or say what became of its challenger. The next refresh that is not
resuming it does: every run of the dead refresh still RUNNING is ended FAILED, and a challenger it registered
that never got a decision is tagged ``decision=abandoned`` (and loses the ``challenger`` alias, so no canary ever
serves a model nobody judged). Its record is marked failed; ``--resume`` of it stays possible until then.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from monitoring import vocabulary as v
from pipelines import refresh_state, registry
from pipelines.promotion import decision_tags

log = logging.getLogger("nasops.refresh")


def _end_running_runs(client: MlflowClient, parent_run_id: str) -> int:
    """End FAILED every RUNNING run under ``parent_run_id`` (any depth), and the parent itself."""
    parent = client.get_run(parent_run_id)
    running = client.search_runs([parent.info.experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
    parents = {r.info.run_id: r.data.tags.get("mlflow.parentRunId") for r in running}

    def under(run_id: str | None) -> bool:
        seen = set()
        while run_id and run_id not in seen:
            if run_id == parent_run_id:
                return True
            seen.add(run_id)
            if run_id not in parents:
                try:
                    parents[run_id] = client.get_run(run_id).data.tags.get("mlflow.parentRunId")
                except Exception:
                    return False
            run_id = parents[run_id]
        return False

    ended = 0
    for run in running:
        if under(run.info.run_id):
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
            ended += 1
    return ended


def _abandon_challenger(client: MlflowClient, model_name: str, refresh_run_id: str) -> str | None:
    mv = registry.alias_version(client, model_name, v.CHALLENGER)
    if mv is None:
        return None
    tags = registry.version_tags(mv)
    if tags.get(v.DECISION) or tags.get("refresh_run_id") != refresh_run_id:
        return None
    reason = "the refresh that registered it was killed before its canary decided"
    for key, value in decision_tags(v.ABANDONED, reason, "none", 0.0, "").items():
        client.set_model_version_tag(model_name, str(mv.version), key, value)
    client.delete_registered_model_alias(model_name, v.CHALLENGER)
    return str(mv.version)


def clean_up(home: Path, model_name: str, keep: str | None = None, client: MlflowClient | None = None) -> list[str]:
    """Mark every dead unfinished refresh failed, end its RUNNING runs, abandon its undecided challenger (in the store
    ``client`` reads; default: the one MLflow's fluent API is pointed at)."""
    client = client or registry.client_for_active()
    cleaned = []
    for record in refresh_state.dead_unfinished(home, keep):
        ended, version = 0, None
        if record.parent_run_id:
            try:
                ended = _end_running_runs(client, record.parent_run_id)
                version = _abandon_challenger(client, model_name, record.parent_run_id)
            except Exception as exc:  # a missing run must not stop the new refresh
                log.warning("could not clean up refresh %s: %s", record.refresh_id, exc)
        record.status, record.error = refresh_state.FAILED, "abandoned: its process died"
        refresh_state.save(home, record)
        log.warning("refresh %s had died: %d run(s) marked FAILED%s", record.refresh_id, ended,
                    f", challenger v{version} tagged abandoned" if version else "")
        cleaned.append(record.refresh_id)
    return cleaned

"""A read-only view of the MLflow model registry without importing MLflow, for commands that only read.

Why: ``nasops status`` took 18–26 s on a busy host, most of it importing MLflow (~5 s of imports before a single
query). The registry's facts a person reads — versions, aliases, tags, runs — are a few rows: here they come from
the store's own tables (an embedded SQLite file or a database-backed store, through SQLAlchemy core) or the tracking
server's REST API (``/api/2.0/mlflow/…``, through httpx). The shape is :func:`pipelines.registry.list_versions`'s,
so the same tables render it; a store this view cannot read (another scheme, a schema it does not know) returns
``None`` and the caller falls back to ``MlflowClient``.
"""

from __future__ import annotations

import os
from typing import Any

from monitoring.vocabulary import REJECTED, TAG_PREFIX

__all__ = ["list_versions"]

DELETED_STAGE = "Deleted_Internal"  # MLflow's mark of a soft-deleted version


def list_versions(uri: str, model_name: str, timeout_s: float = 5.0) -> list[dict[str, Any]] | None:
    """Every version of ``model_name``, newest first (``[]`` if unregistered), or None when this view cannot read
    the store at ``uri``."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    try:
        if scheme in ("sqlite", "postgresql", "mysql"):
            return _from_database(uri, model_name)
        if scheme in ("http", "https"):
            return _from_server(uri, model_name, timeout_s)
    except Exception:  # a schema or an answer this view does not know: MLflow's client reads it
        return None
    return None


def _row(version: str, created: Any, run_id: str | None, tags: dict[str, str], aliases: list[str]) -> dict:
    return {"version": str(version), "aliases": sorted(aliases), "created": int(created) if created else None,
            "tags": {k[len(TAG_PREFIX):]: v for k, v in tags.items() if k.startswith(TAG_PREFIX)},
            "rejected": tags.get(REJECTED), "run_id": run_id}


def _from_database(uri: str, model_name: str) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    try:
        meta = sa.MetaData()
        versions, tags, aliases = (sa.Table(t, meta, autoload_with=engine) for t in
                                   ("model_versions", "model_version_tags", "registered_model_aliases"))
        workspace = os.environ.get("MLFLOW_WORKSPACE", "default")

        def where(table: sa.Table) -> Any:
            clause = table.c.name == model_name
            return clause & (table.c.workspace == workspace) if "workspace" in table.c else clause

        with engine.connect() as conn:
            found = conn.execute(sa.select(versions.c.version, versions.c.creation_time, versions.c.run_id)
                                 .where(where(versions) & (versions.c.current_stage != DELETED_STAGE))).all()
            by_version: dict[str, dict[str, str]] = {str(v): {} for v, _, _ in found}
            for version, key, value in conn.execute(sa.select(tags.c.version, tags.c.key, tags.c.value)
                                                    .where(where(tags))):
                by_version.setdefault(str(version), {})[key] = value
            named: dict[str, list[str]] = {}
            for alias, version in conn.execute(sa.select(aliases.c.alias, aliases.c.version).where(where(aliases))):
                named.setdefault(str(version), []).append(alias)
    finally:
        engine.dispose()
    rows = [_row(v, created, run_id, by_version.get(str(v), {}), named.get(str(v), []))
            for v, created, run_id in found]
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)


def _from_server(uri: str, model_name: str, timeout_s: float) -> list[dict[str, Any]]:
    import httpx

    base = uri.rstrip("/") + "/api/2.0/mlflow"
    with httpx.Client(timeout=timeout_s) as http:
        model = http.get(f"{base}/registered-models/get", params={"name": model_name})
        if model.status_code == 404:
            return []
        model.raise_for_status()
        named: dict[str, list[str]] = {}
        for entry in model.json().get("registered_model", {}).get("aliases", []):
            named.setdefault(str(entry["version"]), []).append(entry["alias"])
        rows, token = [], None
        while True:
            params = {"filter": f"name='{model_name}'", "max_results": 1000, **({"page_token": token} if token else {})}
            page = http.get(f"{base}/model-versions/search", params=params)
            page.raise_for_status()
            body = page.json()
            for mv in body.get("model_versions", []):
                tags = {t["key"]: t.get("value", "") for t in mv.get("tags", [])}
                rows.append(_row(mv["version"], mv.get("creation_timestamp"), mv.get("run_id"), tags,
                                 named.get(str(mv["version"]), [])))
            token = body.get("next_page_token")
            if not token:
                break
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)

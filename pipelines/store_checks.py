"""Fail-fast checks of the stores a command talks to, importable without MLflow (a read-only command such as
``nasops status`` must answer in seconds: importing MLflow alone takes several)."""

from __future__ import annotations

from pathlib import Path

from pipelines.errors import UserError
from pipelines.settings import Settings

__all__ = ["MLFLOW_SCHEMES", "TRACKING_FIX", "check_prediction_log", "check_stores", "check_tracking_store"]

TRACKING_FIX = "unset MLFLOW_TRACKING_URI to use the embedded SQLite store"
MLFLOW_SCHEMES = ("", "file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks",
                  "databricks-uc", "uc")


def check_tracking_store(uri: str, timeout_s: float = 3.0) -> None:
    """Fail fast, with one line, on a store that cannot work — before MLflow's own retries (minutes on a dead
    server) or a traceback from sqlite3: a URI MLflow cannot use, a database path that is a directory, not a
    database, read-only or in a missing directory, a database server or tracking server that does not answer
    within ``timeout_s``."""
    from urllib.parse import urlparse

    from monitoring.prediction_log import check_sqlite_file, probe_database

    scheme = urlparse(uri).scheme.lower()
    base = scheme.split("+", 1)[0]
    if base not in MLFLOW_SCHEMES:
        raise UserError(f"MLFLOW_TRACKING_URI={uri!r} is not a URI MLflow can use (scheme {scheme!r}); use "
                        f"http://HOST:PORT for a tracking server or sqlite:///PATH, or {TRACKING_FIX}")
    if base == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise UserError(f"MLFLOW_TRACKING_URI={uri!r} names no SQLite file; use sqlite:///PATH (three "
                            f"slashes, then the path), or {TRACKING_FIX}")
        fix = "move it away (nasops makes a new store) or set MLFLOW_TRACKING_URI"
        try:
            check_sqlite_file(Path(uri[len("sqlite:///"):]), "the tracking store", fix)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    elif base in ("postgresql", "mysql", "mssql"):
        try:
            probe_database(uri, timeout_s, "the MLflow tracking store", TRACKING_FIX)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    elif base in ("http", "https"):
        import httpx

        try:
            response = httpx.get(uri.rstrip("/") + "/health", timeout=timeout_s)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise UserError(f"cannot reach the MLflow tracking store at {uri!r} ({type(exc).__name__}: it does not "
                            f"answer /health within {timeout_s:g}s); start the server, or {TRACKING_FIX}") from None
        if response.status_code >= 500:
            raise UserError(f"the MLflow tracking server at {uri} answers {response.status_code} to /health; "
                            "check its logs, or unset MLFLOW_TRACKING_URI")


def check_stores(settings: Settings, *, prediction_log: bool = True, timeout_s: float = 3.0) -> None:
    """The pre-flight of an interactive command (``refresh``, ``serve``, ``status``): the state directory, the
    tracking store and (unless not used) the prediction log, each checked within ``timeout_s`` before anything
    slow starts, so a broken or unreachable store is one line naming it and the fix (exit 2), not minutes of
    retries or a traceback."""
    settings.state_dir  # noqa: B018 - the property checks (and creates) the directory
    check_tracking_store(settings.tracking_uri, timeout_s)
    if prediction_log:
        check_prediction_log(settings.prediction_log_url, timeout_s)


def check_prediction_log(url: str, timeout_s: float = 3.0, *, schema: bool = True) -> None:
    """:func:`monitoring.prediction_log.check_log_store` with its failure as a :class:`UserError`."""
    from monitoring.prediction_log import check_log_store

    try:
        check_log_store(url, timeout_s, schema=schema)
    except ValueError as exc:
        raise UserError(str(exc)) from None

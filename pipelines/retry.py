"""Which failures a task retry can cure: transient I/O only.

A stage that fails deterministically (data that does not validate, a subsample that leaves a class too small, a
user mistake) fails the same way on every attempt; retrying it only adds minutes and tracebacks. Prefect calls
:func:`retry_transient` (``retry_condition_fn``) after each failed attempt of a task that has ``retries``.
"""

from __future__ import annotations

from typing import Any


def transient(exc: BaseException | None) -> bool:
    """True for a failure another attempt may not repeat: a data source that did not answer, a dropped or busy
    database connection, a network error, a tracking server's 5xx — anywhere in the exception's cause chain. A
    :class:`~pipelines.errors.UserError` is deterministic unless it says the source was unavailable."""
    from pipelines.errors import UserError
    from pipelines.sql_source import SourceUnavailable

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, SourceUnavailable):
            return True
        if isinstance(exc, UserError):
            return False
        if isinstance(exc, OSError) or _operational(exc) or _server_error(exc):  # OSError: also requests', httpx'
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _operational(exc: BaseException) -> bool:
    """A busy SQLite file or a dropped database connection (SQLAlchemy's words for them)."""
    import sqlalchemy.exc

    if isinstance(exc, sqlalchemy.exc.DisconnectionError):
        return True
    return isinstance(exc, sqlalchemy.exc.OperationalError) and ("locked" in str(exc).lower() or
                                                                 bool(getattr(exc, "connection_invalidated", False)))


def _server_error(exc: BaseException) -> bool:
    """A tracking server's 5xx answer (a REST error), not MLflow's own INTERNAL_ERROR code for a local mistake."""
    from mlflow.exceptions import RestException

    return isinstance(exc, RestException) and exc.get_http_status_code() >= 500


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's ``retry_condition_fn``: retry the failed attempt only when its exception is :func:`transient`."""
    error = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return transient(error if isinstance(error, BaseException) else None)

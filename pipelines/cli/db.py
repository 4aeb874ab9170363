"""``nasops db status|upgrade|prune``: the prediction-log database's schema revision (the prediction log and the
rollout record), its upgrade in place, and the log's retention. The mechanisms are :mod:`monitoring.schema` and
:mod:`monitoring.prediction_log`; this module only reports."""

from __future__ import annotations

import math
import time
from pathlib import Path

import typer

from pipelines.cli.output import make_console
from pipelines.errors import UserError
from pipelines.settings import Settings

console = make_console()

LOG_HELP = "the prediction-log database URL (default: the configured one, $NASOPS_PREDICTION_LOG_URL or the state " \
           "dir's SQLite file)"


def _say(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True)  # one line each, whatever the terminal's width


def missing_sqlite(url: str, settings: Settings) -> Path | None:
    """The SQLite file ``url`` names when it does not exist yet (None: it exists, or ``url`` is not SQLite), for a
    read-only command that must not create it. A state directory that could never hold it (a file, under /proc) is
    still the usual one-line error."""
    if not url.startswith("sqlite:///"):
        return None
    path = Path(url[len("sqlite:///"):]).expanduser()
    if path.exists():
        return None
    home = settings.home_path
    if path.parent.resolve() == home and ((home.exists() and not home.is_dir()) or str(home).startswith(("/proc",
                                                                                                          "/sys"))):
        _ = settings.state_dir  # raises the one line naming NASOPS_HOME
    return path


def _engine(prediction_log_url: str | None):
    from monitoring.prediction_log import log_engine
    from pipelines.store_checks import check_prediction_log

    url = prediction_log_url or Settings().prediction_log_url
    # a malformed or dead database: one line naming the fix, before SQLAlchemy raises (its schema is our business)
    check_prediction_log(url, schema=False)
    try:
        return log_engine(url)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def status(prediction_log_url: str | None = typer.Option(None, "--prediction-log-url", help=LOG_HELP)) -> None:
    """The database's schema revision, the head this nasops needs, and the revisions an upgrade would apply."""
    from monitoring.schema import HEAD, schema_status

    settings = Settings()
    url = prediction_log_url or settings.prediction_log_url_uncreated  # a reader creates no state dir, no file
    missing = missing_sqlite(url, settings)
    if missing is not None:
        _say(f"nothing here yet: no database at {missing}; it is created at head {HEAD} when the gateway, a "
             "controller or `nasops db upgrade` opens it")
        return
    engine = _engine(url)
    try:
        state = schema_status(engine)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        engine.dispose()
    _say(f"database {engine.url.render_as_string(hide_password=True)}")
    _say(f"current  {state.describe()}")
    _say(f"head     {state.head}")
    if state.at_head:
        pending = "none: up to date"
    elif state.current is None:
        pending = "none: the schema is created at head when the gateway, a controller or `nasops db upgrade` opens it"
    elif state.pending:
        pending = f"{', '.join(state.pending)}: run `nasops db upgrade`"
    else:
        pending = "unknown: a newer release of nasops wrote this revision"
    _say(f"pending  {pending}")


def upgrade(prediction_log_url: str | None = typer.Option(None, "--prediction-log-url", help=LOG_HELP)) -> None:
    """Upgrade the database's schema to head in place, in one transaction (idempotent)."""
    from monitoring import schema

    engine = _engine(prediction_log_url)
    try:
        before, notes = schema.upgrade(engine)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        engine.dispose()
    for note in notes:
        _say(note)
    if before.at_head:
        _say(f"already at head {schema.HEAD}: nothing to do")
    elif before.current is None:
        _say(f"new database: created at head {schema.HEAD}")
    else:
        _say(f"upgraded {before.describe()} -> {schema.HEAD}")


def _days(text: str, option: str) -> float:
    """A positive, finite number of days, or the one-line refusal naming ``option``."""
    try:
        days = float(text)
    except ValueError:
        days = float("nan")
    if not math.isfinite(days) or days <= 0:
        raise UserError(f"{option} must be a positive number of days (e.g. 30 or 0.5), got {text!r}")
    return days


def prune(
    days: str = typer.Option(..., "--days", help="delete logged rows older than this many days"),
    inputs_days: str | None = typer.Option(None, "--inputs-days", help="also erase the raw inputs of rows older "
                                           "than this many days (labels and predictions stay): sooner than --days"),
    prediction_log_url: str | None = typer.Option(None, "--prediction-log-url", help=LOG_HELP),
) -> None:
    """Apply the log's retention: delete rows older than --days, erase raw inputs older than --inputs-days, in
    batches of 10,000 rows (short transactions beside the gateways' writes). Run it daily (cron, a CronJob)."""
    from monitoring.core.urls import redact_url
    from monitoring.prediction_log import delete_old_rows, erase_old_inputs
    from monitoring.schema import check_schema, schema_status

    rows_days = _days(days, "--days")
    input_days = None if inputs_days is None else _days(inputs_days, "--inputs-days")
    settings = Settings()
    url = prediction_log_url or settings.prediction_log_url_uncreated  # pruning creates no database
    missing = missing_sqlite(url, settings)
    if missing is not None:
        raise UserError(f"no prediction log at {missing}: nothing to prune; check --prediction-log-url / NASOPS_HOME")
    engine = _engine(url)
    now = time.time()
    try:
        check_schema(engine)
        if schema_status(engine).current is None:
            raise UserError(f"{redact_url(url)} holds no prediction log: nothing to prune; check "
                            "--prediction-log-url / NASOPS_HOME")
        deleted = delete_old_rows(engine, now - rows_days * 86400.0)
        erased = None if input_days is None else erase_old_inputs(engine, now - input_days * 86400.0)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        engine.dispose()
    _say(f"deleted {deleted} row(s) logged more than {rows_days:g} day(s) ago")
    if erased is not None:
        _say(f"erased the inputs of {erased} row(s) logged more than {input_days:g} day(s) ago")


def register(app: typer.Typer) -> None:
    db_app = typer.Typer(name="db", no_args_is_help=True, help="The prediction-log database (the prediction "
                         "log and the rollout record): schema status, upgrade, and retention (prune).")
    db_app.command("status")(status)
    db_app.command("upgrade")(upgrade)
    db_app.command("prune")(prune)
    app.add_typer(db_app)

"""``nasops refresh`` refuses, in one line and before Prefect starts, what the flow would only fail on later: a
``--max-rows`` subsample that leaves a class too small to split, and a ``--resume`` that names other options than
the refresh it continues was started with. A deterministic failure inside the flow is never retried."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support_cli import console_main


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The real console-script entry point, in-process: (exit code, stdout, stderr)."""
    return console_main(monkeypatch, capsys, *args)


def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture
def rare_class_csv(tmp_path) -> Path:
    """Two common classes and one with 12 rows: valid as a whole (10 per class), not as a 100-row subsample."""
    rng = np.random.default_rng(0)
    y = np.array(["a"] * 200 + ["b"] * 200 + ["c"] * 12)
    frame = pd.DataFrame(rng.normal(size=(len(y), 3)), columns=["f1", "f2", "f3"])
    frame["label"] = y
    path = tmp_path / "rare.csv"
    frame.to_csv(path, index=False)
    return path


def test_max_rows_leaving_a_class_too_small_is_refused_before_prefect(nasops_home, rare_class_csv, monkeypatch,
                                                                      capsys):
    t0 = time.monotonic()
    code, out, err = run(monkeypatch, capsys, "refresh", "--data", str(rare_class_csv), "--target", "label",
                         "--max-rows", "100", "--skip-canary", "--skip-tournament")
    elapsed = time.monotonic() - t0
    _one_line_error(code, err, "--max-rows 100", "too few rows per class", "'c': 3")
    assert out == ""
    assert not (nasops_home / "refreshes").exists()  # the flow never started: it opens the refresh record first
    assert elapsed < 30, elapsed  # was 218 s: two retries of a deterministic error inside the flow


def test_plan_rows_is_what_prepare_runs(rare_class_csv, tmp_path):
    """The pre-flight's planning and the stage's are one function: the same subsample, the same split."""
    from pipelines.data import DataSpec, load_table, plan_rows, prepare
    from pipelines.errors import UserError

    spec = DataSpec(source=str(rare_class_csv), target="label", max_rows=380, seed=1)
    x, y, _ = load_table(spec)
    rows = plan_rows(spec, x, y)
    prepared = prepare(spec, tmp_path)
    assert prepared.rows == {k: len(v) for k, v in rows.parts.items()} and sum(prepared.rows.values()) == 380
    with pytest.raises(UserError, match="--max-rows 100"):
        prepare(spec.model_copy(update={"max_rows": 100}), tmp_path)


def test_deterministic_failures_are_not_retried():
    from prefect.states import Failed

    from pipelines.data import DataValidationError
    from pipelines.errors import UserError
    from pipelines.refresh import champion_facts, prepare_data
    from pipelines.retry import retry_transient, transient
    from pipelines.sql_source import SourceUnavailable

    assert prepare_data.retry_condition_fn is retry_transient and champion_facts.retry_condition_fn is retry_transient
    from pipelines.refresh import _cached

    assert _cached(prepare_data, Path("results")).retry_condition_fn is retry_transient  # what the flow runs
    assert not retry_transient(None, None, Failed(data=DataValidationError("--max-rows 100: too few rows")))
    assert not retry_transient(None, None, Failed(data=ValueError("a bug fails the same way every time")))
    assert retry_transient(None, None, Failed(data=SourceUnavailable("the database does not answer")))
    assert transient(ConnectionRefusedError()) and not transient(UserError("bad --query"))
    import sqlalchemy.exc

    locked = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("database is locked"))
    wrapped = RuntimeError("registry read failed")
    wrapped.__cause__ = locked
    assert transient(wrapped)
    assert not transient(sqlalchemy.exc.OperationalError("SELECT", {}, Exception("no such table: t")))


def test_a_failed_source_is_retried_and_a_bad_table_is_not(tmp_path):
    """A SQLite file that does not exist is a user mistake; a server that does not answer may come back."""
    from pipelines.errors import UserError
    from pipelines.retry import transient
    from pipelines.sql_source import read_query

    with pytest.raises(UserError) as missing:
        read_query(f"sqlite:///{tmp_path / 'none.db'}", "SELECT 1")
    assert not transient(missing.value)
    import sqlite3

    db = tmp_path / "t.db"
    sqlite3.connect(db).close()
    with pytest.raises(UserError) as no_table:
        read_query(f"sqlite:///{db}", "SELECT * FROM nope")
    assert not transient(no_table.value)
    with pytest.raises(UserError) as refused:
        read_query("postgresql://u@127.0.0.1:9/db", "SELECT 1", timeout_s=2)
    assert transient(refused.value), refused.value


# -- --resume ------------------------------------------------------------------------------------------------
@pytest.fixture
def unfinished(nasops_home, rare_class_csv):
    """An unfinished refresh of model ``first`` on the rare-class CSV (its record, as the flow leaves it)."""
    from pipelines import refresh_state
    from pipelines.cli.refresh import build_config

    config = build_config(data=str(rare_class_csv), target="label", model_name="first", skip_canary=True,
                          skip_tournament=True)
    record = refresh_state.RefreshRecord(refresh_state.new_refresh_id(), config=config.model_dump(mode="json"),
                                         status=refresh_state.FAILED)
    refresh_state.save(nasops_home, record)
    return record


def test_resume_with_another_model_name_is_refused(unfinished, monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, "refresh", "--resume", "--model-name", "other")
    _one_line_error(code, err, "--model-name", "'other'", "'first'", unfinished.refresh_id, "without --resume")


def test_resume_with_other_data_is_refused(unfinished, monkeypatch, capsys, tmp_path):
    code, _, err = run(monkeypatch, capsys, "refresh", "--refresh-id", unfinished.refresh_id, "--data",
                       str(tmp_path / "other.csv"), "--target", "label")
    _one_line_error(code, err, "--data", "other.csv", "rare.csv", "without --resume")


def test_resume_config_file_that_changes_a_value_is_refused(unfinished, monkeypatch, capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("search:\n  budget: 3\n")
    code, _, err = run(monkeypatch, capsys, "refresh", "--resume", "--config", str(path))
    _one_line_error(code, err, f"--config {path}", "search.budget")


def test_the_resume_plan_names_what_is_read_back_and_where_the_search_continues(unfinished, nasops_home):
    """Issue 24: a resume said nothing of what it would skip. It names the stages read back from the refresh's
    store and the trials its search journal already holds (a torn last line is not a trial)."""
    from pipelines import refresh_state

    unfinished.stages_done = ["prepare_data"]
    refresh_state.save(nasops_home, unfinished)
    journal = unfinished.directory(nasops_home) / unfinished.journal_name
    journal.write_text('{"type": "header"}\n' + '{"type": "result", "index": 0}\n' * 3 + '{"type": "res')
    record = refresh_state.load(nasops_home, unfinished.refresh_id)
    budget = record.config["search"]["budget"]
    assert refresh_state.resume_plan(nasops_home, record) == (
        f"resuming refresh {record.refresh_id} (attempt 2): read back: prepare_data; search: continues from 3 of "
        f"{budget} trials; the stages after run again")
    record.stages_done = [*refresh_state.CACHED_STAGES[:1], refresh_state.SEARCH_STAGE]
    assert "search: 3 trials in its journal, not run again" in refresh_state.resume_plan(nasops_home, record)


def test_resume_runs_the_recorded_configuration(unfinished, nasops_home, monkeypatch):
    """The flow's own entry: the recorded model name, whatever the environment says now; a caller's different
    configuration is refused, not half-applied."""
    from pipelines.config import RefreshConfig
    from pipelines.errors import UserError
    from pipelines.refresh import _open_record
    from pipelines.settings import Settings
    from pipelines.tracking import Tracking

    monkeypatch.setenv("NASOPS_MODEL_NAME", "from-env")
    settings = Settings()
    tracking = Tracking.open(settings)
    with pytest.raises(UserError, match="model_name='first', not 'other'"):
        _open_record(settings, tracking, RefreshConfig.model_validate({**unfinished.config, "model_name": "other"}),
                     unfinished.refresh_id)
    record, config = _open_record(settings, tracking, None, unfinished.refresh_id)
    assert config.model_name == "first" and record.config["model_name"] == "first" and record.attempts == 2


def test_a_config_file_holds_the_data_source_and_an_explicit_flag_overrides_it(nasops_home, rare_class_csv, tmp_path,
                                                                                monkeypatch, capsys):
    """Issue 24: the CLI's default `digits` always won over a config file's `data:` ("flags win" treated a default as
    a flag), so neither `refresh --config` nor `schedule --config` could hold a whole job."""
    import json

    job = tmp_path / "job.yaml"
    job.write_text(f"data: {rare_class_csv}\ntarget: label\n")
    code, out, err = run(monkeypatch, capsys, "schedule", "--cron", "0 3 * * 0", "--config", str(job), "--check")
    assert code == 0, err
    config = json.loads(out)["parameters"]["config"]
    assert (config["data"], config["target"]) == (str(rare_class_csv), "label")
    code, _, err = run(monkeypatch, capsys, "schedule", "--cron", "0 3 * * 0", "--config", str(job), "--check",
                       "--data", "digits")
    _one_line_error(code, err, "--target", "digits")  # the flag wins over the file

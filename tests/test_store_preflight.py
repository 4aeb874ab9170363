"""The pre-flight of the interactive commands: a state directory, tracking store or prediction log that is broken
or does not answer is one line naming it and the fix, exit 2, in seconds (issue: ``serve`` with a dead tracking
server or an ``mlflow.db`` that is a directory printed nothing for > 100 s of MLflow's retries; ``refresh`` started
its flow and hung; a malformed or unreachable prediction log URL was a traceback)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support_cli import CliResult, nasops

# The defect was > 100 s; the commands run in-process here (their imports are paid once per worker), so the bound
# covers the pre-flight itself with room for a busy 2-core machine. The probes are bounded tighter below.
CLI_BOUND_S = 30.0
PROBE_BOUND_S = 5.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens here once the socket closes


@contextlib.contextmanager
def _silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers a byte: the hung server a timeout must cover."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def _cli(args: list[str], home: Path, **env_updates: str) -> tuple[CliResult, float]:
    """The command in-process (``support_cli``: the console script's own exit-code mapping) and its seconds."""
    proc = nasops(*args, home=home, env=env_updates)
    return proc, proc.seconds


def _one_line(result: tuple[CliResult, float], *needles: str) -> None:
    proc, elapsed = result
    assert proc.returncode == 2, proc.stderr[-3000:] + proc.stdout[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    assert elapsed < CLI_BOUND_S, f"{elapsed:.1f}s to the error line"


def _timed_error(fn, *args) -> tuple[str, float]:
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        fn(*args)
    return str(info.value), time.monotonic() - started


# --- the probes, in process -------------------------------------------------------------------------------------


def test_log_store_checks_name_what_is_wrong(tmp_path):
    from monitoring.prediction_log import check_log_store

    check_log_store(f"sqlite:///{tmp_path / 'new.db'}")  # a new file in a writable directory is fine
    check_log_store("sqlite://")  # in memory
    assert not list(tmp_path.iterdir())  # the probe left nothing behind
    cases = {
        "notaurl": "is not a database URL",
        f"sqlite:///{tmp_path / 'missing' / 'p.db'}": "does not exist",
        "sqlite:////sys/nasops-p.db": "is not writable",
        f"sqlite:///{tmp_path}": "is a directory, not a SQLite database",
    }
    (tmp_path / "junk.db").write_bytes(b"junk" * 50)
    cases[f"sqlite:///{tmp_path / 'junk.db'}"] = "not a SQLite database (corrupt?)"
    for url, needle in cases.items():
        message, elapsed = _timed_error(check_log_store, url)
        assert needle in message and "NASOPS_PREDICTION_LOG_URL" in message, (url, message)
        assert "\n" not in message and elapsed < PROBE_BOUND_S


def test_log_store_on_a_dead_or_silent_database_server_fails_within_the_timeout():
    from monitoring.prediction_log import check_log_store

    message, elapsed = _timed_error(check_log_store, f"postgresql://nasops:secret@127.0.0.1:{_free_port()}/db", 2.0)
    assert "cannot connect to the prediction log" in message and "secret" not in message, message
    assert elapsed < PROBE_BOUND_S, elapsed
    with _silent_server() as port:
        message, elapsed = _timed_error(check_log_store, f"postgresql://nasops@127.0.0.1:{port}/db", 2.0)
    assert "prediction log" in message and elapsed < PROBE_BOUND_S, (message, elapsed)


def test_tracking_store_checks(tmp_path):
    from pipelines.errors import UserError
    from pipelines.store_checks import check_tracking_store

    check_tracking_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    cases = {
        "localhost:5000": "is not a URI MLflow can use",
        "sqlite://mlflow.db": "names no SQLite file",
        f"sqlite:///{tmp_path / 'no' / 'mlflow.db'}": "does not exist",
        "sqlite:////sys/nasops-mlflow.db": "is not writable",
        f"http://127.0.0.1:{_free_port()}": "cannot reach the MLflow tracking store",
        f"postgresql://u@127.0.0.1:{_free_port()}/mlflow": "cannot connect to the MLflow tracking store",
    }
    for uri, needle in cases.items():
        message, elapsed = _timed_error(check_tracking_store, uri)
        assert needle in message, (uri, message)
        assert elapsed < PROBE_BOUND_S, (uri, elapsed)
    with _silent_server() as port:  # accepts, never answers: the /health probe's timeout, not MLflow's retries
        started = time.monotonic()
        with pytest.raises(UserError, match="does not answer /health within 2s"):
            check_tracking_store(f"http://127.0.0.1:{port}", 2.0)
        assert time.monotonic() - started < PROBE_BOUND_S


# --- the commands, as a user runs them ----------------------------------------------------------------------------


def test_serve_with_a_dead_tracking_server(tmp_path):
    _one_line(_cli(["serve", "--port", str(_free_port())], tmp_path,
                   MLFLOW_TRACKING_URI=f"http://127.0.0.1:{_free_port()}"), "cannot reach the MLflow tracking store")


def test_serve_with_an_mlflow_db_that_is_a_directory(tmp_path):
    (tmp_path / "mlflow.db").mkdir()
    _one_line(_cli(["serve", "--port", str(_free_port())], tmp_path), "is a directory, not a SQLite database")


def test_serve_with_nasops_home_that_is_a_file(tmp_path):
    home = tmp_path / "home"
    home.write_text("not a directory")
    _one_line(_cli(["serve", "--port", str(_free_port())], home), "NASOPS_HOME")


@pytest.mark.slow  # among the heaviest of the fast layer (`make test-fast` stays under 90 s)
def test_serve_with_a_bad_prediction_log(tmp_path):
    _one_line(_cli(["serve", "--port", str(_free_port())], tmp_path, NASOPS_PREDICTION_LOG_URL="notaurl"),
              "is not a database URL", "NASOPS_PREDICTION_LOG_URL")
    with _silent_server() as port:
        _one_line(_cli(["serve", "--port", str(_free_port())], tmp_path,
                       NASOPS_PREDICTION_LOG_URL=f"postgresql://nasops@127.0.0.1:{port}/db"), "prediction log")


def test_refresh_with_a_dead_tracking_server_stops_before_its_flow(tmp_path):
    result = _cli(["refresh", "--max-rows", "200", "--budget", "1", "--skip-tournament"], tmp_path / "h",
                  MLFLOW_TRACKING_URI=f"http://127.0.0.1:{_free_port()}")
    _one_line(result, "cannot reach the MLflow tracking store")
    assert "nasops refresh" not in result[0].stderr  # no flow was started


def test_refresh_with_an_unwritable_prediction_log(tmp_path):
    _one_line(_cli(["refresh", "--max-rows", "200", "--budget", "1"], tmp_path / "h",
                   NASOPS_PREDICTION_LOG_URL="sqlite:////sys/nasops-predictions.db"),
              "is not writable", "NASOPS_PREDICTION_LOG_URL")


def test_status_with_a_malformed_tracking_uri(tmp_path):
    _one_line(_cli(["status"], tmp_path, MLFLOW_TRACKING_URI="localhost:5000"), "is not a URI MLflow can use")


def test_status_with_a_malformed_prediction_log_url(tmp_path):
    _one_line(_cli(["status"], tmp_path, NASOPS_PREDICTION_LOG_URL="notaurl"), "is not a database URL")

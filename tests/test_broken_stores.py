"""A store that is down or broken is one clear line and exit 2, fast (issue: tracebacks, and > 100 s of MLflow's
own retries before anything was printed)."""

from __future__ import annotations

import socket

from support_cli import CliResult, nasops


def _status(env_updates: dict[str, str]) -> CliResult:
    """``nasops status`` in-process (``support_cli``: the console script's own exit-code mapping)."""
    return nasops("status", env=env_updates)


def _one_line(proc: CliResult, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_nasops_home_that_is_a_file(tmp_path):
    home = tmp_path / "home"
    home.write_text("not a directory")
    _one_line(_status({"NASOPS_HOME": str(home)}), "cannot be used as the state directory", "NASOPS_HOME")


def test_nasops_home_under_proc():
    _one_line(_status({"NASOPS_HOME": "/proc/nasops"}), "NASOPS_HOME")


def test_mlflow_db_that_is_a_directory(tmp_path):
    (tmp_path / "mlflow.db").mkdir()
    _one_line(_status({"NASOPS_HOME": str(tmp_path)}), "is a directory, not a SQLite database")


def test_corrupt_mlflow_db(tmp_path):
    (tmp_path / "mlflow.db").write_bytes(b"garbage" * 100)
    _one_line(_status({"NASOPS_HOME": str(tmp_path)}), "not a SQLite database (corrupt?)")


def test_dead_tracking_server_fails_fast(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket closes
    _one_line(_status({"NASOPS_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}),
              "cannot reach the MLflow tracking store")

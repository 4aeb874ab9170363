"""``nasops drift-watch`` as a user runs it: option mistakes and an empty registry get one line, exit code 2."""

from __future__ import annotations

from test_cli_refresh import _assert_user_error, run_cli


def test_drift_watch_rejects_bad_options(tmp_path):
    proc = run_cli("drift-watch", "--threshold", "2", home=tmp_path / "h")
    _assert_user_error(proc, "--threshold", "less than or equal to 1")
    proc = run_cli("drift-watch", "--data", str(tmp_path / "missing.npz"), home=tmp_path / "h")
    _assert_user_error(proc, "no such file")


def test_drift_watch_without_a_champion_says_what_to_do(tmp_path):
    proc = run_cli("drift-watch", home=tmp_path / "h")
    _assert_user_error(proc, "has no champion", "nasops refresh")

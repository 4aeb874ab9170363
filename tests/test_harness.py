"""The server harness itself (``servers.py``): process groups are stopped whole, readiness is polled, a server
that dies while starting fails with its log, and only tests marked ``slow`` may start a server.

No server is started here: the processes are shell loops, so this module stays in ``make test-fast``.
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest
from servers import ServerProcess, wait_until

TESTS = Path(__file__).resolve().parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) is not alive
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_stop_ends_the_whole_process_group_and_removes_the_workdir(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    child_pid = workdir / "child.pid"
    # the leader forks a child that ignores SIGTERM, like a worker that hangs on shutdown
    script = f"(trap '' TERM; sleep 300) & echo $! > {child_pid}; echo started; wait"
    server = ServerProcess("group test", ["sh", "-c", script], workdir=workdir, stop_timeout=2)
    server.wait_ready(lambda: child_pid.exists() and child_pid.read_text().strip() != "", timeout=10)
    child = int(child_pid.read_text())
    assert _alive(server.pid) and _alive(child)
    assert os.getpgid(child) == server.pid  # its own group, led by the server
    server.stop()
    wait_until(lambda: not _alive(child), timeout=5, message="the child that ignored SIGTERM was killed")
    assert not _alive(server.pid)
    assert not workdir.exists()
    server.stop()  # twice is fine


def test_a_server_that_exits_while_starting_fails_at_once_with_its_log(tmp_path):
    server = ServerProcess("doomed", ["sh", "-c", "echo 'bind: address already in use' >&2; exit 3"],
                           workdir=tmp_path)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"(?s)doomed .*exited before it was ready.*address already in use"):
        server.wait_ready(lambda: False, timeout=60)
    assert time.monotonic() - started < 30  # noticed the exit, did not wait out the timeout
    server.stop()


def test_readiness_timeout_names_the_server_and_keeps_its_log(tmp_path):
    server = ServerProcess("sleepy", ["sh", "-c", "echo warming up; sleep 60"], workdir=tmp_path)
    with pytest.raises(RuntimeError, match=r"(?s)sleepy .*was not ready within 0.5 s.*warming up"):
        server.wait_ready(lambda: False, timeout=0.5)
    server.stop()
    assert not _alive(server.pid)


def test_wait_until_returns_the_value_or_names_what_never_happened():
    calls = []
    assert wait_until(lambda: calls.append(1) or (len(calls) >= 3 and "ok"), timeout=5, interval=0.01) == "ok"
    with pytest.raises(AssertionError, match=r"the gateway answering: not true within 0\.1 s"):
        wait_until(lambda: False, timeout=0.1, interval=0.01, message="the gateway answering")


def _run_inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, body: str) -> pytest.RunResult:
    """Run ``body`` as a test module in a separate pytest with the harness plugin loaded, as conftest.py does."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # only the harness: quicker, and nothing else reports
    pytester.makeconftest('pytest_plugins = ["servers"]\n')
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n")
    pytester.makepyfile(test_inner=textwrap.dedent(body))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider")


def test_a_test_not_marked_slow_may_not_start_a_server(pytester, monkeypatch):
    result = _run_inner(pytester, monkeypatch, """
        from servers import start_prometheus, start_postgres, start_mlflow, start_prefect

        def test_starts_prometheus():
            start_prometheus(["127.0.0.1:1"])

        def test_starts_postgres():
            start_postgres()

        def test_starts_mlflow():
            start_mlflow()

        def test_starts_prefect():
            start_prefect()
    """)
    result.assert_outcomes(failed=4)
    for what in ("a Prometheus server", "a PostgreSQL server", "an MLflow tracking server", "a Prefect API server"):
        result.stdout.fnmatch_lines([f"*test_inner.py::test_starts_* starts {what} but is not marked slow*"])
    result.stdout.fnmatch_lines(["*add @pytest.mark.slow*"])


def test_a_failing_test_reports_the_log_of_the_servers_it_ran(pytester, monkeypatch, tmp_path):
    workdir = tmp_path / "logged"
    workdir.mkdir()
    result = _run_inner(pytester, monkeypatch, f"""
        from pathlib import Path
        from servers import ServerProcess

        def test_fails_while_a_server_runs():
            marker = Path({str(workdir / "ready")!r})
            script = "echo hello-from-the-server-log; touch {workdir / 'ready'}; sleep 60"
            with ServerProcess("chatty", ["sh", "-c", script], workdir=Path({str(workdir)!r})) as server:
                server.wait_ready(marker.exists, timeout=10)
                assert False, "the test failed"
    """)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*chatty (pid *) log *chatty.log, last lines*", "hello-from-the-server-log"])

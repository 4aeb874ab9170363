"""``nasops`` in-process: the console script's own :func:`pipelines.cli.app.run` with its output captured.

A subprocess per CLI test cost seconds of imports each (68 of them were most of ``make test-fast``). ``run(argv)``
is what ``main()`` exits with, so a test here checks the very same mapping of user mistakes to one line and exit 2;
a few tests keep a real subprocess to prove the console script and its exit codes end to end.

::

    from support_cli import nasops

    proc = nasops("refresh", "--budget", "0", home=tmp_path / "h")
    assert proc.returncode == 2 and "search.budget" in proc.stderr

The environment is the test process's with ``env`` applied (a None value removes a variable) and ``NASOPS_HOME`` set
to ``home``; whatever the command changes in ``os.environ`` (MLflow exports its URIs there) is undone afterwards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# The variables a subprocess test dropped so that an earlier test's store cannot leak into this command.
LEAKY = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID", "NASOPS_PREDICTION_LOG_URL",
         "NASOPS_OWNER_TOKEN")


@dataclass
class CliResult:
    """What a finished command left: the names of :class:`subprocess.CompletedProcess`, plus its duration."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def nasops(*args: str, home: Path | str | None = None, env: Mapping[str, str | None] | None = None,
           keep: tuple[str, ...] = ()) -> CliResult:
    """Run ``nasops ARGS`` in this process. ``LEAKY`` variables are removed unless named in ``keep`` or ``env``."""
    from typer.testing import CliRunner

    from pipelines.cli.app import run

    overrides: dict[str, str | None] = {key: None for key in LEAKY if key not in keep}
    if home is not None:
        overrides["NASOPS_HOME"] = str(home)
    overrides.update(env or {})
    saved, uris = dict(os.environ), _mlflow_uris()
    started = time.monotonic()
    try:
        with CliRunner().isolation(env=overrides) as (out, err, _):
            try:
                code = run(list(args))
            except SystemExit as exc:  # a command that exits on its own (none should; the code still counts)
                code = exc.code if isinstance(exc.code, int) else 1
            stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        _mlflow_uris(uris)
    return CliResult(list(args), code, stdout, stderr, time.monotonic() - started)


def _mlflow_uris(restore: tuple | None = None) -> tuple:
    """MLflow's process-wide tracking and registry URIs (``set_tracking_uri`` keeps one in a module global, not
    only in ``os.environ``): read them, or put back what an earlier call read."""
    import sys

    modules = [sys.modules.get("mlflow.tracking._tracking_service.utils"),
               sys.modules.get("mlflow.tracking._model_registry.utils")]
    names = ("_tracking_uri", "_registry_uri")
    if restore is None:
        return tuple(getattr(m, n, None) if m else None for m, n in zip(modules, names, strict=True))
    for module, name, value in zip(modules, names, restore, strict=True):
        if module is not None:
            setattr(module, name, value)
    return restore


def console_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The console script's ``main()`` itself, in-process (process set-up included): (exit code, stdout, stderr).
    :func:`nasops` is the cheaper default; this is for tests of what ``main`` adds around ``run``."""
    import sys

    from pipelines.cli.app import main

    monkeypatch.setattr(sys, "argv", ["nasops", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err

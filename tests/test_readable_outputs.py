"""Issue 24, "a registry and reports a person reads": what `canary status`, the canary report and the refresh
summary say after the facts changed (a decision taken, a metric whose lower value is better, data that changed)."""

from __future__ import annotations

import re
import time

import pytest

from monitoring.core.enums import Decision, Phase
from monitoring.rollout_store import RolloutStore


def _canary_cli(args, url):
    import typer
    from typer.testing import CliRunner

    from pipelines.cli import rollout

    app = typer.Typer()
    rollout.register(app)
    return CliRunner().invoke(app, [*args, "--model-name", "m", "--prediction-log-url", url], terminal_width=200)


@pytest.mark.slow  # ~0.5 s: the CLI's imports and a SQLite store
def test_canary_status_after_a_decision_stops_counting_time_in_step(tmp_path, nasops_home):
    """A rollout decided 50 min ago, 10 min into step 1: status said '3600 s in step 1' and kept counting."""
    store = RolloutStore(f"sqlite:///{tmp_path / 'predictions.db'}")
    started = time.time() - 3600
    rollout = store.create(model_name="m", champion_version="1", challenger_version="2", mode="split", weight=0.1,
                           config={"steps": [0.1, 1.0]}, now=started)
    store.update(rollout, {"phase": Phase.ROLLED_BACK, "decision": Decision.ROLLED_BACK, "decided_by": "operator",
                           "reason": "aborted by the operator", "weight": 0.0}, kind="abort", actor="operator",
                 now=started + 600)
    decided = store.get(rollout.rollout_id)
    store.update(decided, {"applied": True}, kind="applied", actor="controller")  # the registry caught up, later
    shown = _canary_cli(["status"], str(store.engine.url))
    assert shown.exit_code == 0, shown.output
    line = next(x for x in shown.output.splitlines() if "step 1" in x)
    assert "decided at" in line and "600 s in step 1" in line and "3600" not in line, line
    stamp = re.search(r"decided at (\S+)", line).group(1)
    from datetime import datetime

    assert abs(datetime.fromisoformat(stamp).timestamp() - (started + 600)) < 2, stamp

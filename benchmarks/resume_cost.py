"""What a resumed refresh costs: a refresh interrupted (Ctrl-C) half-way through its search, then ``--resume``d,
against the same refresh run straight through, side by side on this machine (issue 24: "a resumed search stage
costs only the evaluations it had not done (measure it)").

Each refresh runs ``nasops refresh`` in its own process group, exactly as a user's terminal would; the interrupt is
SIGINT to the group once the search journal holds ``--stop-after`` trials. Printed per run: the search stage's wall
time, its pre-filter time, and how many trials were evaluated in that process (journal lines it added) against how
many the search counts in all (replayed ones included)::

    python benchmarks/resume_cost.py                       # digits, budget 8, stop after 4 trials
    python benchmarks/resume_cost.py --budget 12 --stop-after 6 --json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and benchmarks/serving.py would shadow the `serving` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

NASOPS = [sys.executable, "-m", "pipelines.cli.app"]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "NASOPS_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow.db",
            "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def _args(budget: int, epochs: int) -> list[str]:
    return ["refresh", "--max-rows", "1000", "--pool-size", "200", "--budget", str(budget), "--epochs", str(epochs),
            "--top-k", "1", "--skip-tournament", "--skip-canary", "--json"]


def _journal(home: Path) -> Path | None:
    found = sorted((home / "refreshes").glob("*/search.jsonl")) if (home / "refreshes").is_dir() else []
    return found[-1] if found else None


def _trials(journal: Path | None) -> int:
    """Finished trials in a search journal."""
    from pipelines.refresh_state import journal_trials

    return 0 if journal is None else journal_trials(journal)


def _run(home: Path, args: list[str], stop_after: int | None = None) -> tuple[int, dict | None, float]:
    """``(exit code, the --json result or None, wall seconds)``; with ``stop_after`` a Ctrl-C once the journal
    holds that many trials."""
    started = time.monotonic()
    proc = subprocess.Popen([*NASOPS, *args], env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    try:
        if stop_after is not None:
            while proc.poll() is None and _trials(_journal(home)) < stop_after:
                time.sleep(0.2)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=3600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    result = json.loads(out) if proc.returncode == 0 and out.strip() else None
    return proc.returncode, result, time.monotonic() - started


def _search(result: dict) -> dict[str, float]:
    search = result["search"]
    return {"search_s": round(search["seconds"], 1), "prefilter_s": round(search["prefilter_seconds"], 1),
            "trials_counted": search["evaluations"]}


def measure(budget: int, epochs: int, stop_after: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="nasops-resume-") as tmp:
        straight, resumed = Path(tmp) / "straight", Path(tmp) / "resumed"
        rc, full, full_s = _run(straight, _args(budget, epochs))
        if full is None:
            raise SystemExit(f"the straight refresh failed (exit {rc})")
        rc, _, first_s = _run(resumed, _args(budget, epochs), stop_after=stop_after)
        done_before = _trials(_journal(resumed))
        rc, again, again_s = _run(resumed, ["refresh", "--resume", "--json"])
        if again is None:
            raise SystemExit(f"the resumed refresh failed (exit {rc})")
        done_after = _trials(_journal(resumed))
    return {
        "budget": budget, "epochs": epochs, "interrupted_after_trials": done_before,
        "straight": {**_search(full), "trials_evaluated": _trials_total(full), "wall_s": round(full_s, 1)},
        "interrupted": {"wall_s": round(first_s, 1), "trials_evaluated": done_before},
        "resumed": {**_search(again), "trials_evaluated": done_after - done_before, "wall_s": round(again_s, 1)},
    }


def _trials_total(result: dict) -> int:
    return int(result["search"]["evaluations"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=8, help="search trials in all")
    parser.add_argument("--epochs", type=int, default=2, help="low-fidelity epochs per trial")
    parser.add_argument("--stop-after", type=int, default=4, help="Ctrl-C once the journal holds this many trials")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.stop_after < args.budget:
        parser.error("--stop-after must be between 1 and --budget - 1")
    out = measure(args.budget, args.epochs, args.stop_after)
    out["load_average"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(out))
        return
    print(f"budget {out['budget']} trials, {out['epochs']} epochs each; interrupted after "
          f"{out['interrupted_after_trials']} trials; load average {out['load_average']:.1f}")
    print(f"{'run':<12}{'search s':>10}{'prefilter s':>13}{'evaluated here':>16}{'wall s':>9}")
    for name in ("straight", "interrupted", "resumed"):
        row = out[name]
        print(f"{name:<12}{row.get('search_s', float('nan')):>10}{row.get('prefilter_s', float('nan')):>13}"
              f"{row['trials_evaluated']:>16}{row['wall_s']:>9}")


if __name__ == "__main__":
    main()

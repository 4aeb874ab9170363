"""Decision quality on the real path: how often the real gateway + traffic process + rollout controller decide right.

Many complete rollouts per scenario, each through a real gateway (2 uvicorn workers in its own process), the
separate traffic process (``pipelines/traffic.py``) whose labels reach ``/feedback`` late, and the rollout
controller (``pipelines.control.controller.reconcile``, driven as the embedded canary drives it), optionally with a
CPU load generator beside them (one numpy spinner per core, :mod:`benchmarks.cpu_load`). To afford many rollouts,
ONE registry and ONE gateway live through the whole run: per rollout the challenger's version is pointed at by
``@challenger`` (``@champion`` put back on the original champion), the gateway reloads and warms up, a rollout is
started, reconciled to its decision, and ends. Intervals are compressed (2 s, 80 requests/s, labels 0.5 s late by
default); everything else is the packaged rollout and judge unless ``--canary`` overrides it.

Scenarios (the challenger; the champion is the linear digits classifier of ``benchmarks/canary_faults.py``):
``aa`` the champion's weights registered again, ``better`` the larger, longer-trained MLP, ``worse`` a barely
trained linear model, ``slow`` the champion sleeping ``--slow-ms`` per call, ``errors_2pct`` the champion raising
on every 50th call. Rounds interleave scenarios and load conditions, so a run stopped early is still balanced;
every rollout is a JSON line in ``--out`` and ``--summarize FILE`` prints the table of such a file.

    .venv/bin/python benchmarks/canary_real.py --json --runs 30 --out rollouts.jsonl
    .venv/bin/python benchmarks/canary_real.py --runs 5 --scenarios aa,slow --no-load
    .venv/bin/python benchmarks/canary_real.py --summarize rollouts.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# As in canary_faults: this folder would shadow the packages; the root and tests/ (the fault wrappers) go first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from benchmarks.canary_faults import build_models, digits_registry, offline_accuracy  # noqa: E402
from benchmarks.decision_stats import summarize, table  # noqa: E402

# scenario -> (what the challenger is, the right decision)
SCENARIOS = {
    "aa": ("the champion's weights registered again as the challenger", "not_worse"),
    "better": ("an MLP (64-32-10, 60 Adam steps) against the linear champion (40 steps)", "promoted"),
    "worse": ("a linear model trained 3 steps", "rolled_back"),
    "slow": ("the champion sleeping --slow-ms per call", "rolled_back"),
    "errors_2pct": ("the champion raising on every 50th call (gateway falls back to the champion)", "rolled_back"),
}
COMPRESSED = {"interval_s": 2.0, "rate": 80.0, "label_delay_s": 0.5, "label_wait_s": 1.0, "max_intervals": 14,
              "gateway_workers": 2, "drift_each_interval": False}


def challengers(champion, slow_ms: float) -> dict:
    """The challenger module of every scenario (``champion``: the registered champion, loaded back)."""
    import copy

    import support_models as sm

    x_tr, y_tr, _, _ = sm.digits_data()
    trained = build_models(x_tr, y_tr)
    return {"aa": copy.deepcopy(champion), "better": trained["healthy_better"], "worse": trained["lower_accuracy"],
            "slow": sm.SlowModel(copy.deepcopy(champion), delay_s=slow_ms / 1000.0),
            "errors_2pct": sm.FlakyModel(copy.deepcopy(champion), period=50)}


def sync_gateway(session, champion: str, challenger: str, timeout_s: float = 60.0) -> None:
    """Ask every worker to reload the aliases and wait until two distinct workers (fresh connections reach both)
    serve ``champion`` and ``challenger``: a rollout must not start while the last challenger still answers."""
    import httpx

    session.admin.http.post("/admin/reload").raise_for_status()
    headers = {**session.admin.http.headers, "Connection": "close"}
    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < 2:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway workers did not load v{champion}/v{challenger} in {timeout_s:.0f}s")
        state = httpx.get(f"{session.url}/admin/state", headers=headers, timeout=10).json()
        models = state.get("models") or {}
        served = tuple((models.get(k) or {}).get("version") for k in ("champion", "challenger"))
        if served == (champion, challenger):
            seen.add(int(state["pid"]))
        else:
            time.sleep(0.1)


def kind_of(rollout) -> str:
    """``promoted``, ``rolled_back_worse`` (a metric judged worse: errors, latency, accuracy lower) or
    ``kept_not_better`` (rolled back without anything proven worse: the gain not proven, or the budget spent)."""
    if rollout.decision == "promoted":
        return "promoted"
    if (rollout.reason or "").startswith("no passing decision"):
        return "kept_not_better"
    rows = [m for m in (rollout.last_verdict or {}).get("metrics") or [] if m.get("failed")]
    if rows and all(m.get("outcome") == "not_superior" for m in rows):
        return "kept_not_better"
    return "rolled_back_worse"


def reference(data, cfg, full_evidence: bool):
    """The drift reference stored with every rollout: the training class mix the judge's ``prediction_drift`` needs;
    without ``full_evidence`` no input rows, so the end-of-rollout Evidently report (8-18 s a rollout here, after
    the decision is made and never part of it) is skipped."""
    from pipelines.canary.reference import drift_reference

    ref = drift_reference(data, cfg.reference_rows, cfg.seed)
    return ref if full_evidence else ref.model_copy(update={"rows": []})


def end_stale_manual_split(session, store, model_name: str) -> bool:
    """End a manual split the warm-up left active. The warm-up steers through ``/admin/mode`` (shadow, then back);
    a worker that had not yet polled the last rollout's end steers from that rollout's split (e.g. split at 5%),
    and the mode put back leaves a manual split at 5% that refuses the next rollout (seen once in 144 rollouts).
    Returns whether there was one."""
    stale = False
    for _ in range(5):
        active = store.active(model_name)
        if active is None or not active.manual:
            return stale
        stale = True
        session.admin.set_weight(0.0)
        time.sleep(0.2)
    raise RuntimeError(f"a manual split of {model_name!r} stays active after /admin/weight 0")


def one_rollout(ctx: dict, scenario: str, version: str, cfg, loaded: bool) -> dict:
    """Point the aliases, sync and warm the gateway, start a rollout, reconcile it to its decision."""
    from monitoring.decision_reason import rollout_sentence
    from pipelines.canary.flow import drive, wait_followed
    from pipelines.control.controller import start_rollout

    reg, client, session, store = ctx["reg"], ctx["client"], ctx["session"], ctx["store"]
    client.set_registered_model_alias(reg.model_name, "champion", reg.champion_version)
    client.set_registered_model_alias(reg.model_name, "challenger", version)
    sync_gateway(session, reg.champion_version, version)
    session.warm_up(ctx["x_prod"], cfg.warmup_requests, rate=cfg.rate, seed=cfg.seed)
    stale = end_stale_manual_split(session, store, reg.model_name)
    load_before = os.getloadavg()[0]
    started = time.time()
    rollout = start_rollout(store, reg.model_name, cfg, gateway_url=session.url, data_path=ctx["data_path"],
                            client=client, reference=ctx["reference"])
    wait_followed(session, rollout)
    drive(store, rollout.rollout_id, cfg, client=client)
    final = store.get(rollout.rollout_id)
    last = final.history[-1] if final.history else {}
    return {"scenario": scenario, "load": loaded, "version": version, "rollout_id": final.rollout_id,
            "decision": final.decision, "kind": kind_of(final), "intervals": final.intervals,
            "highest_weight": max((s["weight"] for s in final.history if s["mode"] == "split"), default=0.0),
            "failed_metrics": last.get("failed_metrics", []), "reason": final.reason, "why": rollout_sentence(final),
            "stale_manual_split": stale,
            "seconds": round(time.time() - started, 1), "loadavg_1m": round((load_before + os.getloadavg()[0]) / 2, 2)}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="rollouts per scenario and load condition")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--load", dest="load", action="store_const", const="on", help="only under the CPU load")
    load.add_argument("--no-load", dest="load", action="store_const", const="off", help="only without it")
    parser.add_argument("--slow-ms", type=float, default=20.0, help="added per call in the slow scenario")
    parser.add_argument("--canary", default="{}", help="JSON overrides of the compressed canary config")
    parser.add_argument("--full-evidence", action="store_true", help="store input rows with each rollout, so its "
                        "end writes the Evidently drift report too (slower; the decision is the same)")
    parser.add_argument("--out", help="append every rollout here as a JSON line (a partial run stays usable)")
    parser.add_argument("--summarize", help="print the table of a --out file and exit")
    parser.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = parser.parse_args(argv)
    args.chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(args.chosen) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    args.conditions = {"on": [True], "off": [False]}.get(args.load, [False, True])
    return args


def report(rows: list[dict], settings: dict, as_json: bool) -> dict:
    out = {"summary": summarize(rows, {s: SCENARIOS[s][1] for s in SCENARIOS}), "settings": settings,
           "rollouts": rows}
    if as_json:
        print(json.dumps(out, indent=2))
    else:
        print(table(out["summary"]))
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.summarize:
        rows = [json.loads(line) for line in Path(args.summarize).read_text().splitlines() if line.strip()]
        return report(rows, {"from": args.summarize}, args.json)
    home = Path(tempfile.mkdtemp(prefix="nasops-canary-real-"))
    os.environ["NASOPS_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    settings = {"command": "benchmarks/canary_real.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                "canary": {**COMPRESSED, **json.loads(args.canary)}, "slow_ms": args.slow_ms,
                "cpus": os.cpu_count(), "home": str(home)}
    rows = run(args, home, settings["canary"])
    return report(rows, settings, args.json)


def run(args: argparse.Namespace, home: Path, overrides: dict) -> list[dict]:
    """Every round: each load condition, each scenario, one rollout; returns the rollouts' rows."""
    import logging

    import mlflow.pytorch
    from fixtures_registry import register_version
    from mlflow.tracking import MlflowClient

    from benchmarks.cpu_load import cpu_load
    from monitoring.rollout_store import RolloutStore
    from pipelines.canary.flow import traffic_process
    from pipelines.control.config import parse_config
    from pipelines.gateway_session import gateway_session
    from pipelines.prepared import load_prepared

    for name in ("mlflow", "nasops", "nasops.canary", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    cfg = parse_config(overrides)
    reg, data_path, (_, _, x_te, y_te) = digits_registry(home)
    champion = mlflow.pytorch.load_model(f"models:/{reg.model_name}/{reg.champion_version}")
    modules = challengers(champion, args.slow_ms)
    versions = {s: register_version(reg.tracking_uri, reg.model_name, modules[s]) for s in args.chosen}
    half = len(x_te) // 2
    accuracy = {s: round(offline_accuracy(getattr(m, "inner", m), x_te[half:], y_te[half:]), 4)
                for s, m in modules.items() if s in args.chosen}
    if not args.json:
        print(f"offline accuracy of the challengers (prod rows): {accuracy}", flush=True)
    client = MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.tracking_uri)
    client.set_registered_model_alias(reg.model_name, "challenger", versions[args.chosen[0]])
    data = load_prepared(data_path)
    rows: list[dict] = []
    with gateway_session(reg.model_name, weight=0.0, mode="split", challenger_timeout_s=cfg.challenger_timeout_s,
                         workers=cfg.gateway_workers) as session:
        session.admin.wait_ready()
        ctx = {"reg": reg, "client": client, "session": session, "store": RolloutStore(session.log_engine),
               "data_path": data_path, "x_prod": data.x_prod,
               "reference": reference(data, cfg, args.full_evidence)}
        for round_ in range(args.runs):
            for loaded in args.conditions:
                with cpu_load() if loaded else contextlib.nullcontext(), traffic_process(session, data_path, cfg):
                    for scenario in args.chosen:
                        row = {**one_rollout(ctx, scenario, versions[scenario], cfg, loaded), "round": round_,
                               "offline_accuracy": accuracy[scenario]}
                        rows.append(row)
                        if args.out:
                            with open(args.out, "a") as fh:
                                fh.write(json.dumps(row) + "\n")
                        if not args.json:
                            print(f"round {round_} {'load' if loaded else 'idle'} {scenario:12s} {row['kind']:18s} "
                                  f"{row['intervals']:2d} intervals {row['seconds']:5.1f} s load {row['loadavg_1m']}"
                                  f" {row['reason'][:90]}", flush=True)
    return rows


if __name__ == "__main__":
    main()

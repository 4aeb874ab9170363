"""``nasops search`` (a resumable architecture search on your data) and ``nasops bench search`` (strategies
compared on a benchmark table)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipelines.cli.output import make_console, print_json
from pipelines.errors import UserError

console = make_console(stderr=True)


def _task_data(data: str, seed: int):
    from nas.data import TaskData
    from nas.datasets import BUNDLED_DATASETS, bundled_task

    if data in BUNDLED_DATASETS:
        return bundled_task(data, seed=seed)
    path = Path(data)
    if path.suffix != ".npz" or not path.exists():
        raise UserError(
            f"--data {data!r}: use a bundled dataset ({', '.join(BUNDLED_DATASETS)}) or an existing prepared "
            ".npz file (nasops data prepare writes one)"
        )
    return TaskData.load(path)


def _strategy_lines() -> list[str]:
    from nas.strategies import STRATEGIES

    return [f"{e['name']:<10} {e.get('paper', '')}" + ("  [multi-fidelity]" if e.get("multi_fidelity") else "")
            for e in STRATEGIES.describe()]


def _stage_config(given: dict[str, Any]):
    """The refresh's search-stage config with the options the user gave; the others keep the stage's defaults
    (the same ``SearchStageConfig``), and every given value that differs from them is printed."""
    from pipelines.nas_stage import parse_config

    given = {k: v for k, v in given.items() if v is not None}
    cfg = parse_config(given)
    default = parse_config({})
    changed = [f"{k}={getattr(cfg, k)!r} (refresh: {getattr(default, k)!r})" for k in given
               if getattr(cfg, k) != getattr(default, k)]
    if changed:
        console.print("differs from the refresh's search stage: " + ", ".join(changed), highlight=False)
    return cfg


def search_command(
    space: str = typer.Option(None, help="search space: nb201, mlp or vit (default: the refresh's)"),
    data: str = typer.Option(None, "--data", help="digits, mnist5k (bundled) or a prepared .npz [default: digits]"),
    dataset: str = typer.Option(None, "--dataset", hidden=True, help="deprecated spelling of --data"),
    strategy: str = typer.Option(None, help="search strategy (--list-strategies names them) [default: predictor]"),
    list_strategies: bool = typer.Option(False, "--list-strategies", help="print the strategies and exit"),
    budget: int = typer.Option(None, min=1, help="trials in total, counting resumed ones [default: the refresh's, 8]"),
    time_budget: float = typer.Option(None, "--time-budget-s", help="stop submitting after this many seconds"),
    max_latency_ms: float = typer.Option(None, help="only architectures at or under this CPU latency count"),
    max_params: float = typer.Option(None, help="only architectures with at most this many parameters count"),
    objective: str = typer.Option(None, "--objective", help="accuracy (fp32) or latency_int8: quantize every "
                                  "candidate, rank its int8 accuracy, bound its int8 latency [default: accuracy]"),
    epochs: int = typer.Option(None, min=1, help="training epochs per evaluation, the low fidelity [default: 3]"),
    data_fraction: float = typer.Option(None, help="fraction of the training rows per evaluation [default: 1.0]"),
    pool_size: int = typer.Option(None, min=1, help="architectures scored by the zero-cost pre-filter [default: 1000]"),
    prefilter_keep: int = typer.Option(None, min=1, help="how many the pre-filter keeps [default: 32]"),
    warm_start: int = typer.Option(None, min=0, help="evaluate this many of the zero-cost top first [default: 4]"),
    workers: int = typer.Option(None, min=1, help="evaluations in parallel; 1 = serial, reproducible [default: 2]"),
    seed: int = typer.Option(None, help="seed of the pool, the strategy and every training [default: 0]"),
    top_k: int = typer.Option(None, min=1, help="best candidates reported (the refresh retrains them) [default: 2]"),
    resume: str = typer.Option(None, "--resume", help="RUN id printed by an earlier (interrupted) search"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
) -> None:
    """Search architectures for a dataset as the refresh's search stage does (same defaults): zero-cost
    pre-filter, then the strategy on the shared search loop; resumable with --resume."""
    if list_strategies:
        for line in _strategy_lines():
            typer.echo(line)
        return
    if dataset is not None:
        console.print("[yellow]--dataset is deprecated; use --data[/]")
        data = data or dataset
    data = data or "digits"
    fidelity = None
    if epochs is not None or data_fraction is not None:
        fidelity = {"epochs": 3 if epochs is None else epochs, "data_fraction": 1.0 if data_fraction is None
                    else data_fraction}
    cfg = _stage_config({"space": space, "strategy": strategy, "budget": budget, "time_budget_s": time_budget,
                         "max_latency_ms": max_latency_ms, "max_params": max_params, "seed": seed,
                         "fidelity": fidelity, "pool_size": pool_size, "prefilter_keep": prefilter_keep,
                         "warm_start": warm_start, "workers": workers, "top_k": top_k, "objective": objective})
    if as_json:  # whatever a library prints goes to stderr: under --json stdout is the JSON alone
        with contextlib.redirect_stdout(sys.stderr):
            summary = _run_search(cfg, data, resume, quiet=True)
        print_json(summary)
        return
    summary = _run_search(cfg, data, resume, quiet=False)
    _print_search(summary, cfg.objective if objective is not None else None)


def _print_search(summary: dict[str, Any], objective: str | None) -> None:
    """The best candidates as a table, and the Pareto front when an objective was asked for."""
    table = Table(title=f"best of {summary['evaluations']} evaluations ({summary['resumed']} resumed, "
                        f"{summary['failed']} failed)")
    table.add_column("rank")
    table.add_column("architecture", overflow="fold")  # never cut an architecture string
    for col in ("val acc", "latency ms", "params"):
        table.add_column(col, justify="right")
    for i, m in enumerate(summary["top"], 1):
        table.add_row(str(i), m["arch"], f"{m['val_accuracy']:.4f}", f"{m.get('latency_ms', float('nan')):.2f}",
                      f"{int(m.get('params', 0)):,}")
    make_console().print(table)
    if not summary["top"]:
        console.print("[yellow]no evaluated architecture met the constraints[/]")
    if objective is not None:
        make_console().print(_pareto_table(summary["pareto"], objective))


def _run_search(cfg, data_name: str, resume: str | None, *, quiet: bool) -> dict[str, Any]:
    import numpy as np

    from nas.evaluators import TrainingEvaluator
    from nas.pareto import objective_spec, pareto_plot, pareto_rows
    from nas.search import run_search
    from pipelines.nas_stage import prepare_strategy, resolve_space
    from pipelines.settings import Settings

    task = _task_data(data_name, cfg.seed)  # before anything is written: a bad --data leaves no run behind
    run_id, run_dir = _run_dir(Settings().state_dir / "searches", resume, cfg, data_name)
    console.print(f"search run [bold]{run_id}[/] (journal {run_dir / 'journal.jsonl'})")
    sp = resolve_space(cfg, task.input_shape)
    with console.status("zero-cost pre-filter..."):
        strat, _pool, proxy_scores = prepare_strategy(cfg, sp, task)
    evaluator = TrainingEvaluator(task, seed=cfg.seed, int8=objective_spec(cfg.objective).int8, **cfg.fidelity)
    evaluator.metric = cfg.metric
    with Progress(TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[best]}"), console=console, disable=quiet) as progress:
        bar = progress.add_task("search", total=cfg.budget, best="")
        best = [-np.inf]

        def on_result(rec) -> None:
            best[0] = max(best[0], rec.score)
            progress.update(bar, completed=rec.index + 1, best=f"best {best[0]:.4f}")
            if not rec.ok:
                console.print(f"[yellow]trial {rec.index + 1} failed[/]: {rec.arch}: {rec.error}", highlight=False)

        try:
            result = run_search(strat, evaluator, budget=cfg.budget, time_budget_s=cfg.time_budget_s,
                                fidelity=cfg.fidelity, workers=cfg.workers, journal=run_dir / "journal.jsonl",
                                resume=bool(resume), on_result=on_result, header={"dataset": data_name})
        except ValueError as exc:
            raise UserError(str(exc)) from None
    summary = _summary(result, run_id, sp, cfg, proxy_scores)
    if summary["pareto"]:
        pareto_plot(pareto_rows(result.records, cfg.objective), run_dir / "pareto_front.png", cfg.objective)
    (run_dir / "result.json").write_text(json.dumps(summary, indent=2))
    return summary


def _run_dir(root: Path, resume: str | None, cfg, data_name: str) -> tuple[str, Path]:
    """A new search's id and directory (its options saved), or the resumed one's (the same options required)."""
    if resume:
        run_dir = root / resume
        if not (run_dir / "journal.jsonl").exists():
            known = sorted(p.name for p in root.glob("*") if (p / "journal.jsonl").exists()) if root.exists() else []
            raise UserError(f"--resume {resume!r}: no such search under {root}; known: {', '.join(known) or 'none'}")
        saved = json.loads((run_dir / "command.json").read_text())
        if saved != _comparable(cfg, data_name):
            raise UserError(f"--resume {resume!r} was started with {saved}; repeat the same options to resume it")
        return resume, run_dir
    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "command.json").write_text(json.dumps(_comparable(cfg, data_name)))
    return run_id, run_dir


def _summary(result: Any, run_id: str, sp: Any, cfg, proxy_scores: dict) -> dict[str, Any]:
    """What ``--json`` prints and ``result.json`` keeps: the run, the best records, the Pareto front."""
    import numpy as np

    from nas.pareto import pareto_rows

    records = sorted((r for r in result.records if r.ok and np.isfinite(r.score)), key=lambda r: -r.score)
    return {
        "run": run_id, "space": sp.name, "space_config": sp.config(), "strategy": cfg.strategy,
        "evaluations": len(result.records), "failed": len(result.failed), "resumed": result.resumed,
        "seconds": result.seconds, "stopped_by": result.stopped_by,
        "top": [{"arch": r.arch, **r.result.metrics, "fidelity": r.result.fidelity,
                 "proxy_scores": proxy_scores.get(r.arch, {})} for r in records[: cfg.top_k]],
        "predictor_tau": result.tau, "objective": cfg.objective,
        "pareto": [r for r in pareto_rows(result.records, cfg.objective) if r["on_front"]],
    }


def _comparable(cfg, data: str) -> dict[str, Any]:
    keep = ("space", "strategy", "seed", "fidelity", "pool_size", "prefilter_keep", "warm_start", "max_latency_ms",
            "max_params")
    # objective only when set: a search journaled before the option existed still resumes
    return {"dataset": data, **{k: getattr(cfg, k) for k in keep},
            **({"objective": cfg.objective} if cfg.objective != "accuracy" else {})}


def _pareto_table(rows: list[dict[str, Any]], objective: str) -> Table:
    """The Pareto front of the evaluated candidates (accuracy vs latencies vs params), most accurate first."""
    from nas.pareto import axes

    maximize, minimize = axes(objective)
    cols = [maximize, *minimize] + (["accuracy_int8"] if "latency_int8_ms" in minimize else [])
    table = Table(title=f"Pareto front ({len(rows)} non-dominated: {maximize} up, {', '.join(minimize)} down)")
    table.add_column("architecture", overflow="fold")
    for col in cols:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["arch"], *(("nan" if c not in r else f"{int(r[c]):,}" if c == "params" else
                                    f"{r[c]:.4f}" if "accuracy" in c else f"{r[c]:.3f}") for c in cols))
    return table


SHIPPED_SCORES = {"nb201": Path(__file__).resolve().parents[2] / "benchmarks" / "tables" / "nb201_proxy_scores.csv.gz"}
"""Proxy scores shipped with the repository, read as the cache of ``--zc`` (same scoring network)."""


def bench_search_command(
    table: Path = typer.Option(..., "--table", help="benchmark CSV (or .csv.gz): one row per architecture"),
    arch_column: str = typer.Option("arch", help="column holding the architecture strings"),
    metric_column: str = typer.Option("val_accuracy", help="column to maximise (what the search sees)"),
    report_column: str = typer.Option(None, help="column regret is measured on, of the best-by-metric row "
                                                 "(e.g. a test column while searching on validation)"),
    proxy_columns: str = typer.Option("", help="comma list of zero-cost proxy columns"),
    space: str = typer.Option(None, help="space of the strings (e.g. nb201) to compute --zc proxies on the fly"),
    zc: str = typer.Option(None, help="data-free proxies computed from the strings (needs --space), e.g. "
                                      "meco,synflow: the predictor's features, pool and warm start; '' for none "
                                      "[default: meco,synflow with --space nb201, tuned on CIFAR-10; else none]"),
    zc_cache: Path = typer.Option(None, "--zc-cache", help="JSON-lines cache of computed --zc scores "
                                                           "[default: $NASOPS_HOME/zc-cache/SPACE.jsonl]"),
    strategy: str = typer.Option("all", help="a registered strategy (nasops search --list-strategies) or all"),
    predictor: str = typer.Option(None, help="the predictor strategy's model: mlp or lgbm [default: the strategy's]"),
    acquisition: str = typer.Option(None, help="the predictor strategy's acquisition: ucb, its, ei or greedy"),
    budget: int = typer.Option(100, min=1),
    seeds: int = typer.Option(20, min=1),
    batch: int = typer.Option(5, min=1, help="architectures asked per round (the predictor refits once a round)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object: optimum, per-strategy curves, ratios"),
) -> None:
    """Run strategies against a benchmark table and print mean regret curves over seeds, and how many times
    fewer evaluations each strategy needs than random search / regularized evolution to come within 0.5 points."""
    from nas.benchmarking import compare_strategies, summary
    from nas.strategies import list_strategies

    names = list_strategies() if strategy == "all" else [strategy]
    for name in names:
        if name not in list_strategies():
            raise UserError(f"--strategy {name!r}: choose one of {', '.join(list_strategies())} or all")
    predictor_kwargs = _predictor_kwargs(predictor, acquisition)
    if zc is None:
        from nas.zc_features import SEARCH_FEATURES

        zc = ",".join(SEARCH_FEATURES.get(space, ())) if space else ""
    metrics = [metric_column] + ([report_column] if report_column and report_column != metric_column else [])
    bench = _bench_table(table, arch_column, metrics, proxy_columns, zc, space, zc_cache, quiet=as_json)
    budget = min(budget, len(bench))
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=as_json) as progress:
        bars = {n: progress.add_task(n, total=seeds) for n in names}
        curves = compare_strategies(bench, metric_column, names, budget=budget, seeds=seeds, batch=batch,
                                    report=report_column, strategy_kwargs={"predictor": predictor_kwargs},
                                    progress=lambda n, s: progress.update(bars[n], completed=s + 1))
    optimum = bench.optimum(report_column or metric_column)
    full = summary(curves, optimum, checkpoints=[c for c in (10, 25, 50, 100, 200, 300, 500) if c <= budget])
    if as_json:
        keep = ("budgets", "mean_best", "mean_regret", "regret_at", "evals_to_0.005", "evals_to_0.01")
        print_json({"optimum": optimum, "ratios": full["ratios"], "strategies": {
            n: {k: e[k] for k in keep} for n, e in full["strategies"].items()}})
        return
    _print_bench(full, seeds, optimum, len(bench), budget)


def _bench_table(table: Path, arch_column: str, metrics: list[str], proxy_columns: str, zc: str, space: str | None,
                 zc_cache: Path | None, *, quiet: bool) -> Any:
    """The benchmark table with its proxy columns, and the ``--zc`` proxies computed from the strings."""
    from nas.tabular import load_table, percent_to_fraction

    proxies = [p.strip() for p in proxy_columns.split(",") if p.strip()]
    try:
        bench = percent_to_fraction(load_table(table, arch_column, metrics, proxy_columns=proxies))
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"--table {table}: {exc}") from None
    if zc:
        if not space:
            raise UserError("--zc needs --space (e.g. --space nb201) to build networks from the strings")
        bench.proxies.update(_zc_columns(bench.archs, space, [z.strip() for z in zc.split(",") if z.strip()],
                                         zc_cache, quiet=quiet))
    return bench


def _predictor_kwargs(predictor: str | None, acquisition: str | None) -> dict[str, str]:
    from nas.predictors import list_predictors
    from nas.strategies.predictor import ACQUISITIONS

    if predictor is not None and predictor not in list_predictors():
        raise UserError(f"--predictor {predictor!r}: choose one of {', '.join(list_predictors())}")
    if acquisition is not None and acquisition not in ACQUISITIONS:
        raise UserError(f"--acquisition {acquisition!r}: choose one of {', '.join(ACQUISITIONS)}")
    return {k: v for k, v in (("predictor", predictor), ("acquisition", acquisition)) if v is not None}


def _print_bench(full: dict[str, Any], seeds: int, optimum: float, rows: int, budget: int) -> None:
    marks = sorted({c for c in (1, 5, 10, 25, 50, 100, 200, 300, 500, budget) if c <= budget})
    out = Table(title=f"mean regret over {seeds} seeds (optimum {optimum:.4f}, {rows} architectures)")
    out.add_column("strategy")
    for m in marks:
        out.add_column(f"@{m}", justify="right")
    out.add_column("evals to 0.5pt (hit)", justify="right")
    for n, e in full["strategies"].items():
        reach = e["evals_to_0.005"]
        out.add_row(n, *[f"{e['mean_regret'][m - 1]:.4f}" for m in marks],
                    f"{reach['mean_censored']:.0f} ({reach['reached']}/{seeds})")
    make_console().print(out)
    for pair, r in full["ratios"].items():
        console.print(f"{pair.replace('_vs_', ' vs ')}: {r['evals_to_0.005']:.2f}x fewer evaluations to 0.5 points",
                      highlight=False)


def _zc_columns(archs: list[str], space_name: str, names: list[str], cache: Path | None, *,
                quiet: bool) -> dict[str, Any]:
    """Data-free proxies of every row's network, read from the shipped scores and the on-disk cache where they
    are there and computed (then cached) where not, with a progress bar."""
    from nas.proxies import list_proxies
    from nas.spaces import get_space
    from nas.zc_features import NB201_SCORING, Scoring, zc_features
    from pipelines.settings import Settings

    unknown = [n for n in names if n not in list_proxies()]
    if unknown:
        raise UserError(f"--zc {','.join(unknown)}: unknown proxy; choose from {', '.join(list_proxies())}")
    try:
        get_space(space_name)
    except (KeyError, ValueError) as exc:
        raise UserError(f"--space {space_name}: {exc}") from None
    scoring = NB201_SCORING if space_name == "nb201" else Scoring(space=space_name, space_kwargs=())
    shipped = SHIPPED_SCORES.get(space_name)
    cache = cache or Settings().state_dir / "zc-cache" / f"{space_name}.jsonl"
    with Progress(TextColumn("[bold]zero-cost proxies"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=quiet) as progress:
        bar = progress.add_task("zc", total=None)
        try:
            values, counts = zc_features(
                archs, names, shipped=shipped if shipped and shipped.exists() else None, cache=cache,
                scoring=scoring, progress=lambda done, total: progress.update(bar, completed=done, total=total))
        except ValueError as exc:
            raise UserError(f"--zc {','.join(names)}: {exc}") from None
    console.print(f"zero-cost features: {counts['shipped']} values from the shipped scores, {counts['cache']} from "
                  f"{cache}, {counts['computed']} computed", highlight=False)
    return values


def register(app: typer.Typer) -> None:
    app.command("search")(search_command)
    bench = next((g.typer_instance for g in app.registered_groups if g.name == "bench"), None)
    if bench is None:
        bench = typer.Typer(help="Benchmarks: measure strategies and proxies on benchmark tables.",
                            no_args_is_help=True)
        app.add_typer(bench, name="bench")
    bench.command("search")(bench_search_command)

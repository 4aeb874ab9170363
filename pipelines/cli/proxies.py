"""``nasops proxies``: zero-cost proxy scores of one, many (``--arch-file``) or sampled architectures.

Data-free proxies (synflow, params, flops, ...) need only an input shape and a class count; data-dependent ones
(nwot, zico, snip, ...) need a real batch from ``--data``. Every user mistake (unknown proxy, operation or
space, malformed string, data-dependent proxy without data) is a one-line message and exit code 2.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from pipelines.cli.output import make_console, print_json
from pipelines.errors import UserError

console = make_console()
DEFAULT_INPUT_SHAPE = "3,32,32"
DEFAULT_NUM_CLASSES = 10


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise UserError(f"--input-shape {text!r}: give positive integers separated by commas, e.g. 3,32,32 or 64")
    return shape


def _parse_space(space: str, space_config: str | None):
    from nas.spaces import get_space, list_spaces

    config: dict[str, Any] = {}
    if space_config:
        try:
            config = json.loads(space_config)
        except json.JSONDecodeError as exc:
            raise UserError(f"--space-config must be a JSON object like '{{\"C\": 8, \"N\": 1}}': {exc}") from None
        if not isinstance(config, dict):
            raise UserError("--space-config must be a JSON object like '{\"C\": 8, \"N\": 1}'")
    if space not in list_spaces():
        raise UserError(f"--space {space!r} is unknown; choose one of: {', '.join(list_spaces())}")
    try:
        return get_space(space, **config)
    except (TypeError, ValueError) as exc:
        raise UserError(f"--space-config {config} does not fit space {space!r}: {exc}") from None


def _resolve_proxies(text: str | None, have_data: bool) -> list[str]:
    from nas.ensemble import ENSEMBLES
    from nas.proxies import list_proxies, needs_data

    valid = list_proxies()
    if text is None:
        if have_data:
            return list(dict.fromkeys(["params", "flops", *ENSEMBLES["ensemble"]]))
        return [name for name in valid if not needs_data(name)]
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError(f"--proxies is empty; choose from: {', '.join(valid)}")
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise UserError(f"--proxies: unknown proxy {unknown[0]!r}; valid proxies: {', '.join(valid)}")
    hungry = [n for n in names if needs_data(n)]
    if hungry and not have_data:
        free = [n for n in valid if not needs_data(n)]
        raise UserError(
            f"--proxies {', '.join(hungry)} need data: add --data digits or --data mnist5k "
            f"(without data only these work: {', '.join(free)})"
        )
    return list(dict.fromkeys(names))


def _load_dataset(name: str, seed: int):
    from nas.data import TaskData
    from nas.datasets import BUNDLED_DATASETS, bundled_task

    if name in BUNDLED_DATASETS:
        return bundled_task(name, seed=seed)
    path = Path(name)
    if path.suffix == ".npz" and path.exists():
        return TaskData.load(path)
    raise UserError(
        f"--data {name!r}: choose a bundled dataset ({', '.join(BUNDLED_DATASETS)}) or an existing prepared .npz"
    )


def _architectures(space, arch: str | None, arch_file: Path | None, sample: int | None, seed: int) -> list:
    from nas.pool import sample_pool
    from nas.spaces import InvalidArchitectureError

    given = [flag for flag, value in (("--arch", arch), ("--arch-file", arch_file), ("--sample", sample))
             if value is not None]
    if len(given) != 1:
        raise UserError(
            "say which architectures to score with exactly one of --arch STRING, --arch-file FILE or --sample N"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if sample is not None:
        if sample < 1:
            raise UserError(f"--sample must be >= 1, got {sample}")
        return sample_pool(space, sample, seed)
    if arch is not None:
        lines = [(None, arch)]
    else:
        assert arch_file is not None
        if not arch_file.is_file():
            raise UserError(f"--arch-file {str(arch_file)!r} does not exist or is not a file")
        lines = [(i, line.strip()) for i, line in enumerate(arch_file.read_text().splitlines(), start=1)]
        lines = [(i, text) for i, text in lines if text and not text.startswith("#")]
        if not lines:
            raise UserError(f"--arch-file {str(arch_file)!r} holds no architecture strings (one per line)")
    out = []
    for line, text in lines:
        try:
            out.append(space.from_string(text))
        except InvalidArchitectureError as exc:
            where = f"line {line} of {arch_file}: " if line is not None else "--arch: "
            raise UserError(where + str(exc)) from None
    return out


def proxies_command(
    space: str = typer.Option("nb201", help="search space: nb201, mlp or vit"),
    space_config: str = typer.Option(None, help='space settings as JSON, e.g. \'{"C": 8, "N": 1}\' for nb201'),
    arch: str = typer.Option(None, help="one architecture string, e.g. '|nor_conv_3x3~0|+|...|'"),
    arch_file: Path = typer.Option(None, help="a file with one architecture string per line"),
    sample: int = typer.Option(None, help="score N random (unique) architectures of the space"),
    proxies: str = typer.Option(
        None, help="comma-separated proxy names (default: every data-free proxy, or the ensemble with --data)"
    ),
    dataset: str = typer.Option(None, "--data", "--dataset", help="digits or mnist5k (bundled), or a prepared .npz; "
                                "data-dependent proxies need it"),
    input_shape: str = typer.Option(None, help=f"input shape without --data (default {DEFAULT_INPUT_SHAPE})"),
    num_classes: int = typer.Option(None, help=f"classes without --data (default {DEFAULT_NUM_CLASSES})"),
    batch_size: int = typer.Option(64, help="batch size of the data-dependent proxies"),
    seed: int = typer.Option(0, help="seed of the weights, the batch and --sample"),
    as_json: bool = typer.Option(False, "--json", help='one JSON line per architecture: {"arch", "scores", "seconds"}'),
) -> None:
    """Print zero-cost proxy scores of architectures (no training)."""
    import torch

    from nas.proxies import compute_scores

    torch.set_num_threads(1)
    sp = _parse_space(space, space_config)
    if batch_size < 2:
        raise UserError(f"--batch-size must be >= 2, got {batch_size}")
    names = _resolve_proxies(proxies, dataset is not None)
    archs = _architectures(sp, arch, arch_file, sample, seed)
    shape, classes, batch = _inputs(dataset, input_shape, num_classes, batch_size, seed)
    problem = sp.supports_input(shape)
    if problem is not None:
        raise UserError(f"--space {space} cannot take input shape {shape}: {problem}")
    for a in archs:
        start = time.perf_counter()
        try:
            scores = compute_scores(lambda a=a: a.build(classes, shape), names, batch=batch, input_shape=shape,
                                    num_classes=classes, seed=seed)
        except (KeyError, ValueError) as exc:  # the proxy library's own checks, phrased for the user
            raise UserError(str(exc).strip("'\"")) from None
        _print_scores(a.string, scores, time.perf_counter() - start, as_json)


def _inputs(dataset: str | None, input_shape: str | None, num_classes: int | None, batch_size: int,
            seed: int) -> tuple[tuple[int, ...], int, Any]:
    """Input shape, classes and the proxies' batch: from ``--data`` (the flags must agree), or the flags alone."""
    if dataset is None:
        shape = _parse_shape(input_shape or DEFAULT_INPUT_SHAPE)
        classes = DEFAULT_NUM_CLASSES if num_classes is None else num_classes
        if classes < 2:
            raise UserError(f"--num-classes must be >= 2, got {classes}")
        return shape, classes, None
    data = _load_dataset(dataset, seed)
    shape, classes = tuple(data.input_shape), int(data.num_classes)
    for flag, value, actual in (("--input-shape", input_shape and _parse_shape(input_shape), shape),
                                ("--num-classes", num_classes, classes)):
        if value not in (None, actual):
            raise UserError(f"{flag} {value} disagrees with --data {dataset} ({actual}); drop {flag}")
    return shape, classes, data.batch(batch_size, seed=seed)


def _print_scores(arch: str, scores: dict[str, float], seconds: float, as_json: bool) -> None:
    if as_json:
        print_json({"arch": arch, "scores": scores, "seconds": round(seconds, 4)})
        return
    console.print(arch, f"({seconds:.2f} s)", soft_wrap=True, markup=False, highlight=False)
    table = Table(box=None)
    table.add_column("proxy")
    table.add_column("score", justify="right")
    for name, value in scores.items():
        table.add_row(name, f"{value:.6g}")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``nasops proxies`` to the CLI."""
    app.command("proxies")(proxies_command)

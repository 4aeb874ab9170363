"""Entry point of ``nasops``: assembles the command modules into one typer app.

Each module in :data:`COMMAND_MODULES` exposes ``register(app: typer.Typer) -> None``. User mistakes raise
:class:`pipelines.errors.UserError`, which :func:`run` turns into a one-line message and exit code 2.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Sequence

import typer

from pipelines import supervisor
from pipelines.errors import UserError
from pipelines.settings import apply_offline_defaults

COMMAND_MODULES: list[str] = [
    "pipelines.cli.refresh",
    "pipelines.cli.serve",
    "pipelines.cli.search",
    "pipelines.cli.proxies",
    "pipelines.cli.canary",
    "pipelines.cli.drift",
    "pipelines.cli.db",
]

app = typer.Typer(
    name="nasops",
    help="Neural architecture search in scheduled model refreshes, proven on live traffic before it takes over.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"nasops {version('nasops')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            typer.echo("nasops (not installed: run `pip install -e .`)")
        raise typer.Exit(0)


@app.callback()
def _root(
    show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="print the version and exit"),
) -> None:
    """Neural architecture search in scheduled model refreshes, proven on live traffic before it takes over."""


def _assemble() -> typer.Typer:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


def _usage_errors() -> tuple[type[BaseException], ...]:
    """Click's usage errors, from click itself and from the copy typer vendors (its option coercion raises those)."""
    import click

    kinds: list[type[BaseException]] = [click.exceptions.ClickException]
    try:
        from typer._click.exceptions import ClickException as VendoredClickException
    except ImportError:
        pass
    else:
        kinds.append(VendoredClickException)
    return tuple(kinds)


def run(argv: Sequence[str] | None = None) -> int:
    """Run one ``nasops`` command line (``argv`` without the program name; None: ``sys.argv[1:]``) and return its
    exit code: a :class:`UserError` is one line on stderr and 2, click's usage errors keep their own code, an
    abort is 130. :func:`main` exits with it; tests call it in-process to check the very same mapping."""
    _assemble()
    try:
        app(args=None if argv is None else list(argv), prog_name="nasops", standalone_mode=False)
    except UserError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        return 2
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        return code or 0
    except typer.Abort:
        if not supervisor.stopping():  # under a Ctrl-C stop the supervisor has said it in one line already
            typer.secho("aborted", err=True)
        return 130
    except Exception as exc:  # click's own usage errors carry their exit code
        if isinstance(exc, _usage_errors()):
            exc.show()
            return exc.exit_code
        raise
    return 0


def main() -> None:
    """Console-script entry point: the process-wide setup (SIGTERM, offline defaults, warnings), then :func:`run`."""
    supervisor.exit_early_on_sigterm()
    apply_offline_defaults()
    # scipy's note that an exact KS p-value fell back to the asymptotic one is not news to a user of the CLI
    warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful")
    sys.exit(run())


if __name__ == "__main__":
    main()

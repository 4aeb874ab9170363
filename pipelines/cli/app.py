"""Entry point of ``nasops``: assembles the command modules into one typer app.

Each module in :data:`COMMAND_MODULES` exposes ``register(app: typer.Typer) -> None``. User mistakes raise
:class:`pipelines.errors.UserError`, which :func:`main` turns into a one-line message and exit code 2.
"""

from __future__ import annotations

import importlib
import sys
import warnings

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


def main() -> None:
    """Console-script entry point."""
    supervisor.exit_early_on_sigterm()
    apply_offline_defaults()
    # scipy's note that an exact KS p-value fell back to the asymptotic one is not news to a user of the CLI
    warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful")
    _assemble()
    try:
        app(standalone_mode=False)
    except UserError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code or 0)
    except typer.Abort:
        typer.secho("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # click's own usage errors carry their exit code
        if isinstance(exc, _usage_errors()):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()

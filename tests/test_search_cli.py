"""``nasops search`` options without training: the refresh stage's defaults, the printed differences, the
strategy list, and the --data flag's errors (the full search runs in test_search_loop's slow CLI test)."""

from __future__ import annotations

from typer.testing import CliRunner

from pipelines.cli.app import _assemble
from pipelines.cli.search import _stage_config
from pipelines.nas_stage import parse_config


def test_no_option_means_the_refresh_stage_defaults(capsys):
    assert _stage_config({}) == parse_config({})
    assert capsys.readouterr().err == ""  # nothing differs, nothing printed


def test_options_that_differ_from_the_refresh_are_printed(capsys):
    cfg = _stage_config({"budget": 30, "seed": None, "workers": 2})
    assert cfg.budget == 30 and cfg.workers == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "budget=30 (refresh: 8)" in err and "workers" not in err  # the same value is no difference


def test_list_strategies_names_every_registered_one_with_its_paper():
    from nas.strategies import list_strategies

    out = CliRunner().invoke(_assemble(), ["search", "--list-strategies"])
    assert out.exit_code == 0
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list_strategies()
    assert any(line.startswith("bohb") and "Falkner" in line and "multi-fidelity" in line for line in lines)


def test_a_bad_data_argument_is_one_line_naming_the_fix(tmp_path):
    """In-process through the console script's own ``run(argv)`` (``support_cli``); ``test_cli_proxies`` proves the
    installed console script's exit code end to end."""
    from support_cli import nasops

    done = nasops("search", "--data", "nope.csv", "--json", home=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert "--data 'nope.csv': use a bundled dataset" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.rglob("command.json"))  # no half-made search run left behind

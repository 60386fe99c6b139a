"""Docs that must match the code."""

from pathlib import Path

from click.testing import CliRunner

from core.settings import settings_markdown
from orchestration.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_doc_lists_every_setting_as_the_code_defines_it():
    assert settings_markdown() in (ROOT / "docs" / "configuration.md").read_text()


def test_cli_doc_names_every_command():
    doc = (ROOT / "docs" / "cli.md").read_text()
    for name in cli.commands:
        assert f"pulse {name}" in doc, name


def test_every_command_has_help():
    runner = CliRunner()
    for name in cli.commands:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage: " in result.output


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "./scripts/up" in readme and "./scripts/test" in readme
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()

"""The command line as a whole: every command has help, and help and status never import torch."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from imgsearch.cli import main
from tests.cli_process import output_and_modules

COMMANDS = sorted(main.commands)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage: " in result.output and len(main.commands[command].help or "") > 20


def test_help_does_not_import_heavy_modules():
    _, loaded = output_and_modules(["--help"])
    assert not {"torch", "open_clip", "faiss", "sqlalchemy", "numpy"} & loaded


def test_status_does_not_import_torch(indexed):
    _, loaded = output_and_modules(["status"])
    assert "torch" not in loaded and "open_clip" not in loaded


def test_status_reports_counts_model_home_and_failures(cli, photos, isolated_home, tiny_model):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    assert cli("index", photos).exit_code == 0
    text = cli("status").output
    assert str(isolated_home) in text and tiny_model in text
    assert "1 could not be read" in text and str(photos) in text
    info = json.loads(cli("status", "--json").output)
    assert info["failures"] == 1 and info["roots"][0]["path"] == str(photos)


def test_status_without_an_index_says_so(cli, isolated_home):
    result = cli("status")
    assert result.exit_code == 0
    assert f"no index at {isolated_home}" in result.output

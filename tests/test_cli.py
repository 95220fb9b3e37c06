"""The command line as a whole: every command has help, and help and status never import torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from imgsearch.cli import main

COMMANDS = sorted(main.commands)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage: " in result.output and len(main.commands[command].help or "") > 20


def _modules_after(argv: list[str]) -> set[str]:
    code = (
        "import sys\nfrom imgsearch.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "import json\nprint(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_help_does_not_import_heavy_modules():
    loaded = _modules_after(["--help"])
    assert not {"torch", "open_clip", "faiss", "sqlalchemy", "numpy"} & loaded


def test_status_does_not_import_torch(cli, photos):
    assert cli("index", photos).exit_code == 0
    loaded = _modules_after(["status"])
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

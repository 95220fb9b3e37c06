"""The README stays true: its CLI reference is the real --help, and its two commands are the Makefile's."""

from __future__ import annotations

import os
import re
import shlex
import shutil

import pytest

from imgsearch.cli.reference import END, START, markdown
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_cli_reference_in_readme_is_generated_from_help():
    section = README[README.index(START) + len(START) : README.index(END)].strip()
    assert section == markdown().strip(), "run: python -m imgsearch.cli.reference --write README.md"


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    commands = re.findall(r"^\s*(make \w+)\s*$", README, re.M)
    assert commands[:2] == ["make demo", "make test"]
    assert "make test" in ci.splitlines()


def _block_after(marker: str) -> str:
    start = README.index("```", README.index(marker))
    body_start = README.index("\n", start) + 1
    return README[body_start : README.index("```", body_start)]


@pytest.fixture
def home_with_photos(tmp_path, monkeypatch, tiny_model):
    """A $HOME whose ~/Photos is a copy of sample_photos, and the tiny model as the default model."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("IMGSEARCH_MODEL", tiny_model)
    shutil.copytree(REPO / "sample_photos", tmp_path / "Photos", ignore=shutil.ignore_patterns("*.md"))
    return tmp_path


def test_readme_query_examples_run(home_with_photos):
    from click.testing import CliRunner

    from imgsearch.cli import main

    commands = [line for line in _block_after("<!-- query-examples -->").splitlines() if line.strip()]
    assert len(commands) >= 6
    for line in commands:
        argv = [os.path.expanduser(arg) for arg in shlex.split(line)]
        assert argv[0] == "imgsearch"
        result = CliRunner().invoke(main, argv[1:], catch_exceptions=False)
        assert result.exit_code == 0, (line, result.output)
        if "--paths" in argv:
            assert all(os.path.isfile(p) for p in result.output.splitlines())


def test_readme_python_example_runs(home_with_photos, capsys):
    code = _block_after("## Python API")
    assert "from imgsearch import" in code
    exec(compile(code, "README.md", "exec"), {})
    assert "34 new" in capsys.readouterr().out

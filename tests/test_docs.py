"""The README stays true: its CLI reference is the real --help, and its two commands are the Makefile's."""

from __future__ import annotations

import re

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

"""The CLI reference in the README, generated from --help so it never drifts (a test compares them).

Rewrite the README's section with:  python -m imgsearch.cli.reference --write README.md
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from . import main

START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"


def _help(command: click.Command, name: str, parent: click.Context | None = None) -> str:
    ctx = click.Context(
        command,
        info_name=name,
        parent=parent,
        terminal_width=100,
        max_content_width=100,
        **main.context_settings,
    )
    return command.get_help(ctx)


def markdown() -> str:
    """Every command's --help, as the README shows it."""
    root = click.Context(main, info_name="imgsearch", **main.context_settings)
    parts = ["```", _help(main, "imgsearch"), "```"]
    for name in sorted(main.commands):
        parts += ["", f"### `imgsearch {name}`", "", "```", _help(main.commands[name], name, root), "```"]
    return "\n".join(parts)


def replace_section(text: str) -> str:
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{START}\n{markdown()}\n{END}", text)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--write"]:
        readme = Path(sys.argv[2])
        readme.write_text(replace_section(readme.read_text()))
    else:
        print(markdown())

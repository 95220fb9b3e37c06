"""`imgsearch duplicates`: groups of byte-identical and near-identical images."""

from __future__ import annotations

import json
from typing import Any

import click

from ..search.duplicates import DEFAULT_THRESHOLD
from .options import library_options, open_library
from .output import display_path


@click.command()
@click.argument("folder", required=False, type=click.Path(file_okay=False))
@click.option(
    "--threshold",
    type=float,
    default=DEFAULT_THRESHOLD,
    show_default=True,
    help="Lowest cosine similarity that makes two images copies, above 0 and at most 1; higher is stricter.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per group per line: kind, score, paths."
)
@library_options
def duplicates(folder: str | None, threshold: float, as_json: bool, **options: Any) -> None:
    """Find groups of copies among the indexed images (only those in FOLDER when given).

    "exact" groups are byte-identical files; "near" groups look the same (resized, recompressed or lightly
    edited copies), joined in chains: if a~b and b~c, all three are one group. A near group's score is its
    weakest link. Uses the stored vectors only: nothing is re-encoded.
    """
    groups = open_library(**options).duplicates(folder, threshold)
    for number, group in enumerate(groups):
        if as_json:
            item = group.to_dict()
            item["paths"] = [display_path(p) for p in group.paths]
            click.echo(json.dumps(item, ensure_ascii=False))
            continue
        if number:
            click.echo()
        if group.kind == "exact":
            click.echo(f"exact: {len(group.paths)} copies")
        else:
            click.echo(f"near (>= {group.score:.4f}): {len(group.paths)} images")
        for path in group.paths:
            click.echo(f"  {display_path(path)}")


COMMANDS = [duplicates]

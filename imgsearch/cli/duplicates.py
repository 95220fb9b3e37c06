"""`imgsearch duplicates`: groups of byte-identical and near-identical images."""

from __future__ import annotations

import json
from typing import Any

import click
from click.core import ParameterSource

from ..search.duplicates import DEFAULT_THRESHOLD, DuplicateGroup
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
    "--exact",
    "exact_only",
    is_flag=True,
    help="Only the sets of byte-identical files, each a group of its own, also those inside a near group "
    "(no --threshold).",
)
@click.option(
    "--explain",
    is_flag=True,
    help="Show the links that join each group, strongest first: same bytes, or the cosine of two images.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object per group per line: kind, score, paths, exact (the byte-identical sets); with "
    "--explain also links.",
)
@library_options
@click.pass_context
def duplicates(
    ctx: click.Context,
    folder: str | None,
    threshold: float,
    exact_only: bool,
    explain: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Find groups of copies among the indexed images (only those in FOLDER when given).

    "exact" groups are byte-identical files; "near" groups look the same (resized, recompressed or lightly
    edited copies), joined in chains: if a~b and b~c, all three are one group, however far apart a and c
    are. A near group's score is its weakest link. Byte-identical files inside a near group are listed
    under it as "exact"; --exact lists every set of byte-identical files and nothing else. --explain
    shows the links that chain each group together. Nothing is re-encoded: stored vectors only.
    """
    if exact_only and ctx.get_parameter_source("threshold") is not ParameterSource.DEFAULT:
        raise click.UsageError("--exact finds byte-identical files: --threshold does not apply")
    groups = open_library(**options).duplicates(folder, threshold, exact_only)
    for number, group in enumerate(groups):
        if as_json:
            click.echo(json.dumps(group.to_dict(links=explain, show=display_path), ensure_ascii=False))
            continue
        if number:
            click.echo()
        _print_group(group, explain)


def _print_group(group: DuplicateGroup, explain: bool) -> None:
    if group.kind == "exact":
        click.echo(f"exact: {len(group.paths)} copies")
    else:
        click.echo(f"near (>= {group.score:.4f}): {len(group.paths)} images")
    for path in group.paths:
        click.echo(f"  {display_path(path)}")
    if group.kind != "exact":
        for copies in group.exact:
            click.echo(f"  exact: {len(copies)} copies")
            for path in copies:
                click.echo(f"    {display_path(path)}")
    if explain:
        click.echo("  links, strongest first:")
        for link in group.links:
            first, second = (display_path(p) for p in link.paths)
            if link.exact:
                click.echo(f"     exact  {first} = {second}")
            else:
                click.echo(f"    {link.score:.4f}  {first} ~ {second}")


COMMANDS = [duplicates]

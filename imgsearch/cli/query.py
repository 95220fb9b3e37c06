"""`imgsearch query` and `imgsearch similar`: find pictures by words or by example."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from .options import library_options, open_library
from .output import print_matches


def result_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """How many results, where from, and how to print them."""
    decorators = [
        click.option(
            "-n", "--top", type=click.IntRange(min=1), default=10, show_default=True, help="How many results."
        ),
        click.option(
            "--in", "under", type=click.Path(file_okay=False), help="Only results inside this folder."
        ),
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            help="One JSON object per line: path, score, width, height, format, size, mtime.",
        ),
        click.option("--paths", "paths_only", is_flag=True, help="Paths only, one per line, for piping."),
        click.option(
            "-0", "--null", "nul", is_flag=True, help="Paths only, separated by NUL bytes (xargs -0)."
        ),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def _check_output(as_json: bool, paths_only: bool, nul: bool) -> None:
    if as_json and (paths_only or nul):
        raise click.UsageError("--json cannot be combined with --paths or -0")


@click.command()
@click.argument("text", required=False)
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False),
    help="Find images that look like this one instead (it is never in its own results).",
)
@result_options
@library_options
def query(
    text: str | None,
    image: str | None,
    top: int,
    under: str | None,
    as_json: bool,
    paths_only: bool,
    nul: bool,
    **options: Any,
) -> None:
    """Find pictures that match TEXT (a description), or that look like --image, best first.

    Scores are cosine similarities between the query and each picture.
    """
    _check_output(as_json, paths_only, nul)
    if (text is None) == (image is None):
        raise click.UsageError("give either TEXT or --image (one of them)")
    library = open_library(**options)
    if image is not None:
        matches = library.similar(image, top=top, under=under)
    else:
        assert text is not None
        matches = library.search(text, top=top, under=under)
    print_matches(matches, as_json, paths_only, nul)


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@result_options
@library_options
def similar(
    image: str, top: int, under: str | None, as_json: bool, paths_only: bool, nul: bool, **options: Any
) -> None:
    """Find pictures that look like IMAGE (indexed or not); IMAGE itself is left out."""
    _check_output(as_json, paths_only, nul)
    matches = open_library(**options).similar(image, top=top, under=under)
    print_matches(matches, as_json, paths_only, nul)


COMMANDS = [query, similar]

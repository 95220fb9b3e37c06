"""`imgsearch reindex --model NEW`: move an index to another model, re-encoding every image."""

from __future__ import annotations

import sys
from typing import Any

import click

from .index import TerminalProgress
from .options import library_options, open_library, ray_option, workers_option
from .output import display_path


@click.command()
@library_options
@workers_option
@ray_option("Decode and embed on a Ray cluster, as for `index --ray`.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary; skipped files are listed.")
def reindex(workers: int | None, ray: str | None, quiet: bool, **options: Any) -> None:
    """Move the index to another model (--model NEW): re-encode every indexed image with it, then switch.

    \b
      imgsearch reindex --model ViT-L-14:laion2b_s32b_b82k

    Queries go on answering with the old model until every image has its new vector; then the index
    switches in one step, and the first query on each machine rebuilds its search index. Interrupted, a
    reindex keeps what it did: run it again with the same model to go on (another model starts over).
    Files that cannot be read now are listed and leave the index (a bad file is recorded as one, as
    `index` does); so do files changed or deleted since the last `index` (run it after). To the model the
    index already has, it re-encodes nothing and says so.
    """
    model = options.get("model")
    if not model:
        raise click.UsageError(
            "reindex needs the new model: --model NAME:TAG, hf-hub:ORG/REPO or local-dir:DIR"
        )
    library = open_library(workers=workers, **options)
    progress = TerminalProgress(show_bars=not quiet and sys.stderr.isatty())
    try:
        report = library.reindex(model, events=progress, ray=ray)
    finally:
        progress.close()
    for path, reason in report.gone:  # the files that could not be read were listed as they failed
        click.echo(f"left the index: {display_path(library.local_path(path))}: {reason}", err=True)
    if not quiet:
        click.echo(report.summary())


COMMANDS = [reindex]

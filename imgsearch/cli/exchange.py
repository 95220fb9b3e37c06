"""`imgsearch export` and `imgsearch import`: the index's vectors out as Parquet, and vectors made elsewhere
back in without re-encoding."""

from __future__ import annotations

import sys
from typing import Any

import click

from .index import TerminalProgress
from .options import library_options, open_library
from .output import display_path


@click.command()
@click.argument("out", type=click.Path(file_okay=False))
@library_options
def export(out: str, **options: Any) -> None:
    """Write every vector with its path and metadata as a Parquet dataset in the folder OUT.

    OUT gets part-00000.parquet, part-00001.parquet ... (100,000 rows each) and a _SUCCESS manifest, and
    appears only when complete; an earlier export there is replaced. pyarrow, pandas, DuckDB and Spark
    read it as it is. The model, vector size and numerics are in the schema's metadata (imgsearch.*).
    """
    library = open_library(**options)
    click.echo(library.export_embeddings(out).summary())


@click.command("import")
@click.argument("dataset", type=click.Path(exists=True))
@click.argument("folders", nargs=-1, type=click.Path(exists=True, file_okay=False))
@library_options
@click.option(
    "-q", "--quiet", is_flag=True, help="No progress bar and no summary; problems are still listed."
)
def import_(dataset: str, folders: tuple[str, ...], quiet: bool, **options: Any) -> None:
    """Give the images in FOLDERS (or, with none, every folder indexed before) the vectors DATASET has for
    them, without re-encoding.

    DATASET is an `imgsearch export` folder, clip-retrieval's output (img_emb/ and metadata/), or Parquet
    files with a path (or image_path) column and an embedding list column, e.g. from a Spark job. A row
    matches a file by its content_hash, wherever the file is now, or else by its path. A dataset that does
    not record its model needs --model, naming the model its vectors were made with; vectors of another
    model or size than the index's are refused. Images with no vector in DATASET are left for
    `imgsearch index`; no model is loaded.
    """
    library = open_library(**options)
    progress = TerminalProgress(show_bars=not quiet and sys.stderr.isatty())
    try:
        report = library.import_embeddings(dataset, folders, events=progress)
    finally:
        progress.close()
    for folder, reason in report.unreadable:
        click.echo(f"warning: cannot read {display_path(folder)}: {reason}", err=True)
    for root in report.missing_roots:
        click.echo(f"warning: {display_path(root)} is not there (unplugged?)", err=True)
    for path, reason in report.bad_row_examples:
        click.echo(f"refused the row of {display_path(path)}: its vector is {reason}", err=True)
    if report.bad_rows > len(report.bad_row_examples):
        click.echo(f"... and {report.bad_rows - len(report.bad_row_examples)} more rows refused", err=True)
    if quiet:
        return
    click.echo(report.summary())
    if report.without_vector:
        click.echo(
            f"{report.without_vector} files had no vector in the dataset; `imgsearch index` will encode them"
        )


COMMANDS = [export, import_]

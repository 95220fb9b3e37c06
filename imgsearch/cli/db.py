"""`imgsearch db`: the catalog's database itself (moving a library between SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import click

from .options import library_options, open_library


@click.group()
def db() -> None:
    """Work with the database that holds the catalog (see --db)."""


@db.command()
@click.option(
    "--to",
    "target",
    required=True,
    metavar="URL|FOLDER",
    help="Where to copy the catalog: postgresql://USER@HOST/DBNAME (an empty database), sqlite:///FILE, "
    "or a folder to hold a new index.db.",
)
@library_options
def copy(target: str, **options: Any) -> None:
    """Copy this library's catalog, every row and vector, into another database, re-encoding nothing.

    \b
      imgsearch db copy --to postgresql://photos@nas/imgsearch     SQLite -> PostgreSQL
      imgsearch --db postgresql://photos@nas/imgsearch ... (every command then uses it)
      imgsearch db copy --db postgresql://photos@nas/imgsearch --to ~/imgsearch-home   and back

    The copy is checked equal (rows and a digest of every vector) before it counts. An interrupted or
    failed copy leaves no library in the target. The source is locked for writing meanwhile; readers go on.
    The FAISS index is derived: each machine rebuilds its own on the first query.
    """
    report = open_library(**options).copy_database(target)
    click.echo(report.summary())


COMMANDS = [db]

"""`imgsearch status`: what is indexed, with which model, where, and what failed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..model.numerics import QUERY_PRECISION
from .options import library_options, open_library
from .output import display_path


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
@click.option("--failures", is_flag=True, help="List every file that could not be indexed, with the reason.")
@library_options
def status(as_json: bool, failures: bool, **options: Any) -> None:
    """Show what is indexed: images, folders, model, where the index lives, and failures."""
    from ..errors import IndexNotFound

    library = open_library(**options)
    try:
        info = library.status()
    except IndexNotFound:
        if as_json:
            shown = library.database.shown
            click.echo(json.dumps({"home": str(library.home), "database": shown, "images": 0, "model": None}))
        else:
            click.echo(f"no index {library.database.place} yet: run `imgsearch index FOLDER`")
        return
    if failures:
        for path, reason in library.failures():
            click.echo(f"{display_path(path)}: {reason}")
        return
    if as_json:
        click.echo(json.dumps(info.to_dict()))
        return
    model = f"{info.model} ({info.dim}-d)" if info.model else "none yet"
    click.echo(f"index     {info.home}")
    if info.database != str(Path(info.home) / "index.db"):
        click.echo(f"catalog   {info.database}")
    click.echo(f"model     {model}")
    if info.model:
        made = info.numerics or "not recorded (indexed by an older imgsearch)"
        click.echo(f"numerics  image vectors {made}; queries {QUERY_PRECISION}")
    note = f" ({info.failures} could not be read: `imgsearch status --failures`)" if info.failures else ""
    click.echo(f"images    {info.images:,}{note}")
    if info.reindex_model:
        click.echo(
            f"reindex   to {info.reindex_model}: {info.reindex_staged:,} of {info.images:,} images "
            f"re-encoded; queries use {info.model} until it is done (`imgsearch reindex --model "
            f"{info.reindex_model}` resumes it if it was interrupted)"
        )
    if info.search_index:
        click.echo(f"search    {info.search_index}")
    for i, root in enumerate(info.roots):
        label = "folders" if i == 0 else ""
        gone = "" if root.present else " (not there now)"
        bad = f", {root.failures} failed" if root.failures else ""
        click.echo(f"{label:<9} {display_path(root.path)}{gone}: {root.images:,} images{bad}")
    if info.formats:
        click.echo(f"formats   {', '.join(f'{fmt} {n:,}' for fmt, n in info.formats.items())}")
    click.echo(f"decoders  {', '.join(f'{name} {version}' for name, version in info.decoders.items())}")
    exports = f"; exports {info.exports_bytes / 1e6:.1f} MB in {info.cache}" if info.exports_bytes else ""
    click.echo(f"on disk   {info.disk_bytes / 1e6:.1f} MB index{exports}")


COMMANDS = [status]

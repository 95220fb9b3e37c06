"""`imgsearch index`: add folders and bring the index up to date."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from ..index.events import IndexEvents
from . import LOADED_AT
from .options import library_options, open_library, ray_option, workers_option
from .output import display_path


class TerminalProgress(IndexEvents):
    """Progress bars with rate and ETA on stderr when it is a terminal; failures as one line each."""

    def __init__(self, show_bars: bool):
        self.show_bars = show_bars
        self.bar: Any = None

    def phase(self, name: str, total: int) -> None:
        self.close()
        if self.show_bars:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=name, unit="img", file=sys.stderr, dynamic_ncols=True)

    def loading_model(self, model_id: str) -> None:
        self.close()
        if self.show_bars:
            click.echo(f"loading model {model_id}", err=True)

    def preparing(self, what: str) -> None:
        self.close()
        if self.show_bars:
            click.echo(what, err=True)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def failed(self, path: bytes, reason: str) -> None:
        line = f"skipped {display_path(path)}: {reason}"
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            click.echo(line, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@click.command()
@click.argument("folders", nargs=-1, type=click.Path(exists=True, file_okay=False))
@library_options
@workers_option
@ray_option(
    "Decode and embed new photos on a Ray cluster: HOST:PORT of its head, 'auto' (the default "
    "when ADDRESS is left out: the cluster this machine is part of, else one started here) or 'local'. "
    "Needs pip install 'imgsearch[ray]'; every node must see the folders at the same paths."
)
@click.option(
    "-q", "--quiet", is_flag=True, help="No progress bar and no summary; failures are still listed."
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Say where the time went (imports, scan, model, encode, commit, save, export) and which engine "
    "embedded the images, and why.",
)
def index(
    folders: tuple[str, ...],
    workers: int | None,
    ray: str | None,
    quiet: bool,
    verbose: bool,
    **options: Any,
) -> None:
    """Index FOLDERS (or, with none, every folder indexed before).

    The first run embeds every image; later runs look only at what changed: new and changed files are
    embedded, moved, renamed and copied files reuse their stored vectors, deleted files leave the index.
    Files that cannot be read as images are listed and skipped until they change.
    """
    library = open_library(workers=workers, **options)
    imports = time.perf_counter() - LOADED_AT  # the command line and the library (SQLAlchemy, NumPy)
    progress = TerminalProgress(show_bars=not quiet and sys.stderr.isatty())
    try:
        report = library.index(folders, events=progress, ray=ray)
    finally:
        progress.close()
    for folder, reason in report.unreadable:
        click.echo(f"warning: cannot read {display_path(folder)}: {reason}; its images are kept", err=True)
    for root in report.missing_roots:
        click.echo(f"warning: {display_path(root)} is not there (unplugged?); its images are kept", err=True)
    if not quiet:
        if report.nodes:
            shown = ", ".join(f"{node} ({n})" for node, n in sorted(report.nodes.items()))
            click.echo(f"decoded on {len(report.nodes)} Ray node(s): {shown}", err=True)
        click.echo(report.summary())
    if verbose:
        phases = {"imports": imports, **report.phases}
        click.echo("time: " + ", ".join(f"{name} {s:.2f} s" for name, s in phases.items()), err=True)
        if report.engine:
            click.echo(f"engine: {report.engine}", err=True)


COMMANDS = [index]

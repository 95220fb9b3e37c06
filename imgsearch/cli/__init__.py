"""The command line: a thin layer over `imgsearch.Library`. Each command parses, calls, prints."""

from __future__ import annotations

import time

#: When the command line started loading (for `index -v`: what imports cost before any work).
LOADED_AT = time.perf_counter()

import sys  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

from .. import __version__  # noqa: E402


class Commands(click.Group):
    """Turns the library's errors into one clear line: exit 1 for runtime errors, 2 for usage errors."""

    def invoke(self, ctx: click.Context) -> Any:
        from ..errors import ImgsearchError, UsageError

        try:
            return super().invoke(ctx)
        except UsageError as e:
            raise click.UsageError(str(e)) from e
        except ImgsearchError as e:
            raise click.ClickException(str(e)) from e
        except KeyboardInterrupt:
            click.echo("imgsearch: interrupted; work committed so far is kept", err=True)
            sys.exit(130)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="imgsearch")
def main() -> None:
    """Search your photo folders by words or by example image.

    \b
      imgsearch index ~/Photos                 index a folder (later runs only what changed)
      imgsearch query "a red apple on a table" find pictures by description
      imgsearch similar ~/Photos/cat.jpg       find pictures that look like this one
      imgsearch classify ~/Photos --labels cat dog car   label every picture (zero-shot)
      imgsearch duplicates ~/Photos            groups of copies, exact and near
      imgsearch eval captions.csv              how well the model finds your photos (Recall@K)
      imgsearch status                         what is indexed, and where
      imgsearch reindex --model NAME:TAG       move the index to another model (queries go on)
      imgsearch watch ~/Photos                 keep the index live as photos arrive, move, disappear
      imgsearch serve                          search in a web page (and a JSON API) at localhost:8765
      imgsearch export vectors/                every vector and its metadata as Parquet (import reads it back)
      imgsearch db copy --to postgresql://photos@nas/imgsearch   move the catalog to a shared server

    The index lives in a per-user data folder; --home DIR or IMGSEARCH_HOME puts it elsewhere. --db URL or
    IMGSEARCH_DB keeps its catalog in PostgreSQL, shared by several machines (see the README).
    """


def run() -> None:
    """The `imgsearch` command: `main`, then an exit that skips tearing torch down (over a second, and
    nothing of ours is left to flush by then: the catalog is closed, the FAISS file synced)."""
    try:
        main()
    except SystemExit as done:
        code = done.code
    else:
        code = 0
    if isinstance(code, int | None) and "torch" in sys.modules and "ray" not in sys.modules:
        import logging
        import multiprocessing.util
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        multiprocessing.util._exit_function()  # type: ignore[attr-defined]  # its atexit hook: the pool semaphores
        os._exit(code or 0)  # Ray, when loaded, must shut its local cluster down at exit: not skipped
    sys.exit(code)


def _register() -> None:
    from . import (
        classify,
        db,
        duplicates,
        evaluate,
        exchange,
        index,
        models,
        query,
        reindex,
        save_model,
        serve,
        status,
        watch,
    )

    for module in (
        index,
        reindex,
        query,
        status,
        models,
        classify,
        duplicates,
        evaluate,
        watch,
        serve,
        exchange,
        db,
        save_model,
    ):
        for command in module.COMMANDS:
            main.add_command(command)


_register()

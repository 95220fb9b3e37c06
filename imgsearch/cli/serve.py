"""`imgsearch serve`: the web page and JSON API over the index, from one warm process."""

from __future__ import annotations

import logging
from typing import Any

import click

from .options import library_options, open_library


@click.command()
@click.argument("folders", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port (0: any free one)."
)
@click.option(
    "--token",
    envvar="IMGSEARCH_TOKEN",
    help="Require this token on every request (Authorization: Bearer TOKEN, or ?token=TOKEN) "
    "[env IMGSEARCH_TOKEN].",
)
@click.option(
    "--poll", is_flag=True, help="With FOLDERS: poll for changes instead of OS events (network drives)."
)
@click.option(
    "-j",
    "--workers",
    type=click.IntRange(min=1),
    help="With FOLDERS: decoding processes [default: one per core].",
)
@library_options
def serve(
    folders: tuple[str, ...],
    host: str,
    port: int,
    token: str | None,
    poll: bool,
    workers: int | None,
    **options: Any,
) -> None:
    """Serve the index as a web page and a JSON API until Ctrl-C, indexing FOLDERS too.

    \b
      imgsearch serve                       then open the printed URL
      imgsearch serve ~/Photos              index ~/Photos, follow its changes, serve all the while
      imgsearch serve --port 9000 --token s3cret

    The page searches by words (the query syntax of `imgsearch query`), by a dropped, pasted or chosen
    image, and by "more like this"; a search is in the page's address, to bookmark or share, and the arrow
    keys step through the results in the full-size view. Thumbnails are cached in the index folder. The API
    is described at /api/openapi.json. Several people can search at once. Serves the whole index and only
    files that are in it, and sees its updates without a restart.

    Without FOLDERS another process keeps the index (`imgsearch index` or `watch`). With FOLDERS this
    process also does what `imgsearch watch FOLDERS` does, in the background: it indexes them and follows
    their changes, answers meanwhile from what is indexed so far, shows on the page how far it got, and
    logs to stderr. It is then the index's one writer: if another process writes to the index, the page
    and stderr say so and it only serves.

    It listens on this machine only unless --host says otherwise; then use a --token.
    """
    from ..errors import ImgsearchError, IndexNotFound
    from ..serve.info import reader_key
    from ..serve.server import is_loopback
    from ..serve.server import serve as run

    if token is not None and not token.strip():
        raise click.UsageError("--token must not be empty")
    if not folders and (poll or workers is not None):
        raise click.UsageError("--poll and --workers are for indexing: give the FOLDERS to index")
    reader = reader_key(
        options["db"], options["path_map"], options["lang"]
    )  # what server.json says this server reads
    library = open_library(workers=workers, **options)
    try:
        if not folders and not library.has_index():
            raise IndexNotFound(f"no index at {library.home} yet: run `imgsearch index FOLDER`")
        spec = library.model_spec()
        click.echo(f"imgsearch: loading {spec.id}", err=True)
        library.warm_up()  # now, so the first query is as fast as the rest
    except ImgsearchError as e:  # no index yet, or no weights: the page and the API say why
        click.echo(f"imgsearch: warning: {e}", err=True)
    if not is_loopback(host):
        click.echo(
            f"imgsearch: warning: listening on {host}, not just this machine: anyone who can reach it can "
            + (
                "search the index (with the token)"
                if token
                else "search the index and see its photos; set --token"
            ),
            err=True,
        )

    def ready(url: str) -> None:
        shown = f"{url}?token={token}" if token else url
        click.echo(f"imgsearch: serving {library.home} at {shown} (Ctrl-C to stop)")

    if not folders:
        run(library, host, port, token, on_ready=ready, reader=reader)
        return
    from .watch import _setup_logging  # the log of `imgsearch watch`: what each batch did, bad files

    handler = _setup_logging(verbose=False, quiet=False)
    try:
        run(library, host, port, token, on_ready=ready, folders=folders, poll=poll, reader=reader)
    finally:
        for name in ("imgsearch", "watchdog"):
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).propagate = True


COMMANDS = [serve]

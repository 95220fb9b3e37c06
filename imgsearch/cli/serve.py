"""`imgsearch serve`: the web page and JSON API over the index, from one warm process."""

from __future__ import annotations

from typing import Any

import click

from .options import library_options, open_library


@click.command()
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
@library_options
def serve(host: str, port: int, token: str | None, **options: Any) -> None:
    """Serve the index as a web page and a JSON API, until Ctrl-C.

    \b
      imgsearch serve                       then open the printed URL
      imgsearch serve --port 9000 --token s3cret

    The page searches by words (the query syntax of `imgsearch query`), by a dropped, pasted or chosen
    image, and by "more like this"; thumbnails are cached in the index folder. The API is described at
    /api/openapi.json. Serves the whole index (index folders with `imgsearch index` or `watch`; the server
    sees their updates without a restart) and only files that are in it. It listens on this machine only
    unless --host says otherwise; then use a --token.
    """
    from ..errors import ImgsearchError, IndexNotFound
    from ..serve.server import is_loopback
    from ..serve.server import serve as run

    if token is not None and not token.strip():
        raise click.UsageError("--token must not be empty")
    library = open_library(**options)
    try:
        if not library.db_path.exists():
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

    run(library, host, port, token, on_ready=ready)


COMMANDS = [serve]

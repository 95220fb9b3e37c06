"""Options shared by the commands that open an index."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..model.numerics import DEVICES, PRECISIONS


def library_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--home, --db, --path-map, --model, --lang, --device and --precision, read from the environment too."""
    return _decorate(command, _options(model=True))


def library_options_but_model(command: Callable[..., Any]) -> Callable[..., Any]:
    """The same without --model, for a command whose --model means something else (`eval`)."""
    return _decorate(command, _options(model=False))


def _decorate(command: Callable[..., Any], decorators: list[Callable[..., Any]]) -> Callable[..., Any]:
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def _options(model: bool) -> list[Callable[..., Any]]:
    decorators = [
        click.option(
            "--home",
            type=click.Path(file_okay=False),
            envvar="IMGSEARCH_HOME",
            help="Folder that holds the index [env IMGSEARCH_HOME; default: the per-user data folder].",
        ),
        click.option(
            "--db",
            envvar="IMGSEARCH_DB",
            metavar="URL",
            help="Keep the catalog in this database: postgresql://USER@HOST/DBNAME for a library several "
            "machines share (password from PGPASSWORD or ~/.pgpass), or a SQLite file [env IMGSEARCH_DB; "
            "default: index.db in the home folder].",
        ),
        click.option(
            "--path-map",
            "path_map",
            multiple=True,
            metavar="STORED=LOCAL",
            help="Read the folder the catalog stores as STORED at LOCAL on this machine (a share mounted "
            "elsewhere); repeatable [env IMGSEARCH_PATH_MAP, pairs separated by ':'].",
        ),
        click.option(
            "--lang",
            envvar="IMGSEARCH_LANG",
            metavar="CODE",
            help="The language of query and label texts, for NLLB-CLIP, whose tokenizer takes it as a code "
            "such as deu_Latn or jpn_Jpan [env IMGSEARCH_LANG; default: from each text's script, Latin "
            "script read as eng_Latn]. Other models ignore it.",
        ),
        click.option(
            "--device",
            type=click.Choice(DEVICES),
            default="auto",
            show_default=True,
            help="Where the model runs: CUDA, then Apple MPS, then CPU.",
        ),
        click.option(
            "--precision",
            type=click.Choice(PRECISIONS),
            default="auto",
            show_default=True,
            help="Numerics of the image vectors indexing stores: auto is fp16 on GPUs, bf16 on CPUs that "
            "compute it natively, else fp32. Queries are always embedded in fp32.",
        ),
    ]
    if model:
        decorators.insert(3, _MODEL)
    return decorators


_MODEL = click.option(
    "--model",
    envvar="IMGSEARCH_MODEL",
    help="NAME:TAG, hf-hub:ORG/REPO or local-dir:FOLDER [env IMGSEARCH_MODEL; default: the "
    "index's own model, or ViT-B-32:laion2b_s34b_b79k for a new index].",
)


def open_library(
    home: str | None,
    db: str | None,
    path_map: tuple[str, ...],
    model: str | None,
    lang: str | None,
    device: str,
    precision: str,
    **extra: Any,
) -> Any:
    from ..library import Library

    library = Library(
        home,
        model=model,
        device=device,
        precision=precision,
        db=db,
        path_map=path_map or None,
        lang=lang,
        **extra,
    )
    library.runtime.one_off = True  # the background exporter lets this process exit before it starts
    return library


#: -j/--workers, for the commands that decode images (index, watch, reindex).
workers_option = click.option(
    "-j", "--workers", type=click.IntRange(min=1), help="Decoding processes [default: one per core]."
)


def ray_option(help: str) -> Callable[..., Any]:
    """--ray [ADDRESS], for the commands that can decode and embed on a Ray cluster."""
    return click.option("--ray", "ray", is_flag=False, flag_value="auto", metavar="ADDRESS", help=help)

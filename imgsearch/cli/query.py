"""`imgsearch query` and `imgsearch similar`: find pictures by words, by example, or both."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import click

from .classify import label_options, labels_from
from .options import library_options, open_library
from .output import print_matches


def _date(value: str, end_of_day: bool) -> float:
    """YYYY-MM-DD (a whole day) or YYYY-MM-DDTHH:MM[:SS], local time, as a Unix time."""
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            moment = datetime.strptime(value, fmt)
        except ValueError:
            continue
        if end_of_day and fmt == "%Y-%m-%d":
            moment += timedelta(days=1)  # --before 2023-12-31 includes that day
        return time.mktime(moment.timetuple())
    raise click.BadParameter(f"{value!r} is not a date like 2023-12-31 or 2023-12-31T18:00")


def result_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """How many results, which files may be returned, and how to print them."""
    decorators = [
        click.option(
            "-n", "--top", type=click.IntRange(min=1), default=10, show_default=True, help="How many results."
        ),
        click.option(
            "--in", "under", type=click.Path(file_okay=False), help="Only files inside this folder."
        ),
        click.option("--glob", help="Only paths matching this pattern ('*' also matches '/'), e.g. '*.png'."),
        click.option("--after", help="Only photos taken (else modified) on or after this date, YYYY-MM-DD."),
        click.option("--before", help="Only photos taken (else modified) before the end of this date."),
        click.option("--min-width", type=click.IntRange(min=1), help="Only images at least this wide (px)."),
        click.option("--min-height", type=click.IntRange(min=1), help="Only images at least this tall (px)."),
        click.option(
            "--type",
            "types",
            multiple=True,
            help="Only these file types: jpeg, png, heic, raw (every camera RAW), cr2, dng, psd, ... "
            "(repeat or comma-separate).",
        ),
        click.option("--min-score", type=float, help="Leave out matches scoring below this cosine."),
        click.option(
            "--sort",
            type=click.Choice(["score", "date"]),
            default="score",
            show_default=True,
            help="Order of the top matches: best first, or newest first.",
        ),
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            help="One JSON object per line: path, score, width, height, format, size, mtime, taken_at, id.",
        ),
        click.option("--paths", "paths_only", is_flag=True, help="Paths only, one per line, for piping."),
        click.option(
            "--no-server",
            is_flag=True,
            help="Answer in this process even when `imgsearch serve` runs for this index (by default a "
            "running server answers: its model is already loaded).",
        ),
        click.option(
            "-0", "--null", "nul", is_flag=True, help="Paths only, separated by NUL bytes (xargs -0)."
        ),
        click.option(
            "--label",
            "wanted_labels",
            multiple=True,
            metavar="LABEL",
            help="Only images whose most probable zero-shot label is LABEL (repeatable: any of them), "
            "among the labels given with --labels (see `imgsearch classify`).",
        ),
        click.option(
            "--preview",
            type=click.Choice(["auto", "kitty", "iterm2", "sixel"]),
            is_flag=False,
            flag_value="auto",
            help="Thumbnails inline in terminals that show images (kitty, iTerm2, WezTerm, sixel); "
            "--preview alone detects the terminal and shows nothing elsewhere.",
        ),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return label_options(command)


def _run(terms: list[Any], options: dict[str, Any]) -> None:
    """Build the filters from the shared options, query, print."""
    from ..search.query import Filters

    as_json, paths_only, nul = options.pop("as_json"), options.pop("paths_only"), options.pop("nul")
    if as_json and (paths_only or nul):
        raise click.UsageError("--json cannot be combined with --paths or -0")
    after, before = options.pop("after"), options.pop("before")
    types = options.pop("types")
    wanted, labels, labels_file = (
        options.pop("wanted_labels"),
        options.pop("labels"),
        options.pop("labels_file"),
    )
    if (labels or labels_file) and not wanted:
        raise click.UsageError("--labels goes with --label: the label to keep, among them")
    filters = Filters(
        labels=wanted or None,
        label_set=tuple(labels_from(labels, labels_file)) if labels or labels_file else (),
        under=options.pop("under"),
        glob=options.pop("glob"),
        after=_date(after, end_of_day=False) if after else None,
        before=_date(before, end_of_day=True) if before else None,
        min_width=options.pop("min_width"),
        min_height=options.pop("min_height"),
        formats=Filters.formats_for(list(types)) if types else None,
    )
    top, min_score, sort = options.pop("top"), options.pop("min_score"), options.pop("sort")
    preview, use_server = options.pop("preview"), not options.pop("no_server")
    _hint(terms, options)
    matches = None
    if use_server:  # query vectors are fp32 on every path, so a server gives this process's answer
        matches = _via_server(terms, top, filters, min_score, sort, options)
    if matches is None:
        matches = open_library(**options).query(terms, top, filters, min_score, sort)
    if preview == "auto":
        from .preview import detect

        preview = detect()
    print_matches(matches, as_json, paths_only, nul, preview)


def _hint(terms: list[Any], options: dict[str, Any]) -> None:
    """Say on stderr when a text is in a script the index's English-only model cannot read. Only texts
    outside ASCII cost anything here (opening the catalog for its model)."""
    texts = [term.value for term in terms if term.kind == "text" and not term.value.isascii()]
    if texts:
        hint = open_library(**options).language_hint(texts)
        if hint:
            click.echo(f"imgsearch: {hint}", err=True)


def _via_server(
    terms: list[Any],
    top: int,
    filters: Any,
    min_score: float | None,
    sort: str,
    options: dict[str, Any],
) -> list[Any] | None:
    """The answer of a running `imgsearch serve` for this index (its model is warm: no seconds of loading
    here), or None when there is none or it cannot answer."""
    from pathlib import Path

    from ..home import default_home
    from ..model.specs import parse_model_spec
    from ..serve.client import query_via_server
    from ..serve.info import reader_key
    from ..serve.wire import Query

    home, model = options["home"], options["model"]
    folder = Path(home).expanduser() if home else default_home()
    model_id = parse_model_spec(model).id if model else None
    reader = reader_key(options["db"], options["path_map"], options["lang"])
    return query_via_server(folder, Query(terms, top, filters, min_score, sort), model_id, reader)


@click.command()
@click.argument("texts", nargs=-1)
@click.option("--image", help="Images that look like this one (it is never in its own results).")
@click.option(
    "--like",
    "likes",
    multiple=True,
    metavar="[W:]IMAGE",
    help="Pull results towards this example image (repeatable; optional weight W).",
)
@click.option(
    "--not",
    "nots",
    multiple=True,
    metavar="[W:]TEXT",
    help="Push results away from this description (repeatable; optional weight W).",
)
@result_options
@library_options
def query(
    texts: tuple[str, ...], image: str | None, likes: tuple[str, ...], nots: tuple[str, ...], **options: Any
) -> None:
    """Find pictures that match TEXTS (descriptions), example images, or both; best first.

    \b
      imgsearch query "a red apple on a table"
      imgsearch query "beach at sunset" --not people
      imgsearch query dog --like ~/Photos/rex.jpg
      imgsearch query "2:mountain lake" "1:winter"          weights: W:TEXT

    Each term is embedded as a unit vector; the query is their weighted sum, normalised: weights (default 1)
    say how much a term counts, --not subtracts. To search for text that itself starts with NUMBER:, give
    it an explicit weight ("1:10:30 train"). Scores are cosine similarities between the query and each
    picture. Every filter narrows the files searched, so results are the true top matches among them.
    """
    from ..search.query import Term, split_weight

    terms = [Term.text(text, weight) for weight, text in map(split_weight, texts)]
    terms += [Term.text(text, -weight) for weight, text in map(split_weight, nots)]
    if image is not None:
        terms.append(Term.image(image))
    terms += [Term.image(path, weight) for weight, path in map(_image_weight, likes)]
    if not [t for t in terms if t.weight > 0]:
        raise click.UsageError("give TEXT, --image or --like (--not alone has nothing to push away from)")
    _run(terms, options)


def _image_weight(value: str) -> tuple[float, str]:
    """'2:rex.jpg' -> (2.0, 'rex.jpg'), unless a file is really called '2:rex.jpg'."""
    import os

    from ..search.query import split_weight

    return (1.0, value) if os.path.exists(value) else split_weight(value)


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@result_options
@library_options
def similar(image: str, **options: Any) -> None:
    """Find pictures that look like IMAGE (indexed or not); IMAGE itself is left out."""
    from ..search.query import Term

    _run([Term.image(image)], options)


COMMANDS = [query, similar]

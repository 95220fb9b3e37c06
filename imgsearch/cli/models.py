"""`imgsearch models`: which model to choose (the recommended table), or every tag open_clip knows."""

from __future__ import annotations

import json
import textwrap

import click

from ..errors import UsageError
from ..model.choices import MEASURED, NOTES, SOURCES, Choice, choices
from ..model.specs import DEFAULT_MODEL


@click.command()
@click.argument("name", required=False)
@click.option("--all", "every", is_flag=True, help="Every NAME:TAG open_clip knows.")
@click.option("--json", "as_json", is_flag=True, help="The recommended table as JSON, one object per line.")
def models(name: str | None, every: bool, as_json: bool) -> None:
    """Recommended models: vector size, languages, quality, speed (* marks the default).

    One recommended NAME:TAG per family, with its vector size, its languages, the published retrieval
    quality (with its source) and the speed measured for imgsearch. NAME lists that open_clip model's
    pretrained tags; --all lists every NAME:TAG open_clip knows. Any of these works with --model; so do
    hf-hub:ORG/REPO and local-dir:FOLDER. The README's "Choosing a model" says when to take which.
    """
    if name is not None or every:
        if as_json:
            raise UsageError("--json prints the recommended table; leave out NAME and --all")
        _print_tags(name)
        return
    rows = choices()
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.to_dict()))
        return
    _print_table(rows)


def _print_tags(name: str | None) -> None:
    import open_clip

    found = [(m, t) for m, t in open_clip.list_pretrained() if name is None or m == name]
    if name is not None and not found:
        raise UsageError(f"open_clip knows no model named {name!r}; `imgsearch models --all` lists them")
    for model, tag in found:
        spec = f"{model}:{tag}"
        click.echo(f"{spec}{'  (default)' if spec == DEFAULT_MODEL else ''}")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


HEADER = (
    "MODEL", "DIM", "LANGUAGES", "COCO R@1", "COCO R@5", "FLICKR R@5", "IMAGENET", "XM3600 R@1",
    "INDEX IMG/S", "QUERY MS",
)  # fmt: skip


def _cells(row: Choice) -> tuple[str, ...]:
    q, s = row.quality, row.speed
    return (
        ("* " if row.default else "  ") + row.model,
        str(row.dim),
        row.languages,
        _pct(q.coco_t2i_r1),
        _pct(q.coco_t2i_r5),
        _pct(q.flickr_t2i_r5),
        _pct(q.imagenet_top1),
        _pct(q.xm3600_t2i_r1),
        _num(s.index_img_s, ".1f"),
        _num(s.query_ms, ".0f"),
    )


def _print_table(rows: tuple[Choice, ...]) -> None:
    table = [tuple("  " + HEADER[0] if i == 0 else h for i, h in enumerate(HEADER)), *map(_cells, rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    for line in table:
        left = [line[0].ljust(widths[0]), line[1].rjust(widths[1]), line[2].ljust(widths[2])]
        right = [cell.rjust(width) for cell, width in zip(line[3:], widths[3:], strict=True)]
        click.echo("  ".join(left + right).rstrip())
    click.echo("")
    measured = f"{MEASURED['date']} on {MEASURED['cpu']}" if MEASURED["date"] else "not measured yet"
    footnotes = [
        "* the default. Quality (%): published, never measured here: text-to-image retrieval Recall@1/@5 on "
        "COCO 5k and Flickr30k, ImageNet zero-shot top-1, XM3600 Recall@1 over 36 languages; '-' where the "
        "source gives none.",
        f"Speed: measured with random weights by bench/families.py ({measured}): INDEX = images/s of "
        "`imgsearch index`, QUERY = a new `imgsearch query` process, ms (with the ONNX text export).",
        *(f"[{key}] {SOURCES[key]}" for key in SOURCES if any(row.source == key for row in rows)),
        *(
            f"{', '.join(row.model for row in rows if key in row.notes)}: {NOTES[key]}"
            for key in NOTES
            if any(key in row.notes for row in rows)
        ),
        "`imgsearch models --all` lists every NAME:TAG open_clip knows; `imgsearch models NAME` one model's.",
    ]
    for note in footnotes:
        click.echo(textwrap.fill(note, 110, subsequent_indent="  ", break_on_hyphens=False))


COMMANDS = [models]

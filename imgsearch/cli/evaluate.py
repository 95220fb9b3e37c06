"""`imgsearch eval CAPTIONS`: how well a model finds your own photos, from a file of their captions."""

from __future__ import annotations

import json
from typing import IO, TYPE_CHECKING, Any

import click

from .classify import label_options, labels_from
from .options import library_options_but_model, open_library
from .output import display_path

if TYPE_CHECKING:
    from ..search.evaluate import EvalReport, Retrieval


@click.command("eval")
@click.argument("captions", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="SPEC",
    help="Evaluate this model (NAME:TAG, hf-hub:ORG/REPO or local-dir:FOLDER), encoding the photos in "
    "memory; repeatable, one row each. 'index' is the index's own model and vectors [default: index].",
)
@label_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@library_options_but_model  # here --model names the models to compare (repeatable)
def evaluate(
    captions: str,
    models: tuple[str, ...],
    labels: tuple[str, ...],
    labels_file: IO[str] | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Measure a model on your own photos: CAPTIONS pairs photos with what they show.

    CAPTIONS is a CSV with the header row path,caption (and optionally label), one row per caption, or a
    JSON list of {"path", "caption", "label"} objects, or a JSON {path: [captions]} mapping. A photo may
    have several captions; relative paths are relative to the file's folder.

    Text to image: each caption ranks every photo of the file; image to text: each photo ranks every
    caption, its best-ranked own caption counting (the CLIP papers' COCO protocol). Shown: Recall@1/5/10
    in percent and the median rank (1-based); a tie counts against the model. With labels, zero-shot
    top-1 accuracy over the file's labels (or --labels), prompted as `classify` does. Missing and
    unreadable photos are listed and skipped, for every model alike.

    The index's own model uses the stored vectors (a photo not indexed is encoded as `similar` encodes a
    picture); each --model encodes every photo in memory and writes nothing. Give CAPTIONS before
    --labels, or end the labels with --.

    \b
      imgsearch eval captions.csv
      imgsearch eval captions.csv --labels cat dog car "birthday party"
      imgsearch eval captions.json --model index --model ViT-L-14:laion2b_s32b_b82k --json
    """
    names = labels_from(labels, labels_file) if labels or labels_file else None
    library = open_library(model=None, **options)
    report = library.evaluate(captions, list(models), names)
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False))
        return
    for skipped, why in ((report.missing, "missing"), (report.unreadable, "unreadable")):
        for item in skipped:
            click.echo(f"skipped ({why}): {display_path(item.path)}: {item.reason}", err=True)
    _print_table(report)


def _print_table(report: EvalReport) -> None:
    missing, unreadable = len(report.missing), len(report.unreadable)
    note = f" ({missing} missing, {unreadable} unreadable: skipped)" if missing or unreadable else ""
    click.echo(f"photos    {report.evaluated_photos:,} of {report.photos:,}{note}")
    click.echo(f"captions  {report.evaluated_captions:,} of {report.captions:,}")
    if report.labels is not None:
        click.echo(f"labels    {', '.join(report.labels)}")
    click.echo("")
    width = max(len("model"), *(len(_name(m.model, m.vectors)) for m in report.models))
    recall = "".join(f"{f'R@{k}':>7}" for k in report.models[0].text_to_image.recall)
    block = len(recall) + 8
    zero = "  zero-shot" if report.labels is not None else ""
    click.echo(f"{'':<{width}}  {'text -> image':<{block}}  {'image -> text':<{block}}{zero}")
    click.echo(f"{'model':<{width}}  {recall}{'median':>8}  {recall}{'median':>8}{'  top-1' if zero else ''}")
    for m in report.models:
        cells = f"{_retrieval(m.text_to_image)}  {_retrieval(m.image_to_text)}"
        if zero:
            cells += f"  {100 * m.zero_shot.accuracy:>5.1f}" if m.zero_shot else f"  {'-':>5}"
        click.echo(f"{_name(m.model, m.vectors):<{width}}  {cells}")
    if report.labels is not None:
        counted = next((m.zero_shot.photos for m in report.models if m.zero_shot), 0)
        click.echo(f"\nzero-shot over the {counted:,} labelled photos; recall and accuracy in percent")
    else:
        click.echo("\nrecall in percent")


def _name(model: str, vectors: str) -> str:
    return f"{model} (index)" if vectors == "index" else model


def _retrieval(r: Retrieval) -> str:
    recall = "".join(f"{100 * share:>7.1f}" for share in r.recall.values())
    median = f"{r.median_rank:g}"
    return f"{recall}{median:>8}"


COMMANDS = [evaluate]

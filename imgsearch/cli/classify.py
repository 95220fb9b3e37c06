"""`imgsearch classify`: zero-shot labels for every image, from the stored vectors."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

import click

from .options import library_options, open_library
from .output import display_path

if TYPE_CHECKING:
    from ..search.classify import Classification


class GreedyOption(click.Option):
    """An option that takes every value up to the next option (`--labels cat dog "birthday party"`) and
    may be repeated; click options otherwise take a fixed number of values.

    The values end at the next argument that starts with '-' (another option, or `--`), so an argument
    after the list needs `--` before it; a value that itself starts with '-' is given as `--labels=-x`.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["multiple"] = True
        super().__init__(*args, **kwargs)

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        option = parser._long_opt.get(self.opts[0]) or parser._short_opt.get(self.opts[0])
        take_one = option.process

        def take_all(value: Any, state: Any) -> None:
            take_one(value, state)
            while state.rargs and not state.rargs[0].startswith("-"):
                take_one(state.rargs.pop(0), state)

        option.process = take_all


def label_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--labels (several values after one flag) and --labels-file; read them with `labels_from`."""
    decorators = [
        click.option(
            "--labels",
            cls=GreedyOption,
            metavar="LABEL...",
            help="Labels to choose from: every value up to the next option (repeatable). "
            "Put FOLDER before them, or end them with --.",
        ),
        click.option(
            "--labels-file",
            type=click.File(encoding="utf-8"),
            metavar="FILE",
            help="More labels, one per line ('-' reads stdin); blank lines and # comments are skipped.",
        ),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def labels_from(labels: Sequence[str], labels_file: IO[str] | None) -> list[str]:
    """The --labels values, then the file's lines (blank lines and lines starting with # left out)."""
    out = list(labels)
    if labels_file is not None:
        lines = (line.strip() for line in labels_file)
        out += [line for line in lines if line and not line.startswith("#")]
    if not out:
        raise click.UsageError("give the labels with --labels or --labels-file")
    return out


@click.command()
@click.argument("folder", required=False, type=click.Path(file_okay=False))
@label_options
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    metavar="T",
    help="Use cosine / T instead of cosine x the model's learned scale (about 100 for CLIP, i.e. "
    "T = 0.01): lower is sharper, higher flatter.",
)
@click.option(
    "--min-prob",
    type=click.FloatRange(0, 1),
    default=0.0,
    metavar="P",
    help="Leave out images whose best label is less probable than this.",
)
@click.option(
    "--top-labels",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="K",
    help="Show each image's K most probable labels in the table.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object per line: path, label, prob, probs {label: prob}.",
)
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header: path, label, prob, then every label.")
@library_options
def classify(
    folder: str | None,
    labels: tuple[str, ...],
    labels_file: IO[str] | None,
    temperature: float | None,
    min_prob: float,
    top_labels: int,
    as_json: bool,
    as_csv: bool,
    **options: Any,
) -> None:
    """Label every image (in FOLDER) with the most probable of the given labels, zero-shot.

    Each label is embedded through a few prompts ("a photo of a {}." and others) whose mean is its
    vector; an image's probabilities are the softmax over labels of cosine x the model's learned scale.
    Only the label texts are encoded: images use their stored vectors, so this is fast on any library.

    \b
      imgsearch classify ~/Photos --labels cat dog car "birthday party"
      imgsearch classify --labels-file labels.txt --min-prob 0.5 --csv > labels.csv
    """
    if as_json and as_csv:
        raise click.UsageError("--json cannot be combined with --csv")
    names = labels_from(labels, labels_file)
    library = open_library(**options)
    results = library.classify(names, under=folder, temperature=temperature, min_prob=min_prob)
    if as_json:
        for item in results:
            row = item.to_dict()
            row["path"] = display_path(item.path)
            click.echo(json.dumps(row, ensure_ascii=False))
    elif as_csv:
        from ..search.classify import check_labels

        _print_csv(results, check_labels(names), sys.stdout)
    else:
        _print_table(results, top_labels)


def _print_table(results: Sequence[Classification], k: int) -> None:
    width = max((len(label) for item in results for label in item.probs), default=0)
    for item in results:
        cells = "  ".join(f"{label:<{width}} {prob:.3f}" for label, prob in item.top(k))
        click.echo(f"{cells}  {display_path(item.path)}")


def _print_csv(results: Sequence[Classification], labels: Sequence[str], stream: IO[str]) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["path", "label", "prob", *labels])
    for item in results:
        probs = [f"{item.probs[label]:.6f}" for label in labels]
        writer.writerow([display_path(item.path), item.label, f"{item.prob:.6f}", *probs])


COMMANDS = [classify]

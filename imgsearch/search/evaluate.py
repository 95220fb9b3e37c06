"""How well a model finds the user's own photos: retrieval both ways and zero-shot accuracy, measured on a
file that pairs photos with captions (and optionally labels).

The protocol is the one the CLIP papers report on COCO and Flickr30k. Text to image: each caption ranks
every distinct photo of the file by cosine, and the rank of its own photo counts. Image to text: each photo
ranks every caption of the file, and the rank of the best-ranked of its own captions counts. Recall@K is
the share of queries whose rank is at most K; ranks are 1-based. Zero-shot accuracy is top-1 over the label
set, each label embedded through classify's prompts (imgsearch.search.classify).

Ties count against the model (pessimistic, and so deterministic): a wrong photo or caption that scores
exactly as high as the right one ranks before it, and a label that ties the true one makes a miss. Byte-
identical copies of one photo therefore rank each other's captions at 2, not at 1.

The arithmetic is pure numpy over a similarity matrix and the caption -> photo assignment; reading the file
and making the vectors (from the index, or with a model in memory) are the two other parts here.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DecodeError, UsageError
from .classify import ZeroShot, check_labels

if TYPE_CHECKING:
    from ..model.encoder import Encoder
    from ..model.preprocess import Preprocess
    from .reader import Reader

#: The K of Recall@K that reports show.
RECALL_AT: tuple[int, ...] = (1, 5, 10)
#: The name that stands for the index's own model and stored vectors among the models evaluated.
INDEX = "index"
_TEXT_BATCH = 256  # captions per model call
_COLUMNS = ("path", "caption", "label")


# -- the captions file ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Captions:
    """A captions file read: its distinct photos, every caption with the photo it describes, and each
    photo's label where the file gives labels."""

    source: str
    photos: tuple[bytes, ...]  # absolute paths, distinct, in the order first listed
    texts: tuple[str, ...]  # every caption, in file order
    owner: np.ndarray  # (captions,) int64: the index in `photos` of each caption's photo
    labels: tuple[str | None, ...] | None  # per photo; None when the file has no labels at all


@dataclass(frozen=True)
class _Row:
    path: str
    caption: str
    label: str | None
    where: str  # "line 3", "item 2": for messages


def read_captions(path: str | os.PathLike[str]) -> Captions:
    """Read a CSV (header row `path,caption` and optionally `label`; one row per caption) or a JSON file (a
    list of {"path", "caption", "label"} objects, or a {path: caption or [captions]} mapping). Relative
    paths are relative to the file's folder. Anything else is a UsageError saying what is wrong."""
    file = Path(path).expanduser()
    name = str(file)
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except FileNotFoundError as e:
        raise UsageError(f"no such captions file: {name}") from e
    except IsADirectoryError as e:
        raise UsageError(f"{name} is a folder, not a captions file") from e
    except OSError as e:
        raise UsageError(f"cannot read {name}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise UsageError(f"{name} is not a CSV or JSON text file (not UTF-8)") from e
    looks_json = file.suffix.lower() == ".json" or text.lstrip()[:1] in ("[", "{")
    rows, has_labels = _json_rows(text, name) if looks_json else _csv_rows(text, name)
    if not rows:
        raise UsageError(f"{name} lists no photos")
    folder = file.absolute().parent
    photos: dict[bytes, int] = {}
    labels: list[str | None] = []
    owner = []
    for row in rows:
        where = os.path.normpath(folder / os.path.expanduser(row.path))
        index = photos.setdefault(os.fsencode(where), len(photos))
        if index == len(labels):
            labels.append(row.label)
        elif row.label is not None:
            if labels[index] is None:
                labels[index] = row.label
            elif labels[index] != row.label:
                raise UsageError(
                    f"{name} {row.where}: {row.path} is labelled both {labels[index]!r} and {row.label!r}"
                )
        owner.append(index)
    return Captions(
        source=name,
        photos=tuple(photos),
        texts=tuple(row.caption for row in rows),
        owner=np.array(owner, dtype=np.int64),
        labels=tuple(labels) if has_labels and any(label is not None for label in labels) else None,
    )


def _csv_rows(text: str, name: str) -> tuple[list[_Row], bool]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
        if header is None:
            raise UsageError(f"{name} is empty")
        columns = [cell.strip().lower() for cell in header]
        missing = [column for column in _COLUMNS[:2] if column not in columns]
        if missing:
            found = ", ".join(cell.strip() for cell in header if cell.strip()) or "nothing"
            raise UsageError(
                f"{name}: no {' or '.join(repr(m) for m in missing)} column; the header row must name "
                f"path and caption (and may name label), found {found}"
            )
        at = {column: columns.index(column) for column in _COLUMNS if column in columns}
        rows = []
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue
            values = {column: cells[i].strip() if i < len(cells) else "" for column, i in at.items()}
            where = f"line {reader.line_num}"
            rows.append(_row(values["path"], values["caption"], values.get("label"), name, where))
    except csv.Error as e:
        raise UsageError(f"{name} is not a readable CSV file: {e}") from e
    return rows, "label" in at


def _json_rows(text: str, name: str) -> tuple[list[_Row], bool]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{name} is not valid JSON: {e}") from e
    rows: list[_Row] = []
    if isinstance(data, dict):
        for path, captions in data.items():
            for caption in _caption_list(captions, name, f"entry {path!r}"):
                rows.append(_row(path, caption, None, name, f"entry {path!r}"))
        return rows, False
    if not isinstance(data, list):
        raise UsageError(f"{name}: the JSON must be a list of {{path, caption, label}} objects or a mapping")
    has_labels = False
    for number, item in enumerate(data, 1):
        where = f"item {number}"
        if not isinstance(item, dict) or "path" not in item or "caption" not in item:
            raise UsageError(f"{name} {where}: not an object with a path and a caption")
        label = item.get("label")
        if label is not None and not isinstance(label, str):
            raise UsageError(f"{name} {where}: the label is not text")
        has_labels = has_labels or "label" in item
        for caption in _caption_list(item["caption"], name, where):
            rows.append(_row(item["path"], caption, label, name, where))
    return rows, has_labels


def _caption_list(value: object, name: str, where: str) -> list[str]:
    """A caption, or a list of them (one photo, several captions)."""
    captions = value if isinstance(value, list) else [value]
    if not captions or not all(isinstance(c, str) for c in captions):
        raise UsageError(f"{name} {where}: a caption must be text or a list of texts")
    return [str(c) for c in captions]


def _row(path: object, caption: str, label: str | None, name: str, where: str) -> _Row:
    if not isinstance(path, str) or not path.strip():
        raise UsageError(f"{name} {where}: no photo path")
    caption = " ".join(caption.split())
    if not caption:
        raise UsageError(f"{name} {where}: the caption of {path} is empty")
    label = " ".join(label.split()) if label is not None else None
    return _Row(path.strip(), caption, label or None, where)


def label_set(captions: Captions, labels: Sequence[str] | None) -> tuple[str, ...] | None:
    """The labels zero-shot chooses among: `labels` when given (every label of the file must be one of
    them), else the file's distinct labels in the order first listed; None when the file has none."""
    if captions.labels is None:
        if labels:
            raise UsageError(f"--labels needs a label column in {captions.source}")
        return None
    first: dict[str, str] = {}  # one spelling per label, the first the file gives ('Cat' and 'cat' are one)
    for label in captions.labels:
        if label is not None:
            first.setdefault(_key(label), label)
    listed = list(first.values())
    if not labels:
        if len(listed) < 2:
            raise UsageError(
                f"{captions.source} names only one label ({listed[0]}): zero-shot accuracy needs at least "
                "two to choose from; give the others with --labels"
            )
        return check_labels(listed)
    names = check_labels(labels)
    known = {_key(name) for name in names}
    unknown = [label for label in listed if _key(label) not in known]
    if unknown:
        raise UsageError(
            f"{captions.source} labels photos {', '.join(map(repr, unknown))}, which --labels does not "
            f"name (it names {', '.join(names)})"
        )
    return names


def _key(label: str) -> str:
    """What makes two labels one, as for classify: case does not count (runs of spaces are joined already)."""
    return label.casefold()


# -- the arithmetic ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Retrieval:
    """One direction's result: Recall@K for each K, the median and mean rank (1-based), over `queries`."""

    recall: dict[int, float]
    median_rank: float
    mean_rank: float
    queries: int

    def to_dict(self) -> dict[str, object]:
        return {
            "recall": {str(k): round(v, 6) for k, v in self.recall.items()},
            "median_rank": self.median_rank,
            "mean_rank": round(self.mean_rank, 6),
            "queries": self.queries,
        }


def cosine(texts: np.ndarray, photos: np.ndarray) -> np.ndarray:
    """(captions, photos) cosine similarities, in float64 (the rows are normalised here, so stored unit
    vectors and fresh ones compare alike)."""
    a = texts.astype(np.float64)
    b = photos.astype(np.float64)
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def text_to_image_ranks(similarity: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """For each caption (row of the (captions, photos) `similarity`), the 1-based rank of its own photo
    `owner[c]` among all photos: 1 + the photos that score at least as high (ties count against)."""
    own = similarity[np.arange(len(owner)), owner]
    beaten_or_tied = (similarity >= own[:, None]).sum(axis=1) - 1  # every photo >= own, less the own photo
    return (1 + beaten_or_tied).astype(np.int64)


def image_to_text_ranks(similarity: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """For each photo (column of `similarity`), the 1-based rank of the best-ranked of its own captions
    among all captions: 1 + the other photos' captions that score at least as high as its best one. A
    photo's other captions never count against it. Every photo needs at least one caption."""
    by_photo = similarity.T  # (photos, captions)
    mine = owner[None, :] == np.arange(by_photo.shape[0])[:, None]
    if not mine.any(axis=1).all():
        raise UsageError("every photo needs at least one caption")
    best = np.where(mine, by_photo, -np.inf).max(axis=1)
    return (1 + (~mine & (by_photo >= best[:, None])).sum(axis=1)).astype(np.int64)


def retrieval(ranks: np.ndarray, at: Sequence[int] = RECALL_AT) -> Retrieval:
    """Recall@K (the share of ranks <= K), the median and the mean of 1-based ranks."""
    if len(ranks) == 0:
        raise UsageError("nothing to rank")
    return Retrieval(
        recall={k: float(np.mean(ranks <= k)) for k in at},
        median_rank=float(np.median(ranks)),
        mean_rank=float(np.mean(ranks)),
        queries=len(ranks),
    )


def zero_shot_accuracy(scores: np.ndarray, truth: np.ndarray) -> tuple[float | None, int]:
    """(top-1 accuracy, photos counted) for (photos, labels) `scores` and each photo's true label index,
    -1 for a photo without a label (not counted). A label tying the true one's score makes a miss."""
    counted = truth >= 0
    if not counted.any():
        return None, 0
    rows = scores[counted]
    true = rows[np.arange(len(rows)), truth[counted]]
    others = rows.copy()
    others[np.arange(len(rows)), truth[counted]] = -np.inf
    return float(np.mean(true > others.max(axis=1))), int(counted.sum())


# -- the report -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ZeroShotScore:
    accuracy: float
    photos: int  # labelled photos counted

    def to_dict(self) -> dict[str, object]:
        return {"accuracy": round(self.accuracy, 6), "photos": self.photos}


@dataclass(frozen=True)
class ModelScores:
    """One model's row: what made the image vectors ("index": the stored ones, a photo that is not indexed
    encoded as a query picture is; "encoded": every photo encoded now with this model), and the scores."""

    model: str
    vectors: str
    dim: int
    text_to_image: Retrieval
    image_to_text: Retrieval
    zero_shot: ZeroShotScore | None

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "vectors": self.vectors,
            "dim": self.dim,
            "text_to_image": self.text_to_image.to_dict(),
            "image_to_text": self.image_to_text.to_dict(),
            "zero_shot": self.zero_shot.to_dict() if self.zero_shot else None,
        }


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class EvalReport:
    """What `Library.evaluate` returns. Every model is scored on the same photos: those every model could
    read (a photo one model cannot read is skipped for all, so the rows compare)."""

    captions_file: str
    photos: int  # distinct photos the file lists
    captions: int  # captions the file lists
    evaluated_photos: int
    evaluated_captions: int
    missing: tuple[Skipped, ...]  # not there (skipped)
    unreadable: tuple[Skipped, ...]  # there, but not readable as an image (skipped)
    labels: tuple[str, ...] | None
    models: tuple[ModelScores, ...]
    ties: str = "pessimistic"  # see this module's docstring

    def to_dict(self) -> dict[str, object]:
        return {
            "captions_file": self.captions_file,
            "photos": self.photos,
            "captions": self.captions,
            "evaluated_photos": self.evaluated_photos,
            "evaluated_captions": self.evaluated_captions,
            "missing": [s.__dict__ for s in self.missing],
            "unreadable": [s.__dict__ for s in self.unreadable],
            "labels": list(self.labels) if self.labels is not None else None,
            "ties": self.ties,
            "models": [m.to_dict() for m in self.models],
        }


# -- making the vectors -----------------------------------------------------------------------------------
@dataclass
class _Embedded:
    """One model's vectors for a captions file: photos (rows of those that failed are zero), captions, and
    the prepared label set."""

    model: str
    vectors: str
    photos: np.ndarray
    failed: dict[int, str]
    texts: np.ndarray
    zero_shot: ZeroShot | None


def _embed_texts(embed: Callable[[list[str]], np.ndarray], texts: Sequence[str]) -> np.ndarray:
    unique = list(dict.fromkeys(texts))
    vectors = np.concatenate([embed(unique[i : i + _TEXT_BATCH]) for i in range(0, len(unique), _TEXT_BATCH)])
    where = {text: i for i, text in enumerate(unique)}
    return vectors[[where[text] for text in texts]]


def _with_index(
    reader: Reader, captions: Captions, labels: tuple[str, ...] | None, present: Sequence[int]
) -> _Embedded:
    """The index's own model: an indexed, unchanged photo's stored vector, a copy's stored vector, or else
    the photo encoded as `similar` encodes a query picture that is not indexed."""
    from ..index.decode import decode_file, hash_file
    from .reader import _again_on_switch

    def read() -> _Embedded:
        with reader.reading() as (catalog, _vectors, spec):
            photos: dict[int, np.ndarray] = {}
            failed: dict[int, str] = {}
            for i in present:
                path = captions.photos[i]
                try:
                    digest = hash_file(path)[0]
                except FileNotFoundError:
                    failed[i] = "no such file"
                    continue
                except OSError as e:
                    failed[i] = f"cannot read file: {e.strerror or e}"
                    continue
                stored = catalog.row_by_path(reader.mounts.to_stored(path))
                if stored and stored[0].content_hash == digest:
                    photos[i] = np.frombuffer(stored[1], dtype=np.float32)
                    continue
                copy = catalog.contents([digest]).get(digest)
                if copy is not None:
                    photos[i] = np.frombuffer(copy.vector, dtype=np.float32)
                    continue

                def decode(prep: Preprocess, path: bytes = path) -> np.ndarray:
                    return decode_file(path, prep).pixels

                try:
                    photos[i] = reader.runtime.embed_image(spec, digest, decode)
                except FileNotFoundError:
                    failed[i] = "no such file"
                except DecodeError as e:
                    failed[i] = str(e)
            embed = partial(reader.runtime.embed_texts, spec)
            texts = _embed_texts(embed, captions.texts)
            zero_shot = None
            if labels is not None:
                scale, bias = reader.runtime.logits(spec)
                zero_shot = ZeroShot.prepare(labels, embed, scale, None, bias)
            return _Embedded(
                spec.id, INDEX, _stack(photos, len(captions.photos), texts), failed, texts, zero_shot
            )

    return _again_on_switch(read)


def _with_encoder(
    encoder: Encoder,
    captions: Captions,
    labels: tuple[str, ...] | None,
    present: Sequence[int],
    lang: str | None,
) -> _Embedded:
    """Another model: every photo decoded as the indexer decodes it and encoded in memory, in batches, in
    the numerics indexing with this model would store; nothing is written."""
    from ..index.decode import decode_file

    photos: dict[int, np.ndarray] = {}
    failed: dict[int, str] = {}
    batch: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if batch:
            vectors = encoder.embed_pixels(np.stack([pixels for _, pixels in batch]))
            photos.update(zip((i for i, _ in batch), vectors, strict=True))
            batch.clear()

    for i in present:
        try:
            batch.append((i, decode_file(captions.photos[i], encoder.preprocess).pixels))
        except FileNotFoundError:
            failed[i] = "no such file"
        except DecodeError as e:
            failed[i] = str(e)
        if len(batch) >= encoder.batch_size:
            flush()
    flush()

    def embed(texts: list[str]) -> np.ndarray:
        return encoder.embed_texts(texts, lang=lang)

    texts = _embed_texts(embed, captions.texts)
    zero_shot = None
    if labels is not None:
        zero_shot = ZeroShot.prepare(labels, embed, encoder.logit_scale, None, encoder.logit_bias)
    return _Embedded(
        encoder.spec.id, "encoded", _stack(photos, len(captions.photos), texts), failed, texts, zero_shot
    )


def _stack(photos: dict[int, np.ndarray], count: int, texts: np.ndarray) -> np.ndarray:
    out = np.zeros((count, texts.shape[1]), dtype=np.float32)  # a failed photo's row stays zero (unused)
    for i, vector in photos.items():
        out[i] = vector
    return out


# -- the whole run ----------------------------------------------------------------------------------------
def check_models(models: Sequence[str]) -> list[str]:
    """The models to evaluate, each once, in order: INDEX or a model spec (checked without loading)."""
    from ..model.specs import parse_model_spec

    out = []
    for model in models or [INDEX]:
        name = model.strip()
        name = INDEX if name == INDEX else parse_model_spec(name).id
        if name not in out:
            out.append(name)
    return out


def evaluate(
    captions_file: str | os.PathLike[str],
    reader: Reader,
    models: Sequence[str] = (),
    labels: Sequence[str] | None = None,
    device: str = "auto",
    precision: str = "auto",
    lang: str | None = None,
) -> EvalReport:
    """Score each of `models` (INDEX, the default, for the index's own) on the captions file; the file and
    the arguments are checked before any model is loaded or the index opened."""
    captions = read_captions(captions_file)
    names = label_set(captions, labels)
    wanted = check_models(models)
    missing = {i: "no such file" for i, path in enumerate(captions.photos) if not os.path.exists(path)}
    missing |= {i: "not a file" for i, path in enumerate(captions.photos) if os.path.isdir(path)}
    present = [i for i in range(len(captions.photos)) if i not in missing]
    if not present:
        raise UsageError(
            f"none of the {len(captions.photos)} photos {captions.source} lists is there "
            f"(the first: {os.fsdecode(captions.photos[0])})"
        )
    embedded = []
    for model in wanted:
        if model == INDEX:
            embedded.append(_with_index(reader, captions, names, present))
        else:
            from ..model.encoder import Encoder
            from ..model.specs import parse_model_spec

            encoder = Encoder.load(parse_model_spec(model), device, precision)
            embedded.append(_with_encoder(encoder, captions, names, present, lang))
            del encoder  # one model in memory at a time
    unreadable: dict[int, str] = {}
    for one in embedded:
        for i, reason in one.failed.items():
            (missing if reason == "no such file" else unreadable).setdefault(i, reason)
    keep = np.array([i for i in present if i not in missing and i not in unreadable], dtype=np.int64)
    if not len(keep):
        raise UsageError(f"none of the photos {captions.source} lists could be read as an image")
    rows = tuple(_score(one, captions, names, keep) for one in embedded)
    kept_captions = int(np.isin(captions.owner, keep).sum())
    return EvalReport(
        captions_file=os.path.abspath(captions.source),
        photos=len(captions.photos),
        captions=len(captions.texts),
        evaluated_photos=len(keep),
        evaluated_captions=kept_captions,
        missing=_skipped(captions, missing),
        unreadable=_skipped(captions, unreadable),
        labels=names,
        models=rows,
    )


def _skipped(captions: Captions, reasons: dict[int, str]) -> tuple[Skipped, ...]:
    return tuple(Skipped(os.fsdecode(captions.photos[i]), reasons[i]) for i in sorted(reasons))


def _score(
    one: _Embedded, captions: Captions, labels: tuple[str, ...] | None, keep: np.ndarray
) -> ModelScores:
    """One model's scores over the kept photos and their captions."""
    renumber = np.full(len(captions.photos), -1, dtype=np.int64)
    renumber[keep] = np.arange(len(keep))
    used = renumber[captions.owner] >= 0
    owner = renumber[captions.owner[used]]
    similarity = cosine(one.texts[used], one.photos[keep])
    zero_shot = None
    if one.zero_shot is not None and labels is not None and captions.labels is not None:
        index = {_key(name): j for j, name in enumerate(labels)}
        truth = np.array(
            [index[_key(label)] if (label := captions.labels[i]) is not None else -1 for i in keep],
            dtype=np.int64,
        )
        accuracy, counted = zero_shot_accuracy(one.zero_shot.probabilities(_unit(one.photos[keep])), truth)
        if accuracy is not None:
            zero_shot = ZeroShotScore(accuracy, counted)
    return ModelScores(
        model=one.model,
        vectors=one.vectors,
        dim=int(one.texts.shape[1]),
        text_to_image=retrieval(text_to_image_ranks(similarity, owner)),
        image_to_text=retrieval(image_to_text_ranks(similarity, owner)),
        zero_shot=zero_shot,
    )


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

"""Zero-shot labels from stored vectors: CLIP's recipe, with no image encoded again.

Each label is embedded through every prompt in `TEMPLATES`; the mean of those unit vectors, normalised
again, is the label's vector (CLIP's prompt ensemble: steadier than one bare word). An image's
probabilities are the softmax over labels of cosine(image, label) x scale, where scale is the model's
learned logit scale (about 100 for CLIP), or 1/temperature when a temperature is given. A model trained
with a sigmoid loss (SigLIP, SigLIP 2) also learned a logit bias: its probabilities are, as it was
trained, one sigmoid per label, sigmoid(cosine x scale + bias), which need not sum to 1. Images are read
in batches, so memory stays bounded however large the library.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError

#: The prompts every label is embedded through; their mean is the label's vector. General photo
#: wording in the spirit of CLIP's ImageNet ensemble, fit for personal photo libraries.
TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a close-up photo of a {}.",
    "a cropped photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a photo of my {}.",
)

_TEXT_BATCH = 256  # prompts per model call, so a long label list does not need one huge text batch

#: (ids, paths, vectors) batches, as `Catalog.vector_batches` yields them.
Batches = Iterable[tuple[np.ndarray, list[bytes], np.ndarray]]


@dataclass(frozen=True)
class Classification:
    """One image's zero-shot result: its most probable label, and every label's probability."""

    path: str
    label: str
    prob: float
    probs: dict[str, float]

    @property
    def raw_path(self) -> bytes:
        """The path as the file system spells it (bytes), for names that are not valid UTF-8."""
        return os.fsencode(self.path)

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k most probable (label, probability) pairs, most probable first."""
        return sorted(self.probs.items(), key=lambda item: -item[1])[:k]

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "label": self.label,
            "prob": round(self.prob, 6),
            "probs": {label: round(p, 6) for label, p in self.probs.items()},
        }


def check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    """Labels stripped of outer spaces; at least two (one label always gets probability 1) and no repeats
    (ignoring case: CLIP's tokenizer reads text in lower case, so 'Cat' and 'cat' would split one label)."""
    names = tuple(" ".join(label.split()) for label in labels)
    if any(not name for name in names):
        raise UsageError("a label is empty")
    seen: dict[str, str] = {}
    for name in names:
        if _key(name) in seen:
            raise UsageError(f"label {name!r} is given twice (as {seen[_key(name)]!r} too)")
        seen[_key(name)] = name
    if len(names) < 2:
        raise UsageError("give at least two labels: the probabilities are relative to the other labels")
    return names


def check_arguments(labels: Sequence[str], temperature: float | None, min_prob: float) -> None:
    """Refuse bad arguments before the index is opened or the model loaded."""
    check_labels(labels)
    check_temperature(temperature)
    check_min_prob(min_prob)


def check_temperature(temperature: float | None) -> None:
    if temperature is not None and not temperature > 0:
        raise UsageError(f"the temperature must be above 0, got {temperature}")


def check_min_prob(min_prob: float) -> None:
    if not 0.0 <= min_prob <= 1.0:
        raise UsageError(f"the minimum probability must be between 0 and 1, got {min_prob}")


def label_vectors(
    embed_texts: Callable[[list[str]], np.ndarray],
    labels: Sequence[str],
    templates: Sequence[str] = TEMPLATES,
) -> np.ndarray:
    """(labels, dim) unit vectors: each label's prompt embeddings averaged, then normalised again."""
    prompts = [template.format(label) for label in labels for template in templates]
    embedded = np.concatenate(
        [embed_texts(prompts[i : i + _TEXT_BATCH]) for i in range(0, len(prompts), _TEXT_BATCH)]
    )
    mean = embedded.astype(np.float32).reshape(len(labels), len(templates), -1).mean(axis=1)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, shifted by each row's maximum so large scales cannot overflow."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class ZeroShot:
    """A prepared label set: the labels, their unit vectors, the scale applied to cosines and, for a
    sigmoid-trained model, the bias added to them."""

    labels: tuple[str, ...]
    vectors: np.ndarray  # (labels, dim)
    scale: float
    bias: float | None = None

    @classmethod
    def prepare(
        cls,
        labels: Sequence[str],
        embed_texts: Callable[[list[str]], np.ndarray],
        logit_scale: float,
        temperature: float | None = None,
        logit_bias: float | None = None,
    ) -> ZeroShot:
        """Check the labels and embed them; the scale is the model's `logit_scale`, or 1/temperature (a
        softmax then, whatever the model's `logit_bias`)."""
        names = check_labels(labels)
        check_temperature(temperature)
        scale = logit_scale if temperature is None else 1.0 / temperature
        bias = logit_bias if temperature is None else None
        return cls(names, label_vectors(embed_texts, names), float(scale), bias)

    def probabilities(self, image_vectors: np.ndarray) -> np.ndarray:
        """(images, labels) probabilities for unit image vectors: a softmax over labels (rows sum to 1), or
        with a bias one sigmoid per label."""
        logits = (image_vectors @ self.vectors.T).astype(np.float64) * self.scale
        if self.bias is not None:
            return 1.0 / (1.0 + np.exp(-(logits + self.bias)))
        return softmax(logits)

    def classify(self, batches: Batches, min_prob: float = 0.0) -> Iterator[Classification]:
        """One Classification per image whose best label has at least `min_prob`."""
        check_min_prob(min_prob)
        for _ids, paths, vectors in batches:
            probs = self.probabilities(vectors)
            best = probs.argmax(axis=1)
            for path, row, b in zip(paths, probs, best, strict=True):
                if row[b] < min_prob:
                    continue
                yield Classification(
                    path=os.fsdecode(path),
                    label=self.labels[b],
                    prob=float(row[b]),
                    probs=dict(zip(self.labels, row.tolist(), strict=True)),
                )

    def ids_with(self, batches: Batches, wanted: Iterable[str], min_prob: float = 0.0) -> np.ndarray:
        """Sorted int64 ids of the images whose best label is one of `wanted` (with at least `min_prob`),
        ready to be a FAISS `allowed` set."""
        check_min_prob(min_prob)
        index = {_key(label): i for i, label in enumerate(self.labels)}
        keep = []
        for name in wanted:
            if _key(name) not in index:
                raise UsageError(f"label {name!r} is not one of the labels: {', '.join(self.labels)}")
            keep.append(index[_key(name)])
        if not keep:
            raise UsageError("name at least one label to keep")
        found = []
        for ids, _paths, vectors in batches:
            probs = self.probabilities(vectors)
            best = probs.argmax(axis=1)
            hit = np.isin(best, keep) & (probs[np.arange(len(best)), best] >= min_prob)
            found.append(ids[hit])
        return np.sort(np.concatenate(found)) if found else np.empty(0, dtype=np.int64)


def with_wanted(wanted: Sequence[str], labels: Sequence[str]) -> list[str]:
    """The label set for a `--label` filter: `labels` (the contrast set) plus any wanted label not among
    them, so `--label cat --labels dog car` compares cat, dog and car."""
    out = list(labels)
    known = {_key(label) for label in labels}
    for name in wanted:
        if _key(name) not in known:
            known.add(_key(name))
            out.append(name)
    return out


def _key(label: str) -> str:
    """What makes two labels the same: case and runs of spaces do not count."""
    return " ".join(label.split()).casefold()

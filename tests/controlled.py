"""An index whose vectors the test chooses, and an encoder that returns the vectors the test chooses.

For unit tests of ranking logic (negative terms, weights, filters, duplicates, zero-shot labels), where a
real model's vectors would make the expected answer unknowable. End-to-end tests use the real tiny model.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imgsearch import Library
from imgsearch.model.encoder import Runtime
from imgsearch.model.preprocess import Preprocess
from imgsearch.model.specs import parse_model_spec
from imgsearch.store.catalog import Catalog, Content, Database

FAKE_MODEL = "local-dir:/controlled-test-model"


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


@dataclass
class ControlledEncoder:
    """Texts map to vectors the test registered; images to the mean colour channel pattern of the pixels."""

    dim: int
    texts: dict[str, np.ndarray] = field(default_factory=dict)
    logit_scale: float = 100.0
    logit_bias: float | None = None
    spec = parse_model_spec(FAKE_MODEL)
    preprocess = Preprocess(8, 8)
    runtime = Runtime("cpu", "fp32", 16)
    exact_images = True

    @property
    def model_id(self) -> str:
        return self.spec.id

    def embed_texts(self, texts: list[str], lang: str | None = None) -> np.ndarray:
        return np.stack([unit(self.texts[t]) for t in texts])

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        means = pixels.reshape(len(pixels), -1, 3).mean(axis=1)
        out = np.zeros((len(pixels), self.dim), dtype=np.float32)
        out[:, :3] = means + 1
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@dataclass
class Item:
    """One indexed file with a chosen vector and metadata."""

    name: str
    vector: np.ndarray
    width: int = 640
    height: int = 480
    format: str = "JPEG"
    taken_at: float | None = None
    mtime: float = 1_700_000_000.0
    content: bytes | None = None  # equal bytes mean an exact duplicate


def controlled_library(home: Path, folder: Path, items: list[Item], encoder: ControlledEncoder) -> Library:
    """Write `items` as indexed files under `folder` (files exist on disk, vectors are the test's)."""
    folder.mkdir(parents=True, exist_ok=True)
    catalog = Catalog.open(Database.parse(os.environ.get("IMGSEARCH_DB"), home), create=True)
    try:
        with catalog.write() as w:
            w.set_model(FAKE_MODEL, encoder.dim)
            w.add_root(os.fsencode(folder))
            for item in items:
                path = folder / item.name
                path.parent.mkdir(parents=True, exist_ok=True)
                data = item.content if item.content is not None else item.name.encode()
                path.write_bytes(data)
                os.utime(path, (item.mtime, item.mtime))
                st = path.stat()
                content = Content(
                    item.width, item.height, item.format, item.taken_at, unit(item.vector).tobytes()
                )
                digest = hashlib.blake2b(data, digest_size=16).digest()
                w.add_image(os.fsencode(path), st.st_size, st.st_mtime_ns, digest, content)
    finally:
        catalog.close()
    return Library(home, encoder=encoder)  # type: ignore[arg-type]

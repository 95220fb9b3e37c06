"""The image encoder without torch, for a query by a picture that is not indexed: an ONNX export of the
model's image tower, run by ONNX Runtime.

A query by a new picture needs only the image tower, yet loading it through torch costs a new process
seconds. The first time a Library has to load torch for that alone, imgsearch.model.export writes the image
tower, checked against torch, to `<home>/image-encoder/<model key>/` (not at index time: it takes disk,
~350 MB for ViT-B-32, that only users of such queries should pay):

  image.onnx, image.onnx.data   the graph, pre-optimised by ONNX Runtime, and its weights (memory-mapped);
                                it takes the uint8 pixels that imgsearch.index.decode makes
                                and normalises them itself
  meta.json                     model id, preprocessing, verification result, versions; or why unsupported

This module only reads an export: it imports neither torch nor open_clip.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .onnx_text import (
    check_sizes,
    enabled,
    export_folder,
    open_session,
    unit_rows,
    usable_meta,
    warn_unusable,
)
from .specs import ModelSpec

FOLDER = "image-encoder"
FORMAT = 1  # bump when the files or their meaning change: older exports are then made again
SWITCH = "IMGSEARCH_IMAGE_EXPORT"  # =0: none is made or used; new pictures as queries always load torch
MODEL_FILE = "image.onnx"
DATA_FILE = "image.onnx.data"
FILES = (MODEL_FILE, DATA_FILE)
INPUT = "pixels"
OUTPUT = "embedding"


class OnnxImage:
    """A model's image tower from its export: model-sized uint8 pixels -> unit vectors, as
    `Encoder.embed_pixels` gives them, with the `preprocess` that decoding needs."""

    def __init__(self, session: Any, meta: dict[str, Any]):
        from .preprocess import Preprocess

        self.session = session
        self.meta = meta
        self.dim = int(meta["dim"])
        self.preprocess = Preprocess(**meta["preprocess"])

    @classmethod
    def open(cls, home: str | os.PathLike[str], spec: ModelSpec) -> OnnxImage | None:
        """The export for `spec` in `home`, or None (why goes to the debug log)."""
        if not enabled(SWITCH):
            return None
        folder = export_folder(home, spec.id, FOLDER)
        meta = usable_meta(folder, spec, FORMAT, "image")
        return None if meta is None else cls.load(folder, meta)

    @classmethod
    def load(cls, folder: Path, meta: dict[str, Any]) -> OnnxImage | None:
        """Open the files `meta` describes; None if any is missing, of another size, or unreadable."""
        try:
            check_sizes(folder, meta, FILES)
            return cls(open_session(folder / MODEL_FILE), meta)
        except Exception as e:  # a damaged export is only a slower query: the torch path remakes it
            warn_unusable("image", folder, e)
            return None

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 model-sized images -> (N, dim) float32 unit vectors."""
        return unit_rows(self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(pixels)})[0])

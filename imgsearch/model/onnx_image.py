"""The image encoder without torch: an ONNX export of the model's image tower, run by ONNX Runtime, for a
query by a picture that is not indexed, and for indexing on a CPU where it is the faster engine
(imgsearch.model.engine).

Loading the image tower through torch costs a new process seconds. imgsearch.model.exporter writes the
image tower, checked against torch, to `<cache>/image-encoder/<model key>/` (imgsearch.model.cache):

  image.onnx, image.onnx.data   the graph, pre-optimised by ONNX Runtime, and its weights (memory-mapped);
                                it takes the uint8 pixels that imgsearch.index.decode makes
                                and normalises them itself
  image-int8.onnx               the same with int8 weights (dynamic quantization), kept only when its
                                vectors are within MIN_COS_INT8 of torch's fp32 ones on the probes
  meta.json                     model id, preprocessing, verification results, versions; or why unsupported
  rates-<machine>.json          img/s of each engine on a machine, measured by the exporter

This module only reads an export: it imports neither torch nor open_clip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .cache import export_folder
from .onnx_text import (
    check_sizes,
    discard,
    enabled,
    open_session,
    unit_rows,
    usable_meta,
    warn_unusable,
)
from .specs import ModelSpec

FOLDER = "image-encoder"
FORMAT = 2  # bump when the files or their meaning change: older exports are then made again (2: int8)
SWITCH = "IMGSEARCH_IMAGE_EXPORT"  # =0: none is made or used; new pictures as queries always load torch
MODEL_FILE = "image.onnx"
DATA_FILE = "image.onnx.data"
FILES = (MODEL_FILE, DATA_FILE)
INT8_FILE = "image-int8.onnx"
BATCH = 16  # images per run of the session when indexing, as torch's CPU batch
#: The int8 variant's vectors must be this close to torch fp32's on every probe to be used.
MIN_COS_INT8 = 0.999
INPUT = "pixels"
OUTPUT = "embedding"


class OnnxImage:
    """A model's image tower from its export: model-sized uint8 pixels -> unit vectors, as
    `Encoder.embed_pixels` gives them, with the `preprocess` that decoding needs."""

    def __init__(self, session: Any, meta: dict[str, Any], precision: str = "fp32"):
        from .preprocess import Preprocess

        self.session = session
        self.meta = meta
        self.precision = precision  # of the weights: fp32, or int8 (indexing only)
        self.batch_size = BATCH
        self.dim = int(meta["dim"])
        self.preprocess = Preprocess(**meta["preprocess"])

    @classmethod
    def open(cls, spec: ModelSpec, precision: str = "fp32", threads: int | None = None) -> OnnxImage | None:
        """The export for `spec` in the cache in `precision` (fp32 or int8), or None (why goes to the
        debug log). `threads`: for indexing (see onnx_text.open_session)."""
        if not enabled(SWITCH):
            return None
        folder = export_folder(spec, FOLDER)
        meta = usable_meta(folder, spec, FORMAT, "image")
        if meta is None or (precision != "fp32" and not meta.get(precision, {}).get("supported")):
            return None
        loaded = cls.load(folder, meta, precision, threads)
        if loaded is None:
            discard(folder)
        return loaded

    @classmethod
    def load(
        cls, folder: Path, meta: dict[str, Any], precision: str = "fp32", threads: int | None = None
    ) -> OnnxImage | None:
        """Open the files `meta` describes; None if any is missing, of another size, or unreadable."""
        try:
            names = FILES if precision == "fp32" else (INT8_FILE,)
            check_sizes(folder, meta, names)
            return cls(open_session(folder / names[0], threads=threads), meta, precision)
        except Exception as e:  # a damaged export is only a slower query: the torch path remakes it
            warn_unusable("image", folder, e)
            return None

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 model-sized images -> (N, dim) float32 unit vectors."""
        return unit_rows(self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(pixels)})[0])

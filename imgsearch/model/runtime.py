"""How this process makes vectors: which encoder (torch, or the torch-free ONNX exports), in which numerics,
which engine embeds an index run's images (imgsearch.model.engine), the exports it asks the background
exporter for, the vectors of recent queries, and warm-up for a server.

The contract (imgsearch.model.numerics): stored image vectors are made by the index encoder in the index
numerics; every query vector, text or picture, is made in fp32, by the ONNX export where one is usable (no
torch import: a cold query is fast), else by a torch encoder whose tower runs in fp32. So a query gives the
same vector in a one-off process, in a server, with the exports on or off, batched or alone.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from . import onnx_image
from .cache import export_folder
from .engine import ONNX, TORCH, Engine, choose
from .numerics import QUERY_PRECISION
from .onnx_image import OnnxImage
from .onnx_text import OnnxText, cpu_threads, discard, enabled, usable_meta
from .specs import ModelSpec

if TYPE_CHECKING:
    from .encoder import Encoder
    from .preprocess import Preprocess

_log = logging.getLogger("imgsearch")

TEXT_CACHE = 512  # query and label texts whose vectors a runtime keeps (2 KB each at 512-d)
IMAGE_CACHE = 64  # query images (not indexed) whose vectors it keeps, by content hash

_Key = TypeVar("_Key")


class ModelRuntime:
    """The encoders of one Library. `device` and `precision` are the user's request for indexing (see
    imgsearch.model.numerics); `encoder`, already loaded, is taken as the index encoder."""

    def __init__(
        self,
        home: Path,
        device: str = "auto",
        precision: str = "auto",
        encoder: Encoder | None = None,
        lang: str | None = None,
    ):
        self.home = home
        self.lang = lang  # NLLB's language code for every text; None: from each text's script
        self.device = device
        self.precision = precision
        self._index: Encoder | None = encoder  # makes the stored image vectors, in the index numerics
        self._query: Encoder | None = None  # fp32 throughout, when the index encoder is not
        self._onnx_text: tuple[ModelSpec, OnnxText | None] | None = None
        self._onnx_image: tuple[ModelSpec, OnnxImage | None] | None = None
        self._index_onnx: tuple[ModelSpec, str, OnnxImage] | None = None  # an index run's, kept for the next
        self._offered: set[str] = set()  # models whose exports this runtime asked for
        self.warm = False  # set by warm_up: many queries will follow
        self.one_off = False  # set by the command line: this process exits when its command is done
        self._texts: _Recent[tuple[str, str | None, str]] = _Recent()
        self._images: _Recent[tuple[str, bytes]] = _Recent()
        # Query vectors are made one at a time: a server's request threads share the caches, the lazily
        # opened encoders and the model. An index run's batches (a writer thread) do not take it.
        self._encoding = threading.RLock()

    # -- torch encoders ----------------------------------------------------------------------------------
    def encoder(self, spec: ModelSpec) -> Encoder:
        """The index encoder for `spec`, loaded once and kept."""
        if self._index is None or self._index.spec != spec:
            from .encoder import Encoder

            self._index = Encoder.load(spec, self.device, self.precision)
        return self._index

    def query_encoder(self, spec: ModelSpec) -> Encoder:
        """A torch encoder whose image tower runs in fp32 (its text tower always does): the index encoder
        when its numerics are fp32, else one loaded in fp32 and kept beside it."""
        for held in (self._index, self._query):
            if held is not None and held.spec == spec and held.exact_images:
                return held
        from .encoder import Encoder

        self._query = Encoder.load(spec, self.device, QUERY_PRECISION)
        return self._query

    def index_engine(self, spec: ModelSpec, count: int) -> tuple[Encoder | OnnxImage, Engine]:
        """What embeds the `count` images of an index run, and the choice made (imgsearch.model.engine):
        the image export in ONNX Runtime where it is estimated faster, else the torch index encoder."""
        folder = export_folder(spec, onnx_image.FOLDER)
        meta = usable_meta(folder, spec, onnx_image.FORMAT, "image") if enabled(onnx_image.SWITCH) else None
        int8 = bool(meta and meta.get("int8", {}).get("supported"))
        torch_loaded = self._index is not None and self._index.spec == spec
        engine = choose(folder if meta else None, int8, count, self.device, self.precision, torch_loaded)
        if engine.runtime == ONNX and meta is not None:
            kept = self._index_onnx
            if kept is not None and kept[:2] == (spec, engine.precision):
                return kept[2], engine
            onnx = OnnxImage.load(folder, meta, engine.precision, threads=cpu_threads())
            if onnx is not None:
                self._index_onnx = (spec, engine.precision, onnx)
                return onnx, engine
            discard(folder)
            engine = Engine(TORCH, self.device, self.precision, "the image export did not open")
        encoder = self.encoder(spec)
        device, precision = encoder.runtime.device, encoder.runtime.precision
        return encoder, Engine(TORCH, device, precision, engine.why)

    def holds_torch(self, spec: ModelSpec) -> bool:
        """Whether a torch encoder for `spec` is loaded in this process."""
        return any(held is not None and held.spec == spec for held in (self._index, self._query))

    def _held(self, spec: ModelSpec, images: bool = False) -> Encoder | None:
        """A loaded encoder for `spec` that may embed queries (for `images`: its image tower is fp32)."""
        for held in (self._query, self._index):
            if held is not None and held.spec == spec and (held.exact_images or not images):
                return held
        return None

    # -- query vectors -----------------------------------------------------------------------------------
    def embed_texts(self, spec: ModelSpec, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors for `texts`, the last TEXT_CACHE texts' from memory: a long-lived runtime (the
        server) pages through results, repeats queries and label filters, and each would otherwise cost a
        run of the text tower (~35 ms on one CPU core for ViT-B-32). One thread at a time."""
        found: dict[str, np.ndarray] = {}
        with self._encoding:
            for text in texts:
                vector = self._texts.recall((spec.id, self.lang, text))
                if vector is not None:
                    found[text] = vector
            missing = [text for text in dict.fromkeys(texts) if text not in found]
            if missing:
                vectors = self._text_encoder(spec).embed_texts(missing, lang=self.lang)
                for text, vector in zip(missing, vectors, strict=True):
                    found[text] = vector
                    self._texts.remember((spec.id, self.lang, text), vector, TEXT_CACHE)
        return np.stack([found[text] for text in texts])

    def logits(self, spec: ModelSpec) -> tuple[float, float | None]:
        """The model's learned logit scale and, for a sigmoid-trained model (SigLIP), its logit bias."""
        with self._encoding:
            encoder = self._text_encoder(spec)
            return encoder.logit_scale, encoder.logit_bias

    def embed_image(
        self, spec: ModelSpec, digest: bytes, decode: Callable[[Preprocess], np.ndarray]
    ) -> np.ndarray:
        """The fp32 unit vector of a query picture that is not indexed, by its content hash; `decode`
        gives its model-sized pixels for a Preprocess. One encoding at a time; decoding runs beside others."""
        with self._encoding:
            remembered = self._images.recall((spec.id, digest))
            if remembered is not None:  # the same picture again (the server's next page of an upload)
                return remembered
            encoder = self._image_encoder(spec)
        pixels = decode(encoder.preprocess)[None]
        with self._encoding:
            vector = encoder.embed_pixels(pixels)[0]
            self._images.remember((spec.id, digest), vector, IMAGE_CACHE)
            if not isinstance(encoder, OnnxImage):
                self.offer_exports(spec)
        return vector

    def _text_encoder(self, spec: ModelSpec) -> Encoder | OnnxText:
        """The ONNX text export (no torch import; over only the query's tokens it is also faster warm)
        unless a GPU encoder is held; else a torch encoder, which then makes the export for next time."""
        held = self._held(spec)
        if held is None or held.runtime.device == "cpu":
            if self._onnx_text is None or self._onnx_text[0] != spec:
                self._onnx_text = (spec, OnnxText.open(spec, warm=self.warm))
            if self._onnx_text[1] is not None:
                return self._onnx_text[1]
        encoder = held or self.query_encoder(spec)
        self.offer_exports(spec)
        return encoder

    def _image_encoder(self, spec: ModelSpec) -> Encoder | OnnxImage:
        """A torch encoder with an fp32 image tower when one is loaded (a server, or after indexing in
        fp32), else the ONNX image export (no torch import), else torch in fp32, which then makes it."""
        held = self._held(spec, images=True)
        if held is not None:
            return held
        if self._onnx_image is None or self._onnx_image[0] != spec:
            self._onnx_image = (spec, OnnxImage.open(spec))
        if self._onnx_image[1] is not None:
            return self._onnx_image[1]
        return self.query_encoder(spec)

    # -- exports and warm-up -----------------------------------------------------------------------------
    def warm_up(self, spec: ModelSpec) -> None:
        """Load now what queries need, set up for many of them (a server): an fp32 torch encoder, and the
        text export with its weights prepacked for this CPU (see imgsearch.model.onnx_text.open_session)."""
        with self._encoding:
            self.warm = True
            self._onnx_text = None
            self.query_encoder(spec)
            self._text_encoder(spec)

    def offer_exports(self, spec: ModelSpec) -> bool:
        """Ask the background exporter (imgsearch.model.exporter) for what this model lacks: the ONNX
        exports and this machine's engine speeds. Once per runtime and model; whether one was started."""
        with self._encoding:  # a writer thread asks too: not while a query opens an export
            if spec.id in self._offered:
                return False
            self._offered.add(spec.id)
            from .exporter import request

            started = request(spec, after_exit=self.one_off)
            self._onnx_text = self._onnx_image = None  # opened again once the exports are there
            return started


class _Recent(OrderedDict[_Key, np.ndarray]):
    """Vectors of recent queries, the least recently used forgotten first."""

    def recall(self, key: _Key) -> np.ndarray | None:
        vector = self.get(key)
        if vector is not None:
            self.move_to_end(key)
        return vector

    def remember(self, key: _Key, vector: np.ndarray, capacity: int) -> None:
        vector.setflags(write=False)  # shared by later queries: nobody may change it in place
        self[key] = vector
        while len(self) > capacity:
            self.popitem(last=False)

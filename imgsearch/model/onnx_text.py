"""The text encoder without torch: an ONNX export of the model's text tower, run by ONNX Runtime.

Importing torch and open_clip costs a new process seconds; a text query needs only the text tower. So when
the torch encoder is loaded anyway (indexing, or a query without an export), imgsearch.model.export writes
the text tower, checked against torch, to `<cache>/text-encoder/<model key>/` (imgsearch.model.cache):

  text.onnx, text.onnx.data   the graph, pre-optimised by ONNX Runtime, and its weights (memory-mapped)
  merges.txt                  CLIP's BPE merges (imgsearch.model.tokenizer), or
  tokenizer.json              a Hugging Face tokenizer (imgsearch.model.hf_tokenizer)
  meta.json                   model id, tokenizer settings, how the graph takes its tokens ("input": see
                              compat.TEXT_INPUTS), verification result, versions; or why it is unsupported

This module only reads an export: it imports neither torch nor open_clip.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .cache import export_folder, model_key
from .specs import ModelSpec
from .tokenizer import ClipTokenizer, read_merges, trim_padding

if TYPE_CHECKING:
    from .hf_tokenizer import HfTokenizer

_log = logging.getLogger("imgsearch")

FOLDER = "text-encoder"
# Bump when the files or their meaning change: older exports are then made again (3: in the cache; 4:
# Hugging Face tokenizers and non-causal towers, so the "unsupported" verdicts of format 3 are tried again).
FORMAT = 4
MODEL_FILE = "text.onnx"
DATA_FILE = "text.onnx.data"
MERGES_FILE = "merges.txt"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "meta.json"
FILES = (MODEL_FILE, DATA_FILE)  # and the tokenizer's file: meta.json's "files" names each
INPUT = "tokens"
OUTPUT = "embedding"


def enabled(variable: str = "IMGSEARCH_TEXT_EXPORT") -> bool:
    """$IMGSEARCH_TEXT_EXPORT=0 turns the export off: none is made (it takes disk, ~250 MB for ViT-B-32)
    and none is used, so text queries always load torch. (imgsearch.model.onnx_image has its own switch.)"""
    return os.environ.get(variable, "1").strip().lower() not in ("0", "false", "no", "off")


def read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def current_meta(folder: Path, spec: ModelSpec, format: int = FORMAT) -> dict[str, Any] | None:
    """The export's meta.json when it was made by this format for this very model, else None."""
    meta = read_meta(folder)
    if meta is None or meta.get("format") != format or meta.get("key") != model_key(spec):
        return None
    return meta


def usable_meta(folder: Path, spec: ModelSpec, format: int, what: str) -> dict[str, Any] | None:
    """The meta.json of a current export in `folder` that was checked and found fit, else None (why goes
    to the debug log)."""
    meta = current_meta(folder, spec, format)
    if meta is None:
        _log.debug("no current %s export in %s", what, folder)
        return None
    if not meta.get("supported"):
        _log.debug("%s export unsupported for %s: %s", what, spec.id, meta.get("reason"))
        return None
    return meta


def warn_unusable(what: str, folder: Path, error: Exception) -> None:
    """Say why an export cannot be used: a silent fallback to torch makes every cold query seconds slower."""
    reason = f"{type(error).__name__}: {error}"
    _log.warning(
        "the ONNX %s export in %s cannot be used (%s); torch answers, it is made again", what, folder, reason
    )


def discard(folder: Path) -> None:
    """Remove a current export that would not open (damaged): the exporter then makes it again (it checks
    only that the files are there and of their recorded sizes)."""
    shutil.rmtree(folder, ignore_errors=True)


def check_sizes(folder: Path, meta: dict[str, Any], names: Sequence[str]) -> None:
    """Raise ValueError unless each file has the size meta.json recorded (a torn or replaced export)."""
    for name in names:
        if (folder / name).stat().st_size != meta["files"][name]:
            raise ValueError(f"{name} has another size than recorded")


def cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def open_session(path: Path, warm: bool = False, threads: int | None = None) -> Any:
    """An ONNX Runtime session. The graph was optimised at export, so it is not optimised again. Cold (one
    query in a new process): the weights stay memory-mapped from text.onnx.data, not prepacked (prepacking
    costs more to create than it saves on one query), every core works. `warm` (a server, many queries):
    weights prepacked for this CPU (~0.1 s more to open, each query ~2x faster) and one thread, so that
    queries stay fast while an index or watch run keeps the other cores busy. `threads` (indexing, whose
    batches are many) prepacks and takes that many threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads or (1 if warm else cpu_threads())
    options.inter_op_num_threads = 1
    prepack = warm or threads is not None
    options.add_session_config_entry("session.disable_prepacking", "0" if prepack else "1")
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # one query: no busy waiting
    options.log_severity_level = 3  # errors only; our caller says what happened
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxText:
    """A model's text tower from its export: texts -> unit vectors, as `Encoder.embed_texts` gives them."""

    def __init__(self, session: Any, tokenizer: ClipTokenizer | HfTokenizer, meta: dict[str, Any]):
        self.session = session
        self.tokenizer = tokenizer
        self.meta = meta
        self.input = meta.get("input", "prefix")
        self.dim = int(meta["dim"])
        self.logit_scale = float(meta["logit_scale"])
        bias = meta.get("logit_bias")
        self.logit_bias = float(bias) if bias is not None else None

    @classmethod
    def open(cls, spec: ModelSpec, warm: bool = False) -> OnnxText | None:
        """The export for `spec` in the cache, or None (why goes to the debug log): none yet, recorded as
        unsupported, made for other weights or an older format, or damaged."""
        if not enabled():
            return None
        folder = export_folder(spec, FOLDER)
        meta = usable_meta(folder, spec, FORMAT, "text")
        loaded = None if meta is None else cls.load(folder, meta, warm)
        if meta is not None and loaded is None:
            discard(folder)
        return loaded

    @classmethod
    def load(cls, folder: Path, meta: dict[str, Any], warm: bool = False) -> OnnxText | None:
        """Open the files `meta` describes; None if any is missing, of another size, or unreadable."""
        try:
            check_sizes(folder, meta, list(meta["files"]))
            return cls(
                open_session(folder / MODEL_FILE, warm), open_tokenizer(folder, meta["tokenizer"]), meta
            )
        except Exception as e:  # a damaged export is only a slower query: the torch path remakes it
            warn_unusable("text", folder, e)
            return None

    def embed_texts(self, texts: Sequence[str], lang: str | None = None) -> np.ndarray:
        """Texts -> (N, dim) float32 unit vectors. Unless the graph takes the whole context ("full"), the
        tokens are cut after the last one that is not padding (the graph takes any length: see
        compat.encode_text_prefix and compat.TEXT_INPUTS). `lang`: NLLB's language code for every text
        (None: each text's from its script); other tokenizers have none."""
        tokens = self.tokenizer(texts, lang)
        if self.input != "full":
            tokens = trim_padding(tokens, self.tokenizer.pad_id)
        return unit_rows(self.session.run([OUTPUT], {INPUT: tokens})[0])


def open_tokenizer(folder: Path, settings: dict[str, Any]) -> ClipTokenizer | HfTokenizer:
    """The torch-free tokenizer an export's meta.json describes, from its file in `folder`."""
    if settings["kind"] == "clip-bpe":
        merges = read_merges(folder / MERGES_FILE)
        return ClipTokenizer(merges, settings["context_length"], settings["clean"])
    if settings["kind"] == "hf":
        from .hf_tokenizer import HfTokenizer

        return HfTokenizer(folder / TOKENIZER_FILE, settings)
    raise ValueError(f"unknown tokenizer kind {settings['kind']!r}")


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1, as float32 (an all-zero row stays zero)."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)

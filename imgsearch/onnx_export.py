"""Write the ONNX text export (see imgsearch.onnx_text) from a loaded torch encoder, checked before use.

Runs where torch is loaded already (indexing, or a query that had no export), once per model and index
home. The export is made from the same weights in fp32, pre-optimised by ONNX Runtime, then checked:
imgsearch's tokenizer must give open_clip's token ids and the ONNX vectors cosine >= MIN_COS to the torch
encoder's on PROBES; otherwise, or when the model's tokenizer is not CLIP's BPE, meta.json records why
and queries keep the torch path. Files go to a temporary folder that is renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .encoder import Encoder, causal_text_tower, encode_text_prefix
from .onnx_text import (
    DATA_FILE,
    FILES,
    FORMAT,
    INPUT,
    MERGES_FILE,
    META_FILE,
    MODEL_FILE,
    OUTPUT,
    OnnxText,
    current_meta,
    enabled,
    export_folder,
    source_stamp,
)
from .tokenizer import CLEANERS, MERGES, open_clip_vocab, read_merges

_log = logging.getLogger("imgsearch")

MIN_COS = 0.9999
PROBES = [
    "",
    "a photo of a dog",
    "A Red APPLE on a wooden table.",
    "beach at sunset, no people",
    "don't you're we've I'm they'll he'd it's",
    "café crème brûlée, naïve résumé",
    "東京タワーの夜景",
    "서울의 거리",
    "🐶 and 🐱 on a sofa 👍🏽",
    "mountain lake   in\twinter\n",
    "Tom &amp; Jerry &lt;3",
    "hello_world snake_case #hashtag @someone",
    "a diagram with the numbers 1234567 and 3.14",
    "ＦＵＬＬ width and Ã©tÃ© mojibake",
    "<start_of_text> special tokens typed by hand <end_of_text>",
    "an extremely long description " * 20,
    "x",
    "!!!???...",
    "the quick brown fox jumps over the lazy dog",
    "a black and white photograph of an old steam train crossing a bridge",
]


def ensure_text_export(encoder: Encoder, home: Path, on_start: Callable[[], None] | None = None) -> None:
    """Export the encoder's text tower into `home` unless a usable export, or a record that this model is
    unsupported by these library versions, is there already; `on_start` is called when one is made (it
    takes seconds). Never raises: a failure costs speed only."""
    if not enabled():
        return
    folder = export_folder(home, encoder.spec.id)
    meta = current_meta(folder, encoder.spec)
    if meta is not None:
        if meta.get("supported") and OnnxText.load(folder, meta) is not None:
            return
        if not meta.get("supported") and meta.get("versions") == _versions():
            return
    if on_start is not None:
        on_start()
    try:
        export_text(encoder, folder)
    except OSError as e:  # a read-only home or a full disk: try again another time
        _log.debug("cannot write the text export to %s: %s", folder, e)
    except Exception as e:  # a model the exporter cannot handle; recorded so it is not tried every query
        _log.debug("text export of %s failed: %s: %s", encoder.spec.id, type(e).__name__, e)
        with contextlib.suppress(OSError):
            _write_meta_only(folder, encoder, f"export failed: {type(e).__name__}: {e}"[:500])


def export_text(encoder: Encoder, folder: Path) -> dict[str, Any]:
    """Export, verify and install; returns the meta.json written (supported or not)."""
    started = time.perf_counter()
    tokenizer = tokenizer_config(encoder.tokenizer)
    if tokenizer is None:
        return _write_meta_only(
            folder, encoder, "the model's tokenizer is not open_clip's CLIP BPE tokenizer"
        )
    if not causal_text_tower(encoder.model):
        return _write_meta_only(folder, encoder, "the text tower is not open_clip's causal CLIP transformer")
    tmp = _temp_folder(folder)
    try:
        (tmp / MERGES_FILE).write_text("\n".join(read_merges(open_clip_vocab())), encoding="utf-8")
        reference = _fp32_cpu(encoder)
        _export_onnx(reference, tmp)
        meta = _meta(encoder, tokenizer=tokenizer, dim=reference.dim, logit_scale=reference.logit_scale)
        meta["files"] = {name: (tmp / name).stat().st_size for name in FILES}
        meta.update(_verify(reference, tmp, meta))
        if not meta["supported"]:
            for name in FILES:
                (tmp / name).unlink()
            del meta["files"]
        meta["export_seconds"] = round(time.perf_counter() - started, 2)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        _install(tmp, folder)
        _log.info(
            "text encoder exported for torch-free queries in %.1f s (%s)",
            meta["export_seconds"],
            "checked" if meta["supported"] else meta["reason"],
        )
        return meta
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tokenizer_config(tokenizer: Any) -> dict[str, Any] | None:
    """How to rebuild `tokenizer` without torch, or None when imgsearch.tokenizer cannot: only open_clip's
    SimpleTokenizer with its own vocabulary, no extra special tokens and no token-dropping reduction."""
    from open_clip import tokenizer as oc

    if type(tokenizer) is not oc.SimpleTokenizer or tokenizer.reduction_fn is not None:
        return None
    if tokenizer.vocab_size != 2 * 256 + MERGES + 2 or not tokenizer.context_length:
        return None
    cleaners = {
        "lower": oc._clean_lower,
        "whitespace": oc._clean_whitespace,
        "canonicalize": oc._clean_canonicalize,
    }
    clean = next((name for name, fn in cleaners.items() if tokenizer.clean_fn is fn), None)
    if clean not in CLEANERS:
        return None
    return {"kind": "clip-bpe", "context_length": int(tokenizer.context_length), "clean": clean}


def _fp32_cpu(encoder: Encoder) -> Encoder:
    """The encoder itself when it runs fp32 on the CPU, else the same weights loaded so (the export must
    hold the original weights, not bf16/fp16 roundings of them)."""
    if encoder.runtime.device == "cpu" and encoder.runtime.precision == "fp32":
        return encoder
    return Encoder.load(encoder.spec, device="cpu", precision="fp32")


def _export_onnx(encoder: Encoder, folder: Path) -> None:
    """torch.onnx (TorchScript exporter) to a raw file, then ONNX Runtime's offline graph optimisation into
    text.onnx with the weights in text.onnx.data, so a query's session starts without optimising.

    The graph is encode_text_prefix with a variable number of tokens, so a query runs the tower over its
    ~10 tokens, not the whole context (4-7x less work). torch's MultiheadAttention would fix the length it
    was traced with into its reshapes; each block's attention is swapped, for the export only, for the same
    arithmetic written with shapes the tracer keeps symbolic. _verify checks the result, lengths 2 to 77."""
    import onnxruntime as ort
    import torch

    class TextTower(torch.nn.Module):
        def __init__(self, model: Any):
            super().__init__()
            self.model = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return encode_text_prefix(self.model, tokens)

    raw = folder / "raw.onnx"
    tokens = torch.zeros((2, 8), dtype=torch.long)
    tokens[:, 0], tokens[:, 1], tokens[:, 2] = 49406, 320, 49407
    with torch.no_grad(), warnings.catch_warnings(), _traceable_attention(encoder.model):
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and opset notes are not for users
        torch.onnx.export(
            TextTower(encoder.model).eval(),
            (tokens,),
            str(raw),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch", 1: "length"}, OUTPUT: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    options = ort.SessionOptions()
    # EXTENDED fuses GELU and layer norm into CPU kernels; ALL would add layouts tied to this processor,
    # and the index folder may move to another machine.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(folder / MODEL_FILE)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", DATA_FILE)
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    options.log_severity_level = 3
    ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
    raw.unlink()


@contextlib.contextmanager
def _traceable_attention(model: Any) -> Iterator[None]:
    """Give each text block an `attention` that computes what open_clip's ResidualAttentionBlock.attention
    computes (nn.MultiheadAttention, batch first, no separate key/value input) with reshapes by -1, then
    take it away again. Blocks of another kind keep theirs (and _verify then tells whether that works)."""
    import torch
    from open_clip.transformer import ResidualAttentionBlock

    def attention(
        block: Any, q_x: torch.Tensor, k_x: Any = None, v_x: Any = None, attn_mask: Any = None
    ) -> torch.Tensor:
        mha = block.attn
        q, k, v = torch.nn.functional.linear(q_x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (mha.num_heads, -1)).transpose(1, 2)

        mask = attn_mask.to(q_x.dtype) if attn_mask is not None else None
        out = torch.nn.functional.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=mask)
        return mha.out_proj(out.transpose(1, 2).flatten(2))

    patched = [
        block
        for block in model.transformer.resblocks
        if type(block) is ResidualAttentionBlock
        and isinstance(block.attn, torch.nn.MultiheadAttention)
        and block.attn.batch_first
        and block.attn.in_proj_weight is not None
    ]
    for block in patched:
        block.attention = partial(attention, block)
    try:
        yield
    finally:
        for block in patched:
            del block.attention


def _verify(reference: Encoder, folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Open the export as a query would and compare it with torch on PROBES, in one batch and one by one
    (every length the graph must handle): tokens equal, cos >= MIN_COS."""
    import numpy as np

    onnx = OnnxText.load(folder, meta)
    if onnx is None:
        return {"supported": False, "reason": "the exported files do not load"}
    ours = onnx.tokenizer(PROBES)
    theirs = reference.tokenizer(PROBES).numpy()
    if not np.array_equal(ours, theirs):
        bad = [p for p, a, b in zip(PROBES, ours, theirs, strict=True) if not np.array_equal(a, b)]
        return {"supported": False, "reason": f"tokenizer differs from open_clip on {bad[:3]}"}
    expected = reference.embed_texts(PROBES)
    alone = np.concatenate([onnx.embed_texts([probe]) for probe in PROBES])  # each at its own length
    cos = float(min((got * expected).sum(axis=1).min() for got in (onnx.embed_texts(PROBES), alone)))
    verified = {"probes": len(PROBES), "min_cos": round(cos, 7)}
    if cos < MIN_COS:
        return {"supported": False, "reason": f"cosine to torch {cos:.6f} < {MIN_COS}", "verified": verified}
    return {"supported": True, "verified": verified}


def _meta(encoder: Encoder, **extra: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "model": encoder.spec.id,
        "source": source_stamp(encoder.spec),
        "versions": _versions(),
        **extra,
    }


def _versions() -> dict[str, str | None]:
    """The libraries that made or run the export; an 'unsupported' verdict is retried when they change."""

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {name: installed(name) for name in ("torch", "open_clip_torch", "onnxruntime")}


def _write_meta_only(folder: Path, encoder: Encoder, reason: str) -> dict[str, Any]:
    """Record that this model has no export, and why, so queries stop trying."""
    meta = _meta(encoder, supported=False, reason=reason)
    tmp = _temp_folder(folder)
    try:
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        _install(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _temp_folder(folder: Path) -> Path:
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    return tmp


def _install(tmp: Path, folder: Path) -> None:
    """Swap `tmp` in for `folder` by renames, so a reader sees the old export or the new, never a mix."""
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        folder.rename(old)
    try:
        tmp.rename(folder)
    except OSError:  # another process installed its own export meanwhile: keep that one
        _log.debug("another process installed a text export in %s first", folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

"""Write the ONNX text and image exports (see imgsearch.model.onnx_text, imgsearch.model.onnx_image)
from a loaded torch encoder, checked before use.

Runs in the background exporter (imgsearch.model.exporter), once per model content for a user (the exports
live in the per-user cache, imgsearch.model.cache). An export is made from the same weights in fp32,
pre-optimised by ONNX Runtime, then checked: for text, imgsearch's torch-free tokenizer (CLIP's BPE,
imgsearch.model.tokenizer, or a Hugging Face one, imgsearch.model.hf_tokenizer) must give the torch
tokenizer's ids and the ONNX vectors cosine >= MIN_COS to the torch encoder's on PROBES (for NLLB, with
each probe's language code and with one code for all); for images, the vectors of the image probes, and an
int8 variant is kept beside it when its vectors are within MIN_COS_INT8. Otherwise, or when the model's
tokenizer or text tower is of a kind imgsearch cannot rebuild, meta.json records why and queries keep the
torch path. Files go to a temporary folder that is renamed into place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from . import onnx_image
from .cache import export_folder, model_key
from .compat import (
    encode_text_prefix,
    hf_tokenizer_config,
    text_tower_input,
    tokenizer_config,
    traceable_attention,
)
from .encoder import Encoder
from .onnx_image import OnnxImage
from .onnx_text import (
    DATA_FILE,
    FILES,
    FOLDER,
    FORMAT,
    INPUT,
    MERGES_FILE,
    META_FILE,
    MODEL_FILE,
    OUTPUT,
    TOKENIZER_FILE,
    OnnxText,
    current_meta,
    enabled,
)
from .tokenizer import open_clip_vocab, read_merges, trim_padding

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
    "木桌上的红苹果",
    "تفاحة حمراء على طاولة خشبية",
    "ein Hund läuft bei Sonnenuntergang am Strand",
    "夕焼けの浜辺を走る犬 and a dog",
    "%!…+…¿£#“!",  # CLIP's id 0 ("!") inside the text: padding is not told by counting tokens
]
#: A language code given for every probe (`--lang`), for a tokenizer that takes one (NLLB).
PROBE_LANG = "deu_Latn"


#: Seed of the noise images among the image export's probes (with flat grey and a gradient: _verify_image).
IMAGE_PROBE_SEED = 20261127


def ensure_text_export(encoder: Encoder, on_start: Callable[[], None] | None = None) -> bool:
    """Export the encoder's text tower into the cache unless a usable export, or a record that this model
    is unsupported by these library versions, is there already; `on_start` is called when one is made (it
    takes seconds). Whether one was made. Never raises: a failure costs speed only."""
    if not enabled():
        return False
    folder = export_folder(encoder.spec, FOLDER)
    return _ensure(encoder, folder, FORMAT, OnnxText.load, export_text, on_start)


def ensure_image_export(encoder: Encoder, on_start: Callable[[], None] | None = None) -> bool:
    """The same for the image tower (imgsearch.model.onnx_image)."""
    if not enabled(onnx_image.SWITCH):
        return False
    folder = export_folder(encoder.spec, onnx_image.FOLDER)
    return _ensure(encoder, folder, onnx_image.FORMAT, OnnxImage.load, export_image, on_start)


def _ensure(
    encoder: Encoder,
    folder: Path,
    format: int,
    load: Callable[[Path, dict[str, Any]], object | None],
    export: Callable[[Encoder, Path], dict[str, Any]],
    on_start: Callable[[], None] | None,
) -> bool:
    meta = current_meta(folder, encoder.spec, format)
    if meta is not None:
        if meta.get("supported") and load(folder, meta) is not None:
            return False
        if not meta.get("supported") and meta.get("versions") == _versions():
            return False
    if on_start is not None:
        on_start()
    try:
        export(encoder, folder)
        return True
    except OSError as e:  # a read-only home or a full disk: try again another time
        _log.warning("cannot write the ONNX export to %s (%s); cold queries keep loading torch", folder, e)
    except Exception as e:  # a model the exporter cannot handle; recorded so it is not tried every query
        _log.warning(
            "the ONNX export of %s failed (%s: %s); cold queries keep loading torch",
            encoder.spec.id,
            type(e).__name__,
            e,
        )
        with contextlib.suppress(OSError):
            _write_meta_only(folder, encoder, f"export failed: {type(e).__name__}: {e}"[:500], format)
    return False


def export_text(encoder: Encoder, folder: Path) -> dict[str, Any]:
    """Export, verify and install; returns the meta.json written (supported or not)."""
    started = time.perf_counter()
    clip = tokenizer_config(encoder.tokenizer)
    hf = None if clip is not None else hf_tokenizer_config(encoder.tokenizer)
    if isinstance(hf, str):
        return _write_meta_only(folder, encoder, hf, FORMAT)
    input = text_tower_input(encoder.model)
    if input is None:
        reason = (
            f"the text tower ({type(getattr(encoder.model, 'text', encoder.model)).__name__}) is neither "
            "open_clip's text transformer nor a Hugging Face model in open_clip's HFTextEncoder"
        )
        return _write_meta_only(folder, encoder, reason, FORMAT)
    tmp = _temp_folder(folder)
    try:
        if hf is not None:
            tokenizer, text = hf
            (tmp / TOKENIZER_FILE).write_text(text, encoding="utf-8")
            files = (*FILES, TOKENIZER_FILE)
        else:
            tokenizer = clip or {}
            (tmp / MERGES_FILE).write_text("\n".join(read_merges(open_clip_vocab())), encoding="utf-8")
            files = (*FILES, MERGES_FILE)
        reference = _fp32_cpu(encoder, images=False)
        _export_text_onnx(reference, tmp, input, int(tokenizer.get("pad_id", 0)))
        extra = {
            "tokenizer": tokenizer,
            "input": input,
            "dim": reference.dim,
            "logit_scale": reference.logit_scale,
            "logit_bias": reference.logit_bias,
        }
        meta = _meta(encoder, FORMAT, **extra)
        return _finish(tmp, folder, meta, files, _verify_text, reference, started)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_image(encoder: Encoder, folder: Path) -> dict[str, Any]:
    """Export, verify and install the image tower; returns the meta.json written (supported or not)."""
    started = time.perf_counter()
    tmp = _temp_folder(folder)
    try:
        reference = _fp32_cpu(encoder, images=True)
        _export_image_onnx(reference, tmp)
        preprocess = dataclasses.asdict(reference.preprocess)
        meta = _meta(encoder, onnx_image.FORMAT, dim=reference.dim, preprocess=preprocess)
        files: tuple[str, ...] = onnx_image.FILES
        try:
            _quantize_int8(tmp / onnx_image.MODEL_FILE, tmp / onnx_image.INT8_FILE)
            files = (*files, onnx_image.INT8_FILE)
        except Exception as e:  # the fp32 export stands alone: indexing keeps the other engines
            meta["int8_failed"] = f"quantizing failed: {type(e).__name__}: {e}"[:300]
        return _finish(tmp, folder, meta, files, _verify_image, reference, started)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _finish(
    tmp: Path,
    folder: Path,
    meta: dict[str, Any],
    files: tuple[str, ...],
    verify: Callable[[Encoder, Path, dict[str, Any]], dict[str, Any]],
    reference: Encoder,
    started: float,
) -> dict[str, Any]:
    """Record the files' sizes, check the export against torch, keep it only if it passed, and install."""
    meta["files"] = {name: (tmp / name).stat().st_size for name in files}
    meta.update(verify(reference, tmp, meta))
    if not meta["supported"]:
        for name in meta.pop("files"):
            (tmp / name).unlink()
    meta["export_seconds"] = round(time.perf_counter() - started, 2)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    _install(tmp, folder)
    _log.info(
        "%s exported for torch-free queries in %.1f s (%s)",
        folder.parent.name,
        meta["export_seconds"],
        "checked" if meta["supported"] else meta["reason"],
    )
    return meta


def _fp32_cpu(encoder: Encoder, images: bool) -> Encoder:
    """The encoder itself when the tower to export runs fp32 on the CPU (the text tower always does there),
    else the same weights loaded so: the export must hold the original weights, not bf16/fp16 roundings."""
    if encoder.runtime.device == "cpu" and (encoder.exact_images or not images):
        return encoder
    return Encoder.load(encoder.spec, device="cpu", precision="fp32")


def _export_text_onnx(encoder: Encoder, folder: Path, input: str, pad: int) -> None:
    """The graph of a causal CLIP tower ("prefix") is encode_text_prefix with a variable number of tokens,
    so a query runs the tower over its ~10 tokens, not the whole context (4-7x less work); so is a Hugging
    Face tower's ("masked": its attention mask and pooling ignore padding), traced on a batch with
    padding so that the mask stays in the graph. A non-causal open_clip tower ("full") attends to the
    padding and may pool at it: its graph takes the whole context. torch's MultiheadAttention would fix the
    length it was traced with into its reshapes; each open_clip block's attention is swapped, for the
    export only, for the same arithmetic written with shapes the tracer keeps symbolic. _verify_text
    checks the result, every probe alone and in one batch (lengths 2 to the context)."""
    import torch

    model = encoder.model

    class TextTower(torch.nn.Module):
        def __init__(self, model: Any):
            super().__init__()
            self.model = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            if input == "prefix":
                return encode_text_prefix(self.model, tokens)
            return self.model.encode_text(tokens)

    tokens = encoder.tokenize(["a photo of a red apple on a wooden table", "a dog"])
    if input != "full":
        tokens = trim_padding(tokens, pad)
    axes = {INPUT: {0: "batch", 1: "length"} if input != "full" else {0: "batch"}, OUTPUT: {0: "batch"}}
    with traceable_attention(model), traceable_attention(getattr(model, "text", None)):
        _write_onnx(TextTower(model), tokens, folder / MODEL_FILE, DATA_FILE, INPUT, OUTPUT, axes)


def _export_image_onnx(encoder: Encoder, folder: Path) -> None:
    """The graph takes (N, H, W, 3) uint8 pixels, as imgsearch.index.decode makes them, and does what
    Encoder.embed_pixels does to them before the tower: channels first, scaled, normalised. The same
    attention swap as for text keeps torch's fused attention kernel, which ONNX cannot express, out of it."""
    import torch

    class ImageTower(torch.nn.Module):
        def __init__(self, encoder: Encoder):
            super().__init__()
            self.model = encoder.model
            self.tower_input = encoder.tower_input

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.model.encode_image(self.tower_input(pixels))

    prep = encoder.preprocess
    pixels = torch.zeros((2, prep.height, prep.width, 3), dtype=torch.uint8)
    with traceable_attention(getattr(encoder.model, "visual", None)):
        axes = {onnx_image.INPUT: {0: "batch"}, onnx_image.OUTPUT: {0: "batch"}}
        target = folder / onnx_image.MODEL_FILE
        module = ImageTower(encoder)
        _write_onnx(module, pixels, target, onnx_image.DATA_FILE, onnx_image.INPUT, onnx_image.OUTPUT, axes)


def _write_onnx(
    module: Any, example: Any, target: Path, data_file: str, input: str, output: str, axes: dict[str, Any]
) -> None:
    """torch.onnx (TorchScript exporter) to a raw file, then ONNX Runtime's offline graph optimisation into
    `target` with the weights in `data_file` beside it, so a query's session starts without optimising."""
    import onnxruntime as ort
    import torch

    raw = target.with_name("raw.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and opset notes are not for users
        torch.onnx.export(
            module.eval(),
            (example,),
            str(raw),
            input_names=[input],
            output_names=[output],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    options = ort.SessionOptions()
    # EXTENDED fuses GELU and layer norm into CPU kernels; ALL would add layouts tied to this processor,
    # and the index folder may move to another machine.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", data_file)
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    options.log_severity_level = 3
    ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
    raw.unlink()


def _quantize_int8(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic quantization of the optimised graph's MatMul and Gemm weights to int8 (the
    activations are quantized per batch as they come). Its fused nodes have no ONNX type information,
    so float is named as the default type."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )


def _verify_text(reference: Encoder, folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Open the export as a query would and compare it with torch on PROBES, in one batch and one by one
    (every length the graph must handle): tokens equal, cos >= MIN_COS."""
    import numpy as np

    onnx = OnnxText.load(folder, meta)
    if onnx is None:
        return {"supported": False, "reason": "the exported files do not load"}
    langs = [None, PROBE_LANG] if meta["tokenizer"].get("language") else [None]
    for lang in langs:
        ours = onnx.tokenizer(PROBES, lang)
        theirs = reference.tokenize(PROBES, lang).numpy()
        if not np.array_equal(ours, theirs):
            bad = [p for p, a, b in zip(PROBES, ours, theirs, strict=True) if not np.array_equal(a, b)]
            with_lang = f" with language {lang}" if lang else ""
            return {
                "supported": False,
                "reason": f"tokenizer differs from the torch one{with_lang} on {bad[:3]}",
            }
    expected = reference.embed_texts(PROBES)
    alone = np.concatenate([onnx.embed_texts([probe]) for probe in PROBES])  # each at its own length
    verdict = _verdict(expected, [onnx.embed_texts(PROBES), alone])
    if verdict["supported"] and len(langs) > 1:
        verdict = _verdict(reference.embed_texts(PROBES, PROBE_LANG), [onnx.embed_texts(PROBES, PROBE_LANG)])
        verdict["verified"]["probes"] = 2 * len(PROBES)
    return verdict


def _verify_image(reference: Encoder, folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Open the export as a query would and compare it with torch on image probes, in one batch and one by
    one: cos >= MIN_COS. The int8 variant, when quantizing worked, must reach MIN_COS_INT8 on them, else
    its file is dropped and meta.json says why."""
    import numpy as np

    onnx = OnnxImage.load(folder, meta)
    if onnx is None:
        return {"supported": False, "reason": "the exported files do not load"}
    probes = _image_probes(reference.preprocess)
    expected = reference.embed_pixels(probes)
    alone = np.concatenate([onnx.embed_pixels(probe[None]) for probe in probes])
    verdict = _verdict(expected, [onnx.embed_pixels(probes), alone])
    int8 = {"supported": False, "reason": meta.pop("int8_failed", "not made")}
    if not verdict["supported"]:
        int8 = {"supported": False, "reason": "the fp32 export failed its check"}
    elif (folder / onnx_image.INT8_FILE).exists():
        quantized = OnnxImage.load(folder, meta, "int8")
        if quantized is None:
            int8 = {"supported": False, "reason": "the int8 file does not load"}
        else:
            int8 = _verdict(expected, [quantized.embed_pixels(probes)], onnx_image.MIN_COS_INT8)
        if not int8["supported"]:
            (folder / onnx_image.INT8_FILE).unlink()
            del meta["files"][onnx_image.INT8_FILE]
    return {**verdict, "int8": int8}


def _image_probes(prep: Any) -> Any:
    """Noise, flat grey, a gradient, and smooth colour fields with sensor-like noise (what photos look like
    to the tower, as far as the probes can say without shipping photos)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(IMAGE_PROBE_SEED)
    shape = (prep.height, prep.width, 3)
    noise = rng.integers(0, 256, (2, *shape))
    grey = np.full((1, *shape), 128)
    ramp = np.broadcast_to(np.linspace(0, 255, prep.width)[None, None, :, None], grey.shape)
    fields = []
    for _ in range(5):
        coarse = Image.fromarray(rng.integers(0, 256, (5, 5, 3)).astype(np.uint8))
        smooth = np.asarray(coarse.resize((prep.width, prep.height), Image.Resampling.BICUBIC), np.int16)
        fields.append(np.clip(smooth + rng.integers(-12, 12, shape), 0, 255))
    return np.concatenate([noise, grey, ramp, np.stack(fields)]).astype(np.uint8)


def _verdict(expected: Any, outputs: list[Any], least: float | None = None) -> dict[str, Any]:
    """Supported when every output row has cosine >= `least` (default MIN_COS) to torch's."""
    least = MIN_COS if least is None else least
    cos = float(min((got * expected).sum(axis=1).min() for got in outputs))
    verified = {"probes": len(expected), "min_cos": round(cos, 7)}
    if cos < least:
        return {"supported": False, "reason": f"cosine to torch {cos:.6f} < {least}", "verified": verified}
    return {"supported": True, "verified": verified}


def _meta(encoder: Encoder, format: int, **extra: Any) -> dict[str, Any]:
    return {
        "format": format,
        "model": encoder.spec.id,
        "key": model_key(encoder.spec),
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


def _write_meta_only(folder: Path, encoder: Encoder, reason: str, format: int) -> dict[str, Any]:
    """Record that this model has no export, and why, so queries stop trying."""
    meta = _meta(encoder, format, supported=False, reason=reason)
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

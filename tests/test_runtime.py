"""Where and in which numerics the model runs: the GPU path (CUDA, fp16, larger batches) is kept honest on
machines without one by checking the choice and the half-precision numerics on the CPU; on a machine with
CUDA the last test indexes on the GPU and compares with the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imgsearch import Library
from imgsearch.index.decode import decode_file
from imgsearch.model.encoder import Encoder, Runtime, choose_runtime
from imgsearch.model.specs import parse_model_spec
from tests import index_db


def test_cuda_comes_first_with_fp16_and_larger_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_runtime() == Runtime("cuda", "fp16", 64)
    assert choose_runtime("cpu").device == "cpu"
    assert choose_runtime("auto", "fp32") == Runtime("cuda", "fp32", 64)


def test_cpu_picks_bf16_only_where_native(monkeypatch: pytest.MonkeyPatch) -> None:
    from imgsearch.model.numerics import cpu_computes_bf16

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert choose_runtime() == Runtime("cpu", "bf16" if cpu_computes_bf16() else "fp32", 16)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def test_half_precision_numerics_match_fp32(tiny_model: str) -> None:
    """The casts the GPU path makes (uint8 pixels normalised on the device, an fp16 image tower), run on the
    CPU: image vectors within cos 0.99 of fp32, text vectors exactly fp32's (the text tower stays fp32)."""
    spec = parse_model_spec(tiny_model)
    full = Encoder.load(spec, device="cpu", precision="fp32")
    half = Encoder.load(spec, device="cpu", precision="fp16")
    photos = sorted(Path("sample_photos").glob("*.jpg"))[:8]
    pixels = np.stack([decode_file(str(p), full.preprocess).pixels for p in photos])
    assert _cosines(full.embed_pixels(pixels), half.embed_pixels(pixels)).min() >= 0.99
    texts = ["a cat", "a red apple on a table", "snow on the mountains"]
    assert np.array_equal(full.embed_texts(texts), half.embed_texts(texts))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; the CPU tests above cover the rest")
def test_index_on_cuda_matches_cpu(tiny_model: str, tmp_path: Path) -> None:
    gpu = Library(tmp_path / "gpu", model=tiny_model, device="cuda").index(["sample_photos"])
    cpu = Library(tmp_path / "cpu", model=tiny_model, device="cpu").index(["sample_photos"])
    assert gpu.encoded == cpu.encoded > 0

    a, b = index_db.vectors(tmp_path / "gpu"), index_db.vectors(tmp_path / "cpu")
    assert a.keys() == b.keys()
    keys = sorted(a)
    assert _cosines(np.stack([a[k] for k in keys]), np.stack([b[k] for k in keys])).min() >= 0.99

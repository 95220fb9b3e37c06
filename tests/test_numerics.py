"""The numerics contract (imgsearch.model.numerics): `auto` is resolved from the CPU's flags without torch,
index numerics are recorded and shown, and query vectors are fp32 whatever the index numerics are."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from imgsearch import Library
from imgsearch.model.encoder import Encoder, Runtime, choose_runtime
from imgsearch.model.numerics import bf16_in_flags, cpu_computes_bf16, cpu_flags, index_precision
from imgsearch.model.specs import parse_model_spec

ZEN3 = "fpu sse sse2 avx avx2 fma f16c bmi2"
SKYLAKE_SP = ZEN3 + " avx512f avx512dq avx512bw avx512vl avx512_vnni"  # bf16 only emulated
ZEN4 = SKYLAKE_SP + " avx512_bf16"
SAPPHIRE_RAPIDS = ZEN4 + " amx_bf16 amx_tile"
NEOVERSE_V1 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp bf16 i8mm"
NEOVERSE_N1 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp"


@pytest.mark.parametrize(
    ("flags", "machine", "native"),
    [
        (ZEN3, "x86_64", False),
        (SKYLAKE_SP, "x86_64", False),
        (ZEN4, "x86_64", True),
        (SAPPHIRE_RAPIDS, "x86_64", True),
        (NEOVERSE_V1, "aarch64", True),
        (NEOVERSE_N1, "aarch64", False),
        ("", "riscv64", False),
    ],
)
def test_bf16_counts_as_native_only_with_hardware_bf16(flags: str, machine: str, native: bool) -> None:
    assert bf16_in_flags(frozenset(flags.split()), machine) is native


def test_flags_are_read_from_the_first_processor(tmp_path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text(f"processor\t: 0\nflags\t\t: {ZEN4}\n\nprocessor\t: 1\nflags\t\t: {ZEN3}\n")
    arm = tmp_path / "arm"
    arm.write_text(f"processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: {NEOVERSE_V1}\n")
    assert "avx512_bf16" in cpu_flags(str(x86))
    assert "bf16" in cpu_flags(str(arm))
    assert cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_auto_is_fp16_on_gpus_and_follows_the_cpu_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGSEARCH_CPU_BF16", "1")
    assert cpu_computes_bf16() and index_precision("cpu") == "bf16"
    monkeypatch.setenv("IMGSEARCH_CPU_BF16", "0")
    assert not cpu_computes_bf16() and index_precision("cpu") == "fp32"
    assert index_precision("cuda") == index_precision("mps") == "fp16"
    assert index_precision("cpu", "fp16") == "fp16"
    assert choose_runtime("cpu") == Runtime("cpu", "fp32", 16)


def test_auto_is_resolved_without_importing_torch() -> None:
    code = (
        "import sys; from imgsearch.model.numerics import index_precision; index_precision('cpu'); "
        "print(sorted(m for m in ('torch', 'numpy', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_query_vectors_are_fp32_whatever_the_index_numerics(tiny_model: str, auto_numerics: str) -> None:
    """The text tower stays fp32 in every encoder; only the image tower takes the index numerics."""
    spec = parse_model_spec(tiny_model)
    auto = Encoder.load(spec, device="cpu")
    exact = Encoder.load(spec, device="cpu", precision="fp32")
    assert auto.runtime.precision == auto_numerics
    assert auto.exact_images is (auto_numerics == "fp32")
    texts = ["a cat", "a red apple on a table", "東京タワーの夜景"]
    assert np.array_equal(auto.embed_texts(texts), exact.embed_texts(texts))
    for module in (auto.model.transformer, auto.model.token_embedding):
        assert all(p.dtype.is_floating_point and p.element_size() == 4 for p in module.parameters())


def test_the_index_records_its_numerics_and_status_shows_them(cli, photos, auto_numerics) -> None:
    assert cli("index", photos).exit_code == 0
    status = json.loads(cli("status", "--json").output)
    assert status["numerics"] == auto_numerics
    assert f"image vectors {auto_numerics}; queries fp32" in cli("status").output


def test_runs_in_other_numerics_are_both_recorded(tiny_model: str, photos, isolated_home) -> None:
    """An index made on one machine and updated on another keeps saying what its vectors are."""
    Library(isolated_home, model=tiny_model, device="cpu", precision="fp32").index([photos])
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (80, 120, 3), dtype=np.uint8)
    Image.fromarray(noise).save(photos / "new.png")  # new content: the second run encodes it
    Library(isolated_home, model=tiny_model, device="cpu", precision="bf16").index([photos])
    assert Library(isolated_home).status().numerics == "bf16+fp32"

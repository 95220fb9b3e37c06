"""The indexing engine: torch or the image export in ONNX Runtime, chosen by the speeds the background
exporter measured on this machine; the exports shared by every index folder of one model in the cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from imgsearch import Library
from imgsearch.index.decode import decode_file
from imgsearch.model import engine as engines
from imgsearch.model.cache import export_folder, model_key
from imgsearch.model.engine import ONNX, TORCH, choose, write_rates
from imgsearch.model.onnx_image import FOLDER as IMAGE_FOLDER
from imgsearch.model.onnx_text import FOLDER as TEXT_FOLDER
from imgsearch.model.specs import parse_model_spec
from tests import index_db
from tests.cli_process import run_fresh
from tests.images import noise_jpeg

TORCH_MODULES = {"torch", "open_clip", "torchvision"}


def _rates(folder: Path, **img_per_s: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = {key.replace("_", " "): value for key, value in img_per_s.items()}
    write_rates(folder, {"torch_device": "cpu", "startup_s": {TORCH: 4.0, ONNX: 0.3}, "img_per_s": names})
    return folder


def test_the_least_estimated_time_wins(tmp_path):
    folder = _rates(tmp_path, torch_cpu_bf16=50.0, onnxruntime_cpu_fp32=20.0, onnxruntime_cpu_int8=40.0)
    # 3 photos: 4.0 + 3/50 for torch against 0.3 + 3/40 for int8
    small = choose(folder, True, 3, precision="auto")
    assert (small.runtime, small.precision) == (ONNX, "int8") and "torch cpu bf16 4.1 s" in small.why
    # 10,000 photos: 4 + 200 s for torch against 0.3 + 250 s for int8
    assert choose(folder, True, 10_000, precision="auto").name == "torch cpu bf16"
    # int8 not verified for this model: fp32 takes the small runs, torch the large ones
    assert choose(folder, False, 3, precision="auto").name == "onnxruntime cpu fp32"
    assert choose(folder, False, 1000, precision="auto").name == "torch cpu bf16"


def test_a_given_precision_keeps_its_numerics_and_torch_loaded_costs_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGSEARCH_CPU_BF16", "1")
    folder = _rates(
        tmp_path,
        torch_cpu_fp32=20.0,
        torch_cpu_bf16=50.0,
        onnxruntime_cpu_fp32=25.0,
        onnxruntime_cpu_int8=90.0,
    )
    assert choose(folder, True, 5000, precision="fp32").name == "onnxruntime cpu fp32"
    assert choose(folder, True, 3, precision="bf16").name == "torch cpu bf16"
    assert choose(folder, True, 3, precision="fp16").runtime == TORCH
    assert choose(folder, True, 3, device="cuda").runtime == TORCH
    # a process that holds the torch encoder already (watch, serve) pays no start-up for it
    assert choose(folder, False, 20, precision="auto", torch_loaded=True).name == "torch cpu bf16"
    assert choose(folder, False, 20, precision="auto", torch_loaded=False).name == "onnxruntime cpu fp32"


def test_without_measured_speeds_torch_embeds_as_before(tmp_path):
    assert choose(None, True, 3).runtime == TORCH
    assert "not measured" in choose(tmp_path, True, 3).why
    elsewhere = _rates(tmp_path / "other", torch_cpu_fp32=1.0, onnxruntime_cpu_fp32=100.0)
    rates = json.loads(next(elsewhere.glob("rates-*.json")).read_text())
    rates["machine"] = "another CPU [avx2]"  # figures from another machine do not count here
    next(elsewhere.glob("rates-*.json")).write_text(json.dumps(rates))
    assert choose(elsewhere, True, 3).runtime == TORCH


def _new_photos(folder: Path, seeds: range) -> list[Path]:
    folder.mkdir(exist_ok=True)
    made = []
    for seed in seeds:
        path = folder / f"new-{seed}.jpg"
        path.write_bytes(noise_jpeg(seed, size=96))
        made.append(path)
    return made


@pytest.fixture
def exports_on(monkeypatch):
    for switch in ("IMGSEARCH_TEXT_EXPORT", "IMGSEARCH_IMAGE_EXPORT"):
        monkeypatch.setenv(switch, "1")


def test_a_small_incremental_index_imports_no_torch_on_the_onnx_path(
    cli, photos, tiny_model, exports_on, exports_made, auto_numerics
):
    assert cli("index", photos).exit_code == 0  # torch embeds: no export yet; the exporter starts after
    exports_made()
    spec = parse_model_spec(tiny_model)
    image_export = export_folder(spec, IMAGE_FOLDER)
    assert (
        list(image_export.glob("rates-*.json")) and (export_folder(spec, TEXT_FOLDER) / "text.onnx").exists()
    )

    new = _new_photos(photos, range(3))
    done = run_fresh(["index", "-v", "--model", tiny_model, str(photos)])
    assert done.returncode == 0, done.stderr
    assert "3 new" in done.stdout
    assert "engine: onnxruntime cpu" in done.stderr and "time: imports" in done.stderr
    assert not TORCH_MODULES & done.modules and "onnxruntime" in done.modules

    library = Library()
    numerics = library.status().numerics or ""
    assert "fp32" in numerics.split("+") or "int8" in numerics.split("+")
    encoder = library.runtime.query_encoder(spec)  # torch in fp32: the reference
    stored = index_db.images(library.home, "vector")
    expected = encoder.embed_pixels(np.stack([decode_file(p, encoder.preprocess).pixels for p in new]))
    for path, vector in zip(new, expected, strict=True):
        assert float(stored[os.fsencode(path)][0] @ vector) >= 0.999


def test_index_folders_of_one_model_share_its_exports(
    cli, photos, tiny_model, exports_on, exports_made, tmp_path, monkeypatch
):
    assert cli("index", photos).exit_code == 0
    exports_made()
    spec = parse_model_spec(tiny_model)
    made = {p: p.stat().st_mtime_ns for p in export_folder(spec, IMAGE_FOLDER).parent.parent.rglob("*.onnx*")}
    assert made
    monkeypatch.setenv("IMGSEARCH_HOME", str(tmp_path / "second-home"))
    done = run_fresh(["index", "-v", "--model", tiny_model, str(photos)])
    assert done.returncode == 0, done.stderr
    assert "engine: onnxruntime" in done.stderr and not TORCH_MODULES & done.modules
    exports_made()
    assert {p: p.stat().st_mtime_ns for p in made} == made  # nothing was made again
    status = Library().status()
    assert status.exports_bytes == sum(p.stat().st_size for p in made) + sum(
        p.stat().st_size
        for kind in (IMAGE_FOLDER, TEXT_FOLDER)
        for p in export_folder(spec, kind).iterdir()
        if not p.name.endswith((".onnx", ".onnx.data"))
    )
    assert not (tmp_path / "second-home" / TEXT_FOLDER).exists()


def test_a_copy_of_a_local_model_folder_shares_the_export_and_new_weights_retire_it(tmp_path):
    from tests.tiny_model import save_tiny_model

    first = parse_model_spec(f"local-dir:{save_tiny_model(tmp_path / 'a')}")
    second = parse_model_spec(f"local-dir:{save_tiny_model(tmp_path / 'b')}")
    other = parse_model_spec(f"local-dir:{save_tiny_model(tmp_path / 'c', seed=1)}")
    assert model_key(first) == model_key(second) != model_key(other)
    assert export_folder(first, IMAGE_FOLDER) == export_folder(second, IMAGE_FOLDER)
    before = export_folder(first, IMAGE_FOLDER)
    save_tiny_model(tmp_path / "a", seed=1)
    os.utime(tmp_path / "a" / "open_clip_model.safetensors", ns=(1, 1))  # whatever its time, new bytes count
    assert export_folder(first, IMAGE_FOLDER) != before


def test_old_exports_in_the_index_folder_are_removed(cli, photos, isolated_home):
    old = isolated_home / TEXT_FOLDER / "ViT-B-32-abc"
    old.mkdir(parents=True)
    (old / "text.onnx.data").write_bytes(b"x" * 1000)
    assert cli("index", photos).exit_code == 0
    assert not (isolated_home / TEXT_FOLDER).exists()


def test_engine_speeds_are_kept_per_machine(tmp_path, monkeypatch):
    folder = _rates(tmp_path, torch_cpu_fp32=1.0)
    monkeypatch.setattr(engines, "describe_cpu", lambda: "some other CPU [avx2]")
    assert engines.read_rates(folder) is None

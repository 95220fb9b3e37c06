"""Same answers on every path: a query gives the same paths in the same order, with scores within 1e-4,
whether it is embedded by the ONNX exports or by torch, in this process or by a running server, under
each resolution of `--precision auto` (fp32 as on AVX2 CPUs, bf16 as on AVX512-BF16 ones)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli_process import run_fresh
from tests.conftest import SAMPLE_PHOTOS, serving

TOLERANCE = 1e-4
TEXTS = ["a cat on a sofa", "snow on the mountains", "a red apple on a table"]


def _exporters_done(cache: Path) -> None:
    """Wait for the background exporters of the cache `cache` (imgsearch.model.exporter)."""
    from imgsearch.model.exporter import wait_all

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGSEARCH_CACHE", str(cache))
        wait_all(timeout=300)


def _kill_exporters(cache: Path) -> None:
    """What conftest does for a test's own cache, for this module's (its fixture outlives a test's)."""
    for marker in (cache / "running").glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int(marker.read_text()), signal.SIGKILL)


@pytest.fixture(scope="module", params=["fp32", "bf16"])
def library(request: pytest.FixtureRequest, tiny_model: str, tmp_path_factory) -> Iterator[dict[str, object]]:
    """sample_photos indexed under one resolution of auto, with both exports made (by the background
    exporter the index run starts, into a cache of its own), and a new picture."""
    folder = tmp_path_factory.mktemp(f"same-{request.param}")
    photos = folder / "photos"
    shutil.copytree(SAMPLE_PHOTOS, photos, ignore=shutil.ignore_patterns("*.md"))
    picture = folder / "new-picture.png"
    source = np.asarray(Image.open(next(iter(sorted(photos.glob("*.jpg"))))).convert("RGB"))
    Image.fromarray(np.ascontiguousarray(source[::-1, ::2])).save(picture)  # not a copy of an indexed file
    env = {
        **os.environ,
        "IMGSEARCH_HOME": str(folder / "home"),
        "IMGSEARCH_CACHE": str(folder / "cache"),
        "IMGSEARCH_MODEL": tiny_model,
        "IMGSEARCH_CPU_BF16": "1" if request.param == "bf16" else "0",
        "IMGSEARCH_TEXT_EXPORT": "1",
        "IMGSEARCH_IMAGE_EXPORT": "1",
    }
    indexed = run_fresh(["index", photos], env)
    assert indexed.returncode == 0, indexed.stderr
    try:
        _exporters_done(folder / "cache")
        status = json.loads(run_fresh(["status", "--json"], env).stdout)
        assert status["numerics"] == request.param
        for kind in ("text-encoder", "image-encoder"):  # both made, and both passed their check
            metas = list((folder / "cache" / kind).glob("*/meta.json"))
            assert len(metas) == 1 and json.loads(metas[0].read_text())["supported"], kind
        yield {"env": env, "picture": picture}
    finally:
        _kill_exporters(folder / "cache")


def _answers(argv: list[str], env: dict[str, str]) -> tuple[list[dict[str, object]], frozenset[str]]:
    done = run_fresh([*argv, "--json", "-n", "12"], env)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], done.modules


def assert_same(a: list[dict[str, object]], b: list[dict[str, object]], tolerance: float = TOLERANCE) -> None:
    """Scores of the same path within `tolerance`; the same order wherever two scores are further apart than
    that (ties within float rounding may swap); a path in one list only lies at the cut-off."""
    sa = {r["path"]: float(r["score"]) for r in a}  # type: ignore[arg-type]
    sb = {r["path"]: float(r["score"]) for r in b}  # type: ignore[arg-type]
    for path in sa.keys() & sb.keys():
        assert abs(sa[path] - sb[path]) <= tolerance, (path, sa[path], sb[path])
    cut = min(min(sa.values()), min(sb.values()))
    for path in sa.keys() ^ sb.keys():
        assert abs(sa.get(path, sb.get(path, cut)) - cut) <= tolerance, path
    order = [p for p in sa if p in sb]
    for i, first in enumerate(order):
        for second in order[i + 1 :]:
            if sa[first] - sa[second] > tolerance:
                assert sb[first] > sb[second], (first, second)
    assert [r["path"] for r in a][:3] == [r["path"] for r in b][:3] or max(sa.values()) - cut <= tolerance


def test_a_text_query_is_the_same_on_every_path(library) -> None:
    env: dict[str, str] = library["env"]  # type: ignore[assignment]
    onnx = {}
    for text in TEXTS:
        onnx[text], loaded = _answers(["query", text, "--no-server"], env)
        assert "torch" not in loaded  # the export answered
        by_torch, loaded = _answers(["query", text, "--no-server"], {**env, "IMGSEARCH_TEXT_EXPORT": "0"})
        assert "torch" in loaded
        assert_same(onnx[text], by_torch)
    for exports in ("1", "0"):  # a server that uses its exports, and one that holds only torch
        server_env = {**env, "IMGSEARCH_TEXT_EXPORT": exports, "IMGSEARCH_IMAGE_EXPORT": exports}
        with serving(server_env):
            for text in TEXTS:
                served, loaded = _answers(["query", text], env)
                assert "numpy" not in loaded  # handed to the server
                assert_same(onnx[text], served)


def test_a_new_picture_is_the_same_query_on_every_path(library) -> None:
    env: dict[str, str] = library["env"]  # type: ignore[assignment]
    picture = str(library["picture"])
    onnx, loaded = _answers(["query", "--image", picture, "--no-server"], env)
    assert "torch" not in loaded
    no_export = {**env, "IMGSEARCH_IMAGE_EXPORT": "0"}
    torch_path, loaded = _answers(["query", "--image", picture, "--no-server"], no_export)
    assert "torch" in loaded
    assert_same(onnx, torch_path)
    with serving(no_export):  # the server embeds it with its own fp32 torch encoder
        served, loaded = _answers(["query", "--image", picture], env)
    assert "numpy" not in loaded
    assert_same(onnx, served)


def test_the_same_texts_batched_or_alone_give_the_same_vectors(tiny_model: str, library, monkeypatch) -> None:
    """Within one process: the torch encoder and the ONNX export, a batch and each text alone."""
    from imgsearch.model.encoder import Encoder
    from imgsearch.model.onnx_text import OnnxText
    from imgsearch.model.specs import parse_model_spec

    env: dict[str, str] = library["env"]  # type: ignore[assignment]
    monkeypatch.setenv("IMGSEARCH_TEXT_EXPORT", "1")
    monkeypatch.setenv("IMGSEARCH_CACHE", env["IMGSEARCH_CACHE"])
    spec = parse_model_spec(tiny_model)
    onnx = OnnxText.open(spec)
    assert onnx is not None
    precision = "bf16" if env["IMGSEARCH_CPU_BF16"] == "1" else "fp32"
    torch_encoder = Encoder.load(spec, device="cpu", precision=precision)
    batched = onnx.embed_texts(TEXTS)
    alone = np.concatenate([onnx.embed_texts([t]) for t in TEXTS])
    by_torch = torch_encoder.embed_texts(TEXTS)
    assert np.sum(batched * alone, axis=1).min() >= 1 - 1e-6
    assert np.sum(batched * by_torch, axis=1).min() >= 1 - 1e-6

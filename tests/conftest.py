"""Shared fixtures: a private index folder for every test, the tiny local-dir model, sample photos."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgsearch.model.encoder import Encoder
from imgsearch.model.specs import parse_model_spec
from tests.tiny_model import save_tiny_model

REPO = Path(__file__).resolve().parent.parent
SAMPLE_PHOTOS = REPO / "sample_photos"
SAMPLE_COUNT = len(list(SAMPLE_PHOTOS.glob("*.jpg")))


@pytest.fixture(scope="session", autouse=True)
def _offline_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The environment of the whole run, set before any fixture (module-scoped ones run before the per-test
    `isolated_home`): no hub, no model, token or index folder from the outer environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("IMGSEARCH_HOME", str(tmp_path_factory.mktemp("session-home")))
        for name in ("IMGSEARCH_MODEL", "IMGSEARCH_TOKEN"):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own index folder; nothing touches the user's real data folder."""
    home = tmp_path / "home"
    monkeypatch.setenv("IMGSEARCH_HOME", str(home))
    monkeypatch.delenv("IMGSEARCH_MODEL", raising=False)
    # The ONNX text export costs each indexing test a second; tests/test_text_onnx.py turns it back on.
    monkeypatch.setenv("IMGSEARCH_TEXT_EXPORT", "0")
    monkeypatch.setenv("IMGSEARCH_IMAGE_EXPORT", "0")  # and the image one (tests/test_image_onnx.py)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # tests never reach for a hub...
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # ...nor find real weights
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> str:
    """The --model spec of the tiny test model."""
    return f"local-dir:{tiny_model_dir}"


@pytest.fixture(scope="session")
def torch_encoder(tiny_model: str) -> Encoder:
    """The tiny model loaded through torch on the CPU in fp32: the reference the ONNX exports must match."""
    return Encoder.load(parse_model_spec(tiny_model), device="cpu", precision="fp32")


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A private copy of sample_photos that a test may change."""
    folder = tmp_path / "photos"
    shutil.copytree(SAMPLE_PHOTOS, folder, ignore=shutil.ignore_patterns("*.md"))
    return folder


@pytest.fixture
def cli(tiny_model: str):
    """Run an imgsearch command in-process with the tiny model; returns click's Result."""
    from click.testing import CliRunner

    from imgsearch.cli import main

    runner = CliRunner()

    def run(*args: str, model: bool = True):
        argv = [str(a) for a in args]
        if model and argv and argv[0] in ("index", "query", "similar"):
            argv[1:1] = ["--model", tiny_model]
        return runner.invoke(main, argv, catch_exceptions=False)

    return run


@pytest.fixture
def indexed(cli, photos) -> Path:
    result = cli("index", photos)
    assert result.exit_code == 0, result.output
    return photos


@contextlib.contextmanager
def serving(env: dict[str, str]) -> Iterator[str]:
    """A real `imgsearch serve --port 0` subprocess with `env`; yields the URL it prints, stops it after."""
    command = [sys.executable, "-m", "imgsearch", "serve", "--port", "0"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert "serving" in line, line
        yield line.split(" at ", 1)[1].split()[0]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)

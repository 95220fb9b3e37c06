"""Model sources: specs parse, the real loading path runs offline, and failures say what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from imgsearch.errors import UsageError
from imgsearch.model.encoder import Encoder
from imgsearch.model.specs import parse_model_spec


def test_specs_parse_into_canonical_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_model_spec("ViT-B-32:laion2b_s34b_b79k").open_clip_args == ("ViT-B-32", "laion2b_s34b_b79k")
    assert parse_model_spec("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K").id == (
        "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    )
    assert parse_model_spec("local-dir:models/tiny").id == f"local-dir:{tmp_path}/models/tiny"
    for bad in ("ViT-B-32", "local-dir:", "hf-hub:justone", ":tag"):
        with pytest.raises(UsageError):
            parse_model_spec(bad)


def test_local_dir_model_loads_and_embeds_unit_vectors(tiny_model):
    encoder = Encoder.load(parse_model_spec(tiny_model), device="cpu", precision="fp32")
    assert encoder.dim == 32 and encoder.model_id == tiny_model
    assert (encoder.preprocess.height, encoder.preprocess.width) == (64, 64)
    texts = encoder.embed_texts(["a cat", "a dog"])
    pixels = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    images = encoder.embed_pixels(pixels)
    assert texts.shape == (2, 32) and images.shape == (3, 32)
    assert np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    assert not np.allclose(texts[0], texts[1])


def test_bf16_embeddings_stay_faithful_to_fp32(tiny_model):
    """The reduced-precision path must keep cosine >= 0.999 to fp32 on the same inputs."""
    spec = parse_model_spec(tiny_model)
    fp32 = Encoder.load(spec, device="cpu", precision="fp32")
    bf16 = Encoder.load(spec, device="cpu", precision="bf16")
    pixels = np.random.default_rng(1).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8)
    cosines = np.sum(fp32.embed_pixels(pixels) * bf16.embed_pixels(pixels), axis=1)
    assert cosines.min() >= 0.999, cosines


def test_missing_folder_config_and_weights_each_get_a_clear_error(cli, photos, tiny_model_dir, tmp_path):
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(tiny_model_dir / "open_clip_config.json", no_weights)
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    cases = {
        tmp_path / "absent": "does not exist",
        no_config: "has no open_clip_config.json",
        no_weights: "has a config but no weights",
    }
    for folder, message in cases.items():
        result = cli("index", "--model", f"local-dir:{folder}", photos, model=False)
        assert result.exit_code == 1, result.output
        assert message in result.output


def test_uncached_hub_weights_offline_fail_fast_saying_what_to_do(cli, photos):
    result = cli("index", "--model", "ViT-B-32:laion2b_s34b_b79k", photos, model=False)
    assert result.exit_code == 1
    assert "cannot load model ViT-B-32:laion2b_s34b_b79k" in result.output
    assert "local-dir:FOLDER" in result.output


def test_unknown_model_or_tag_is_a_usage_error(cli, photos):
    assert cli("index", "--model", "ViT-B-32:no-such-tag", photos, model=False).exit_code == 2
    assert cli("index", "--model", "NoSuchNet:tag", photos, model=False).exit_code == 2


def test_an_index_refuses_a_different_model_and_names_the_fix(cli, indexed, tiny_model_dir, tmp_path):
    other = shutil.copytree(tiny_model_dir, tmp_path / "other-model")
    result = cli("query", "--model", f"local-dir:{other}", "cat", model=False)
    assert result.exit_code == 1
    assert "was built with model" in result.output and "--home" in result.output
    # with no --model, the index's own model is used
    assert cli("query", "cat", model=False).exit_code == 0


def test_models_command_lists_tags_and_marks_the_default(cli):
    result = cli("models", "ViT-B-32")
    assert result.exit_code == 0
    assert "ViT-B-32:laion2b_s34b_b79k  (default)" in result.output.splitlines()


def test_tiny_model_config_is_open_clip_layout(tiny_model_dir):
    config = json.loads((tiny_model_dir / "open_clip_config.json").read_text())
    assert set(config) == {"model_cfg", "preprocess_cfg"}
    assert (tiny_model_dir / "open_clip_model.safetensors").stat().st_size > 0


def _fake_hub_cache(tiny_model_dir: Path, repo_id: str) -> None:
    """Lay the tiny model out in the hub cache exactly as huggingface_hub stores a download."""
    from huggingface_hub import constants

    snapshot = "0" * 40
    repo = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(snapshot)
    shutil.copytree(tiny_model_dir, repo / "snapshots" / snapshot)


def test_hf_hub_model_loads_from_the_hub_cache_without_network(cli, photos, tiny_model_dir):
    """hf-hub: runs open_clip's real hub code path, answered from the local cache."""
    _fake_hub_cache(tiny_model_dir, "imgsearch-tests/tiny-clip")
    result = cli("index", "--model", "hf-hub:imgsearch-tests/tiny-clip", photos, model=False)
    assert result.exit_code == 0, result.output
    info = json.loads(cli("status", "--json").output)
    assert info["model"] == "hf-hub:imgsearch-tests/tiny-clip" and info["dim"] == 32


def test_name_and_tag_load_cached_weights_without_network(cli, photos, tiny_model_dir, monkeypatch):
    """NAME:TAG runs open_clip's registry and download code; the tiny model is registered as one more
    architecture with one tag whose weights sit in the hub cache, as after a first download."""
    import open_clip
    from open_clip import factory, pretrained

    from tests.tiny_model import MODEL_CFG

    monkeypatch.setitem(factory._MODEL_CONFIGS, "ImgsearchTiny", MODEL_CFG)
    tags = {"test": pretrained._pcfg(hf_hub="imgsearch-tests/tiny-tag/")}
    monkeypatch.setitem(pretrained._PRETRAINED, "ImgsearchTiny", tags)
    assert "ImgsearchTiny:test" in open_clip.list_pretrained(as_str=True)
    _fake_hub_cache(tiny_model_dir, "imgsearch-tests/tiny-tag")
    result = cli("index", "--model", "ImgsearchTiny:test", photos, model=False)
    assert result.exit_code == 0, result.output
    assert json.loads(cli("status", "--json").output)["model"] == "ImgsearchTiny:test"
    assert cli("query", "a boat", model=False).exit_code == 0


def test_text_embeddings_skip_the_padding_without_changing(tiny_model):
    """The text tower runs only up to the end-of-text token: the same vectors as open_clip's full 77-token
    pass, for short and long texts in one batch and alone."""
    import torch

    from imgsearch.model.encoder import causal_text_tower

    encoder = Encoder.load(parse_model_spec(tiny_model), "cpu", "fp32")
    assert causal_text_tower(encoder.model)
    texts = ["dog", "a red apple on a wooden table in the morning light", "word " * 100]
    for batch in (texts, texts[:1], texts[1:2]):
        with torch.inference_mode():
            full = encoder._unit(encoder.model.encode_text(encoder.tokenizer(batch)))
        np.testing.assert_allclose(encoder.embed_texts(batch), full, atol=1e-5)


def test_loading_takes_the_checkpoint_as_it_is_and_leaves_torch_as_it_was(
    tiny_model, tiny_model_dir, tmp_path
):
    """Encoder.load skips the random initialisation and hands the checkpoint's tensors to the model
    (imgsearch.model.encoder._lean_construction): every weight is the file's, buffers the model computes
    are as open_clip computes them, nothing stays memory-mapped from the file, and torch's and safetensors'
    functions are their own again afterwards, also after a load that failed."""
    import sys

    import open_clip
    import safetensors.torch
    import torch

    originals = (torch.nn.init.normal_, torch.nn.Module.load_state_dict, safetensors.torch.load_file)
    encoder = Encoder.load(parse_model_spec(tiny_model), "cpu", "fp32")
    if sys.platform.startswith("linux"):
        assert "open_clip_model.safetensors" not in Path("/proc/self/maps").read_text()
    assert (torch.nn.init.normal_, torch.nn.Module.load_state_dict, safetensors.torch.load_file) == originals

    saved = safetensors.torch.load_file(tiny_model_dir / "open_clip_model.safetensors")
    state = encoder.model.state_dict()
    assert set(saved) == set(state) and all(torch.equal(state[name], saved[name]) for name in saved)
    plain = open_clip.create_model(tiny_model, require_pretrained=True).eval()
    assert torch.equal(plain.attn_mask, encoder.model.attn_mask)  # a buffer computed, not loaded
    tokens = open_clip.get_tokenizer(tiny_model)(["a dog on a sofa"])
    pixels = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(plain.encode_text(tokens), encoder.model.encode_text(tokens))
        assert torch.equal(plain.encode_image(pixels), encoder.model.encode_image(pixels))

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "open_clip_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(Exception, match="cannot load the model"):
        Encoder.load(parse_model_spec(f"local-dir:{broken}"), "cpu", "fp32")
    assert (torch.nn.init.normal_, torch.nn.Module.load_state_dict, safetensors.torch.load_file) == originals


def test_loading_does_not_initialise_the_weights_it_replaces(tiny_model, monkeypatch):
    import torch

    initialised: list[tuple[int, ...]] = []
    normal = torch.nn.init.normal_
    monkeypatch.setattr(
        torch.nn.init, "normal_", lambda t, *a, **k: initialised.append(tuple(t.shape)) or normal(t, *a, **k)
    )
    Encoder.load(parse_model_spec(tiny_model), "cpu", "fp32")
    assert initialised == []  # open_clip draws the token embedding and more with normal_ when building

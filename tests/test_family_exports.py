"""The ONNX exports of every model family (tests/tiny_families.py): the text export, with its torch-free
tokenizer (CLIP's BPE or a Hugging Face one), and the image export give torch's vectors on English,
Japanese, Chinese, Arabic and German texts and on sample photos; the Hugging Face tokenizer without
transformers gives open_clip's HFTokenizer ids, NLLB's with each language code; a family that cannot be
exported has its reason recorded instead."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imgsearch.index.decode import decode_file
from imgsearch.model.compat import hf_tokenizer_config, source_language
from imgsearch.model.encoder import Encoder
from imgsearch.model.export import export_image, export_text
from imgsearch.model.hf_tokenizer import HfTokenizer
from imgsearch.model.onnx_image import OnnxImage
from imgsearch.model.onnx_text import META_FILE, TOKENIZER_FILE, OnnxText
from imgsearch.model.specs import parse_model_spec
from tests.conftest import REPO, SAMPLE_PHOTOS
from tests.tiny_families import FAMILIES, MULTILINGUAL, save_tiny_family

TEXTS = [
    "a photo of a dog",
    "A Red APPLE on a wooden table.",
    "two cats sleeping on a sofa " * 12,  # truncated at the context length
    "夕焼けの浜辺を走る犬",
    "ソファで眠る二匹の猫",
    "木桌上的红苹果",
    "日落时在海滩上奔跑的狗",
    "تفاحة حمراء على طاولة خشبية",
    "كلب يركض على الشاطئ عند الغروب",
    "ein roter Apfel auf einem Holztisch",
    "zwei Katzen schlafen auf dem Sofa",
    "café crème brûlée 🐶 &amp; <b>",
    "",
]
JAPANESE = "夕焼けの浜辺を走る犬"
HF_FAMILIES = ("ViT-B-16-SigLIP", "ViT-B-16-SigLIP2", "ViT-B-16-SigLIP-i18n-256", *MULTILINGUAL[:2])
NLLB = "nllb-clip-base"
NLLB_CODES = ("eng_Latn", "deu_Latn", "jpn_Jpan", "zho_Hans", "arb_Arab")
#: family -> (text, image): a part of the reason recorded for a family whose export cannot be made. Every
#: family exports both towers today; an entry here makes its test check the recorded reason instead.
NO_EXPORT: dict[str, tuple[str | None, str | None]] = {}
MIN_COS = 0.9999


@pytest.fixture(scope="session")
def family_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("family-exports")


@pytest.fixture(scope="module", params=list(FAMILIES))
def exported(request: pytest.FixtureRequest, family_root: Path) -> dict[str, Any]:
    """One family at a time (a SigLIP model holds ~370 MB): its torch encoder and both exports."""
    family = request.param
    folder = family_root / family
    if not (folder / "open_clip_model.safetensors").exists():
        save_tiny_family(family, folder)
    encoder = Encoder.load(parse_model_spec(f"local-dir:{folder}"), device="cpu", precision="fp32")
    text, image = folder.parent / f"{family}-text", folder.parent / f"{family}-image"
    return {
        "family": family,
        "encoder": encoder,
        "text": (text, export_text(encoder, text)),
        "image": (image, export_image(encoder, image)),
    }


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(axis=1).min())


def _expected_reason(family: str, tower: int) -> str | None:
    return NO_EXPORT.get(family, (None, None))[tower]


def test_the_text_export_gives_torchs_vectors(exported: dict[str, Any]) -> None:
    family, encoder = exported["family"], exported["encoder"]
    folder, meta = exported["text"]
    reason = _expected_reason(family, 0)
    if reason is not None:
        assert meta["supported"] is False and reason in meta["reason"]
        return
    assert meta["supported"], meta.get("reason")
    assert meta["verified"]["min_cos"] >= MIN_COS
    assert json.loads((folder / META_FILE).read_text()) == meta
    onnx = OnnxText.load(folder, meta)
    assert onnx is not None
    np.testing.assert_array_equal(onnx.tokenizer(TEXTS), encoder.tokenize(TEXTS).numpy())
    expected = encoder.embed_texts(TEXTS)
    assert _cos(onnx.embed_texts(TEXTS), expected) >= MIN_COS
    alone = np.concatenate([onnx.embed_texts([text]) for text in TEXTS])  # each at its own length
    assert _cos(alone, expected) >= MIN_COS
    assert (onnx.logit_scale, onnx.logit_bias) == (encoder.logit_scale, encoder.logit_bias)
    if family == NLLB:
        for code in NLLB_CODES:
            assert _cos(onnx.embed_texts(TEXTS, code), encoder.embed_texts(TEXTS, code)) >= MIN_COS


def test_the_image_export_gives_torchs_vectors_of_sample_photos(exported: dict[str, Any]) -> None:
    family, encoder = exported["family"], exported["encoder"]
    folder, meta = exported["image"]
    reason = _expected_reason(family, 1)
    if reason is not None:
        assert meta["supported"] is False and reason in meta["reason"]
        return
    assert meta["supported"], meta.get("reason")
    onnx = OnnxImage.load(folder, meta)
    assert onnx is not None and onnx.preprocess == encoder.preprocess
    photos = sorted(SAMPLE_PHOTOS.glob("*.jpg"))[:6]
    pixels = np.stack([decode_file(str(p), onnx.preprocess).pixels for p in photos])
    assert _cos(onnx.embed_pixels(pixels), encoder.embed_pixels(pixels)) >= MIN_COS


def test_the_torch_free_hf_tokenizer_gives_open_clips_ids(exported: dict[str, Any]) -> None:
    """Against open_clip's HFTokenizer (transformers) itself, and for NLLB with each language code."""
    family, encoder = exported["family"], exported["encoder"]
    if family not in HF_FAMILIES:
        assert exported["text"][1]["tokenizer"]["kind"] == "clip-bpe"
        return
    folder, meta = exported["text"]
    assert meta["tokenizer"]["kind"] == "hf"
    ours = HfTokenizer(folder / TOKENIZER_FILE, meta["tokenizer"])
    if family != NLLB:
        np.testing.assert_array_equal(ours(TEXTS), encoder.tokenizer(TEXTS).numpy())
        np.testing.assert_array_equal(ours(TEXTS, "deu_Latn"), ours(TEXTS))  # no language: ignored
        return
    for code in NLLB_CODES:
        source_language(encoder.tokenizer, code)
        theirs = encoder.tokenizer(TEXTS).numpy()
        np.testing.assert_array_equal(ours(TEXTS, code), theirs)
        assert (theirs[:, 0] == ours._tokenizer.token_to_id(code)).all()  # the code starts every text
    np.testing.assert_array_equal(ours(TEXTS), encoder.tokenize(TEXTS).numpy())  # each text's own code


@pytest.mark.parametrize("family", MULTILINGUAL)
def test_a_japanese_query_through_a_multilingual_model_gets_the_reference_ids(
    family: str, family_root: Path
) -> None:
    from open_clip import get_tokenizer

    folder = family_root / family
    if not (folder / "open_clip_model.safetensors").exists():
        save_tiny_family(family, folder)
    reference = get_tokenizer(f"local-dir:{folder}")
    if family == NLLB:
        source_language(reference, "jpn_Jpan")
    config = hf_tokenizer_config(reference)
    assert not isinstance(config, str), config
    settings, text = config
    (folder.parent / f"{family}.json").write_text(text, encoding="utf-8")
    ours = HfTokenizer(folder.parent / f"{family}.json", settings)([JAPANESE])
    np.testing.assert_array_equal(ours, reference([JAPANESE]).numpy())
    unknown = reference.tokenizer.unk_token_id
    content = [i for i in ours[0] if i not in reference.tokenizer.all_special_ids]
    assert content and unknown not in content  # the tiny vocabulary has Japanese pieces: real ids


def test_a_cold_hf_text_query_imports_neither_torch_nor_transformers(family_root: Path) -> None:
    family = "xlm-roberta-base-ViT-B-32"
    folder = family_root / family
    if not (folder / "open_clip_model.safetensors").exists():
        save_tiny_family(family, folder)
    encoder = Encoder.load(parse_model_spec(f"local-dir:{folder}"), device="cpu", precision="fp32")
    export = folder.parent / f"{family}-cold"
    assert export_text(encoder, export)["supported"]
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from imgsearch.model.onnx_text import OnnxText\n"
        f"folder = Path({str(export)!r})\n"
        "onnx = OnnxText.load(folder, json.loads((folder / 'meta.json').read_text()))\n"
        f"vector = onnx.embed_texts([{JAPANESE!r}])[0]\n"
        "print(json.dumps([sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'open_clip')), vector.tolist()]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    loaded, vector = json.loads(done.stdout)
    assert loaded == []
    assert _cos(np.array([vector]), encoder.embed_texts([JAPANESE])) >= MIN_COS


def test_a_tokenizer_that_differs_means_no_text_export(
    family_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wrong ids never make wrong vectors: the export is dropped and meta.json says why."""
    family = "xlm-roberta-base-ViT-B-32"
    folder = family_root / family
    if not (folder / "open_clip_model.safetensors").exists():
        save_tiny_family(family, folder)
    encoder = Encoder.load(parse_model_spec(f"local-dir:{folder}"), device="cpu", precision="fp32")
    call = HfTokenizer.__call__

    def off_by_one(self: HfTokenizer, texts: Any, lang: str | None = None) -> np.ndarray:
        ids = call(self, texts, lang)
        return np.where(ids == self.pad_id, ids, ids + (ids > 5))  # the content tokens shifted

    monkeypatch.setattr(HfTokenizer, "__call__", off_by_one)
    meta = export_text(encoder, tmp_path / "export")
    assert meta["supported"] is False and "tokenizer differs" in meta["reason"]
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [META_FILE]

"""The torch-free text path: tokenizer equal to open_clip's, the ONNX export equal to torch, made by the
background exporter into the per-user cache after a run that loaded torch, and a cold CLI query that answers
through it without importing torch, falling back to torch whenever it cannot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imgsearch import Library
from imgsearch.model.cache import export_folder, model_key
from imgsearch.model.encoder import Encoder
from imgsearch.model.export import ensure_text_export, export_text, tokenizer_config
from imgsearch.model.onnx_text import DATA_FILE, FOLDER, META_FILE, MODEL_FILE, OnnxText
from imgsearch.model.specs import parse_model_spec
from imgsearch.model.tokenizer import ClipTokenizer, open_clip_vocab, read_merges, trim_padding
from tests.cli_process import output_and_modules

TEXTS = [
    "",
    " ",
    "a photo of a dog",
    "A PHOTO, of a Dog!!! (really?)",
    "don't you're we've I'm they'll he'd it's DON'T",
    "café naïve résumé Ünïcödé façade",
    "東京タワー 北京 서울 Москва",
    "🐶🐱 emoji 👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
    "tabs\tand\nnewlines   and    spaces\r\n",
    "&amp; &lt;b&gt; &amp;amp; &#39;quoted&#39; &nbsp;",
    "<start_of_text> typed special tokens <end_of_text>",
    "numbers 1234567 and 3.14159, 2023-12-31",
    "Ã©tÃ© mojibake that ftfy repairs",
    "ＦＵＬＬ width ａｓｃｉｉ",
    "hello_world snake_case #tag @user e-mail@example.com",
    "\u200b zero\u00a0width and non-breaking",
    "a" * 300,
    "a long description of a scene " * 30,
    # plain ASCII skips ftfy and the regex module: these must still match open_clip
    "Tom's CAT'S dog'S it'll WE'D",
    "C++ / C# .NET 1st 2nd 3rd %20 ~ ` ^ { } | \\ [x] (y) <z>",
    "a & b, a &amp b, AT&T",
    "vertical\x0btab, form\x0cfeed, bell\x07, \x1b[31mred\x1b[0m, del\x7f, nul\x00",
    "\r\n\r\n",
    "UPPER lower MiXeD",
]


EXPORT_SWITCH = "IMGSEARCH_TEXT_EXPORT"  # what conftest's export_on turns back on for these tests


@pytest.mark.parametrize("clean", ["lower", "whitespace", "canonicalize"])
@pytest.mark.parametrize("context_length", [77, 16])
def test_tokenizer_gives_open_clip_token_ids(clean, context_length):
    from open_clip.tokenizer import SimpleTokenizer

    theirs = SimpleTokenizer(context_length=context_length, clean=clean)(TEXTS).numpy()
    ours = ClipTokenizer(read_merges(open_clip_vocab()), context_length, clean)(TEXTS)
    assert ours.dtype == np.int64 and ours.shape == (len(TEXTS), context_length)
    np.testing.assert_array_equal(ours, theirs)


def test_padding_is_cut_after_the_last_token_not_by_counting_tokens(torch_encoder):
    """CLIP's id 0 is "!" as well as padding: a run of punctuation leaves it inside a text, and the end
    token must survive the cut (torch's path and the export's both cut so)."""
    tokenizer = ClipTokenizer(read_merges(open_clip_vocab()))
    text = "wow %!…+…¿£#“! ok"
    ids = tokenizer([text, "a dog"])
    end = ids[0].tolist().index(tokenizer.eot)
    assert 0 in ids[0, 1:end].tolist()
    trimmed = trim_padding(ids)
    assert trimmed.shape[1] == end + 1 and trimmed[0, -1] == tokenizer.eot
    import torch

    model = torch_encoder.model
    with torch.inference_mode():
        full = model.encode_text(torch.from_numpy(ids))
    full = (full / full.norm(dim=1, keepdim=True)).numpy()
    assert np.allclose(torch_encoder.embed_texts([text, "a dog"]), full, atol=1e-5)


def test_export_of_the_tiny_model_gives_the_torch_vectors(torch_encoder, tmp_path):
    meta = export_text(torch_encoder, tmp_path / "export")
    assert meta["supported"] and meta["verified"]["min_cos"] >= 0.9999
    assert meta["tokenizer"] == {"kind": "clip-bpe", "context_length": 77, "clean": "lower"}
    assert meta["format"] == 4 and meta["key"] == model_key(torch_encoder.spec)
    assert meta["input"] == "prefix" and set(meta["files"]) == {MODEL_FILE, DATA_FILE, "merges.txt"}
    onnx = OnnxText.load(tmp_path / "export", meta)
    assert onnx is not None
    texts = [*TEXTS, "a red apple on a table", "mountain lake in winter"]
    cos = (onnx.embed_texts(texts) * torch_encoder.embed_texts(texts)).sum(axis=1)
    assert cos.min() >= 0.9999
    assert not list(tmp_path.glob(".*"))  # the temporary folder is gone


def _query(argv: list[str], env: dict[str, str]) -> tuple[list[dict], frozenset[str]]:
    lines, loaded = output_and_modules(argv, env)
    return [json.loads(line) for line in lines], loaded


def test_a_cold_query_after_index_skips_torch_and_ranks_as_torch_does(
    cli, photos, export_on, isolated_home, auto_numerics, exports_made
):
    assert cli("index", photos).exit_code == 0  # it loaded torch: it starts the background exporter
    exports_made()
    spec = Library().model_spec()
    assert (export_folder(spec, FOLDER) / DATA_FILE).exists()  # in the per-user cache...
    assert not (isolated_home / FOLDER).exists()  # ...not in the index folder
    argv = ["query", "a cat on a sofa", "--not", "people", "--json", "-n", "8"]
    fast, loaded = _query(argv, {})
    assert not {"torch", "open_clip", "torchvision", "ftfy", "regex"} & loaded  # plain ASCII: no ftfy either
    assert "onnxruntime" in loaded
    slow, loaded = _query(argv, {"IMGSEARCH_TEXT_EXPORT": "0"})
    assert "torch" in loaded
    assert [r["path"] for r in fast] == [r["path"] for r in slow]
    assert np.allclose([r["score"] for r in fast], [r["score"] for r in slow], atol=1e-4)


class NotMadeAgain(AssertionError):
    """The damaged export was still unusable after the background exporter was done."""


@pytest.mark.parametrize(
    "damage",
    [
        "data file missing",
        "same size, garbage",
        "meta.json cut short",
    ],
)
def test_a_damaged_export_falls_back_to_torch_and_is_replaced(
    cli, photos, export_on, damage, auto_numerics, exports_made
):
    assert cli("index", photos).exit_code == 0
    exports_made()
    lib = Library()
    spec = lib.model_spec()
    folder = export_folder(spec, FOLDER)
    expected = lib.search("a red apple", top=5)
    assert lib.runtime._held(spec) is None  # answered by the export
    if damage == "data file missing":
        (folder / DATA_FILE).unlink()
    elif damage == "same size, garbage":
        size = (folder / MODEL_FILE).stat().st_size
        (folder / MODEL_FILE).write_bytes(b"\x07" * size)
    else:
        text = (folder / META_FILE).read_text()
        (folder / META_FILE).write_text(text[: len(text) // 2])
    assert OnnxText.open(spec) is None
    lib = Library()
    again = lib.search("a red apple", top=5)
    assert lib.runtime._held(spec) is not None  # the torch path answered...
    assert [m.path for m in again] == [m.path for m in expected]
    assert np.allclose([m.score for m in again], [m.score for m in expected], atol=1e-4)
    exports_made()
    if OnnxText.open(spec) is None:  # ...and had the export made again
        raise NotMadeAgain(f"{damage}: no usable export once the exporter was done")


def test_a_warm_library_answers_texts_from_a_prepacked_one_thread_export(
    cli, photos, export_on, auto_numerics, exports_made
):
    """The server's Library (warm_up) holds the torch model on the CPU, yet texts go through the export,
    set up for many queries: one thread, weights prepacked; the vectors are torch's."""
    assert cli("index", photos).exit_code == 0
    exports_made()
    lib = Library()
    lib.warm_up()
    spec = lib.model_spec()
    torch_encoder = lib.runtime._held(spec)
    assert torch_encoder is not None
    onnx = lib.runtime._text_encoder(spec)
    assert isinstance(onnx, OnnxText)
    options = onnx.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.disable_prepacking") == "0"
    texts = ["a dog", "a red apple on a wooden table in the morning light", "word " * 100]
    assert np.allclose(onnx.embed_texts(texts), torch_encoder.embed_texts(texts), atol=1e-5)
    for text in texts:  # each alone: the graph runs at 3, 13 and 77 tokens
        assert np.allclose(onnx.embed_texts([text]), torch_encoder.embed_texts([text]), atol=1e-5)
    cold = OnnxText.open(spec)
    assert cold is not None
    assert cold.session.get_session_options().get_session_config_entry("session.disable_prepacking") == "1"


def test_an_unsupported_tokenizer_is_recorded_and_keeps_the_torch_path(tiny_model, export_on):
    from open_clip.tokenizer import SimpleTokenizer

    encoder = Encoder.load(parse_model_spec(tiny_model), device="cpu", precision="fp32")
    encoder.tokenizer = SimpleTokenizer(reduction_mask="simple")  # drops tokens at random: not reproducible
    assert tokenizer_config(encoder.tokenizer) is None
    assert ensure_text_export(encoder) is True  # an attempt: its verdict is recorded
    folder = export_folder(encoder.spec, FOLDER)
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["supported"] is False and "tokenizer" in meta["reason"]
    assert not (folder / MODEL_FILE).exists()
    assert OnnxText.open(encoder.spec) is None
    before = (folder / META_FILE).stat().st_mtime_ns
    assert ensure_text_export(encoder) is False  # the verdict stands: no new attempt
    assert (folder / META_FILE).stat().st_mtime_ns == before


def test_an_export_that_fails_verification_is_not_installed(torch_encoder, tmp_path, monkeypatch):
    import imgsearch.model.export as onnx_export

    monkeypatch.setattr(onnx_export, "MIN_COS", 1.5)  # no export can pass this
    meta = export_text(torch_encoder, tmp_path / "export")
    assert meta["supported"] is False and "cosine" in meta["reason"]
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [META_FILE]


def test_replacing_local_weights_in_place_retires_the_export(tmp_path, export_on):
    """The cache is keyed by the weights' content: other weights in the same folder find no export, and
    the same weights written again (new mtimes) find theirs."""
    from tests.tiny_model import save_tiny_model

    folder = save_tiny_model(tmp_path / "model")
    spec = parse_model_spec(f"local-dir:{folder}")
    assert ensure_text_export(Encoder.load(spec, device="cpu", precision="fp32")) is True
    assert OnnxText.open(spec) is not None
    key = model_key(spec)
    save_tiny_model(folder, seed=1)
    assert model_key(spec) != key
    assert OnnxText.open(spec) is None
    save_tiny_model(folder, seed=0)  # the first weights back, byte for byte
    assert model_key(spec) == key
    assert OnnxText.open(spec) is not None


def test_classify_labels_use_the_export_too(cli, photos, export_on, exports_made):
    assert cli("index", photos).exit_code == 0
    exports_made()
    argv = ["classify", "--labels", "a cat", "a dog", "a mountain", "food", "--csv"]
    fast, loaded = output_and_modules(argv, {})
    assert "torch" not in loaded
    slow, loaded = output_and_modules(argv, {"IMGSEARCH_TEXT_EXPORT": "0"})
    assert "torch" in loaded
    assert len(fast) > 2
    assert [line.split(",")[:2] for line in fast] == [line.split(",")[:2] for line in slow]  # path, label

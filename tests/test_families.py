"""Every model family end to end, offline, from a `local-dir:` folder: the real CLI indexes, answers text
and picture queries, labels, finds copies and serves, with each family's own preprocessing and tokenizer
(tests/tiny_families.py builds the tiny models)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from imgsearch.cli import main
from imgsearch.library import Library
from imgsearch.model.encoder import Encoder
from imgsearch.model.languages import nllb_code, script
from imgsearch.model.specs import parse_model_spec
from imgsearch.serve.app import create_app
from tests.conftest import SAMPLE_PHOTOS
from tests.tiny_families import FAMILIES, MULTILINGUAL, save_tiny_family

PHOTOS = ("cat-chelsea.jpg", "coffee-cup.jpg", "fire-truck.jpg", "ladybird.jpg", "dogs-at-window.jpg")
JAPANESE = "夕焼けの浜辺を走る犬"
SIGMOID = ("ViT-B-16-SigLIP", "ViT-B-16-SigLIP2", "ViT-B-16-SigLIP-i18n-256")


@pytest.fixture(scope="session")
def family_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("families")


def _folder(root: Path, family: str) -> Path:
    folder = root / family
    if not (folder / "open_clip_model.safetensors").exists():
        save_tiny_family(family, folder)
    return folder


@pytest.fixture(params=list(FAMILIES))
def family(request: pytest.FixtureRequest, family_root: Path) -> tuple[str, str]:
    """(family, its local-dir: model spec)."""
    return request.param, f"local-dir:{_folder(family_root, request.param)}"


def _run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_every_command_works_with_each_family(family, tmp_path: Path) -> None:
    name, model = family
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in PHOTOS:
        shutil.copy(SAMPLE_PHOTOS / photo, photos / photo)
    shutil.copy(SAMPLE_PHOTOS / PHOTOS[0], photos / "copy.jpg")  # an exact copy for `duplicates`

    code, out, err = _run("index", "--model", model, photos)
    assert code == 0, err
    assert "6 new" in out + err

    code, out, err = _run("query", "a cat on a sofa", "--top", "3", "--json", "--no-server")
    assert code == 0, err
    found = _lines(out)
    assert len(found) == 3 and all(math.isfinite(m["score"]) for m in found)

    code, out, err = _run("query", JAPANESE, "--top", "2", "--json", "--no-server")
    assert code == 0, err
    assert len(_lines(out)) == 2
    hinted = "hint:" in err
    assert hinted == (name not in MULTILINGUAL and name != "ViT-B-16-SigLIP2"), err

    code, out, err = _run("similar", photos / "ladybird.jpg", "--top", "2", "--json", "--no-server")
    assert code == 0, err
    assert [m["path"] for m in _lines(out)] and all("ladybird" not in m["path"] for m in _lines(out))

    code, out, err = _run("classify", photos, "--labels", "cat", "dog", "car", "--json")
    assert code == 0, err
    labelled = _lines(out)
    assert len(labelled) == 6
    sums = [sum(row["probs"].values()) for row in labelled]
    if name in SIGMOID:  # a sigmoid per label (the logit bias), not a softmax
        assert all(s < 0.99 for s in sums), sums
    else:
        assert all(s == pytest.approx(1.0, abs=2e-3) for s in sums), sums

    code, out, err = _run("duplicates", "--json")
    assert code == 0, err
    exact = [set(map(os.path.basename, copies)) for g in _lines(out) for copies in g["exact"]]
    assert {"copy.jpg", PHOTOS[0]} in exact

    code, out, err = _run("status", "--json")
    assert json.loads(out)["model"] == parse_model_spec(model).id

    client = TestClient(create_app(Library(os.environ["IMGSEARCH_HOME"])))
    response = client.get("/api/search", params={"q": "a red fire truck", "top": 2})
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 2


def test_each_family_uses_its_own_preprocessing(family) -> None:
    """The image tower gets the size, resize mode, interpolation and mean/std of the folder's config (for
    SigLIP: mean and std 0.5, squashed; for MobileCLIP2: no normalisation, bilinear)."""
    _name, model = family
    spec = parse_model_spec(model)
    wanted = json.loads((Path(spec.name) / "open_clip_config.json").read_text())["preprocess_cfg"]
    encoder = Encoder.load(spec, device="cpu")
    prep = encoder.preprocess
    assert (prep.height, prep.resize_mode, prep.interpolation) == (
        wanted["size"],
        wanted["resize_mode"],
        wanted["interpolation"],
    )
    assert encoder._mean.flatten().tolist() == pytest.approx(wanted["mean"])
    assert encoder._std.flatten().tolist() == pytest.approx(wanted["std"])


@pytest.mark.parametrize("name", MULTILINGUAL)
def test_a_japanese_query_with_a_multilingual_model(name: str, family_root: Path, tmp_path: Path) -> None:
    """Results come back, and the ids the text tower got are the reference tokenizer's (transformers, from
    the folder, as a user with the real files has it): for NLLB with the Japanese language code."""
    from open_clip.tokenizer import get_clean_fn
    from transformers import AutoTokenizer

    folder = _folder(family_root, name)
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in PHOTOS:
        shutil.copy(SAMPLE_PHOTOS / photo, photos / photo)
    assert _run("index", "--model", f"local-dir:{folder}", photos)[0] == 0
    code, out, err = _run("query", JAPANESE, "--top", "3", "--json", "--no-server")
    assert code == 0, err
    assert len(_lines(out)) == 3 and "hint:" not in err

    config = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]
    context = config.get("context_length", 77)
    clean = get_clean_fn(config.get("tokenizer_kwargs", {}).get("clean", "whitespace"))
    extra = {"src_lang": "jpn_Jpan"} if name == "nllb-clip-base" else {}
    reference = AutoTokenizer.from_pretrained(str(folder), **extra)
    expected = reference(
        [clean(JAPANESE)], max_length=context, padding="max_length", truncation=True
    ).input_ids
    encoder = Encoder.load(parse_model_spec(f"local-dir:{folder}"), device="cpu")
    assert encoder.tokenize([JAPANESE]).tolist() == expected
    if name == "nllb-clip-base":
        assert expected[0][0] == reference.convert_tokens_to_ids("jpn_Jpan")


def test_nllb_takes_the_language_code_given_or_read_from_the_script(family_root: Path) -> None:
    folder = _folder(family_root, "nllb-clip-base")
    encoder = Encoder.load(parse_model_spec(f"local-dir:{folder}"), device="cpu")
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(folder))
    texts = ["ein Hund am Strand", "夕焼けの浜辺を走る犬", "كلب على الشاطئ", "木桌上的红苹果"]
    first = [int(row[0]) for row in encoder.tokenize(texts)]
    assert first == reference.convert_tokens_to_ids(["eng_Latn", "jpn_Jpan", "arb_Arab", "zho_Hans"])
    given = [int(row[0]) for row in encoder.tokenize(texts, lang="deu_Latn")]
    assert given == [reference.convert_tokens_to_ids("deu_Latn")] * 4
    # The code changes the vector: --lang is not silently ignored.
    assert not np.allclose(encoder.embed_texts(texts[:1]), encoder.embed_texts(texts[:1], lang="deu_Latn"))


def test_scripts_name_their_languages() -> None:
    assert script("a red apple") is None and script("Äpfel und Birnen") is None
    assert script("夕焼けの浜辺") == "Japanese" and script("木桌上的红苹果") == "Han"
    assert script("고양이") == "Korean" and script("кошка") == "Cyrillic" and script("قطة") == "Arabic"
    assert nllb_code("кошка") == "rus_Cyrl" and nllb_code("cat") == "eng_Latn"
    assert nllb_code("cat", "fra_Latn") == "fra_Latn"


def test_the_hint_can_be_switched_off(family_root: Path, tmp_path: Path) -> None:
    folder = _folder(family_root, "ViT-B-32")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLE_PHOTOS / PHOTOS[0], photos / PHOTOS[0])
    assert _run("index", "--model", f"local-dir:{folder}", photos)[0] == 0
    code, out, err = _run("query", "кошка", "--json", "--no-server")
    assert code == 0 and "hint:" in err and "Cyrillic" in err and len(err.strip().splitlines()) == 1
    os.environ["IMGSEARCH_HINTS"] = "0"
    try:
        code, out2, err = _run("query", "кошка", "--json", "--no-server")
    finally:
        del os.environ["IMGSEARCH_HINTS"]
    assert code == 0 and "hint:" not in err
    assert out2 == out  # the hint never changes the results


def _sentencepiece_folder(family_root: Path, target: Path) -> Path:
    """The tiny SigLIP with its tokenizer as a SentencePiece model alone (no tokenizer.json), as older
    hub repositories have it: transformers needs sentencepiece to read it."""
    import sentencepiece

    from tests.tiny_families import CORPUS

    shutil.copytree(_folder(family_root, "ViT-B-16-SigLIP"), target)
    for name in os.listdir(target):
        if name.startswith(("tokenizer", "special_tokens")):
            os.remove(target / name)
    corpus = target.parent / "corpus.txt"
    corpus.write_text(CORPUS * 3)
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(target / "spiece"), vocab_size=150, pad_id=0, eos_id=1,
        unk_id=2, bos_id=-1, minloglevel=2,
    )  # fmt: skip
    os.remove(target / "spiece.vocab")
    (target / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer"}))
    return target


@pytest.mark.parametrize("package", ["transformers", "sentencepiece"])
def test_a_missing_package_is_named_in_one_line(package: str, family_root: Path, tmp_path: Path) -> None:
    """Without the package, a family that needs it says so and exits 1 (a child process in which the
    package is absent: `sys.modules[name] = None` is what an uninstalled package looks like to imports
    and to importlib's find_spec)."""
    if package == "transformers":
        folder = _folder(family_root, "ViT-B-16-SigLIP")
    else:
        folder = _sentencepiece_folder(family_root, tmp_path / "spm")
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(f"import sys\nsys.modules[{package!r}] = None\n")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLE_PHOTOS / PHOTOS[0], photos / PHOTOS[0])
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-m", "imgsearch", "index", "--model", f"local-dir:{folder}", str(photos)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"needs the Python package {package}" in lines[0], done.stderr
    assert "pip install" in lines[0]
    if package == "sentencepiece":  # with it installed, the same folder indexes
        assert _run("index", "--model", f"local-dir:{folder}", photos)[0] == 0


def test_a_folder_without_its_tokenizer_or_text_config_says_which_file(
    family_root: Path, tmp_path: Path
) -> None:
    source = _folder(family_root, "xlm-roberta-base-ViT-B-32")
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(SAMPLE_PHOTOS / PHOTOS[0], photos / PHOTOS[0])
    for missing, words in (("config.json", "no config.json"), ("tokenizer.json", "no tokenizer files")):
        folder = tmp_path / missing
        shutil.copytree(source, folder)
        if missing == "tokenizer.json":
            for name in os.listdir(folder):
                if name.startswith(("tokenizer", "special_tokens", "sentencepiece")):
                    os.remove(folder / name)
        else:
            os.remove(folder / missing)
        code, _out, err = _run("index", "--model", f"local-dir:{folder}", photos)
        assert code == 1 and words in err, err


def _cache_repo(cache: Path, repo: str, files: dict[str, Path | str]) -> None:
    """A repository in the Hugging Face cache layout (refs/main naming a snapshot of the files), as a
    download leaves it."""
    root = cache / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        if isinstance(source, Path):
            shutil.copyfile(source, snapshot / name)
        else:
            (snapshot / name).write_text(source)


def test_save_model_fills_a_folder_from_the_hub_cache(family_root: Path, tmp_path: Path) -> None:
    """A model whose open_clip repository, tokenizer and Hugging Face text config sit in three cached
    repositories becomes one local-dir: folder that indexes offline, giving the same vectors."""
    from huggingface_hub import constants

    source = _folder(family_root, "xlm-roberta-base-ViT-B-32")
    config = json.loads((source / "open_clip_config.json").read_text())
    config["model_cfg"]["text_cfg"].update(
        hf_tokenizer_name="test/tiny-xlmr-tok", hf_model_name="test/tiny-xlmr-text"
    )
    cache = Path(constants.HF_HUB_CACHE)
    weights = source / "open_clip_model.safetensors"
    _cache_repo(
        cache,
        "test/tiny-xlmr",
        {"open_clip_config.json": json.dumps(config), "open_clip_model.safetensors": weights},
    )
    tokenizer = {n: source / n for n in os.listdir(source) if n.startswith(("tokenizer", "special_tokens"))}
    _cache_repo(cache, "test/tiny-xlmr-tok", tokenizer)
    _cache_repo(cache, "test/tiny-xlmr-text", {"config.json": source / "config.json"})

    target = tmp_path / "saved"
    code, out, err = _run("save-model", "hf-hub:test/tiny-xlmr", target)
    assert code == 0, err
    assert {"open_clip_config.json", "open_clip_model.safetensors", "config.json", "tokenizer.json"} <= set(
        os.listdir(target)
    )
    assert "test/tiny-xlmr-tok" in out
    saved = Encoder.load(parse_model_spec(f"local-dir:{target}"), device="cpu")
    original = Encoder.load(parse_model_spec(f"local-dir:{source}"), device="cpu")
    texts = ["a dog on the beach", JAPANESE]
    assert np.allclose(saved.embed_texts(texts), original.embed_texts(texts), atol=1e-6)

    # What the cache lacks is named, and nothing is left behind.
    code, _out, err = _run("save-model", "hf-hub:test/not-cached", tmp_path / "other")
    assert code == 1 and "test/not-cached" in err and not (tmp_path / "other").exists()
    code, _out, err = _run("save-model", "hf-hub:test/tiny-xlmr", target)
    assert code == 2 and "not empty" in err

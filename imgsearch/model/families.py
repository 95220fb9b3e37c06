"""What a model family needs beyond open_clip, read from its open_clip config: the optional packages its
tokenizer or text tower imports, and the files a `local-dir:` folder must carry to load offline.

Families differ in two places. The tokenizer: CLIP's own BPE (ViT, RN50, MobileCLIP) ships with open_clip;
a `text_cfg.hf_tokenizer_name` (SigLIP, SigLIP 2, XLM-R, NLLB) means a Hugging Face tokenizer, built by
`transformers`. The text tower: open_clip's own transformer, or with `text_cfg.hf_model_name` a Hugging
Face model (XLM-R, NLLB's M2M100 encoder) that `transformers` builds from its config.json.

A local-dir folder holds, beside open_clip_config.json and the weights, the tokenizer files at its root
(tokenizer.json and tokenizer_config.json, as `save_pretrained` writes them: open_clip reads a local-dir
folder's tokenizer from there) and, for a Hugging Face text tower, that model's config.json.
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

from ..errors import MissingPackage, ModelUnavailable
from .specs import CONFIG_FILE, ModelSpec

HF_TEXT_CONFIG = "config.json"
#: Files of a Hugging Face tokenizer; a folder has one of them at least.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model",
    "sentencepiece.bpe.model", "tokenizer.model", "vocab.json", "merges.txt",
)  # fmt: skip
_INSTALL = "pip install 'imgsearch[hf]'"


def local_config(spec: ModelSpec) -> dict[str, Any]:
    """A local-dir folder's model_cfg (empty when it cannot be read: open_clip then says why)."""
    try:
        with open(os.path.join(spec.name, CONFIG_FILE), encoding="utf-8") as f:
            cfg = json.load(f).get("model_cfg", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def text_config(model_cfg: dict[str, Any]) -> dict[str, Any]:
    text = model_cfg.get("text_cfg", {})
    return text if isinstance(text, dict) else {}


def hf_tokenizer(model_cfg: dict[str, Any]) -> bool:
    """Whether the family tokenizes with a Hugging Face tokenizer (not CLIP's BPE)."""
    return "hf_tokenizer_name" in text_config(model_cfg)


def check_packages(spec: ModelSpec, model_cfg: dict[str, Any]) -> None:
    """Raise MissingPackage, in one line, when the family needs a package that is not installed."""
    text = text_config(model_cfg)
    needs = []
    if "hf_model_name" in text:
        needs.append(("transformers", f"its text tower is Hugging Face's {text['hf_model_name']}"))
    elif "hf_tokenizer_name" in text:
        needs.append(("transformers", "its tokenizer is a Hugging Face tokenizer"))
    if needs and spec.kind == "local-dir" and _sentencepiece_only(spec.name):
        needs.append(("sentencepiece", "its tokenizer is a SentencePiece model without a tokenizer.json"))
    for package, why in needs:
        if not _installed(package):
            raise MissingPackage(missing_message(spec, package, why))


def _sentencepiece_only(folder: str) -> bool:
    """Whether a folder's tokenizer is a SentencePiece .model file that transformers must convert."""
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return "tokenizer.json" not in names and any(name.endswith(".model") for name in names)


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a broken installation is no installation
        return False


def missing_message(spec: ModelSpec, package: str, why: str) -> str:
    return f"model {spec.id} needs the Python package {package} ({why}): {_INSTALL} or pip install {package}"


def missing_from(error: BaseException) -> str | None:
    """The optional package an ImportError (or transformers' message about one) names, if any."""
    if isinstance(error, ImportError) and error.name in ("transformers", "sentencepiece", "tokenizers"):
        return error.name
    text = str(error).lower()
    for package in ("sentencepiece", "protobuf", "tokenizers"):
        if package in text and ("install" in text or "requires" in text):
            return package
    return None


def local_dir_overrides(spec: ModelSpec, model_cfg: dict[str, Any]) -> dict[str, Any]:
    """What create_model needs to build a local-dir folder's model offline: a Hugging Face text tower's
    config from the folder, not the hub. Raises ModelUnavailable naming a file the folder lacks."""
    text = text_config(model_cfg)
    folder = spec.name
    if "hf_tokenizer_name" in text and not any(
        os.path.isfile(os.path.join(folder, name)) for name in TOKENIZER_FILES
    ):
        raise ModelUnavailable(
            f"model folder {folder} has no tokenizer files (tokenizer.json, tokenizer_config.json) for its "
            f"Hugging Face tokenizer {text['hf_tokenizer_name']}: copy them from that hub repository, or "
            "fill the folder from the hub cache with `imgsearch save-model MODEL FOLDER`"
        )
    if "hf_model_name" not in text:
        return {}
    if not os.path.isfile(os.path.join(folder, HF_TEXT_CONFIG)):
        raise ModelUnavailable(
            f"model folder {folder} has no {HF_TEXT_CONFIG} for its Hugging Face text tower "
            f"{text['hf_model_name']}: copy config.json from the hub repository {text['hf_model_name']}, or "
            "fill the folder from the hub cache with `imgsearch save-model MODEL FOLDER`"
        )
    # The checkpoint holds the tower's weights: transformers builds it from the config alone.
    return {"text_cfg": {**text, "hf_model_name": folder, "hf_model_pretrained": False}}


#: Names in a model id or its Hugging Face parts that mark a text tower trained on many languages.
_MULTILINGUAL = ("xlm-roberta", "nllb", "i18n", "siglip2", "multilingual", "mt5", "gemma")
#: The model a hint names for a text an English-only model cannot read.
MULTILINGUAL_SUGGESTION = "xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k"


def multilingual(spec: ModelSpec) -> bool:
    """Whether the model's text tower reads languages other than English: from its name, or for a
    local-dir folder from its config's Hugging Face tokenizer and text model. No torch import."""
    if spec.kind == "local-dir":
        text = text_config(local_config(spec))
        names = f"{text.get('hf_model_name', '')} {text.get('hf_tokenizer_name', '')}"
    else:
        names = spec.id
    return any(marker in names.lower() for marker in _MULTILINGUAL)

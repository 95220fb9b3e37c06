"""A tiny model of every family imgsearch supports, saved as a `local-dir:` folder.

Each keeps what makes its family different and shrinks the rest:
- the vision tower's kind (open_clip's ViT with the family's patch size, ModifiedResNet, or the timm model the
  family names, which keeps its size but takes a 64-pixel input), the text tower's kind and settings
  (causal or not, pooling, norms), the logit bias, and the published preprocessing of the family's tag
  (mean/std, resize mode, interpolation);
- a Hugging Face tokenizer of the family's class (T5 for SigLIP and SigLIP-i18n, Gemma for SigLIP 2,
  XLM-R, NLLB), trained here with `tokenizers` on a short multilingual text, and for Hugging Face text
  towers (XLM-R, NLLB's M2M100 encoder) a tiny text config as `config.json`: the layout a user's folder
  has (see the README, "Models").

Weights are random: the tests check that each family runs end to end through the real loading code, not
what its vectors mean.
"""

from __future__ import annotations

import json
from copy import deepcopy
from pathlib import Path
from typing import Any

#: family -> (open_clip architecture, the pretrained tag whose preprocessing the tiny model copies)
FAMILIES: dict[str, tuple[str, str]] = {
    "ViT-B-32": ("ViT-B-32", "laion2b_s34b_b79k"),
    "ViT-B-16": ("ViT-B-16", "laion2b_s34b_b88k"),
    "ViT-L-14": ("ViT-L-14", "openai"),
    "RN50": ("RN50", "openai"),
    "ViT-H-14": ("ViT-H-14", "laion2b_s32b_b79k"),
    "ViT-B-16-SigLIP": ("ViT-B-16-SigLIP", "webli"),
    "ViT-B-16-SigLIP2": ("ViT-B-16-SigLIP2", "webli"),
    "MobileCLIP2-S0": ("MobileCLIP2-S0", "dfndr2b"),
    "xlm-roberta-base-ViT-B-32": ("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k"),
    "nllb-clip-base": ("nllb-clip-base", "v1"),
    "ViT-B-16-SigLIP-i18n-256": ("ViT-B-16-SigLIP-i18n-256", "webli"),
}
MULTILINGUAL = ("xlm-roberta-base-ViT-B-32", "nllb-clip-base", "ViT-B-16-SigLIP-i18n-256")
EMBED_DIM = 32
IMAGE_SIZE = 64

#: The text the tokenizers are trained on: short photo captions in the languages the tests query in.
CORPUS = """\
a red apple on a wooden table
a dog running on the beach at sunset
two cats sleeping on a sofa
a photo of a mountain lake in winter
children playing football in the park
ein roter Apfel auf einem Holztisch
ein Hund läuft bei Sonnenuntergang am Strand
zwei Katzen schlafen auf dem Sofa
una manzana roja sobre una mesa de madera
un perro corriendo en la playa al atardecer
dos gatos durmiendo en el sofá
木のテーブルの上の赤いりんご
夕焼けの浜辺を走る犬
ソファで眠る二匹の猫
冬の山の湖の写真
木桌上的红苹果
日落时在海滩上奔跑的狗
两只猫在沙发上睡觉
تفاحة حمراء على طاولة خشبية
كلب يركض على الشاطئ عند الغروب
قطتان نائمتان على الأريكة
"""


def save_tiny_family(family: str, folder: Path, seed: int = 0) -> Path:
    """Build `family`'s tiny model with a fixed seed and write its local-dir folder."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    name, tag = FAMILIES[family]
    folder.mkdir(parents=True, exist_ok=True)
    cfg = deepcopy(open_clip.get_model_config(name))
    pretrained = open_clip.get_pretrained_cfg(name, tag)
    if pretrained.get("quick_gelu"):
        cfg["quick_gelu"] = True
    vision = cfg["vision_cfg"]
    if vision.get("timm_proj") != "none":  # else the timm trunk's own width is the embedding's
        cfg["embed_dim"] = EMBED_DIM
    _shrink_vision(vision)
    text = cfg["text_cfg"]
    if "hf_tokenizer_name" in text:
        vocab_size = _save_tokenizer(family, folder)
        if "hf_model_name" in text:
            _save_hf_text_config(family, folder, vocab_size)
        else:
            text["vocab_size"] = vocab_size
    if "hf_model_name" not in text:
        text.update(width=32, heads=2, layers=2)
    config = {
        "model_cfg": cfg,
        "preprocess_cfg": {
            "size": vision["image_size"],
            "mode": "RGB",
            "mean": list(pretrained["mean"]),
            "std": list(pretrained["std"]),
            "interpolation": pretrained.get("interpolation", "bicubic"),
            "resize_mode": pretrained.get("resize_mode", "shortest"),
        },
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(seed)
    model = _build(folder, cfg)
    state = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder


def _shrink_vision(vision: dict[str, Any]) -> None:
    if "timm_model_name" in vision:
        return  # timm builds the family's own model, at its own input size
    vision["image_size"] = IMAGE_SIZE
    if isinstance(vision["layers"], list):  # ModifiedResNet: one block per stage
        vision.update(layers=[1, 1, 1, 1], width=16)
        return
    if IMAGE_SIZE % vision["patch_size"]:
        vision["image_size"] = IMAGE_SIZE // vision["patch_size"] * vision["patch_size"]
    vision.update(layers=2, width=64, head_width=32)


def _build(folder: Path, cfg: dict[str, Any]) -> Any:
    """The model as open_clip builds it from the folder (a Hugging Face text tower reads config.json)."""
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = deepcopy(cfg)
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg["text_cfg"]
    if "hf_model_name" in cfg["text_cfg"]:
        cfg["text_cfg"]["hf_model_name"] = str(folder)
        cfg["text_cfg"]["hf_model_pretrained"] = False
    if "timm_model_name" in cfg["vision_cfg"]:
        cfg["vision_cfg"]["timm_model_pretrained"] = False
    return (CustomTextCLIP if custom else CLIP)(**cfg)


def _save_tokenizer(family: str, folder: Path) -> int:
    """Train the family's kind of tokenizer on CORPUS, save it with transformers' class for that family,
    and return its vocabulary size."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    lines = CORPUS.splitlines()
    if family in ("ViT-B-16-SigLIP2", "nllb-clip-base"):  # BPE vocabularies
        special = ["<pad>", "<eos>", "<bos>", "<unk>"] if family == "ViT-B-16-SigLIP2" else _NLLB_SPECIAL
        bpe = Tokenizer(models.BPE(unk_token="<unk>"))
        bpe.pre_tokenizer = pre_tokenizers.Metaspace()
        bpe.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=600, special_tokens=special))
        model = json.loads(bpe.to_str())["model"]
        vocab = model["vocab"]
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
        tokenizer = _hf_class(family)(vocab=vocab, merges=merges)
    else:  # Unigram (SentencePiece) vocabularies
        special = ["<s>", "<pad>", "</s>", "<unk>"] if family == "xlm-roberta-base-ViT-B-32" else _T5_SPECIAL
        unigram = Tokenizer(models.Unigram())
        unigram.pre_tokenizer = pre_tokenizers.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=600, special_tokens=special, unk_token="<unk>")
        unigram.train_from_iterator(lines, trainer)
        vocab = [tuple(entry) for entry in json.loads(unigram.to_str())["model"]["vocab"]]
        if family == "xlm-roberta-base-ViT-B-32":
            vocab.append(("<mask>", 0.0))
        tokenizer = _hf_class(family)(
            vocab=vocab, **({"extra_ids": 0} if family != "xlm-roberta-base-ViT-B-32" else {})
        )
    tokenizer.save_pretrained(str(folder))
    return len(tokenizer)


_T5_SPECIAL = ["<pad>", "</s>", "<unk>"]
_NLLB_SPECIAL = ["<s>", "<pad>", "</s>", "<unk>"]


def _hf_class(family: str) -> Any:
    import transformers

    return {
        "ViT-B-16-SigLIP": transformers.T5Tokenizer,
        "ViT-B-16-SigLIP-i18n-256": transformers.T5Tokenizer,
        "ViT-B-16-SigLIP2": transformers.GemmaTokenizer,
        "xlm-roberta-base-ViT-B-32": transformers.XLMRobertaTokenizer,
        "nllb-clip-base": transformers.NllbTokenizer,
    }[family]


def _save_hf_text_config(family: str, folder: Path, vocab_size: int) -> None:
    """A tiny config of the family's Hugging Face text model, as the hub repository's config.json."""
    import transformers

    if family == "nllb-clip-base":
        config: Any = transformers.M2M100Config(
            vocab_size=vocab_size, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
            pad_token_id=1, bos_token_id=0, eos_token_id=2, scale_embedding=True,
        )  # fmt: skip
    else:
        config = transformers.XLMRobertaConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=130, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        )  # fmt: skip
    config.save_pretrained(str(folder))

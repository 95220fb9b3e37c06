"""The models `imgsearch models` recommends: one NAME:TAG per family, with what helps a person choose.

Plain data, no torch and no open_clip: `imgsearch models` prints this table in a fraction of a second.

- **Vector size and languages** are the architecture's (open_clip's config `embed_dim`; the text tower's
  training data). tests/test_models_command.py checks each `dim` against `open_clip.get_model_config`.
- **Quality** is published, never measured here (no real weights can be downloaded on the machines that
  build imgsearch). Each row names its source in `SOURCES`; a figure the source does not give is None
  (printed "-"), never estimated. All are fractions: COCO = MSCOCO 2014 5k test, Flickr = Flickr30k 1k
  test, T->I = text-to-image retrieval ("image retrieval" in the sources), ImageNet = zero-shot top-1,
  XM3600 = Crossmodal-3600 text-to-image Recall@1 averaged over its 36 languages.
- **Speed** is measured here by `bench/families.py` (real architectures, random weights: speed does not
  depend on the weights) on the machine `MEASURED` names, copied from bench/families.json
  (tests/test_models_command.py checks the copy when that file is there). Indexing: `imgsearch index` on
  sample photos, images per second of its encoding phase; query: the wall time of a new
  `imgsearch query "a dog on a beach"` process once the background exporter has made the ONNX text export
  (the first queries after a model's first index, before the export exists, load torch: `query_torch_s`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .specs import DEFAULT_MODEL

#: Where each quality figure comes from (the row's `source`).
SOURCES: dict[str, str] = {
    "open_clip": (
        "open_clip's published tables: mlfoundations/open_clip docs/openclip_retrieval_results.csv "
        "(MSCOCO and Flickr image retr. R@1, R@5), docs/openclip_results.csv (ImageNet 1k), "
        "docs/openclip_multilingual_retrieval_results.csv (crossmodal3600 image_retrieval_recall@1 avg), "
        "commit 89fb801"
    ),
    "apple": (
        "Apple's MobileCLIP2 evaluation (the DataComp suite): apple/ml-mobileclip "
        "results/mobileclip2_s0.jsonl and results/mobileclip2_b.jsonl, commit e15d36e"
    ),
    "siglip2": (
        "the SigLIP 2 paper's checkpoint table (Tschannen et al. 2025, arXiv:2502.14786), as "
        "google-research/big_vision big_vision/configs/proj/image_text/README_siglip2.md gives it: B/16 at "
        "224 px, INet 0-shot and COCO T->I (R@1) only"
    ),
}

#: Notes printed under the table, by key.
NOTES: dict[str, str] = {
    "apple-licence": (
        "MobileCLIP2 weights are under Apple's research-only model licence "
        "(apple/ml-mobileclip LICENSE_MODELS)"
    ),
    "hf": "needs the hf extra: pip install 'imgsearch[hf]' (transformers)",
    "nllb-lang": "NLLB reads a language code with each query (imgsearch query --lang; see the README)",
}


@dataclass(frozen=True)
class Quality:
    """Published retrieval quality (fractions; None: the source gives none)."""

    coco_t2i_r1: float | None = None
    coco_t2i_r5: float | None = None
    flickr_t2i_r1: float | None = None
    flickr_t2i_r5: float | None = None
    imagenet_top1: float | None = None
    xm3600_t2i_r1: float | None = None


@dataclass(frozen=True)
class Speed:
    """Measured by bench/families.py on the machine MEASURED names (None: not measured)."""

    index_img_s: float | None = None  # `imgsearch index`, encoding phase, --precision auto
    encoder_img_s_fp32: float | None = None  # Encoder.embed_pixels alone, fp32
    encoder_img_s_auto: float | None = None  # the same in what --precision auto picks there
    query_ms: float | None = None  # a new `imgsearch query` process, with the ONNX text export
    query_torch_s: float | None = None  # the same before the export exists (torch loads)
    bytes_per_image: float | None = None  # the index folder (catalog + FAISS) / images, small index


@dataclass(frozen=True)
class Choice:
    family: str
    model: str  # NAME:TAG, as --model takes it
    dim: int
    languages: str  # "English" or "multilingual"
    source: str  # key of SOURCES for the quality figures
    quality: Quality
    speed: Speed = field(default_factory=Speed)
    notes: tuple[str, ...] = ()

    @property
    def default(self) -> bool:
        return self.model == DEFAULT_MODEL

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["default"] = self.default
        out["source"] = SOURCES[self.source]
        out["notes"] = [NOTES[n] for n in self.notes]
        out["speed"]["measured"] = dict(MEASURED)
        return out


CHOICES: tuple[Choice, ...] = (
    Choice(
        "ViT-B-32", "ViT-B-32:laion2b_s34b_b79k", 512, "English", "open_clip",
        Quality(0.3934, 0.6543, 0.6678, 0.8838, 0.6656, 0.0700),
    ),
    Choice(
        "MobileCLIP2", "MobileCLIP2-S0:dfndr2b", 512, "English", "apple",
        Quality(0.4368, 0.6996, 0.6922, 0.8986, 0.7153), notes=("apple-licence",),
    ),
    Choice(
        "MobileCLIP2", "MobileCLIP2-B:dfndr2b", 512, "English", "apple",
        Quality(0.4990, 0.7478, 0.7650, 0.9340, 0.7941), notes=("apple-licence",),
    ),
    Choice(
        "RN50", "RN50:openai", 1024, "English", "open_clip",
        Quality(0.2854, 0.5291, 0.5736, 0.8318, 0.5982, 0.0402),
    ),
    Choice(
        "ViT-B-16", "ViT-B-16:laion2b_s34b_b88k", 512, "English", "open_clip",
        Quality(0.4231, 0.6770, 0.6984, 0.9038, 0.7023, 0.0692),
    ),
    Choice(
        "ViT-B-16-SigLIP", "ViT-B-16-SigLIP:webli", 768, "English", "open_clip",
        Quality(0.4778, 0.7244, 0.7468, 0.9230, 0.7604, 0.1666), notes=("hf",),
    ),
    Choice(
        "ViT-B-16-SigLIP2", "ViT-B-16-SigLIP2:webli", 768, "multilingual", "siglip2",
        Quality(coco_t2i_r1=0.521, imagenet_top1=0.782), notes=("hf",),
    ),
    Choice(
        "xlm-roberta-base-ViT-B-32", "xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k", 512, "multilingual",
        "open_clip", Quality(0.3778, 0.6344, 0.6448, 0.8628, 0.6236, 0.4256), notes=("hf",),
    ),
    Choice(
        "nllb-clip-base", "nllb-clip-base:v1", 512, "multilingual", "open_clip",
        Quality(0.2649, 0.5150, 0.4740, 0.7554, 0.2432, 0.3648), notes=("hf", "nllb-lang"),
    ),
    Choice(
        "ViT-B-16-SigLIP-i18n-256", "ViT-B-16-SigLIP-i18n-256:webli", 768, "multilingual", "open_clip",
        Quality(0.4492, 0.6948, 0.7216, 0.9036, 0.7513, 0.4407), notes=("hf",),
    ),
    Choice(
        "ViT-L-14", "ViT-L-14:laion2b_s32b_b82k", 768, "English", "open_clip",
        Quality(0.4651, 0.7108, 0.7552, 0.9286, 0.7525, 0.0817),
    ),
    Choice(
        "ViT-H-14", "ViT-H-14:laion2b_s32b_b79k", 1024, "English", "open_clip",
        Quality(0.4948, 0.7338, 0.7764, 0.9418, 0.7796, 0.0981),
    ),
)  # fmt: skip


#: The speed columns, by model, and the run they come from: written from bench/families.json by
#: `python bench/families.py --from-json bench/families.json --write` (rounded); a model it could not
#: measure is missing.
# speeds:start
MEASURED: dict[str, str] = {
    "date": "2026-12-01 to 2026-12-02",
    "cpu": "2-core AMD EPYC [avx2 avx512_bf16 avx512f], --precision auto: bf16",
    "command": "python bench/families.py --out bench/families.json",
}
SPEEDS: dict[str, Speed] = {
    "ViT-B-32:laion2b_s34b_b79k": Speed(
        index_img_s=26.1,
        encoder_img_s_fp32=14.9,
        encoder_img_s_auto=33.9,
        query_ms=614,
        query_torch_s=5.5,
        bytes_per_image=7947,
    ),
    "MobileCLIP2-S0:dfndr2b": Speed(
        index_img_s=31.7,
        encoder_img_s_fp32=18.3,
        encoder_img_s_auto=32.8,
        query_ms=883,
        query_torch_s=6.2,
        bytes_per_image=7947,
    ),
    "RN50:openai": Speed(
        index_img_s=22.0,
        encoder_img_s_fp32=12.6,
        encoder_img_s_auto=23.5,
        query_ms=715,
        query_torch_s=6.0,
        bytes_per_image=10507,
    ),
    "ViT-B-16:laion2b_s34b_b88k": Speed(
        index_img_s=7.8,
        encoder_img_s_fp32=3.2,
        encoder_img_s_auto=8.8,
        query_ms=800,
        query_torch_s=6.1,
        bytes_per_image=7947,
    ),
    "MobileCLIP2-B:dfndr2b": Speed(
        index_img_s=7.3,
        encoder_img_s_fp32=3.3,
        encoder_img_s_auto=7.8,
        query_ms=779,
        query_torch_s=6.4,
        bytes_per_image=7947,
    ),
    "ViT-B-16-SigLIP:webli": Speed(
        index_img_s=7.0,
        encoder_img_s_fp32=2.9,
        encoder_img_s_auto=7.9,
        query_ms=1327,
        query_torch_s=8.1,
        bytes_per_image=8971,
    ),
    "ViT-B-16-SigLIP2:webli": Speed(
        index_img_s=7.4,
        encoder_img_s_fp32=3.3,
        encoder_img_s_auto=7.8,
        query_ms=914,
        query_torch_s=8.7,
        bytes_per_image=8971,
    ),
    "xlm-roberta-base-ViT-B-32:laion5b_s13b_b90k": Speed(
        index_img_s=21.5,
        encoder_img_s_fp32=17.1,
        encoder_img_s_auto=33.8,
        query_ms=840,
        query_torch_s=6.3,
        bytes_per_image=7947,
    ),
    "nllb-clip-base:v1": Speed(
        index_img_s=21.8,
        encoder_img_s_fp32=13.9,
        encoder_img_s_auto=32.8,
        query_ms=719,
        query_torch_s=6.5,
        bytes_per_image=7947,
    ),
    "ViT-B-16-SigLIP-i18n-256:webli": Speed(
        index_img_s=6.1,
        encoder_img_s_fp32=3.2,
        encoder_img_s_auto=7.0,
        query_ms=895,
        query_torch_s=6.9,
        bytes_per_image=8971,
    ),
    "ViT-L-14:laion2b_s32b_b82k": Speed(
        index_img_s=1.8,
        encoder_img_s_fp32=0.8,
        encoder_img_s_auto=2.0,
        query_ms=647,
        query_torch_s=7.8,
        bytes_per_image=14355,
    ),
    "ViT-H-14:laion2b_s32b_b79k": Speed(
        index_img_s=1.0,
        encoder_img_s_fp32=0.5,
        encoder_img_s_auto=1.1,
        query_ms=968,
        query_torch_s=13.0,
        bytes_per_image=15379,
    ),
}
# speeds:end


def choices() -> tuple[Choice, ...]:
    """The recommended models, default first, each with its measured speed."""
    rows = (replace(c, speed=SPEEDS.get(c.model, Speed())) for c in CHOICES)
    return tuple(sorted(rows, key=lambda c: not c.default))

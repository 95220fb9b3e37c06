"""A thin wrapper over open_clip: load a model from any source, embed pixels and texts as unit vectors.

torch and open_clip are imported here only, inside functions, so commands that do not encode never pay
the seconds their import costs.

Numerics (see imgsearch.model.numerics): the weights are loaded in fp32; only the image tower is cast to
the index numerics (bf16 or fp16) when those are not fp32, since stored image vectors are its only output
made in them. The text tower stays fp32, so every text vector is the fp32 vector the ONNX export and any
other process give too. A query picture needs an fp32 image tower: `Encoder.exact_images` says whether this
one has it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from ..errors import MissingPackage, ModelIncompatible, ModelUnavailable, UsageError
from .compat import (
    causal_text_tower,
    encode_text_prefix,
    fuse_branches,
    hub_offline,
    lean_construction,
    source_language,
)
from .families import check_packages, local_config, local_dir_overrides, missing_from, missing_message
from .languages import nllb_code
from .numerics import DEVICES, PRECISIONS, QUERY_PRECISION, index_precision
from .specs import CONFIG_FILE, ModelSpec
from .tokenizer import trim_padding

if TYPE_CHECKING:
    import torch

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")
#: open_clip versions this code is tested with (pyproject.toml pins the same range).
TESTED_OPEN_CLIP = ">=3.3,<3.4"


@dataclass(frozen=True)
class Runtime:
    """Where a model runs, the numerics of the image vectors it makes for the index, and its batch."""

    device: str
    precision: str
    batch_size: int


def choose_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """CUDA, then Apple MPS, then CPU; the index numerics by imgsearch.model.numerics."""
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if device == "auto":
        import torch

        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    return Runtime(device, index_precision(device, precision), batch_size=16 if device == "cpu" else 64)


class Encoder:
    """One loaded CLIP model: `embed_pixels` for decoded images, `embed_texts` for queries."""

    def __init__(self, spec: ModelSpec, model: Any, tokenizer: Any, runtime: Runtime):
        import torch

        from .preprocess import Preprocess

        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.runtime = runtime
        self.dtype = _dtype(runtime.precision)  # the image tower's
        cfg = model.visual.preprocess_cfg
        size = cfg["size"]
        height, width = (size, size) if isinstance(size, int) else size
        self.preprocess = Preprocess(
            height=height,
            width=width,
            resize_mode=cfg.get("resize_mode", "shortest"),
            interpolation=cfg.get("interpolation", "bicubic"),
            fill_color=cfg.get("fill_color", 0),
        )
        self._mean = torch.tensor(cfg["mean"], dtype=torch.float32, device=runtime.device).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg["std"], dtype=torch.float32, device=runtime.device).view(1, 3, 1, 1)
        with torch.inference_mode():
            self.dim = int(self.embed_texts(["a photo"]).shape[1])
        self.logit_scale = float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else 100.0
        bias = getattr(model, "logit_bias", None)  # SigLIP's: a sigmoid per label in zero-shot
        self.logit_bias = float(bias.item()) if bias is not None else None

    @property
    def model_id(self) -> str:
        return self.spec.id

    @property
    def precision(self) -> str:
        """The numerics of the image vectors it makes."""
        return self.runtime.precision

    @property
    def batch_size(self) -> int:
        return self.runtime.batch_size

    @property
    def exact_images(self) -> bool:
        """Whether the image tower runs in the query numerics (fp32), so it may embed query pictures."""
        return self.runtime.precision == QUERY_PRECISION

    @classmethod
    def load(cls, spec: ModelSpec, device: str = "auto", precision: str = "auto") -> Encoder:
        """Load weights from the spec's source; missing weights raise ModelUnavailable saying what to do,
        and any other failure inside open_clip ModelIncompatible with its real cause."""
        runtime = choose_runtime(device, precision)
        _check_source(spec)
        overrides = _family_overrides(spec)
        import open_clip

        name, pretrained = spec.open_clip_args

        def create() -> tuple[Any, Any]:
            try:
                with lean_construction():
                    model = open_clip.create_model(
                        name, pretrained=pretrained, require_pretrained=True, device="cpu", **overrides
                    )
                return model, open_clip.get_tokenizer(name)
            except Exception as e:
                package = missing_from(e)
                if package is not None:
                    raise MissingPackage(missing_message(spec, package, "for its tokenizer")) from e
                raise

        with _quiet_logging():
            try:
                with hub_offline():  # cached weights load without a network round trip
                    model, tokenizer = create()
            except MissingPackage:
                raise
            except Exception as cached_error:
                if _api_changed(cached_error):
                    raise ModelIncompatible(_incompatible_message(spec, cached_error)) from cached_error
                if spec.kind == "local-dir":
                    raise ModelUnavailable(_unavailable_message(spec, cached_error)) from cached_error
                if _user_offline() or not _hub_reachable():
                    raise ModelUnavailable(
                        _unavailable_message(spec, "no connection to the model hub")
                    ) from None
                try:
                    model, tokenizer = create()  # first use: open_clip downloads and caches the weights
                except MissingPackage:
                    raise
                except Exception as e:
                    if _api_changed(e):
                        raise ModelIncompatible(_incompatible_message(spec, e)) from e
                    raise ModelUnavailable(_unavailable_message(spec, e)) from e
        model.eval()
        model = fuse_branches(model)
        model.to(device=runtime.device)  # fp32: the text tower, and the image tower unless cast below
        if runtime.precision != QUERY_PRECISION:
            model.visual.to(dtype=_dtype(runtime.precision))
        return cls(spec, model, tokenizer, runtime)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 model-sized images -> (N, dim) float32 unit vectors, in the index numerics."""
        import torch

        with torch.inference_mode(), self._exact():
            x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.runtime.device)
            return self._unit(self.model.encode_image(self.tower_input(x)))

    def tower_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 pixels -> the image tower's input: channels first, scaled to 0..1, normalised
        with the model's mean and std, in its dtype (the ONNX image export traces this same step)."""
        x = pixels.permute(0, 3, 1, 2).float().div_(255.0).sub_(self._mean).div_(self._std)
        return x.to(self.dtype)

    def embed_texts(self, texts: Sequence[str], lang: str | None = None) -> np.ndarray:
        """Texts -> (N, dim) float32 unit vectors, always in fp32 (the query numerics). `lang`: NLLB's
        language code (see imgsearch.model.languages), else each text's own; other tokenizers ignore it."""
        import torch

        with torch.inference_mode(), self._exact(force=True):
            tokens = self.tokenize(texts, lang).to(self.runtime.device)
            if causal_text_tower(self.model):
                return self._unit(encode_text_prefix(self.model, trim_padding(tokens)))
            return self._unit(self.model.encode_text(tokens))

    def tokenize(self, texts: Sequence[str], lang: str | None = None) -> torch.Tensor:
        """The token ids the text tower takes; an NLLB tokenizer is set to each text's language code
        first (texts of one code share a call)."""
        import torch

        if not hasattr(self.tokenizer, "set_lang_fn"):
            return self.tokenizer(list(texts))
        codes = [nllb_code(text, lang) for text in texts]
        rows: list[torch.Tensor] = [torch.empty(0)] * len(texts)
        for code in dict.fromkeys(codes):
            chosen = [i for i, c in enumerate(codes) if c == code]
            source_language(self.tokenizer, code)
            for i, row in zip(chosen, self.tokenizer([texts[i] for i in chosen]), strict=True):
                rows[i] = row
        return torch.stack(rows)

    def _exact(self, force: bool = False) -> Any:
        """On CUDA, fp32 work without TF32 (which rounds fp32 matmuls and convolutions to 10-bit
        mantissas), so that CUDA and CPU give the same fp32 vectors. Only around fp32 work."""
        if self.runtime.device != "cuda" or not (force or self.exact_images):
            return nullcontext()
        return _without_tf32()

    @staticmethod
    def _unit(features: torch.Tensor) -> np.ndarray:
        from .onnx_text import unit_rows

        return unit_rows(features.float().cpu().numpy())


def _dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


@contextmanager
def _without_tf32() -> Iterator[None]:
    import torch

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _api_changed(error: BaseException) -> bool:
    """Whether open_clip failed on its own code rather than on the weights: a changed API or a missing
    module, never to be reported as "weights not in the cache"."""
    return isinstance(error, (TypeError, AttributeError, ImportError, NameError))


def _incompatible_message(spec: ModelSpec, error: BaseException) -> str:
    from importlib.metadata import version

    reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
    return (
        f"loading model {spec.id} failed inside open_clip {version('open_clip_torch')}: {reason}. "
        f"imgsearch is tested with open_clip_torch{TESTED_OPEN_CLIP}; install a version in that range "
        "(`pip install 'open_clip_torch" + TESTED_OPEN_CLIP + "'`) or report this."
    )


@contextmanager
def _quiet_logging() -> Iterator[None]:
    """open_clip logs failed attempts at ERROR on the root logger; we explain failures ourselves."""
    before = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(before)


def _user_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect, so an offline machine fails in seconds instead of minutes of retries."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _check_source(spec: ModelSpec) -> None:
    """Say plainly what is wrong with a local folder before open_clip reports it its own way."""
    if spec.kind != "local-dir":
        if spec.kind == "name":
            import open_clip

            if spec.name not in open_clip.list_models():
                raise UsageError(f"open_clip knows no model called {spec.name!r} (see `imgsearch models`)")
            tags = open_clip.list_pretrained_tags_by_model(spec.name)
            if spec.tag not in tags:
                raise UsageError(
                    f"{spec.name} has no pretrained tag {spec.tag!r}; known tags: {', '.join(tags) or 'none'}"
                )
        return
    folder = spec.name
    if not os.path.isdir(folder):
        raise ModelUnavailable(f"model folder {folder} does not exist")
    if not os.path.isfile(os.path.join(folder, CONFIG_FILE)):
        raise ModelUnavailable(
            f"model folder {folder} has no {CONFIG_FILE}: it needs open_clip's layout "
            "(open_clip_config.json + open_clip_model.safetensors, as in open_clip's hub repositories)"
        )
    if not any(name.endswith(_WEIGHT_SUFFIXES) for name in os.listdir(folder)):
        raise ModelUnavailable(
            f"model folder {folder} has a config but no weights (open_clip_model.safetensors)"
        )


def _family_overrides(spec: ModelSpec) -> dict[str, Any]:
    """Check the packages the model's family needs (before open_clip fails on an import its own way) and
    what its local-dir folder must carry; the create_model arguments that load that folder offline."""
    if spec.kind == "local-dir":
        cfg = local_config(spec)
        check_packages(spec, cfg)
        return local_dir_overrides(spec, cfg)
    if spec.kind == "name":
        import open_clip

        check_packages(spec, open_clip.get_model_config(spec.name) or {})
    return {}


def _unavailable_message(spec: ModelSpec, error: Exception | str) -> str:
    reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}".splitlines()[0][:300]
    if spec.kind == "local-dir":
        return f"cannot load the model in {spec.name}: {reason}"
    return (
        f"cannot load model {spec.id}: its weights are not in the local cache and could not be downloaded "
        f"({reason}).\nTo fix: run once with internet access (open_clip caches the weights under "
        "~/.cache/huggingface), or copy open_clip_config.json and open_clip_model.safetensors into a folder "
        "and use --model local-dir:FOLDER (see the README, 'Models')."
    )

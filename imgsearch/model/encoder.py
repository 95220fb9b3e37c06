"""A thin wrapper over open_clip: load a model from any source, embed pixels and texts as unit vectors.

torch and open_clip are imported here only, inside functions, so commands that do not encode never pay
the seconds their import costs.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from ..errors import ModelUnavailable, UsageError
from .specs import CONFIG_FILE, DEVICES, PRECISIONS, ModelSpec
from .tokenizer import trim_padding

if TYPE_CHECKING:
    import torch

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")


@dataclass(frozen=True)
class Runtime:
    """Where and in which numerics a model runs."""

    device: str
    precision: str
    batch_size: int


def choose_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """CUDA, then Apple MPS, then CPU; on CPU bf16 only where the processor computes it natively."""
    import torch

    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if precision == "auto":
        if device == "cpu":
            precision = "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
        else:
            precision = "fp16"
    return Runtime(device, precision, batch_size=16 if device == "cpu" else 64)


class Encoder:
    """One loaded CLIP model: `embed_pixels` for decoded images, `embed_texts` for queries."""

    def __init__(self, spec: ModelSpec, model: Any, tokenizer: Any, runtime: Runtime):
        import torch

        from .preprocess import Preprocess

        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.runtime = runtime
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[runtime.precision]
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

    @property
    def model_id(self) -> str:
        return self.spec.id

    @classmethod
    def load(cls, spec: ModelSpec, device: str = "auto", precision: str = "auto") -> Encoder:
        """Load weights from the spec's source; missing weights raise ModelUnavailable saying what to do."""
        runtime = choose_runtime(device, precision)
        _check_source(spec)
        import open_clip
        import torch

        name, pretrained = spec.open_clip_args

        def create() -> tuple[Any, Any]:
            with _lean_construction():
                model = open_clip.create_model(
                    name, pretrained=pretrained, require_pretrained=True, device="cpu"
                )
            return model, open_clip.get_tokenizer(name)

        with _quiet_logging():
            try:
                with _hub_offline():  # cached weights load without a network round trip
                    model, tokenizer = create()
            except Exception as cached_error:
                if spec.kind == "local-dir":
                    raise ModelUnavailable(_unavailable_message(spec, cached_error)) from cached_error
                if _user_offline() or not _hub_reachable():
                    raise ModelUnavailable(
                        _unavailable_message(spec, "no connection to the model hub")
                    ) from None
                try:
                    model, tokenizer = create()  # first use: open_clip downloads and caches the weights
                except Exception as e:
                    raise ModelUnavailable(_unavailable_message(spec, e)) from e
        model.eval()
        model = _fuse_branches(model)
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[runtime.precision]
        model.to(device=runtime.device, dtype=dtype)
        return cls(spec, model, tokenizer, runtime)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 model-sized images -> (N, dim) float32 unit vectors."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.runtime.device)
            return self._unit(self.model.encode_image(self.tower_input(x)))

    def tower_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 pixels -> the image tower's input: channels first, scaled to 0..1, normalised
        with the model's mean and std, in its dtype (the ONNX image export traces this same step)."""
        x = pixels.permute(0, 3, 1, 2).float().div_(255.0).sub_(self._mean).div_(self._std)
        return x.to(self.dtype)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Texts -> (N, dim) float32 unit vectors."""
        import torch

        with torch.inference_mode():
            tokens = self.tokenizer(texts).to(self.runtime.device)
            if causal_text_tower(self.model):
                return self._unit(encode_text_prefix(self.model, trim_padding(tokens)))
            return self._unit(self.model.encode_text(tokens))

    @staticmethod
    def _unit(features: torch.Tensor) -> np.ndarray:
        from .onnx_text import unit_rows

        return unit_rows(features.float().cpu().numpy())


def causal_text_tower(model: Any) -> bool:
    """Whether `model` is open_clip's CLIP with a causal text transformer pooled at the end-of-text token:
    then the padding after that token cannot change the embedding, and encode_text_prefix may skip it."""
    from open_clip.model import CLIP

    return (
        isinstance(model, CLIP)
        and type(model).encode_text is CLIP.encode_text
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", None) in ("argmax", "eos")
    )


def encode_text_prefix(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP.encode_text over only the positions given instead of the whole 77-token context: `tokens`
    trimmed by trim_padding. Under the causal mask no position sees a later one, so the pooled output is
    the same (to float rounding), at a fraction of the cost: a short query is about 10 tokens, not 77.
    The length is read from the tensor's shape, so the ONNX export traces it as a variable."""
    import torch
    from open_clip.transformer import text_global_pool

    n = tokens.shape[1]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        x = (
            model.text_projection(x)
            if isinstance(model.text_projection, torch.nn.Linear)
            else x @ model.text_projection
        )
    return x


_INIT_FUNCTIONS = (
    "normal_", "uniform_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "orthogonal_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
)  # fmt: skip
_construction = threading.Lock()


@contextmanager
def _lean_construction() -> Iterator[None]:
    """While open_clip builds a model and loads its checkpoint (strictly: every weight is in it): skip the
    random initialisation the checkpoint overwrites anyway, and let the model take the checkpoint's tensors
    instead of copying them into its own. ViT-B-32 then loads in ~0.2 s instead of ~1.4 s and its peak
    memory holds the weights once, not twice (0.55 GB less). Safetensors files are read into memory, not
    memory-mapped, so weights replaced in place later cannot pull pages from under a running model; with
    a safetensors that cannot do that, nothing is changed. One model at a time: the patches are global."""
    import torch
    from safetensors import torch as safetensors_torch

    load_file = safetensors_torch.load_file
    if "backend" not in inspect.signature(load_file).parameters:  # pragma: no cover - older safetensors
        yield
        return
    load_state_dict = torch.nn.Module.load_state_dict

    def assign(module: Any, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return load_state_dict(module, state_dict, strict=strict, assign=True)

    def unchanged(tensor: Any, *_args: Any, **_kwargs: Any) -> Any:
        return tensor

    with _construction:
        saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS}
        try:
            for name in saved:
                setattr(torch.nn.init, name, unchanged)
            torch.nn.Module.load_state_dict = assign  # type: ignore[method-assign, assignment]
            safetensors_torch.load_file = partial(load_file, backend="pread")
            yield
        finally:
            for name, function in saved.items():
                setattr(torch.nn.init, name, function)
            torch.nn.Module.load_state_dict = load_state_dict  # type: ignore[method-assign]
            safetensors_torch.load_file = load_file


def _fuse_branches(model: Any) -> Any:
    """Re-parameterise multi-branch blocks (MobileCLIP) for inference: same outputs, ~1.3x faster."""
    try:
        from timm.utils.model import reparameterize_model
    except ImportError:  # pragma: no cover - timm comes with open_clip
        return model
    return reparameterize_model(model, inplace=True)


@contextmanager
def _hub_offline() -> Iterator[None]:
    """Make huggingface_hub answer from its cache only, for the duration."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


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

"""Every place where imgsearch reaches into the internals of open_clip, torch, safetensors, timm or
huggingface_hub, in one module, so that an upstream change breaks here and nowhere else.

Each patch names what it relies on in UPSTREAM, and tests/test_compat.py checks each entry against the
installed libraries (`check(name)` raises UpstreamChanged, naming the patch), so an upgrade that moves a
private name fails loudly instead of silently slowing or changing the vectors. The tested ranges are pinned
in pyproject.toml. torch and open_clip are imported inside the functions only.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any

from .tokenizer import CLEANERS, MERGES

if TYPE_CHECKING:
    import torch


class UpstreamChanged(RuntimeError):
    """An upstream library no longer has what one of our patches relies on."""


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


#: How a text export's graph takes its tokens (meta.json "input"): "prefix", only the positions up to the
#: last end-of-text token (a causal tower: encode_text_prefix); "masked", only up to the last non-padding
#: token (a Hugging Face tower whose attention mask and pooling ignore padding); "full", the whole context
#: (open_clip's non-causal text transformer, which attends to the padding and may pool at it).
TEXT_INPUTS = ("prefix", "masked", "full")


def text_tower_input(model: Any) -> str | None:
    """Which of TEXT_INPUTS the text tower of `model` allows, or None for a tower imgsearch does not know
    (its export is then not attempted)."""
    from open_clip.hf_model import ClsLastHiddenStatePooler, ClsPooler, HFTextEncoder, MeanPooler
    from open_clip.model import CLIP, CustomTextCLIP
    from open_clip.transformer import TextTransformer

    if isinstance(model, CLIP) and type(model).encode_text is CLIP.encode_text:
        return "prefix" if causal_text_tower(model) else "full"
    if not isinstance(model, CustomTextCLIP) or type(model).encode_text is not CustomTextCLIP.encode_text:
        return None
    text = model.text
    if type(text) is TextTransformer:
        return "full"
    if type(text) is HFTextEncoder:
        masked = type(text.pooler) in (MeanPooler, ClsPooler, ClsLastHiddenStatePooler)
        return "masked" if masked else "full"
    return None


def tokenizer_config(tokenizer: Any) -> dict[str, Any] | None:
    """How to rebuild `tokenizer` without torch, or None when imgsearch.model.tokenizer cannot: only
    open_clip's SimpleTokenizer with its own vocabulary, no extra special tokens and no token-dropping
    reduction."""
    from open_clip import tokenizer as oc

    if type(tokenizer) is not oc.SimpleTokenizer or tokenizer.reduction_fn is not None:
        return None
    if tokenizer.vocab_size != 2 * 256 + MERGES + 2 or not tokenizer.context_length:
        return None
    cleaners = {
        "lower": oc._clean_lower,
        "whitespace": oc._clean_whitespace,
        "canonicalize": oc._clean_canonicalize,
    }
    clean = next((name for name, fn in cleaners.items() if tokenizer.clean_fn is fn), None)
    if clean not in CLEANERS:
        return None
    return {"kind": "clip-bpe", "context_length": int(tokenizer.context_length), "clean": clean}


def hf_tokenizer_config(tokenizer: Any) -> tuple[dict[str, Any], str] | str:
    """How imgsearch.model.hf_tokenizer rebuilds open_clip's HFTokenizer `tokenizer` without transformers:
    (its settings, the text of the `tokenizers.Tokenizer` transformers runs underneath, without padding or
    truncation), or why it cannot (a slow, Python-only tokenizer; open_clip's 'clips' mode; an unknown
    clean function)."""
    from open_clip import tokenizer as oc
    from tokenizers import Tokenizer

    if type(tokenizer) is not oc.HFTokenizer:
        kind = type(tokenizer).__name__
        return f"the model's tokenizer is {kind}, neither open_clip's CLIP BPE nor its HFTokenizer"
    if tokenizer.tokenizer_mode:
        return f"open_clip's HFTokenizer in mode {tokenizer.tokenizer_mode!r}"
    inner = tokenizer.tokenizer
    backend = getattr(inner, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        return f"{type(inner).__name__} is not backed by a `tokenizers` tokenizer"
    cleaners = {
        "lower": oc._clean_lower,
        "whitespace": oc._clean_whitespace,
        "canonicalize": oc._clean_canonicalize,
    }
    clean = next((name for name, fn in cleaners.items() if tokenizer.clean_fn is fn), None)
    if clean is None or not tokenizer.context_length:
        return "open_clip's HFTokenizer has a clean function or context length imgsearch does not know"
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_padding()
    copy.no_truncation()
    settings: dict[str, Any] = {
        "kind": "hf",
        "class": type(inner).__name__,
        "context_length": int(tokenizer.context_length),
        "clean": clean,
        "strip_sep_token": bool(tokenizer.strip_sep_token),
        "sep_id": inner.sep_token_id,
        "pad_id": int(inner.pad_token_id),
        "pad_token": str(inner.pad_token),
        "pad_type_id": int(inner.pad_token_type_id),
        "padding_side": inner.padding_side,
        "truncation_side": inner.truncation_side,
        "split_special_tokens": bool(inner.split_special_tokens),
        "language": None,
    }
    if hasattr(tokenizer, "set_lang_fn"):  # NLLB: a source-language code around every text
        if not hasattr(inner, "legacy_behaviour"):
            return f"{type(inner).__name__} sets a language in a way imgsearch does not know"
        settings["language"] = {
            "legacy": bool(inner.legacy_behaviour),
            "eos": str(inner.eos_token),
            "eos_id": int(inner.eos_token_id),
            "unk_id": int(inner.unk_token_id),
        }
    return settings, copy.to_str()


_INIT_FUNCTIONS = (
    "normal_", "uniform_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "orthogonal_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
)  # fmt: skip
_construction = threading.Lock()


@contextmanager
def lean_construction() -> Iterator[None]:
    """While open_clip builds a model and loads its checkpoint (strictly: every weight is in it): skip the
    random initialisation the checkpoint overwrites anyway, and let the model take the checkpoint's tensors
    instead of copying them into its own. ViT-B-32 then loads in ~0.2 s instead of ~1.4 s and its peak
    memory holds the weights once, not twice (0.55 GB less). Safetensors files are read into memory, not
    memory-mapped, so weights replaced in place later cannot pull pages from under a running model; with
    a safetensors that cannot do that, nothing is changed. One model at a time: the patches are global."""
    import torch
    from safetensors import torch as safetensors_torch

    load_file = safetensors_torch.load_file
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


def source_language(tokenizer: Any, code: str) -> None:
    """Set an NLLB tokenizer (open_clip's HFTokenizer) to the language code `code`. open_clip's own
    `set_language` calls transformers' `set_src_lang_special_tokens`, which transformers 5 undoes on the
    next call from its `src_lang` attribute: both are set here."""
    inner = tokenizer.tokenizer
    inner.src_lang = code
    inner.set_src_lang_special_tokens(code)


def fuse_branches(model: Any) -> Any:
    """Re-parameterise multi-branch blocks (MobileCLIP) for inference: same outputs, ~1.3x faster."""
    from timm.utils.model import reparameterize_model

    return reparameterize_model(model, inplace=True)


@contextmanager
def hub_offline() -> Iterator[None]:
    """Make huggingface_hub answer from its cache only, for the duration."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


@contextmanager
def traceable_attention(tower: Any) -> Iterator[None]:
    """Give each block of `tower.transformer` (the CLIP model's text tower, or its `visual`) an `attention`
    that computes what open_clip's ResidualAttentionBlock.attention computes (nn.MultiheadAttention, batch
    first, no separate key/value input) with reshapes by -1, then take it away again. Blocks of another
    kind keep theirs (and the verification then tells whether that works)."""
    import torch
    from open_clip.transformer import ResidualAttentionBlock

    def attention(
        block: Any, q_x: torch.Tensor, k_x: Any = None, v_x: Any = None, attn_mask: Any = None
    ) -> torch.Tensor:
        mha = block.attn
        q, k, v = torch.nn.functional.linear(q_x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (mha.num_heads, -1)).transpose(1, 2)

        mask = attn_mask.to(q_x.dtype) if attn_mask is not None else None
        out = torch.nn.functional.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=mask)
        return mha.out_proj(out.transpose(1, 2).flatten(2))

    blocks = getattr(getattr(tower, "transformer", None), "resblocks", [])
    patched = [
        block
        for block in blocks
        if type(block) is ResidualAttentionBlock
        and isinstance(block.attn, torch.nn.MultiheadAttention)
        and block.attn.batch_first
        and block.attn.in_proj_weight is not None
    ]
    for block in patched:
        block.attention = partial(attention, block)
    try:
        yield
    finally:
        for block in patched:
            del block.attention


def _has_parameters(function: Callable[..., Any], *names: str) -> bool:
    parameters = inspect.signature(function).parameters
    return all(name in parameters for name in names)


def _check_lean_construction() -> None:
    import torch
    from safetensors import torch as safetensors_torch

    missing = [name for name in _INIT_FUNCTIONS if not callable(getattr(torch.nn.init, name, None))]
    if missing:
        raise UpstreamChanged(f"lean_construction: torch.nn.init lacks {missing}")
    if not _has_parameters(torch.nn.Module.load_state_dict, "strict", "assign"):
        raise UpstreamChanged("lean_construction: torch.nn.Module.load_state_dict takes no `assign`")
    if not _has_parameters(safetensors_torch.load_file, "backend"):
        raise UpstreamChanged("lean_construction: safetensors.torch.load_file takes no `backend` (pread)")


def _check_encode_text_prefix() -> None:
    from open_clip.model import CLIP
    from open_clip.transformer import TextTransformer, text_global_pool

    if not _has_parameters(text_global_pool, "x", "text", "pool_type", "eos_token_id"):
        raise UpstreamChanged(
            "encode_text_prefix: open_clip.transformer.text_global_pool changed its arguments"
        )
    source = inspect.getsource(CLIP.encode_text) + inspect.getsource(CLIP.__init__)
    for name in ("token_embedding", "positional_embedding", "ln_final", "text_projection", "attn_mask",
                 "text_pool_type", "get_cast_dtype"):  # fmt: skip
        if name not in source:
            raise UpstreamChanged(f"encode_text_prefix: open_clip's CLIP.encode_text no longer uses {name}")
    if not hasattr(TextTransformer, "forward"):  # pragma: no cover - sanity
        raise UpstreamChanged("encode_text_prefix: open_clip.transformer.TextTransformer is gone")


def _check_traceable_attention() -> None:
    from open_clip.transformer import ResidualAttentionBlock

    if not _has_parameters(ResidualAttentionBlock.attention, "q_x", "k_x", "v_x", "attn_mask"):
        raise UpstreamChanged("traceable_attention: ResidualAttentionBlock.attention changed its arguments")
    if "self.attention(" not in inspect.getsource(ResidualAttentionBlock.forward):
        raise UpstreamChanged("traceable_attention: ResidualAttentionBlock.forward no longer calls attention")


def _check_source_language() -> None:
    from open_clip.tokenizer import HFTokenizer

    if "self.tokenizer = AutoTokenizer" not in inspect.getsource(HFTokenizer.__init__):
        raise UpstreamChanged("source_language: open_clip's HFTokenizer no longer keeps `tokenizer`")
    try:
        from transformers import NllbTokenizer as nllb
    except ImportError:
        return  # no transformers: no NLLB tokenizer to set
    if not hasattr(nllb, "set_src_lang_special_tokens") or "src_lang" not in inspect.getsource(nllb):
        raise UpstreamChanged("source_language: transformers' NLLB tokenizer has no src_lang setter")


def _check_fuse_branches() -> None:
    try:
        from timm.utils.model import reparameterize_model
    except ImportError as e:
        raise UpstreamChanged(f"fuse_branches: timm.utils.model.reparameterize_model is gone ({e})") from e
    if not _has_parameters(reparameterize_model, "inplace"):
        raise UpstreamChanged("fuse_branches: timm's reparameterize_model takes no `inplace`")


def _check_hub_offline() -> None:
    from huggingface_hub import constants

    if not isinstance(getattr(constants, "HF_HUB_OFFLINE", None), bool):
        raise UpstreamChanged("hub_offline: huggingface_hub.constants.HF_HUB_OFFLINE is gone")


def _check_tokenizer_config() -> None:
    from open_clip import tokenizer as oc

    for name in ("_clean_lower", "_clean_whitespace", "_clean_canonicalize", "SimpleTokenizer"):
        if not hasattr(oc, name):
            raise UpstreamChanged(f"tokenizer_config: open_clip.tokenizer.{name} is gone")
    probe = oc.SimpleTokenizer()
    for name in ("reduction_fn", "vocab_size", "context_length", "clean_fn"):
        if not hasattr(probe, name):
            raise UpstreamChanged(f"tokenizer_config: open_clip's SimpleTokenizer has no {name}")


def _check_hf_tokenizer_config() -> None:
    import transformers
    from open_clip.tokenizer import HFTokenizer

    init = inspect.getsource(HFTokenizer.__init__)
    call = inspect.getsource(HFTokenizer.__call__)
    for name in ("self.tokenizer_mode", "self.clean_fn", "self.strip_sep_token", "set_lang_fn"):
        if name not in init:
            raise UpstreamChanged(f"hf_tokenizer_config: open_clip's HFTokenizer no longer sets {name}")
    for part in ("padding='max_length'", "truncation=True", "max_length=context_length", "sep_token_id"):
        if part not in call.replace('"', "'"):
            raise UpstreamChanged(f"hf_tokenizer_config: open_clip's HFTokenizer.__call__ lost {part}")
    backend = transformers.PreTrainedTokenizerFast
    source = inspect.getsource(backend.set_truncation_and_padding)
    for part in ("enable_truncation", "enable_padding", "pad_token_type_id", "truncation_side"):
        if part not in source:
            raise UpstreamChanged(f"hf_tokenizer_config: transformers' fast tokenizer no longer uses {part}")
    nllb = inspect.getsource(transformers.NllbTokenizer.set_src_lang_special_tokens)
    if "legacy_behaviour" not in nllb or "TemplateProcessing" not in nllb:
        raise UpstreamChanged("hf_tokenizer_config: transformers' NLLB tokenizer sets its language otherwise")


def _check_text_tower_input() -> None:
    from open_clip import hf_model, model, transformer

    needed = {
        hf_model: ("HFTextEncoder", "MeanPooler", "ClsPooler", "ClsLastHiddenStatePooler"),
        model: ("CLIP", "CustomTextCLIP"),
        transformer: ("TextTransformer",),
    }
    for module, names in needed.items():
        for name in names:
            if not hasattr(module, name):
                raise UpstreamChanged(f"text_tower_input: {module.__name__}.{name} is gone")
    forward = inspect.getsource(hf_model.HFTextEncoder.forward)
    for part in ("x != self.config.pad_token_id", "attention_mask=attn_mask", "self.pooler(out, attn_mask)"):
        if part not in forward:
            raise UpstreamChanged(f"text_tower_input: open_clip's HFTextEncoder.forward lost {part}")
    if "self.text(" not in inspect.getsource(model.CustomTextCLIP.encode_text):
        raise UpstreamChanged("text_tower_input: open_clip's CustomTextCLIP.encode_text no longer calls text")


#: Each patch, and the check that upstream still has what it relies on.
UPSTREAM: dict[str, Callable[[], None]] = {
    "lean_construction": _check_lean_construction,
    "encode_text_prefix": _check_encode_text_prefix,
    "traceable_attention": _check_traceable_attention,
    "fuse_branches": _check_fuse_branches,
    "source_language": _check_source_language,
    "hub_offline": _check_hub_offline,
    "tokenizer_config": _check_tokenizer_config,
    "hf_tokenizer_config": _check_hf_tokenizer_config,
    "text_tower_input": _check_text_tower_input,
}


def check(name: str) -> None:
    """Raise UpstreamChanged, naming patch `name`, if the installed libraries no longer fit it."""
    UPSTREAM[name]()

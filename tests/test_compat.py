"""Every patch of upstream internals lives in imgsearch.model.compat; each is checked here against the
installed libraries, so an upgrade that moves what a patch relies on fails loudly, naming the patch."""

from __future__ import annotations

import inspect

import pytest
import torch

from imgsearch.model import compat
from imgsearch.model.compat import UpstreamChanged


@pytest.mark.parametrize("patch", sorted(compat.UPSTREAM))
def test_upstream_still_has_what_each_patch_relies_on(patch: str) -> None:
    compat.check(patch)


def test_a_check_names_its_patch_when_upstream_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a user sees after an upgrade that renamed a private name: the patch, and what is gone."""
    from open_clip import tokenizer

    monkeypatch.delattr(tokenizer, "_clean_canonicalize")
    with pytest.raises(UpstreamChanged, match=r"^tokenizer_config: .*_clean_canonicalize"):
        compat.check("tokenizer_config")
    monkeypatch.delattr(torch.nn.init, "trunc_normal_")
    with pytest.raises(UpstreamChanged, match=r"^lean_construction: .*trunc_normal_"):
        compat.check("lean_construction")


def test_every_patch_is_checked() -> None:
    """A new patch must come with its check: every public function of compat is a patch in UPSTREAM, but
    `check` itself and `causal_text_tower` (the guard of encode_text_prefix)."""
    functions = {
        name
        for name, value in vars(compat).items()
        if inspect.isfunction(value) and value.__module__ == compat.__name__ and not name.startswith("_")
    }
    assert functions - {"check", "causal_text_tower"} == set(compat.UPSTREAM)


def test_encode_text_prefix_equals_open_clip_encode_text(torch_encoder) -> None:
    """The prefix trick reimplements CLIP.encode_text; it must give its vectors (to float rounding)."""
    model = torch_encoder.model
    tokens = torch_encoder.tokenizer(["a photo of a dog", "beach at sunset, no people", ""])
    with torch.inference_mode():
        full = model.encode_text(tokens)
        trimmed = compat.encode_text_prefix(model, tokens[:, :12])
    assert torch.allclose(full, trimmed, atol=1e-5)


def test_traceable_attention_computes_what_open_clip_computes(torch_encoder) -> None:
    model = torch_encoder.model
    tokens = torch_encoder.tokenizer(["a red apple on a table"])
    pixels = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        text, image = model.encode_text(tokens), model.encode_image(pixels)
        with compat.traceable_attention(model), compat.traceable_attention(model.visual):
            assert torch.allclose(model.encode_text(tokens), text, atol=1e-5)
            assert torch.allclose(model.encode_image(pixels), image, atol=1e-5)
    assert not any("attention" in vars(block) for block in model.transformer.resblocks)  # taken away again

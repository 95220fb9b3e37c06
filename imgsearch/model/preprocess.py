"""What a model's image tower takes in, reduced to what decoding needs (a leaf: decode workers import it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its input: open_clip's PreprocessCfg, reduced to what decoding needs."""

    height: int
    width: int
    resize_mode: str = "shortest"  # shortest | longest | squash
    interpolation: str = "bicubic"
    fill_color: int = 0

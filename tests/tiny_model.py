"""A small open_clip model with random weights, saved in open_clip's local-dir layout.

Tests load it through `--model local-dir:FOLDER`, the same code path users take with real weights.
"""

from __future__ import annotations

import json
from pathlib import Path

MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
PREPROCESS_CFG = {
    "size": 64,
    "mode": "RGB",
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    """Build the model with a fixed seed and write open_clip_config.json + open_clip_model.safetensors."""
    import torch
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = CLIP(**MODEL_CFG)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    config = {"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    return folder

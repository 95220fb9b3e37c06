"""Model sources: parse and name them without importing torch.

A model spec is one of
  NAME:TAG            an open_clip architecture with a pretrained tag (weights downloaded on first use)
  hf-hub:ORG/REPO     an open_clip model on the Hugging Face hub
  local-dir:PATH      a folder in open_clip's own layout: open_clip_config.json + open_clip_model.safetensors
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ModelMismatch, UsageError

DEFAULT_MODEL = "ViT-B-32:laion2b_s34b_b79k"
HF_HUB = "hf-hub:"
LOCAL_DIR = "local-dir:"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model source; `id` is the canonical string recorded with an index."""

    kind: str  # "name", "hf-hub" or "local-dir"
    name: str  # architecture name, hub repo id, or absolute folder path
    tag: str | None = None

    @property
    def id(self) -> str:
        if self.kind == "hf-hub":
            return HF_HUB + self.name
        if self.kind == "local-dir":
            return LOCAL_DIR + self.name
        return f"{self.name}:{self.tag}"

    @property
    def open_clip_args(self) -> tuple[str, str | None]:
        """(model_name, pretrained) as open_clip.create_model wants them."""
        if self.kind == "name":
            return self.name, self.tag
        return self.id, None


def parse_model_spec(text: str) -> ModelSpec:
    """Parse a model spec as a user types it; relative local-dir paths become absolute."""
    text = text.strip()
    if text.startswith(LOCAL_DIR):
        path = text[len(LOCAL_DIR) :]
        if not path:
            raise UsageError("local-dir: needs a folder, e.g. local-dir:~/models/vit-b-32")
        return ModelSpec("local-dir", os.path.abspath(os.path.expanduser(path)))
    if text.startswith(HF_HUB):
        repo = text[len(HF_HUB) :]
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise UsageError(f"hf-hub: needs ORG/REPO, got {repo!r}")
        return ModelSpec("hf-hub", repo)
    name, sep, tag = text.partition(":")
    if not sep or not name or not tag:
        raise UsageError(
            f"model {text!r} needs a pretrained tag, e.g. {DEFAULT_MODEL} "
            "(or hf-hub:ORG/REPO, or local-dir:FOLDER)"
        )
    return ModelSpec("name", name, tag)


def model_for(
    recorded: tuple[str, int] | None, requested: ModelSpec | None, home: object
) -> tuple[ModelSpec, int | None]:
    """The model an index uses and its vector size: the one `recorded` with it (a different request is
    refused, naming the ways on: one model per index), else the request, else the default (size None:
    nothing stored yet). Every path that writes vectors (index, watch, --ray, import) and every query asks
    this, so none mixes two models' vectors."""
    if recorded is None:
        return requested or parse_model_spec(DEFAULT_MODEL), None
    model_id, dim = recorded
    if requested is not None and requested.id != model_id:
        raise ModelMismatch(
            f"the index at {home} was built with model {model_id} ({dim}-d vectors), not {requested.id}: "
            f"one model per index. To move it to {requested.id}, re-encode every image with "
            f"`imgsearch reindex --model {requested.id}` (queries answer with {model_id} until it is done); "
            f"to go on with {model_id}, leave out --model (and IMGSEARCH_MODEL); or keep a separate index "
            "for the other model with --home DIR."
        )
    return parse_model_spec(model_id), dim

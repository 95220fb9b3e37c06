"""Fill a `local-dir:` folder from the Hugging Face cache: download a model once, then work offline.

A named open_clip model (NAME:TAG) or an `hf-hub:` one lives in the hub cache as several repositories: the
open_clip repository (open_clip_config.json and the weights), the tokenizer's repository for a family with
a Hugging Face tokenizer, and the text model's repository for a Hugging Face text tower (its config.json).
This copies what the folder needs from each (see imgsearch.model.families for the layout), from the cache
only unless `download` is set, and says which file is missing and from where when one is.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelUnavailable, UsageError
from .families import HF_TEXT_CONFIG, TOKENIZER_FILES, text_config
from .specs import CONFIG_FILE, WEIGHTS_FILE, ModelSpec

_WEIGHTS = (WEIGHTS_FILE, "open_clip_pytorch_model.bin")


@dataclass
class SavedModel:
    """What `save_local_dir` wrote: the folder, and each file with the repository it came from."""

    folder: Path
    files: list[tuple[str, str]] = field(default_factory=list)  # (file name, source repository)

    @property
    def bytes(self) -> int:
        return sum((self.folder / name).stat().st_size for name, _ in self.files)


def save_local_dir(spec: ModelSpec, folder: Path, download: bool = False) -> SavedModel:
    """Copy `spec`'s config, weights, tokenizer files and text config into `folder`, from the hub cache
    (and, with `download`, from the hub for what the cache lacks). Nothing is left half-written: files go
    to a temporary folder that takes `folder`'s place at the end."""
    if spec.kind == "local-dir":
        raise UsageError(f"{spec.id} is already a folder; name a NAME:TAG or hf-hub:ORG/REPO model")
    folder = folder.expanduser().absolute()
    if folder.exists() and any(folder.iterdir()):
        raise UsageError(f"{folder} is not empty; name a new or empty folder")
    repo, weights = _open_clip_repo(spec)
    saved = SavedModel(folder)
    tmp = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        config = _config(spec, repo, download)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        saved.files.append((CONFIG_FILE, repo))
        name = _copy_first(repo, [weights] if weights else list(_WEIGHTS), tmp, download, "weights")
        saved.files.append((name, repo))
        text = text_config(config.get("model_cfg", {}))
        if "hf_tokenizer_name" in text:
            source = text["hf_tokenizer_name"]
            found = _copy_present(source, TOKENIZER_FILES, tmp, download)
            if not found:
                raise ModelUnavailable(
                    _missing(source, "tokenizer files (tokenizer.json, tokenizer_config.json)")
                )
            saved.files += [(name, source) for name in found]
        if "hf_model_name" in text:
            source = text["hf_model_name"]
            _copy_first(source, [HF_TEXT_CONFIG], tmp, download, "text model config")
            saved.files.append((HF_TEXT_CONFIG, source))
        if folder.exists():
            folder.rmdir()
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return saved


def _open_clip_repo(spec: ModelSpec) -> tuple[str, str | None]:
    """The hub repository of an open_clip model, and the weights file its tag names (None: the default)."""
    if spec.kind == "hf-hub":
        return spec.name, None
    import open_clip

    hub = (open_clip.get_pretrained_cfg(spec.name, spec.tag or "") or {}).get("hf_hub", "")
    if not hub:
        raise ModelUnavailable(
            f"{spec.id} has no Hugging Face repository (open_clip downloads it from a URL): load it once "
            "with network access, and copy its weights into a folder by hand (see the README, 'Models')"
        )
    parts = hub.strip("/").split("/")  # "org/repo/" or "org/repo/file"
    return "/".join(parts[:2]), "/".join(parts[2:]) or None


def _config(spec: ModelSpec, repo: str, download: bool) -> dict[str, Any]:
    """The repository's own open_clip_config.json; for a named model whose repository has none (older
    timm repositories), open_clip's built-in config with the tag's preprocessing."""
    path = _cached(repo, CONFIG_FILE, download)
    if path is not None:
        return dict(json.loads(path.read_text()))
    if spec.kind != "name":
        raise ModelUnavailable(_missing(repo, CONFIG_FILE))
    import open_clip

    model_cfg = dict(open_clip.get_model_config(spec.name) or {})
    pretrained = open_clip.get_pretrained_cfg(spec.name, spec.tag or "") or {}
    if pretrained.get("quick_gelu"):
        model_cfg["quick_gelu"] = True
    keys = ("mean", "std", "interpolation", "resize_mode")
    preprocess = {key: pretrained[key] for key in keys if key in pretrained}
    preprocess["size"] = model_cfg.get("vision_cfg", {}).get("image_size", 224)
    return {"model_cfg": model_cfg, "preprocess_cfg": preprocess}


def _cached(repo: str, filename: str, download: bool) -> Path | None:
    """The file from the hub cache (or the hub, with `download`); None when it is not there."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo, filename, local_files_only=not download))
    except (LocalEntryNotFoundError, EntryNotFoundError, RepositoryNotFoundError):
        return None
    except OSError as e:  # no network, or the cache cannot be read
        if download:
            raise ModelUnavailable(f"cannot download {filename} from {repo}: {e}") from e
        return None


def _copy_first(repo: str, names: list[str], target: Path, download: bool, what: str) -> str:
    for name in names:
        path = _cached(repo, name, download)
        if path is not None:
            shutil.copyfile(path, target / Path(name).name)
            return Path(name).name
    raise ModelUnavailable(_missing(repo, f"{what} ({' or '.join(names)})"))


def _copy_present(repo: str, names: tuple[str, ...], target: Path, download: bool) -> list[str]:
    copied = []
    for name in names:
        path = _cached(repo, name, download and name in ("tokenizer.json", "tokenizer_config.json"))
        if path is not None:
            shutil.copyfile(path, target / name)
            copied.append(name)
    return copied


def _missing(repo: str, what: str) -> str:
    return (
        f"the Hugging Face cache has no {what} of {repo}: run once with network access (any imgsearch "
        "command that loads the model, or `imgsearch save-model MODEL FOLDER --download`), or download it "
        f"from https://huggingface.co/{repo}"
    )

"""Where a model's ONNX exports live: one per-user cache (imgsearch.home.cache_home), keyed by the model's
content, so that every index folder of the same model shares one copy.

A named or hub model is fixed by its id. A local-dir model is keyed by a hash of its config and weights,
so two copies of one folder share an export and weights replaced in place get a new one. Hashing a
600 MB file takes a second, so the key is remembered per (folder, file sizes and mtimes) in `sources/`:
a cold query reads one small file, not the weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ..home import cache_home
from .specs import CONFIG_FILE, ModelSpec

SOURCES = "sources"
_WEIGHTS = (".safetensors", ".bin", ".pth")


def export_folder(spec: ModelSpec, kind: str) -> Path:
    """`<cache>/<kind>/<readable part of the id>-<content key>`: one folder per model content."""
    return cache_home() / kind / _folder_name(spec)


def _folder_name(spec: ModelSpec) -> str:
    """The id's readable part for a named or hub model; a local-dir folder's path is not part of it, so
    that copies of the folder elsewhere share the export."""
    shown = "local-dir" if spec.kind == "local-dir" else spec.id
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", shown).strip("._")[-60:]
    return f"{readable}-{model_key(spec)}"


def model_key(spec: ModelSpec) -> str:
    """A short hash naming the model's weights: of its id, or for local-dir of its files' bytes."""
    stamp = _source_stamp(spec)
    if stamp is None:
        return _digest(spec.id.encode())
    memo = cache_home() / SOURCES / f"{_digest(json.dumps([spec.id, stamp]).encode())}.json"
    try:
        return str(json.loads(memo.read_text())["key"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    hasher = hashlib.blake2b(digest_size=8)
    for name, _size, _mtime in stamp:
        hasher.update(name.encode() + b"\0")
        with open(os.path.join(spec.name, name), "rb") as f:
            while chunk := f.read(1 << 22):
                hasher.update(chunk)
    key = hasher.hexdigest()
    _write_memo(memo, {"model": spec.id, "stamp": stamp, "key": key})
    return key


def _source_stamp(spec: ModelSpec) -> list[list[Any]] | None:
    """Name, size and mtime of a local-dir model's config and weights (None for other sources, or a
    folder that cannot be read: its id names it then)."""
    if spec.kind != "local-dir":
        return None
    try:
        return sorted(
            [e.name, e.stat().st_size, e.stat().st_mtime_ns]
            for e in os.scandir(spec.name)
            if e.is_file() and (e.name == CONFIG_FILE or e.name.endswith(_WEIGHTS))
        )
    except OSError:
        return None


def _write_memo(path: Path, value: dict[str, Any]) -> None:
    """Best effort: a read-only cache only costs the next run the hash again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(value))
        tmp.replace(path)
    except OSError:
        pass


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def exports_bytes(spec: ModelSpec) -> int:
    """Bytes the cache holds for this model (its exports of every kind), for `status`."""
    root, name = cache_home(), _folder_name(spec)
    if not root.is_dir():
        return 0
    folders = [kind / name for kind in root.iterdir() if kind.name != SOURCES and (kind / name).is_dir()]
    return sum(p.stat().st_size for folder in folders for p in folder.rglob("*") if p.is_file())


def remove_old_exports(home: Path) -> None:
    """Exports that older versions kept in each index folder (`<home>/text-encoder`, `image-encoder`):
    hundreds of MB each, made again once in the cache."""
    for kind in ("text-encoder", "image-encoder"):
        old = home / kind
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)

"""Where the index lives by default (a leaf module: the command line reads it before anything heavy)."""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    """$IMGSEARCH_HOME, else the platform's per-user data folder (e.g. ~/.local/share/imgsearch)."""
    env = os.environ.get("IMGSEARCH_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_path

    return user_data_path("imgsearch", appauthor=False)


def cache_home() -> Path:
    """$IMGSEARCH_CACHE, else the platform's per-user cache folder (e.g. ~/.cache/imgsearch): what can be
    made again from a model (its ONNX exports), shared by every index folder of this user."""
    env = os.environ.get("IMGSEARCH_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_path

    return user_cache_path("imgsearch", appauthor=False)

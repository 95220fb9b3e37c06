"""A household searching one `imgsearch serve` at once: rounds of 16 requests fired together at a real server
process (text searches, filtered queries, uploads it must encode, "more like this"), each answer the same as
the server gave for it alone, none failed. Not timed: bench/serve_latency.py measures the latency.

A text or picture the server has answered before would come from its cache of recent query vectors, so every
round asks for new ones that must come out the same: texts with extra spaces (the tokenizer removes them),
PNGs with another compression level (other bytes, the same pixels)."""

from __future__ import annotations

import io
import os
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from imgsearch.library import Library
from tests.conftest import SAMPLE_PHOTOS, serving

CLIENTS = 16
TEXTS = ("a cat on a sofa", "a red apple", "mountains at dusk", "a boat on the water", "a fire truck")
#: (pulled, pushed away) texts of the filtered queries. Every text is in one request only, so that each is
#: encoded in the same batch (of one or two texts) together as alone: batches of other sizes round otherwise.
PAIRS = (
    ("a dog at a window", "people in a crowd"),
    ("a bird", "a dark night"),
    ("a balloon", "a city street"),
)
UPLOADS = ("dogs-at-window.jpg", "ladybird.jpg", "hot-air-balloon.jpg")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model) -> Iterator[tuple[str, Path]]:
    """The URL of a real server over an index of sample_photos, and the photos."""
    root = tmp_path_factory.mktemp("concurrent")
    photos = root / "photos"
    shutil.copytree(SAMPLE_PHOTOS, photos, ignore=shutil.ignore_patterns("*.md"))
    Library(root / "home", model=tiny_model).index([photos])
    with serving({**os.environ, "IMGSEARCH_HOME": str(root / "home")}) as url:
        yield url, photos


def _spaced(text: str, variant: int) -> str:
    """The text with `variant` more spaces after its first word: another cache key, the same tokens."""
    first, rest = text.split(" ", 1)
    return first + " " * (1 + variant) + rest


def _png(name: str, variant: int) -> bytes:
    out = io.BytesIO()
    Image.open(SAMPLE_PHOTOS / name).convert("RGB").resize((160, 120)).save(
        out, "PNG", compress_level=variant
    )
    return out.getvalue()


def _requests(variant: int, ids: list[int]) -> list[dict[str, Any]]:
    """CLIENTS requests, as httpx.request keyword arguments."""
    asked: list[dict[str, Any]] = []
    for text in TEXTS:
        asked.append(
            {"method": "GET", "url": "/api/search", "params": {"q": _spaced(text, variant), "top": 8}}
        )
    for pulled, pushed in PAIRS:
        body = {
            "terms": [
                {"value": _spaced(pulled, variant)},
                {"value": _spaced(pushed, variant), "weight": -0.5},
            ],
            "top": 6,
            "offset": 2,
            "filters": {"glob": "*-*.jpg", "min_width": 100},
            "sort": "date",
        }
        asked.append({"method": "POST", "url": "/api/query", "json": body})
    for name in UPLOADS:
        files = {"file": (f"{name}.png", _png(name, variant), "image/png")}
        asked.append({"method": "POST", "url": "/api/search/image", "files": files, "data": {"top": 5}})
    for image_id in ids[: CLIENTS - len(asked) - 1]:
        asked.append({"method": "GET", "url": f"/api/similar/{image_id}", "params": {"top": 7}})
    asked.append({"method": "GET", "url": "/api/duplicates", "params": {"threshold": 0.999}})
    assert len(asked) == CLIENTS
    return asked


def _answer(url: str, request: dict[str, Any], start: threading.Barrier | None = None) -> tuple[int, Any]:
    with httpx.Client(base_url=url, timeout=120) as http:
        http.get("/api/status")  # connected before the barrier: the requests then arrive together
        if start is not None:
            start.wait(timeout=60)
        response = http.request(**request)
    return response.status_code, response.json()


def test_sixteen_at_once_answer_as_each_alone(server):
    url, _photos = server
    with httpx.Client(base_url=url, timeout=60) as http:
        everything = http.get("/api/search", params={"q": "anything", "top": 100}).json()["results"]
    ids = [m["id"] for m in everything]
    alone = [_answer(url, request) for request in _requests(0, ids)]
    assert all(status == 200 for status, _ in alone), alone
    assert all(body["results"] for _, body in alone[:-1])  # every search found something
    for variant in (1, 2, 3):
        start = threading.Barrier(CLIENTS)
        with ThreadPoolExecutor(CLIENTS) as pool:
            asked = _requests(variant, ids)
            together = list(pool.map(_answer, [url] * CLIENTS, asked, [start] * CLIENTS))
        failed = [(i, status, body) for i, (status, body) in enumerate(together) if status != 200]
        assert not failed, failed
        for i, ((_, expected), (_, got)) in enumerate(zip(alone, together, strict=True)):
            assert got == expected, (variant, asked[i].get("url"), _difference(expected, got))


def _difference(expected: dict[str, Any], got: dict[str, Any]) -> list[tuple[Any, Any]]:
    """The results that differ, for the message."""
    key = "results" if "results" in expected else "groups"
    return [(e, g) for e, g in zip(expected[key], got[key], strict=False) if e != g] + [
        (len(expected[key]), len(got[key]))
    ]

"""The HTTP API against its own OpenAPI spec: schemathesis makes requests from the spec, valid and invalid
ones, for every operation, and runs all its checks on each answer: never a 5xx; only statuses, content
types, headers and bodies that the spec documents; valid requests accepted, invalid ones refused.
Seeded and bounded (a few seconds an operation), in-process and offline."""

from __future__ import annotations

import shutil

import pytest
import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

from imgsearch.library import Library
from imgsearch.serve.app import create_app
from tests.conftest import SAMPLE_PHOTOS

PHOTOS = ("coffee-cup.jpg", "ladybird.jpg", "kite-in-sky.jpg", "fire-truck.jpg")
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20240611,
        "generation": {"mode": "all", "max-examples": 25, "deterministic": True, "database": "none"},
        "phases": {name: {"enabled": True} for name in ("examples", "coverage", "fuzzing")},
        "checks": {"enabled": True},
    }
)
#: How the server words its refusals for the rules that a JSON schema cannot state, so that the spec states
#: them in words: an image term names an image file the server can read, an upload is an image, the terms
#: do not cancel each other out, a label filter has two different labels or more.
UNSTATABLE = (
    "no such image file",
    "as a query",  # "cannot use ... as a query: not an image"
    "cannot read",
    "cancel each other out",
    "needs other labels",
    "a label is empty",
    "given twice",
)
# The spec does not depend on the index, so it is read from an app over none; the test gets a real one.
# (The schemathesis.pytest.from_fixture loader would wait for a fixture, but it fails on pytest 9.)
schema = schemathesis.openapi.from_dict(create_app(Library("/nonexistent")).openapi(), config=CONFIG)


@schema.hook
def filter_failure(context, failure, case, response) -> bool:
    """A request that is valid by the schema may yet break one of the rules that the spec states in words."""
    if isinstance(failure, RejectedPositiveData) and response.status_code == 400:
        return not any(words in response.json()["error"] for words in UNSTATABLE)
    return True


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_model):
    """The app over a small index built with the tiny model."""
    root = tmp_path_factory.mktemp("fuzzed")
    (root / "photos").mkdir()
    for name in PHOTOS:
        shutil.copy(SAMPLE_PHOTOS / name, root / "photos" / name)
    Library(root / "home", model=tiny_model).index([root / "photos"])
    return create_app(Library(root / "home"))


@schema.parametrize()
def test_every_answer_keeps_the_spec(case, app):
    """Whatever a client sends, valid by the spec or not, the server answers as its spec says."""
    case.call_and_validate(app=app)

"""`imgsearch models`: the recommended table helps choose a model, and its data stays true to open_clip."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from imgsearch.cli import main
from imgsearch.model.choices import CHOICES, SOURCES, choices
from imgsearch.model.specs import DEFAULT_MODEL, parse_model_spec
from tests.conftest import REPO

FAMILIES = {
    "ViT-B-32", "ViT-B-16", "ViT-L-14", "RN50", "ViT-H-14", "ViT-B-16-SigLIP", "ViT-B-16-SigLIP2",
    "MobileCLIP2", "xlm-roberta-base-ViT-B-32", "nllb-clip-base", "ViT-B-16-SigLIP-i18n-256",
}  # fmt: skip
FIELDS = {"family", "model", "dim", "languages", "quality", "speed", "source", "notes", "default"}
QUALITY = {"coco_t2i_r1", "coco_t2i_r5", "flickr_t2i_r1", "flickr_t2i_r5", "imagenet_top1", "xm3600_t2i_r1"}


def models(*args: str):
    result = CliRunner().invoke(main, ["models", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_table_lists_every_recommended_model_once_with_its_dimension_and_marks_the_default():
    rows = {}
    for line in models().splitlines():
        words = line.lstrip("* ").split()
        if words and ":" in words[0] and words[0] in {c.model for c in CHOICES}:
            assert words[0] not in rows, f"{words[0]} listed twice"
            rows[words[0]] = (line.startswith("* "), int(words[1]))
    assert set(rows) == {c.model for c in CHOICES}
    assert {c.family for c in CHOICES} == FAMILIES
    assert [model for model, (default, _) in rows.items() if default] == [DEFAULT_MODEL]
    assert all(rows[c.model][1] == c.dim for c in CHOICES)


def test_the_table_does_not_import_torch_or_open_clip():
    code = (
        "import sys; from click.testing import CliRunner; from imgsearch.cli import main; "
        "r = CliRunner().invoke(main, ['models']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('torch', 'open_clip') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]"


def test_json_has_one_object_per_model_with_the_fields():
    objects = [json.loads(line) for line in models("--json").splitlines()]
    assert [o["model"] for o in objects] == [c.model for c in choices()]
    assert [o["model"] for o in objects if o["default"]] == [DEFAULT_MODEL]
    for o in objects:
        assert set(o) >= FIELDS
        assert set(o["quality"]) == QUALITY and o["languages"] in ("English", "multilingual")
        assert {"index_img_s", "query_ms", "measured"} <= set(o["speed"])
        assert o["source"] in SOURCES.values()


def test_name_lists_that_models_tags_and_all_lists_every_tag():
    import open_clip

    tags = models("ViT-B-16").split()
    assert tags == [f"ViT-B-16:{tag}" for tag in open_clip.list_pretrained_tags_by_model("ViT-B-16")]
    assert "ViT-B-32:laion2b_s34b_b79k  (default)" in models("ViT-B-32").splitlines()
    assert len(models("--all").splitlines()) == len(open_clip.list_pretrained())


def test_an_unknown_name_and_json_with_a_name_are_refused():
    runner = CliRunner()
    assert runner.invoke(main, ["models", "ViT-Q-99"]).exit_code == 2
    assert runner.invoke(main, ["models", "--all", "--json"]).exit_code == 2


@pytest.mark.parametrize("choice", CHOICES, ids=lambda c: c.model)
def test_each_choice_matches_open_clip(choice):
    import open_clip

    spec = parse_model_spec(choice.model)
    assert spec.kind == "name"
    assert spec.tag in open_clip.list_pretrained_tags_by_model(spec.name)
    assert choice.dim == open_clip.get_model_config(spec.name)["embed_dim"]
    quality = [getattr(choice.quality, k) for k in QUALITY]
    assert all(v is None or 0 < v < 1 for v in quality) and choice.source in SOURCES


def test_speeds_are_the_benchmark_s_when_its_results_are_here():
    path = REPO / "bench" / "families.json"
    if not path.exists():
        pytest.skip("bench/families.json is not in this checkout")
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import families
    finally:
        sys.path.remove(str(REPO / "bench"))
    from dataclasses import asdict

    from imgsearch.model.choices import MEASURED, SPEEDS

    data = json.loads(path.read_text())
    assert {model: asdict(speed) for model, speed in SPEEDS.items()} == families.speeds(data)
    assert families.measured(data) == MEASURED

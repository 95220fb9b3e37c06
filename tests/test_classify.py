"""Zero-shot labels: the recipe against a reference computation, temperature, filters, and the CLI."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from imgsearch.errors import UsageError
from imgsearch.search.classify import TEMPLATES, ZeroShot, softmax
from tests import index_db
from tests.conftest import SAMPLE_COUNT
from tests.controlled import ControlledEncoder, Item, controlled_library, unit

DIM = 8
LABELS = ["cat", "dog", "birthday party"]


def _encoder(rng: np.random.Generator, labels=LABELS, logit_scale: float = 100.0) -> ControlledEncoder:
    """Every prompt of every label gets its own vector: the label's direction plus per-prompt noise."""
    encoder = ControlledEncoder(DIM, logit_scale=logit_scale)
    for i, label in enumerate(labels):
        base = np.eye(DIM)[i]
        for template in TEMPLATES:
            noise = 0.3 * rng.standard_normal(DIM)
            noise[-1] = 0.0  # keep the images' shared direction out of the labels
            encoder.texts[template.format(label)] = base + noise
    return encoder


def _items(rng: np.random.Generator, n: int = 12) -> list[Item]:
    """Images near one label or between labels, so that no probability saturates at 0 or 1."""
    items = []
    for k in range(n):
        v = 0.01 * rng.standard_normal(DIM)
        v[DIM - 1] += 1.0  # a direction all images share, so cosines to the labels differ by a little
        v[k % 3] += 0.03
        items.append(Item(f"img{k:02d}.jpg" if k < n // 2 else f"sub/img{k:02d}.jpg", v))
    return items


@pytest.fixture
def library(tmp_path, isolated_home):
    rng = np.random.default_rng(7)
    encoder = _encoder(rng)
    return controlled_library(isolated_home, tmp_path / "photos", _items(rng), encoder)


def _reference(library, labels, scale: float, bias: float | None = None) -> dict[str, np.ndarray]:
    """Softmax of stored vectors @ (mean of the unit prompt vectors, renormalised) x scale, per path; with
    a bias, one sigmoid of (that + bias) per label."""
    encoder = library.encoder()
    label_vectors = []
    for label in labels:
        prompts = np.stack([unit(encoder.texts[t.format(label)]) for t in TEMPLATES])
        label_vectors.append(unit(prompts.mean(axis=0)))
    with index_db.catalog(library.home) as catalog:
        _, ids, vectors = catalog.all_vectors(DIM)
        rows = catalog.rows(ids)
    logits = vectors.astype(np.float64) @ np.stack(label_vectors).T.astype(np.float64) * scale
    if bias is not None:
        probs = 1 / (1 + np.exp(-(logits + bias)))
        return {rows[int(i)].path.decode(): p for i, p in zip(ids, probs, strict=True)}
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = exp / exp.sum(axis=1, keepdims=True)
    return {rows[int(i)].path.decode(): p for i, p in zip(ids, probs, strict=True)}


def _entropy(p: np.ndarray) -> float:
    return float(-(p * np.log(p)).sum())


# -- the recipe, with vectors the test chooses ---------------------------------------------------------------


def test_probabilities_sum_to_one_and_equal_the_reference(library):
    results = library.classify(LABELS)
    expected = _reference(library, LABELS, scale=100.0)
    assert sorted(r.path for r in results) == sorted(expected)
    assert [r.path for r in results] == sorted(r.path for r in results)  # path order
    for r in results:
        probs = np.array([r.probs[label] for label in LABELS])
        assert probs.sum() == pytest.approx(1.0, abs=1e-9)
        np.testing.assert_allclose(probs, expected[r.path], rtol=1e-5, atol=1e-7)
        assert r.label == LABELS[int(np.argmax(expected[r.path]))]
        assert r.prob == max(r.probs.values())
        assert 0.02 < r.prob < 0.999  # the test's vectors keep the softmax away from saturation


def test_the_scale_is_the_models_logit_scale_and_temperature_replaces_it(tmp_path, isolated_home):
    rng = np.random.default_rng(3)
    encoder = _encoder(rng, logit_scale=37.5)
    library = controlled_library(isolated_home, tmp_path / "photos", _items(rng), encoder)
    expected = _reference(library, LABELS, scale=37.5)
    for r in library.classify(LABELS):
        np.testing.assert_allclose([r.probs[x] for x in LABELS], expected[r.path], rtol=1e-5, atol=1e-7)
    same = library.classify(LABELS, temperature=1 / 37.5)
    np.testing.assert_allclose(
        [list(r.probs.values()) for r in same], [list(r.probs.values()) for r in library.classify(LABELS)]
    )
    expected = _reference(library, LABELS, scale=1 / 0.2)
    for r in library.classify(LABELS, temperature=0.2):
        np.testing.assert_allclose([r.probs[x] for x in LABELS], expected[r.path], rtol=1e-5, atol=1e-7)


def test_a_sigmoid_model_gets_one_sigmoid_per_label_with_its_bias(tmp_path, isolated_home):
    """SigLIP's recipe: sigmoid(cosine x scale + bias) per label; a temperature means a softmax."""
    rng = np.random.default_rng(5)
    encoder = _encoder(rng, logit_scale=10.0)
    encoder.logit_bias = -2.5
    library = controlled_library(isolated_home, tmp_path / "photos", _items(rng), encoder)
    expected = _reference(library, LABELS, scale=10.0, bias=-2.5)
    results = library.classify(LABELS)
    for r in results:
        probs = [r.probs[x] for x in LABELS]
        np.testing.assert_allclose(probs, expected[r.path], rtol=1e-5, atol=1e-7)
        assert r.label == LABELS[int(np.argmax(expected[r.path]))]
    assert any(abs(sum(r.probs.values()) - 1) > 0.05 for r in results)  # not a softmax
    softmax = _reference(library, LABELS, scale=1 / 0.1)
    for r in library.classify(LABELS, temperature=0.1):
        np.testing.assert_allclose([r.probs[x] for x in LABELS], softmax[r.path], rtol=1e-5, atol=1e-7)


def test_lower_temperature_is_sharper_and_higher_is_flatter(library):
    by_t = {t: {r.path: r for r in library.classify(LABELS, temperature=t)} for t in (0.005, 0.01, 0.05)}
    for path in by_t[0.01]:
        sharp, base, flat = (by_t[t][path] for t in (0.005, 0.01, 0.05))
        assert sharp.prob > base.prob > flat.prob
        entropies = [_entropy(np.array(list(r.probs.values()))) for r in (sharp, base, flat)]
        assert entropies[0] < entropies[1] < entropies[2]
        assert sharp.label == base.label == flat.label  # temperature never changes the ranking


def test_min_prob_drops_images_whose_best_label_is_less_probable(library):
    everything = library.classify(LABELS)
    cut = float(np.median([r.prob for r in everything]))
    kept = library.classify(LABELS, min_prob=cut)
    assert [r.path for r in kept] == [r.path for r in everything if r.prob >= cut]
    assert 0 < len(kept) < len(everything)
    assert library.classify(LABELS, min_prob=1.0) == []


def test_under_limits_the_images_to_a_folder(library, tmp_path):
    results = library.classify(LABELS, under=tmp_path / "photos" / "sub")
    assert len(results) == 6
    assert all(Path(r.path).parent == tmp_path / "photos" / "sub" for r in results)


def test_images_are_never_encoded_only_the_label_prompts(library):
    encoder = library.encoder()
    pixel_calls, text_calls = [], []
    embed_pixels, embed_texts = encoder.embed_pixels, encoder.embed_texts
    encoder.embed_pixels = lambda pixels: pixel_calls.append(len(pixels)) or embed_pixels(pixels)
    encoder.embed_texts = lambda texts, lang=None: text_calls.append(list(texts)) or embed_texts(texts)
    library.classify(LABELS)
    assert pixel_calls == []
    assert sorted(t for call in text_calls for t in call) == sorted(
        t.format(label) for label in LABELS for t in TEMPLATES
    )


@pytest.mark.parametrize(
    ("labels", "options", "message"),
    [
        (["cat"], {}, "at least two labels"),
        ([], {}, "at least two labels"),
        (["cat", "dog", "Cat"], {}, "given twice"),
        (["cat", "dog", "  "], {}, "empty"),
        (LABELS, {"temperature": 0.0}, "temperature"),
        (LABELS, {"temperature": -1.0}, "temperature"),
        (LABELS, {"min_prob": 1.5}, "between 0 and 1"),
    ],
)
def test_bad_arguments_are_usage_errors(library, labels, options, message):
    with pytest.raises(UsageError, match=message):
        library.classify(labels, **options)


def test_batches_give_the_same_answer_as_one_pass(library):
    with index_db.catalog(library.home) as catalog:
        small = list(catalog.vector_batches(DIM, batch=5))
        assert [len(ids) for ids, _, _ in small] == [5, 5, 2]
        zero_shot = ZeroShot.prepare(LABELS, library.encoder().embed_texts, 100.0)
        batched = list(zero_shot.classify(iter(small)))
        whole = list(zero_shot.classify(catalog.vector_batches(DIM)))
    assert batched == whole
    assert [r.path for r in whole] == sorted(r.path for r in whole)


def test_softmax_is_stable_for_large_logits():
    probs = softmax(np.array([[1000.0, 999.0, -1000.0]]))
    assert np.isfinite(probs).all() and probs.sum() == pytest.approx(1.0)
    assert probs[0, 0] == pytest.approx(1 / (1 + np.exp(-1)))


def test_ids_with_label_keeps_the_images_whose_best_label_is_wanted(library):
    wanted = library.ids_with_label("cat", ["dog", "birthday party"])
    results = library.classify(["dog", "birthday party", "cat"])
    with index_db.catalog(library.home) as catalog:
        paths = {row.path.decode(): i for i, row in catalog.rows(range(1, 100)).items()}
    assert wanted.tolist() == sorted(paths[r.path] for r in results if r.label == "cat")
    assert wanted.dtype == np.int64 and len(wanted) > 0
    both = library.ids_with_label(["cat", "dog"], ["birthday party"])
    assert both.tolist() == sorted(paths[r.path] for r in results if r.label in ("cat", "dog"))
    with pytest.raises(UsageError, match="other labels to compare with"):
        library.ids_with_label("cat", ["Cat"])
    with pytest.raises(UsageError, match="at least one label to keep"):
        library.ids_with_label([], LABELS)


# -- through the CLI, with the real tiny model ---------------------------------------------------------------

CLI_LABELS = ["cat", "dog", "car", "birthday party"]
_ROW = re.compile(r"^(.+?) +(\d\.\d{3})  (.+)$")


def test_table_shows_best_label_probability_and_path(cli, indexed):
    result = cli("classify", indexed, "--labels", *CLI_LABELS)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == SAMPLE_COUNT
    for line in lines:
        label, prob, path = _ROW.match(line).groups()  # type: ignore[union-attr]
        assert label in CLI_LABELS
        assert 1 / len(CLI_LABELS) <= float(prob) + 1e-3 <= 1.001
        assert Path(path).is_file() and Path(path).parent == indexed


def test_top_labels_shows_the_k_most_probable(cli, indexed):
    lines = cli("classify", indexed, "--labels", *CLI_LABELS, "--top-labels", "3").output.splitlines()
    assert len(lines) == SAMPLE_COUNT
    for line in lines:
        probs = [float(p) for p in re.findall(r" (\d\.\d{3})  ", line)]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)


def test_json_lines_have_path_label_prob_and_probs_summing_to_one(cli, indexed):
    result = cli("classify", "--labels", *CLI_LABELS, "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert len(rows) == SAMPLE_COUNT
    for row in rows:
        assert set(row) == {"path", "label", "prob", "probs"}
        assert list(row["probs"]) == CLI_LABELS
        assert sum(row["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        assert row["label"] == max(row["probs"], key=row["probs"].get)
        assert row["prob"] == row["probs"][row["label"]]
        assert Path(row["path"]).is_file()


def test_csv_has_a_header_and_one_column_per_label(cli, indexed):
    result = cli("classify", indexed, "--labels", *CLI_LABELS, "--csv")
    assert result.exit_code == 0, result.output
    reader = csv.reader(io.StringIO(result.output))
    header = next(reader)
    assert header == ["path", "label", "prob", *CLI_LABELS]
    rows = [dict(zip(header, row, strict=True)) for row in reader]
    assert len(rows) == SAMPLE_COUNT
    for row in rows:
        probs = [float(row[label]) for label in CLI_LABELS]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert float(row["prob"]) == max(probs) and row["label"] in CLI_LABELS


def test_labels_file_with_comments_and_blank_lines_adds_to_labels(cli, indexed, tmp_path):
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("# what to look for\ndog\n\n  birthday party  \n#car\n")
    result = cli("classify", indexed, "--labels", "cat", "--labels-file", labels_file, "--json")
    assert result.exit_code == 0, result.output
    first = json.loads(result.output.splitlines()[0])
    assert list(first["probs"]) == ["cat", "dog", "birthday party"]
    alone = cli("classify", indexed, "--labels-file", labels_file, "--json").output.splitlines()
    assert list(json.loads(alone[0])["probs"]) == ["dog", "birthday party"]


def test_labels_may_be_repeated_and_a_folder_may_follow_after_double_dash(cli, indexed):
    result = cli("classify", "--labels", "cat", "dog", "--labels", "car", "--json", "--", indexed)
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.output.splitlines()[0])["probs"]) == ["cat", "dog", "car"]


def test_lower_temperature_is_sharper_through_the_cli(cli, indexed):
    def best(t: str) -> dict[str, float]:
        out = cli("classify", "--labels", *CLI_LABELS, "--temperature", t, "--json").output
        return {r["path"]: r["prob"] for r in map(json.loads, out.splitlines())}

    sharp, flat = best("0.001"), best("1")
    assert set(sharp) == set(flat)
    assert all(sharp[p] >= flat[p] for p in sharp)
    assert max(flat.values()) < 0.3 < max(sharp.values())  # T=1: near uniform over 4 labels


def test_min_prob_through_the_cli(cli, indexed):
    out = cli("classify", "--labels", *CLI_LABELS, "--temperature", "0.01", "--json").output
    probs = [json.loads(line)["prob"] for line in out.splitlines()]
    distinct = sorted(set(probs))
    cut = (distinct[len(distinct) // 2 - 1] + distinct[len(distinct) // 2]) / 2  # between printed values
    kept = cli("classify", "--labels", *CLI_LABELS, "--temperature", "0.01", "--min-prob", cut, "--json")
    assert len(kept.output.splitlines()) == sum(p >= cut for p in probs)
    assert 0 < len(kept.output.splitlines()) < len(probs)


def test_usage_errors_exit_2(cli, indexed, tmp_path):
    assert cli("classify", "--labels", "cat", "dog", "--json", "--csv").exit_code == 2
    assert cli("classify", "--labels", "cat").exit_code == 2
    assert cli("classify", "--labels", "cat", "dog", "cat").exit_code == 2
    assert cli("classify").exit_code == 2
    assert cli("classify", "--labels", "cat", "dog", "--temperature", "0").exit_code == 2
    assert cli("classify", "--labels", "cat", "dog", "--min-prob", "2").exit_code == 2
    assert cli("classify", "--labels", "cat", "dog", "--top-labels", "0").exit_code == 2
    assert cli("classify", "--labels-file", tmp_path / "missing.txt").exit_code == 2
    result = cli("classify", "--labels", "cat")
    assert "at least two labels" in result.output


def test_without_an_index_exit_1(cli):
    result = cli("classify", "--labels", "cat", "dog")
    assert result.exit_code == 1 and result.output.startswith("Error: no index at")

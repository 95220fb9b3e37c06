"""Embeddings out and in: `imgsearch export` writes Parquet that plain readers take, and `imgsearch import`
brings it (or clip-retrieval's output, or a Spark job's) into an index without re-encoding."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imgsearch.index.decode import hash_file
from tests import index_db
from tests.conftest import SAMPLE_COUNT
from tests.test_index import summary as index_summary
from tests.tiny_model import save_tiny_model


def import_summary(output: str) -> dict[str, int]:
    """'3 imported, 0 unchanged, 1 without a vector, 2 rows matched no file (0.1 s)' as numbers."""
    line = next(x for x in output.splitlines() if " imported, " in x)
    counts = line.partition(" (")[0].split(", ")
    names = ["imported", "unchanged", "without", "unmatched"]
    return {name: int(part.split()[0]) for name, part in zip(names, counts, strict=True)}


def results(cli, *query: str) -> list[tuple[str, float]]:
    out = cli("query", *query, "--json", "-n", "50")
    assert out.exit_code == 0, out.output
    return [(r["path"], r["score"]) for r in map(json.loads, out.output.splitlines())]


def status(cli) -> dict:
    return json.loads(cli("status", "--json").output)


def exported_vectors(out: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(out)
    vectors = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
    return dict(zip(table.column("path").to_pylist(), vectors, strict=True))


@pytest.fixture
def export_of(cli, tmp_path, monkeypatch, isolated_home):
    """export_of(photos): `photos` indexed in a home of their own and exported; returns the export folder.
    IMGSEARCH_HOME is then the test's own, still empty, index."""

    def make(photos: Path) -> Path:
        source = tmp_path / "source-home"
        monkeypatch.setenv("IMGSEARCH_HOME", str(source))
        assert cli("index", photos).exit_code == 0
        out = tmp_path / "exported"
        result = cli("export", out)
        assert result.exit_code == 0, result.output
        monkeypatch.setenv("IMGSEARCH_HOME", str(isolated_home))
        return out

    return make


def test_export_then_import_into_a_fresh_index_answers_the_same(cli, photos, tmp_path, monkeypatch):
    source = tmp_path / "source-home"
    monkeypatch.setenv("IMGSEARCH_HOME", str(source))
    assert cli("index", photos).exit_code == 0
    exported = cli("export", tmp_path / "out")
    assert exported.exit_code == 0, exported.output
    assert f"{SAMPLE_COUNT} vectors exported" in exported.output
    before = [results(cli, q) for q in ("a cat", "mountains")]
    before.append(results(cli, "--image", str(photos / "cat-chelsea.jpg")))
    before_status = status(cli)

    monkeypatch.setenv("IMGSEARCH_HOME", str(tmp_path / "fresh-home"))
    imported = cli("import", tmp_path / "out", photos)
    assert imported.exit_code == 0, imported.output
    assert import_summary(imported.output) == {
        "imported": SAMPLE_COUNT,
        "unchanged": 0,
        "without": 0,
        "unmatched": 0,
    }
    after = [results(cli, q) for q in ("a cat", "mountains")]
    after.append(results(cli, "--image", str(photos / "cat-chelsea.jpg")))
    for old, new in zip(before, after, strict=True):
        assert [p for p, _ in new] == [p for p, _ in old]
        np.testing.assert_allclose([s for _, s in new], [s for _, s in old], atol=1e-6)
    now = status(cli)
    for key in ("images", "model", "dim", "numerics", "formats"):
        assert now[key] == before_status[key], key
    assert [r["path"] for r in now["roots"]] == [str(photos)]
    assert index_db.images(
        tmp_path / "fresh-home", "width", "height", "format", "taken_at"
    ) == index_db.images(source, "width", "height", "format", "taken_at")

    again = cli("import", tmp_path / "out")  # no folders: the ones indexed
    assert import_summary(again.output) == {
        "imported": 0,
        "unchanged": SAMPLE_COUNT,
        "without": 0,
        "unmatched": 0,
    }
    assert index_summary(cli("index").output)["unchanged"] == SAMPLE_COUNT  # nothing for the model to do


def test_the_export_reads_with_plain_pyarrow_and_pandas(cli, indexed, tmp_path, tiny_model):
    import pandas as pd

    out = tmp_path / "out"
    assert cli("export", out).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "part-00000.parquet"]
    table = pq.read_table(out)
    assert table.num_rows == SAMPLE_COUNT
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    assert table.schema.field("content_hash").type == pa.binary(16)
    assert table.schema.field("taken_at").type == pa.timestamp("us", tz="UTC")
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items() if k.startswith(b"imgsearch.")}
    assert meta["imgsearch.model"] == tiny_model
    assert meta["imgsearch.dim"] == "32"
    assert meta["imgsearch.numerics"] == status(cli)["numerics"]
    vectors = exported_vectors(out)
    np.testing.assert_allclose(np.linalg.norm(np.stack(list(vectors.values())), axis=1), 1, atol=1e-5)

    frame = pd.read_parquet(out)
    assert sorted(frame["path"]) == sorted(str(p) for p in indexed.glob("*.jpg"))
    for row in frame.itertuples():
        assert row.content_hash == hash_file(row.path)[0]
        assert row.size == os.path.getsize(row.path)
        assert len(row.embedding) == 32
    assert set(frame["format"]) == {"JPEG"}


def test_a_model_of_another_name_is_refused_and_nothing_written(
    cli, export_of, photos, tmp_path, isolated_home
):
    out = export_of(photos)
    other = save_tiny_model(tmp_path / "other-model", seed=1)
    refused = cli("import", "--model", f"local-dir:{other}", out, photos)
    assert refused.exit_code == 1
    assert str(other) in refused.output and "tiny-clip" in refused.output
    assert not isolated_home.exists() or not any(isolated_home.iterdir())

    (tmp_path / "few").mkdir()
    shutil.copy(photos / "cat-chelsea.jpg", tmp_path / "few")
    assert cli("index", "--model", f"local-dir:{other}", tmp_path / "few", model=False).exit_code == 0
    before = status(cli)
    refused = cli("import", out, photos)
    assert refused.exit_code == 1
    assert "one model per index" in refused.output
    assert str(other) in refused.output and "tiny-clip" in refused.output
    assert status(cli) == before


def clip_retrieval(folder: Path, shards: list[list[tuple[str, np.ndarray]]]) -> Path:
    """clip-retrieval's layout: img_emb/img_emb_N.npy (float16, as it saves them) beside
    metadata/metadata_N.parquet with image_path, row for row."""
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    for n, rows in enumerate(shards):
        np.save(folder / "img_emb" / f"img_emb_{n}.npy", np.stack([v for _, v in rows]).astype(np.float16))
        pq.write_table(
            pa.table({"image_path": [p for p, _ in rows]}), folder / "metadata" / f"metadata_{n}.parquet"
        )
    return folder


def test_a_vector_size_the_model_does_not_make_is_refused(cli, tmp_path, photos, tiny_model, isolated_home):
    rows = [(str(p), np.ones(16, dtype=np.float32)) for p in sorted(photos.glob("*.jpg"))]
    dataset = clip_retrieval(tmp_path / "clip", [rows])
    refused = cli("import", "--model", tiny_model, dataset, photos)
    assert refused.exit_code == 1
    assert "16-d" in refused.output and "32-d" in refused.output
    assert not isolated_home.exists() or not any(isolated_home.iterdir())

    spark = tmp_path / "claims-tiny.parquet"  # a dataset that records the model, with vectors of another size
    schema = pa.schema([("path", pa.string()), ("embedding", pa.list_(pa.float32(), 16))])
    schema = schema.with_metadata({"imgsearch.model": tiny_model, "imgsearch.dim": "16"})
    pq.write_table(
        pa.table({"path": [p for p, _ in rows], "embedding": [v for _, v in rows]}, schema=schema), spark
    )
    refused = cli("import", spark, photos)
    assert refused.exit_code == 1
    assert "16-d" in refused.output and "32-d" in refused.output
    assert not isolated_home.exists() or not any(isolated_home.iterdir())


def test_files_moved_and_renamed_since_the_export_match_by_content_hash(cli, export_of, photos, tmp_path):
    odd = photos / os.fsdecode(
        b"caf\xe9.jpg"
    )  # a name that is not UTF-8 goes out escaped, comes back by hash
    shutil.copy(photos / "coffee-cup.jpg", odd)
    odd.write_bytes(odd.read_bytes() + b"distinct")
    out = export_of(photos)
    assert os.fsdecode(b"caf\xe9.jpg") not in {Path(p).name for p in exported_vectors(out)}
    elsewhere = tmp_path / "mounted" / "elsewhere"
    elsewhere.mkdir(parents=True)
    for i, photo in enumerate(sorted(photos.iterdir())):
        photo.rename(elsewhere / f"renamed-{i:02d}.jpg")

    imported = cli("import", out, elsewhere)
    assert imported.exit_code == 0, imported.output
    assert import_summary(imported.output)["imported"] == SAMPLE_COUNT + 1
    by_hash = {row.content_hash: row.embedding for row in pq.read_table(out).to_pandas().itertuples()}
    stored = index_db.images(Path(os.environ["IMGSEARCH_HOME"]), "content_hash", "vector")
    assert len(stored) == SAMPLE_COUNT + 1
    for path, (content_hash, vector) in stored.items():
        assert path.startswith(os.fsencode(elsewhere))
        np.testing.assert_array_equal(vector, by_hash[content_hash])


def test_clip_retrieval_output_imports_with_model_and_index_encodes_only_the_rest(
    cli, export_of, photos, tmp_path, tiny_model, isolated_home
):
    vectors = exported_vectors(export_of(photos))
    paths = sorted(vectors)
    rows = [(p, vectors[p]) for p in paths[:25]]
    rows.append((str(tmp_path / "gone.jpg"), vectors[paths[0]]))  # a file that is not there
    dataset = clip_retrieval(tmp_path / "clip", [rows[:15], rows[15:]])

    needs_model = cli("import", dataset, photos)
    assert needs_model.exit_code == 2
    assert "--model" in needs_model.output
    assert not isolated_home.exists() or not any(isolated_home.iterdir())

    imported = cli("import", "--model", tiny_model, dataset, photos)
    assert imported.exit_code == 0, imported.output
    left = SAMPLE_COUNT - 25
    assert import_summary(imported.output) == {
        "imported": 25,
        "unchanged": 0,
        "without": left,
        "unmatched": 1,
    }
    assert f"{left} files had no vector in the dataset; `imgsearch index` will encode them" in imported.output
    stored = index_db.images(isolated_home, "vector")
    for path, (vector,) in stored.items():  # float16 read back: unit length again, near the original
        assert abs(np.linalg.norm(vector) - 1) < 1e-6
        np.testing.assert_allclose(vector, vectors[os.fsdecode(path)], atol=2e-3)

    indexed = cli("index", photos)
    assert indexed.exit_code == 0, indexed.output
    counts = index_summary(indexed.output)
    assert (counts["new"], counts["unchanged"], counts["encoded"]) == (left, 25, left)


def test_a_spark_jobs_parquet_matches_by_path_and_refuses_bad_vectors(
    cli, export_of, photos, tmp_path, tiny_model
):
    vectors = exported_vectors(export_of(photos))
    paths = sorted(vectors)
    spark = tmp_path / "spark-out"
    spark.mkdir()
    (spark / "_SUCCESS").write_bytes(b"")  # Spark's own markers, which readers skip
    (spark / ".part-00000.snappy.parquet.crc").write_bytes(b"crc")
    relative = [os.path.relpath(p, photos) for p in paths[:10]]  # relative to the folder given
    embeddings = [vectors[p].astype(np.float64) * 3 for p in paths[:10]]  # not unit length: scaled back
    bad = [[float("nan")] * 32, [0.0] * 32, [1.0] * 31]
    table = pa.table(
        {
            "path": [*relative, *paths[10:13]],
            "embedding": pa.array([*[list(e) for e in embeddings], *bad], pa.list_(pa.float64())),
        }
    )
    pq.write_table(table, spark / "part-00000-5f1c.snappy.parquet")

    imported = cli("import", "--model", tiny_model, spark, photos)
    assert imported.exit_code == 0, imported.output
    assert import_summary(imported.output) == {
        "imported": 10,
        "unchanged": 0,
        "without": SAMPLE_COUNT - 10,
        "unmatched": 0,
    }
    assert "3 bad rows refused" in imported.output
    assert "not finite" in imported.output and "all zeros" in imported.output
    stored = index_db.images(Path(os.environ["IMGSEARCH_HOME"]), "vector", "width", "format")
    assert len(stored) == 10
    for path, (vector, width, fmt) in stored.items():  # metadata from the file's header
        np.testing.assert_allclose(vector, vectors[os.fsdecode(path)], atol=1e-6)
        assert width > 0 and fmt == "JPEG"


def test_an_interrupted_export_leaves_nothing_that_looks_finished(cli, indexed, tmp_path, monkeypatch):
    from imgsearch.store import parquet

    out = tmp_path / "out"
    assert cli("export", out).exit_code == 0
    first = (out / "_SUCCESS").read_text()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(parquet, "_write_success", interrupted)
    assert cli("export", tmp_path / "never").exit_code == 130
    assert cli("export", out).exit_code == 130
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial folder left behind
    assert (out / "_SUCCESS").read_text() == first  # the earlier export stays whole
    monkeypatch.undo()

    (out / "_SUCCESS").unlink()  # as an export killed before its last step would look
    refused = cli("import", out, indexed)
    assert refused.exit_code == 1
    assert "unfinished imgsearch export" in refused.output


def test_export_refuses_a_folder_that_holds_something_else_and_replaces_an_earlier_export(
    cli, indexed, tmp_path
):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    refused = cli("export", busy)
    assert refused.exit_code == 2
    assert "not empty and not an earlier imgsearch export" in refused.output
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]

    out = tmp_path / "out"
    assert cli("export", out).exit_code == 0
    assert cli("export", out).exit_code == 0
    assert pq.read_table(out).num_rows == SAMPLE_COUNT


def test_a_corrupt_parquet_file_is_one_clear_error(cli, indexed, tmp_path):
    out = tmp_path / "out"
    assert cli("export", out).exit_code == 0
    part = out / "part-00000.parquet"
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    result = cli("import", out, indexed)
    assert result.exit_code == 1
    assert "cannot read" in result.output and "part-00000.parquet" in result.output
    assert "Traceback" not in result.output

    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    result = cli("import", "--model", "ViT-B-32:laion2b_s34b_b79k", garbage, indexed)
    assert result.exit_code == 1
    assert f"cannot read {garbage}" in result.output


def test_usage_errors_exit_2(cli, indexed, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert cli("export", out).exit_code == 0
    assert cli("import", tmp_path / "no-such-dataset", indexed).exit_code == 2
    monkeypatch.setenv("IMGSEARCH_HOME", str(tmp_path / "fresh"))
    no_folders = cli("import", out)
    assert no_folders.exit_code == 2
    assert "give the folders" in no_folders.output
    assert not (tmp_path / "fresh").exists()
    assert cli("export", tmp_path / "x").exit_code == 1  # no index to export: a runtime error


def test_every_new_command_has_help(cli):
    for command in ("export", "import"):
        result = cli(command, "--help")
        assert result.exit_code == 0
        assert "Parquet" in result.output


def test_an_export_during_an_index_run_is_written_again_from_one_state(
    cli, indexed_private, tmp_path, monkeypatch
):
    from imgsearch.store import parquet

    real = parquet._write_parts
    calls = []

    def index_meanwhile(*args):
        written = real(*args)
        if not calls:  # an index run commits while the first attempt is being written
            shutil.copy(indexed_private / "cat-chelsea.jpg", indexed_private / "new.jpg")
            (indexed_private / "new.jpg").write_bytes((indexed_private / "new.jpg").read_bytes() + b"new")
            assert cli("index", indexed_private).exit_code == 0
        calls.append(written)
        return written

    monkeypatch.setattr(parquet, "_write_parts", index_meanwhile)
    assert cli("export", tmp_path / "out").exit_code == 0
    assert [rows for rows, _ in calls] == [SAMPLE_COUNT, SAMPLE_COUNT + 1]
    assert pq.read_table(tmp_path / "out").num_rows == SAMPLE_COUNT + 1


def test_a_large_export_is_split_into_bounded_files_that_import_as_one(cli, indexed, tmp_path, monkeypatch):
    from imgsearch.store import parquet

    assert cli("export", tmp_path / "whole").exit_code == 0
    monkeypatch.setattr(parquet, "ROWS_PER_FILE", 10)
    monkeypatch.setattr(parquet, "BATCH_ROWS", 4)  # row groups, and what is held in memory
    out = tmp_path / "split"
    assert cli("export", out).exit_code == 0
    parts = sorted(p.name for p in out.glob("part-*.parquet"))
    assert parts == [f"part-{i:05d}.parquet" for i in range(4)]
    assert [pq.ParquetFile(out / p).metadata.num_rows for p in parts] == [10, 10, 10, SAMPLE_COUNT - 30]
    assert json.loads((out / "_SUCCESS").read_text()) == {"rows": SAMPLE_COUNT, "files": parts}
    assert pq.read_table(out).equals(pq.read_table(tmp_path / "whole"))

    monkeypatch.setenv("IMGSEARCH_HOME", str(tmp_path / "fresh"))
    imported = cli("import", out, indexed)
    assert import_summary(imported.output)["imported"] == SAMPLE_COUNT

"""Embeddings in and out as Parquet: the export layout, written from the catalog, and the layouts read back.

An export is one Parquet dataset, a folder of `part-NNNNN.parquet` files (at most ROWS_PER_FILE rows each)
and a `_SUCCESS` manifest written last: one row per image with its path, its unit vector as a fixed-size
list of float32, its content hash (blake2b, 16 bytes) and its metadata; the model, vector size and numerics
are in the schema's key/value metadata. The folder is written under a hidden temporary name beside OUT and
renamed into place whole, so an interrupted export never looks like a finished one.

Reading takes that layout, clip-retrieval's (`img_emb/img_emb_N.npy` beside `metadata/metadata_N.parquet`
with an `image_path` column, row for row) and any Parquet file or folder with a `path` or `image_path`
column and an `embedding` list column (a Spark job's output), in bounded batches.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError, UsageError
from .catalog import Catalog, fsync_path

#: Rows per part file: a file stays a few hundred MB at 512-d, and a reader can split work by file.
ROWS_PER_FILE = 100_000
#: Rows read from the catalog and written as one row group at a time: what bounds memory on both sides.
BATCH_ROWS = 8192
#: Written last into a finished export: {"rows": N, "files": [...]}, Hadoop's marker name, so that Spark,
#: pyarrow and DuckDB, which skip names starting with "_", read the folder as plain Parquet.
SUCCESS_FILE = "_SUCCESS"
#: The schema metadata keys an export carries.
MODEL_KEY, DIM_KEY, NUMERICS_KEY, VERSION_KEY, HASH_KEY = (
    "imgsearch.model",
    "imgsearch.dim",
    "imgsearch.numerics",
    "imgsearch.version",
    "imgsearch.content_hash",
)
HASH_NAME = "blake2b-128"  # of the file's bytes, as imgsearch.index.decode.hash_file computes it
HASH_BYTES = 16
_PART = re.compile(r"^part-\d{5}\.parquet$")
_CLIP_EMB = re.compile(r"^img_emb_(\d+)\.npy$")
_EXPORT_RETRIES = 3


@dataclass
class EmbeddingBatch:
    """Some rows of a dataset: vectors as stored (not yet checked or normalised) and what else it has.

    Each optional column is None when the dataset has no such column; its entries are None where a row has
    no value."""

    paths: list[str | None]
    vectors: np.ndarray  # float32 (rows, dim)
    hashes: list[bytes | None] | None = None
    widths: list[int | None] | None = None
    heights: list[int | None] | None = None
    formats: list[str | None] | None = None
    taken_at: list[float | None] | None = None  # Unix seconds


@dataclass(frozen=True)
class ExportReport:
    out: Path
    rows: int
    files: int

    def summary(self) -> str:
        return f"{self.rows} vectors exported to {self.out} ({self.files} Parquet files)"


# -- writing -------------------------------------------------------------------------------------------------
def export_schema(model_id: str, dim: int, numerics: str | None, version: str) -> Any:
    import pyarrow as pa

    metadata = {
        MODEL_KEY: model_id,
        DIM_KEY: str(dim),
        VERSION_KEY: version,
        HASH_KEY: HASH_NAME,
    }
    if numerics:
        metadata[NUMERICS_KEY] = numerics
    return pa.schema(
        [
            pa.field("path", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("content_hash", pa.binary(HASH_BYTES), nullable=False),
            pa.field("size", pa.int64(), nullable=False),
            pa.field("mtime_ns", pa.int64(), nullable=False),
            pa.field("width", pa.int32(), nullable=False),
            pa.field("height", pa.int32(), nullable=False),
            pa.field("format", pa.string(), nullable=False),
            pa.field("taken_at", pa.timestamp("us", tz="UTC")),
        ],
        metadata=metadata,
    )


def write_export(catalog: Catalog, out: Path, version: str) -> ExportReport:
    """Write every image of `catalog` as a dataset at `out` (new, empty, or an earlier export, replaced).

    A reader holds no lock, so the vectors are read in batches of separate snapshots; an export during
    which an index run committed vector changes is written again (it could pair a vector with another
    file's metadata)."""
    recorded = catalog.model()
    if recorded is None:
        from ..errors import IndexNotFound

        raise IndexNotFound(f"{catalog.database.where()} has no images yet: nothing to export")
    check_export_target(out)
    for _ in range(_EXPORT_RETRIES):
        before = catalog.vectors_version()
        recorded = catalog.model() or recorded  # read again: a reindex may have switched the model since
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        try:
            rows, files = _write_parts(catalog, staging, recorded, version)
            if catalog.vectors_version() == before:
                _write_success(staging, rows, files)
                _put_in_place(staging, out)
                return ExportReport(out, rows, len(files))
        except _Changed:
            continue
        except OSError as e:
            raise DatasetError(f"cannot write {out}: {e.strerror or e}") from e
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    raise DatasetError(
        f"{catalog.database.where()} kept changing while it was exported (an index or watch run is "
        "writing to it); run the export again when it is done"
    )


def check_export_target(out: Path) -> None:
    """Refuse to write into a file, or into a folder that holds anything but an earlier export."""
    if not out.parent.is_dir():
        raise UsageError(f"cannot export to {out}: {out.parent} is not a folder")
    if out.exists() and not out.is_dir():
        raise UsageError(f"cannot export to {out}: it is a file; give a folder (new, or an earlier export)")
    if out.is_dir() and any(out.iterdir()) and not _is_export(out):
        raise UsageError(
            f"{out} is not empty and not an earlier imgsearch export: give a new or empty folder "
            "(an earlier export is replaced)"
        )


def _is_export(folder: Path) -> bool:
    names = [p.name for p in folder.iterdir()]
    return SUCCESS_FILE in names and all(n == SUCCESS_FILE or _PART.match(n) for n in names)


def _write_parts(
    catalog: Catalog, folder: Path, model: tuple[str, int], version: str
) -> tuple[int, list[str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    model_id, dim = model
    schema = export_schema(model_id, dim, catalog.numerics(), version)
    files: list[str] = []
    rows = in_file = 0
    writer: Any = None
    try:
        for ids, paths, vectors in catalog.vector_batches(dim, batch=BATCH_ROWS):
            batch = _record_batch(catalog, schema, ids, paths, vectors)
            start = 0
            while start < batch.num_rows:
                if writer is None or in_file >= ROWS_PER_FILE:
                    if writer is not None:
                        writer.close()
                    files.append(f"part-{len(files):05d}.parquet")
                    writer = pq.ParquetWriter(folder / files[-1], schema, compression="zstd")
                    in_file = 0
                take = min(batch.num_rows - start, ROWS_PER_FILE - in_file)
                writer.write_table(pa.Table.from_batches([batch.slice(start, take)]))
                start, in_file, rows = start + take, in_file + take, rows + take
    finally:
        if writer is not None:
            writer.close()
    if not files:  # an index whose images were all removed: still a readable, empty dataset
        files.append("part-00000.parquet")
        pq.write_table(schema.empty_table(), folder / files[0])
    for name in files:
        fsync_path(folder / name)
    return rows, files


def _record_batch(
    catalog: Catalog, schema: Any, ids: np.ndarray, paths: list[bytes], vectors: np.ndarray
) -> Any:
    import pyarrow as pa

    rows = {}
    for start in range(0, len(ids), 500):
        rows.update(catalog.rows(ids[start : start + 500].tolist()))
    if len(rows) != len(ids):
        raise _Changed  # removed since the vectors were read
    meta = [rows[int(i)] for i in ids]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), pa.float32())
    taken = [None if r.taken_at is None else round(r.taken_at * 1_000_000) for r in meta]
    columns = [
        pa.array([path_text(r.path) for r in meta], pa.string()),
        pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
        pa.array([r.content_hash for r in meta], pa.binary(HASH_BYTES)),
        pa.array([r.size for r in meta], pa.int64()),
        pa.array([r.mtime_ns for r in meta], pa.int64()),
        pa.array([r.width for r in meta], pa.int32()),
        pa.array([r.height for r in meta], pa.int32()),
        pa.array([r.format for r in meta], pa.string()),
        pa.array(taken, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


class _Changed(Exception):
    """The catalog changed between two reads of one export batch."""


def path_text(path: bytes) -> str:
    """A stored path as Parquet text (UTF-8): os.fsdecode's, except that a name that is not UTF-8 (which
    os.fsdecode turns into lone surrogates, which UTF-8 cannot hold) has those bytes as backslash escapes.
    Such a row still finds its file by content hash."""
    try:
        return path.decode("utf-8")
    except UnicodeDecodeError:
        return path.decode("utf-8", "backslashreplace")


def _write_success(folder: Path, rows: int, files: list[str]) -> None:
    marker = folder / SUCCESS_FILE
    marker.write_text(json.dumps({"rows": rows, "files": files}) + "\n")
    fsync_path(marker)
    fsync_path(folder)


def _put_in_place(staging: Path, out: Path) -> None:
    """Rename the finished folder to `out`; an earlier export there is moved aside first, then removed."""
    os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the dataset from other users
    aside = None
    if out.is_dir() and any(out.iterdir()):
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, aside / "export")
    os.replace(staging, out)  # over an empty folder, or none: atomic either way
    fsync_path(out.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


# -- reading -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    """An embeddings dataset opened for import: what it says about itself, and its rows in batches."""

    location: Path
    layout: str  # "imgsearch" (an export), "clip-retrieval" or "parquet" (anyone's, e.g. a Spark job's)
    dim: int
    rows: int
    model: str | None  # the model id it records (an export does), else None
    numerics: str | None
    files: tuple[Path, ...]  # the Parquet files, in order (clip-retrieval: its metadata files)
    arrays: tuple[Path, ...] = ()  # clip-retrieval: the .npy file beside each metadata file

    def batches(self, size: int = BATCH_ROWS) -> Iterator[EmbeddingBatch]:
        """Every row, `size` at a time (fewer at a file's end); a file found unreadable is a DatasetError."""
        if self.layout == "clip-retrieval":
            for table, array in zip(self.files, self.arrays, strict=True):
                yield from _clip_batches(table, array, size)
            return
        for file in self.files:
            with _reading(file):
                import pyarrow.parquet as pq

                parquet = pq.ParquetFile(file)
                batches = parquet.iter_batches(
                    batch_size=size, columns=_columns_to_read(parquet.schema_arrow.names)
                )
            while True:
                with _reading(file):  # around the reads only: the consumer's own errors pass through
                    batch = next(batches, None)
                    if batch is None:
                        break
                    rows = _embedding_batch(batch, self.dim, file)
                yield rows


def open_dataset(location: str | os.PathLike[str]) -> Dataset:
    """Open a dataset in any of the three layouts (see the module's docstring), reading only file footers
    (and one row, for a list column of no fixed size); a dataset it cannot use is a DatasetError."""
    path = Path(location).expanduser().absolute()
    if not path.exists():
        raise UsageError(f"no such dataset: {path}")
    if path.is_dir() and (path / "img_emb").is_dir() and (path / "metadata").is_dir():
        return _open_clip_retrieval(path)
    files = [path] if path.is_file() else _parquet_files(path)
    if not files:
        raise DatasetError(
            f"{path} holds no Parquet files: expected an `imgsearch export` folder, clip-retrieval's "
            "img_emb/ and metadata/ folders, or Parquet files with a path and an embedding column"
        )
    schemas, rows = [], 0
    for file in files:
        with _reading(file):
            import pyarrow.parquet as pq

            meta = pq.read_metadata(file)
            schemas.append(meta.schema.to_arrow_schema())
            rows += meta.num_rows
    recorded = _recorded(schemas[0])
    if any(_recorded(s) != recorded for s in schemas[1:]):
        raise DatasetError(f"the Parquet files in {path} record different models or vector sizes")
    if recorded.get(MODEL_KEY) and path.is_dir():
        _check_complete(path, files, rows)
    for file, schema in zip(files, schemas, strict=True):
        _check_columns(file, schema)
    dim = _dimension(files, schemas, recorded)
    model = recorded.get(MODEL_KEY)
    layout = "imgsearch" if model else "parquet"
    return Dataset(path, layout, dim, rows, model, recorded.get(NUMERICS_KEY), tuple(files))


def _parquet_files(folder: Path) -> list[Path]:
    """*.parquet under `folder` (Spark's partition folders too), skipping the hidden and _-prefixed names
    that Spark, pyarrow and DuckDB skip."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        found += [
            Path(dirpath) / n
            for n in sorted(filenames)
            if n.endswith(".parquet") and not n.startswith((".", "_"))
        ]
    return found


def _recorded(schema: Any) -> dict[str, str]:
    raw = schema.metadata or {}
    keys = (MODEL_KEY, DIM_KEY, NUMERICS_KEY, HASH_KEY)
    return {k.decode(): v.decode() for k, v in raw.items() if k.decode() in keys}


def _check_complete(folder: Path, files: list[Path], rows: int) -> None:
    """An export folder counts once its _SUCCESS manifest is there and agrees with the files."""
    marker = folder / SUCCESS_FILE
    if not marker.is_file():
        raise DatasetError(
            f"{folder} is an unfinished imgsearch export (it has no {SUCCESS_FILE}: the export was "
            "interrupted?); run `imgsearch export` again"
        )
    try:
        manifest = json.loads(marker.read_text())
        listed, counted = sorted(manifest["files"]), int(manifest["rows"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{marker} is damaged ({e}); run `imgsearch export` again") from e
    found = sorted(str(f.relative_to(folder)) for f in files)
    if found != listed or counted != rows:
        raise DatasetError(
            f"{folder} does not hold what its {SUCCESS_FILE} lists ({len(listed)} files, {counted} rows; "
            f"found {len(found)} files, {rows} rows); run `imgsearch export` again"
        )


def _check_columns(file: Path, schema: Any) -> None:
    import pyarrow as pa

    names = schema.names
    if "path" not in names and "image_path" not in names:
        raise DatasetError(f"{file} has no path or image_path column (it has {', '.join(names)})")
    if "embedding" not in names:
        raise DatasetError(f"{file} has no embedding column (it has {', '.join(names)})")
    kind = schema.field("embedding").type
    if not (_is_list(kind) and pa.types.is_floating(kind.value_type)):
        raise DatasetError(f"{file}: the embedding column must be a list of floats, not {kind}")
    if "content_hash" in names:
        hashes = schema.field("content_hash").type
        fixed = pa.types.is_fixed_size_binary(hashes)
        if not (pa.types.is_binary(hashes) or pa.types.is_large_binary(hashes) or fixed) or (
            fixed and hashes.byte_width != HASH_BYTES
        ):
            raise DatasetError(
                f"{file}: content_hash must be the {HASH_BYTES}-byte {HASH_NAME} of each file, not {hashes}"
            )


def _is_list(kind: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind))


def _dimension(files: list[Path], schemas: list[Any], recorded: dict[str, str]) -> int:
    """The vector size: the column's fixed size, else the first row's length; the recorded one must agree."""
    import pyarrow as pa

    kind = schemas[0].field("embedding").type
    dim = kind.list_size if pa.types.is_fixed_size_list(kind) else _first_length(files)
    if any(
        pa.types.is_fixed_size_list(s.field("embedding").type) and s.field("embedding").type.list_size != dim
        for s in schemas
    ):
        raise DatasetError(f"the Parquet files of {files[0].parent} hold vectors of different sizes")
    if DIM_KEY in recorded and dim is not None and str(dim) != recorded[DIM_KEY]:
        raise DatasetError(
            f"{files[0]} records {recorded[DIM_KEY]}-d vectors ({DIM_KEY}) but holds {dim}-d ones"
        )
    if dim is None:
        if DIM_KEY in recorded:
            return int(recorded[DIM_KEY])
        raise DatasetError(f"{files[0].parent}: no row has an embedding, so its vector size is unknown")
    return int(dim)


def _first_length(files: list[Path]) -> int | None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for file in files:
        with _reading(file):
            for batch in pq.ParquetFile(file).iter_batches(batch_size=1024, columns=["embedding"]):
                lengths = pc.drop_null(pc.list_value_length(batch.column(0)))
                if len(lengths):
                    return int(lengths[0].as_py())
    return None


def _columns_to_read(names: list[str]) -> list[str]:
    wanted = ["path" if "path" in names else "image_path", "embedding"]
    return wanted + [c for c in ("content_hash", "width", "height", "format", "taken_at") if c in names]


def _embedding_batch(batch: Any, dim: int, file: Path) -> EmbeddingBatch:
    names = batch.schema.names
    column = {name: batch.column(i) for i, name in enumerate(names)}
    paths = column["path" if "path" in column else "image_path"].to_pylist()
    out = EmbeddingBatch([None if p is None else str(p) for p in paths], _vectors(column["embedding"], dim))
    if "content_hash" in column:
        out.hashes = column["content_hash"].to_pylist()
        if any(h is not None and len(h) != HASH_BYTES for h in out.hashes):
            raise DatasetError(f"{file}: a content_hash is not the {HASH_BYTES}-byte {HASH_NAME} of a file")
    if "width" in column and "height" in column:
        out.widths, out.heights = column["width"].to_pylist(), column["height"].to_pylist()
    if "format" in column:
        out.formats = column["format"].to_pylist()
    if "taken_at" in column:
        out.taken_at = _seconds(column["taken_at"])
    return out


def _vectors(embedding: Any, dim: int) -> np.ndarray:
    """(rows, dim) float32; a row that is null or of another length comes out as NaNs (refused later)."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(embedding).fill_null(-1).to_numpy(zero_copy_only=False)
    whole = lengths == dim
    vectors = np.full((len(embedding), dim), np.nan, dtype=np.float32)
    if whole.any():
        kept = embedding if whole.all() else embedding.filter(whole)
        values = kept.flatten().to_numpy(zero_copy_only=False)  # nulls inside a list become NaN
        vectors[whole] = values.astype(np.float32).reshape(-1, dim)
    return vectors


def _seconds(column: Any) -> list[float | None]:
    """A timestamp (any unit; naive ones read as UTC) or numeric column as Unix seconds."""
    import pyarrow as pa

    if pa.types.is_timestamp(column.type):
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[column.type.unit]
        return [None if v is None else v / per_second for v in column.cast(pa.int64()).to_pylist()]
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return [None if v is None else float(v) for v in column.to_pylist()]
    return [None] * len(column)


def _open_clip_retrieval(folder: Path) -> Dataset:
    """img_emb/img_emb_N.npy beside metadata/metadata_N.parquet, row for row, in order of N."""
    import pyarrow.parquet as pq

    arrays = sorted(
        ((int(m.group(1)), p) for p in (folder / "img_emb").iterdir() if (m := _CLIP_EMB.match(p.name))),
    )
    if not arrays:
        raise DatasetError(f"{folder / 'img_emb'} holds no img_emb_N.npy files")
    tables, dims, rows = [], set(), 0
    for n, array in arrays:
        table = folder / "metadata" / f"metadata_{n}.parquet"
        if not table.is_file():
            raise DatasetError(f"{array} has no {table.name} beside it in {table.parent}")
        with _reading(array):
            shape = np.load(array, mmap_mode="r").shape
        with _reading(table):
            meta = pq.read_metadata(table)
            names = meta.schema.to_arrow_schema().names
        if "image_path" not in names:
            raise DatasetError(f"{table} has no image_path column (it has {', '.join(names)})")
        if len(shape) != 2 or shape[0] != meta.num_rows:
            raise DatasetError(f"{array} holds {shape} vectors but {table.name} has {meta.num_rows} rows")
        tables.append(table)
        dims.add(int(shape[1]))
        rows += meta.num_rows
    if len(dims) != 1:
        raise DatasetError(
            f"the arrays in {folder / 'img_emb'} hold vectors of different sizes: {sorted(dims)}"
        )
    return Dataset(
        folder, "clip-retrieval", dims.pop(), rows, None, None, tuple(tables), tuple(p for _, p in arrays)
    )


def _clip_batches(table: Path, array: Path, size: int) -> Iterator[EmbeddingBatch]:
    import pyarrow.parquet as pq

    with _reading(table):
        vectors = np.load(array, mmap_mode="r")  # read a batch at a time, never the whole array
        batches = pq.ParquetFile(table).iter_batches(batch_size=size, columns=["image_path"])
    start = 0
    while True:
        with _reading(table):
            batch = next(batches, None)
            if batch is None:
                break
            paths = [None if p is None else str(p) for p in batch.column(0).to_pylist()]
            chunk = np.asarray(vectors[start : start + len(paths)], dtype=np.float32)
        start += len(paths)
        yield EmbeddingBatch(paths, chunk)


@contextlib.contextmanager
def _reading(file: Path) -> Iterator[None]:
    """Any failure to read `file` as one clear DatasetError naming it."""
    import pyarrow as pa

    try:
        yield
    except DatasetError:
        raise
    except (pa.ArrowException, OSError, ValueError, EOFError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())
        raise DatasetError(f"cannot read {file}: {reason}") from e

"""Table definitions the code queries through. Alembic migrations in migrations/ own the real schema."""

from __future__ import annotations

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text

from .database import BIG_INTEGER, BYTES

metadata = MetaData()

#: Key-value facts about the index: model id, vector size, vectors_version, library_id, a pending reindex.
settings = Table(
    "settings",
    metadata,
    Column("key", String, primary_key=True),
    Column("value", Text, nullable=False),
)

#: Folders the user asked to index; `imgsearch index` with no argument re-indexes them all.
roots = Table(
    "roots",
    metadata,
    Column("path", BYTES, primary_key=True),
    Column("added_at", Float, nullable=False),
)

#: One row per indexed file. Paths are bytes (os.fsencode), vectors are float32 unit vectors.
images = Table(
    "images",
    metadata,
    Column("id", BIG_INTEGER, primary_key=True, autoincrement=True),
    Column("path", BYTES, nullable=False, unique=True),
    Column("size", BIG_INTEGER, nullable=False),
    Column("mtime_ns", BIG_INTEGER, nullable=False),
    Column("content_hash", BYTES, nullable=False, index=True),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("format", String, nullable=False),
    Column("taken_at", Float),
    Column("indexed_at", Float, nullable=False),
    Column("vector", BYTES, nullable=False),
)

#: Files that could not be decoded, with the stat they had: not retried until they change.
failures = Table(
    "failures",
    metadata,
    Column("path", BYTES, primary_key=True),
    Column("size", BIG_INTEGER, nullable=False),
    Column("mtime_ns", BIG_INTEGER, nullable=False),
    Column("reason", Text, nullable=False),
    Column("failed_at", Float, nullable=False),
)

#: The new model's vectors while `imgsearch reindex` runs (imgsearch.index.reindex), apart from the live ones
#: until the switch; each made from the bytes `content_hash` names. Its model: settings reindex_model/_dim.
pending_vectors = Table(
    "pending_vectors",
    metadata,
    Column("image_id", BIG_INTEGER, primary_key=True, autoincrement=False),
    Column("content_hash", BYTES, nullable=False),
    Column("vector", BYTES, nullable=False),
)

"""The first schema: settings, roots, images (with vectors) and failures.

The same DDL on SQLite as when it was written; on PostgreSQL sizes and times are bigint and bytes bytea.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from imgsearch.store.database import BIG_INTEGER, BYTES  # the types that differ by dialect, in one place

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "settings",
        sa.Column("key", sa.String, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "roots",
        sa.Column("path", BYTES, primary_key=True),
        sa.Column("added_at", sa.Float, nullable=False),
    )
    op.create_table(
        "images",
        sa.Column("id", BIG_INTEGER, primary_key=True, autoincrement=True),
        sa.Column("path", BYTES, nullable=False, unique=True),
        sa.Column("size", BIG_INTEGER, nullable=False),
        sa.Column("mtime_ns", BIG_INTEGER, nullable=False),
        sa.Column("content_hash", BYTES, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("format", sa.String, nullable=False),
        sa.Column("taken_at", sa.Float),
        sa.Column("indexed_at", sa.Float, nullable=False),
        sa.Column("vector", BYTES, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_images_content_hash", "images", ["content_hash"])
    op.create_table(
        "failures",
        sa.Column("path", BYTES, primary_key=True),
        sa.Column("size", BIG_INTEGER, nullable=False),
        sa.Column("mtime_ns", BIG_INTEGER, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("failed_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("failures")
    op.drop_index("ix_images_content_hash", "images")
    op.drop_table("images")
    op.drop_table("roots")
    op.drop_table("settings")

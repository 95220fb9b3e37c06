"""A staging table for `imgsearch reindex`: the new model's vector of each image, kept apart from the live
ones (which go on answering queries) until every image has one; then one transaction moves them in.

Each row names the content hash its vector was made from, so a row whose image changed since (an index run
between an interrupted reindex and its resumption) is not taken. Which model the rows belong to, and their
size, are the settings `reindex_model` and `reindex_dim` (absent when no reindex is pending).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

from imgsearch.store.database import BIG_INTEGER, BYTES  # the types that differ by dialect, in one place

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_settings = sa.table("settings", sa.column("key", sa.String), sa.column("value", sa.Text))
_KEYS = ("reindex_model", "reindex_dim", "reindex_numerics")


def upgrade() -> None:
    op.create_table(
        "pending_vectors",
        sa.Column("image_id", BIG_INTEGER, primary_key=True, autoincrement=False),
        sa.Column("content_hash", BYTES, nullable=False),
        sa.Column("vector", BYTES, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pending_vectors")
    op.execute(_settings.delete().where(_settings.c.key.in_(_KEYS)))

"""A library id: what each machine's local caches (FAISS files) are filed under when several homes, on
several machines, share one catalog on a server, or one home is used with several databases.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_settings = sa.table("settings", sa.column("key", sa.String), sa.column("value", sa.Text))


def upgrade() -> None:
    op.execute(_settings.insert().values(key="library_id", value=uuid.uuid4().hex))


def downgrade() -> None:
    op.execute(_settings.delete().where(_settings.c.key == "library_id"))

"""Alembic environment: imgsearch passes its own open connection; nothing here reads alembic.ini."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` command line, for writing new revisions against a scratch database
    from sqlalchemy import create_engine

    connection = create_engine(context.config.get_main_option("sqlalchemy.url")).connect()

context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

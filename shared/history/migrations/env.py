"""Alembic's entry: runs the history's revisions on the connection the store hands over (database.migrate)."""
from alembic import context

connection = context.config.attributes["connection"]
# SQLite cannot ALTER most things in place: batch mode copies the table when a revision needs it.
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():  # a no-op inside the caller's transaction, which holds the migration lock
    context.run_migrations()

"""Alembic's entry: runs the history's revisions on the connection the store hands over (database.migrate)."""
from alembic import context

connection = context.config.attributes["connection"]
# No batch mode: revisions are additive (add_column, create_index, create_table), which SQLite does in place. A
# batch copy would drop `predictions`, and SQLite's foreign keys would cascade that to every image.
context.configure(connection=connection)
with context.begin_transaction():  # a no-op inside the caller's transaction, which holds the migration lock
    context.run_migrations()

"""Alembic's entry point for the store's migrations: always run on the connection that
`store.database` opened (in its write transaction), never from a URL of its own."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
context.run_migrations()

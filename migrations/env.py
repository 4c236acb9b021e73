"""Alembic environment for settings-ui.

Runs in two ways: from the app at start-up (``settings_ui.migrations.upgrade``), which
hands over a connection in ``config.attributes``; and from ``flask --app app db ...``
(Flask-Migrate), where the connection comes from the app's engine. It never
configures logging, so the app's own logging stays as it is.
"""

from __future__ import annotations

from alembic import context
from flask import current_app

from settings_ui.extensions import db

config = context.config
target_metadata = db.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    with current_app.extensions["migrate"].db.engine.connect() as connection:
        _run(connection)
        connection.commit()


def _run(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite can only alter tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()

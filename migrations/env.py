"""Alembic environment for settings-ui, run through Flask-Migrate: at start-up
(``settings_ui.schema.upgrade_database``) and by ``flask --app app db ...``. The connection
comes from the app's engine. It never configures logging, so the app's own stays as it is.
"""

from __future__ import annotations

from alembic import context
from flask import current_app

from settings_ui.extensions import db

config = context.config
target_metadata = db.metadata


def run_migrations_online() -> None:
    migrate = current_app.extensions["migrate"]
    with migrate.db.engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, **migrate.configure_args)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()

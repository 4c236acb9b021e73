"""Alembic environment for settings-ui, run by ``settings_ui.schema`` at start-up and by
``flask email-settings db ...``, always on a connection it is handed. The version table is
settings-ui's own. It never configures logging, so the app's own stays as it is.
"""

from __future__ import annotations

from alembic import context

from settings_ui.models import metadata
from settings_ui.schema import VERSION_TABLE


def _ours(name: str | None, type_: str, parent_names: object) -> bool:
    """Only settings-ui's tables: a database it shares with a product holds the product's too."""
    return type_ != "table" or name in metadata.tables


connection = context.config.attributes["connection"]
# render_as_batch: SQLite can only alter a table by copying it.
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    include_name=_ours,
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

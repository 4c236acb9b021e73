"""Schema changes go through migrations, applied on start."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from settings_ui import database, schema
from settings_ui.models import metadata

from .apps import make_app
from .helpers import call
from .processes import PROJECT


def _script_directory() -> ScriptDirectory:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(schema.MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config)


HEAD = _script_directory().get_current_head()

# The tables exactly as the first release created them (with create_all, before migrations).
FIRST_SCHEMA = """
CREATE TABLE email_settings (
    id INTEGER NOT NULL, smtp_host VARCHAR(253) NOT NULL, smtp_port INTEGER NOT NULL,
    encryption VARCHAR(16) NOT NULL, from_email VARCHAR(1024) NOT NULL, username VARCHAR(1024) NOT NULL,
    password_encrypted TEXT, allow_selfsigned_certs BOOLEAN NOT NULL, version INTEGER NOT NULL,
    updated_at DATETIME, updated_by VARCHAR(255), PRIMARY KEY (id)
);
CREATE TABLE audit_event (
    id INTEGER NOT NULL, at DATETIME NOT NULL, actor VARCHAR(255) NOT NULL, address VARCHAR(64) NOT NULL,
    action VARCHAR(64) NOT NULL, detail TEXT NOT NULL, PRIMARY KEY (id)
);
INSERT INTO email_settings VALUES
    (1, 'smtp.example.com', 587, 'StartTLS', 'noreply@example.com', '', NULL, 0, 7,
     '2026-11-01 10:00:00.000000', 'local');
INSERT INTO audit_event VALUES (1, '2026-11-01 10:00:00.000000', 'local', '127.0.0.1', 'settings edited', 'x');
"""


def _revision(app: object) -> str | None:
    with app.app_context(), database.engine().connect() as connection:  # type: ignore[attr-defined]
        return connection.execute(text(f"SELECT version_num FROM {schema.VERSION_TABLE}")).scalar()


def test_an_empty_database_is_migrated_to_the_head(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    assert HEAD is not None
    assert _revision(app) == HEAD
    assert call(app.test_client(), "show").status_code == 200


def test_a_database_made_by_the_first_schema_is_upgraded_with_its_data(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "settings.db") as connection:
        connection.executescript(FIRST_SCHEMA)
    app = make_app(tmp_path)
    assert _revision(app) == HEAD
    client = app.test_client()
    result = call(client, "show").get_json()["result"]
    assert (result["smtp_host"], result["smtp_port"], result["encryption"]) == ("smtp.example.com", 587, "StartTLS")
    assert call(client, "show").headers["ETag"] == '"7"'
    assert call(client, "edit", {"smtp_port": 2525}).status_code == 200
    with sqlite3.connect(tmp_path / "settings.db") as connection:
        assert connection.execute("SELECT count(*) FROM audit_event").fetchone()[0] == 2


def test_a_database_that_recorded_its_revision_in_alembic_version_keeps_it(tmp_path: Path) -> None:
    """Before settings-ui had a version table of its own, the standalone app used Alembic's default."""
    make_app(tmp_path)
    with sqlite3.connect(tmp_path / "settings.db") as connection:
        connection.execute(f"ALTER TABLE {schema.VERSION_TABLE} RENAME TO alembic_version")
    app = make_app(tmp_path)
    assert _revision(app) == HEAD
    assert call(app.test_client(), "show").status_code == 200


def test_the_models_match_the_migrations(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    with app.app_context(), database.engine().connect() as connection:
        differences = compare_metadata(
            MigrationContext.configure(connection, opts={"version_table": schema.VERSION_TABLE}), metadata
        )
    assert differences == [], "the models changed without a migration: run `flask --app app email-settings db revision`"


def test_processes_starting_together_migrate_once(tmp_path: Path) -> None:
    start = (
        "import sys; from settings_ui import create_app; "
        f"create_app({{'SQLALCHEMY_DATABASE_URI': 'sqlite:///{tmp_path / 'shared.db'}'}}, "
        f"instance_path={str(tmp_path / 'instance')!r})"
    )
    processes = [subprocess.Popen([sys.executable, "-c", start], cwd=PROJECT, stderr=subprocess.PIPE) for _ in range(4)]
    for process in processes:
        _, errors = process.communicate(timeout=60)
        assert process.returncode == 0, errors.decode()
    with sqlite3.connect(tmp_path / "shared.db") as connection:
        assert connection.execute("SELECT version_num FROM settings_ui_alembic_version").fetchall() == [(HEAD,)]
        assert connection.execute("SELECT count(*) FROM email_settings").fetchone()[0] == 1


def test_the_migration_commands_work_through_the_flask_cli(tmp_path: Path) -> None:
    make_app(tmp_path)
    environment = {**os.environ, "SETTINGS_UI_INSTANCE_PATH": str(tmp_path / "instance")}
    environment["SETTINGS_UI_SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'settings.db'}"
    flask = [sys.executable, "-m", "flask", "--app", "app", "email-settings", "db"]
    current = subprocess.run([*flask, "current"], cwd=PROJECT, env=environment, capture_output=True, text=True)
    assert current.returncode == 0, current.stderr
    assert f"{HEAD} (head)" in current.stdout
    check = subprocess.run([*flask, "check"], cwd=PROJECT, env=environment, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_the_revision_a_cheap_start_checks_for_is_the_newest_migration() -> None:
    # sendmail and the app skip the migration tool when the database is at HEAD_REVISION.
    assert ScriptDirectory(str(schema.MIGRATIONS_DIR)).get_current_head() == schema.HEAD_REVISION

"""Persistence, configuration and concurrent writers on a real SQLite file."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from settings_ui import crypto, database

from .apps import make_app, stored_row, tracked
from .helpers import EXAMPLE_PASSWORD, call, shown
from .processes import AppProcess


def test_settings_survive_a_restart_on_the_same_database(tmp_path: Path, configured: dict[str, Any]) -> None:
    # `configured` saved through the `app` fixture; a second app on the same files is a restart.
    restarted = make_app(tmp_path)
    result = call(restarted.test_client(), "show").get_json()["result"]
    assert result == shown(configured)
    with restarted.app_context():
        assert crypto.decrypt(stored_row(restarted)["password_encrypted"]) == EXAMPLE_PASSWORD


def test_the_database_file_holds_no_plaintext_password(tmp_path: Path, configured: dict[str, Any]) -> None:
    for path in tmp_path.glob("settings.db*"):
        assert EXAMPLE_PASSWORD.encode() not in path.read_bytes()


def test_the_database_uses_wal_and_a_busy_timeout(app: Flask) -> None:
    with app.app_context(), database.engine().connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() >= 1000


def test_a_secret_key_is_generated_once_readable_by_the_owner_only(tmp_path: Path) -> None:
    first = make_app(tmp_path)
    key_file = tmp_path / "instance" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first.config["SECRET_KEY"]) >= 32
    assert make_app(tmp_path).config["SECRET_KEY"] == first.config["SECRET_KEY"]
    other = make_app(tmp_path / "elsewhere")
    assert other.config["SECRET_KEY"] != first.config["SECRET_KEY"]  # never a built-in fallback


def test_the_encryption_key_file_is_private(tmp_path: Path) -> None:
    make_app(tmp_path)
    assert stat.S_IMODE((tmp_path / "instance" / "encryption.key").stat().st_mode) == 0o600


def test_configuration_order_defaults_instance_file_environment_then_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert make_app(tmp_path).config["SMTP_TIMEOUT"] == 10
    (tmp_path / "instance").mkdir(exist_ok=True)
    (tmp_path / "instance" / "config.py").write_text("SMTP_TIMEOUT = 20\nSECRET_KEY = 'from-instance-file'\n")
    app = make_app(tmp_path)
    assert (app.config["SMTP_TIMEOUT"], app.config["SECRET_KEY"]) == (20, "from-instance-file")
    monkeypatch.setenv("SETTINGS_UI_SMTP_TIMEOUT", "30")
    assert make_app(tmp_path).config["SMTP_TIMEOUT"] == 30
    assert make_app(tmp_path, SMTP_TIMEOUT=40).config["SMTP_TIMEOUT"] == 40


def test_the_database_url_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "elsewhere.db"
    monkeypatch.setenv("SETTINGS_UI_SQLALCHEMY_DATABASE_URI", f"sqlite:///{target}")
    from settings_ui import create_app

    app = tracked(create_app({"TESTING": True}, instance_path=tmp_path / "instance"))
    call(app.test_client(), "edit", {"smtp_host": "a.example.com", "smtp_port": 25, "from_email": "a@example.com"})
    assert target.exists()
    assert not (tmp_path / "instance" / "settings.db").exists()


def test_the_default_database_lives_in_the_instance_folder(tmp_path: Path) -> None:
    from settings_ui import create_app

    app = tracked(create_app({"TESTING": True}, instance_path=tmp_path / "instance"))
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'instance' / 'settings.db'}"
    assert (tmp_path / "instance" / "settings.db").exists()  # tables are created on first start


def test_the_instance_folder_is_created_when_missing(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "instance"
    from settings_ui import create_app

    tracked(create_app({"TESTING": True}, instance_path=target))
    assert target.is_dir()
    assert os.access(target / "secret_key", os.R_OK)


def test_the_instance_folder_and_its_files_are_private(tmp_path: Path) -> None:
    """Settings and the audit trail are nobody else's business on a shared machine."""
    instance = tmp_path / "instance"
    app = AppProcess(instance)
    try:
        params = {"smtp_host": "smtp.example.com", "smtp_port": 587, "from_email": "a@example.com"}
        assert app.call("edit", params | {"username": "u", "password": EXAMPLE_PASSWORD})[0] == 200
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in instance.iterdir()}
    finally:
        app.stop()
    assert stat.S_IMODE(instance.stat().st_mode) == 0o700
    expected = {"settings.db", "settings.db-wal", "settings.db-shm", "settings.db.write-lock", "secret_key"}
    assert expected <= set(modes), modes
    assert {name: mode for name, mode in modes.items() if mode != 0o600} == {}


def test_an_open_instance_folder_is_tightened_and_an_open_config_file_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    instance = tmp_path / "instance"
    instance.mkdir(mode=0o755)  # as git makes it in a fresh clone
    instance.chmod(0o755)
    (instance / "config.py").write_text("SMTP_TIMEOUT = 12\n")
    (instance / "config.py").chmod(0o644)
    with caplog.at_level(logging.WARNING):
        make_app(tmp_path)
    assert stat.S_IMODE(instance.stat().st_mode) == 0o700
    assert "config.py can be read by other users" in caplog.text


def test_a_setting_in_the_environment_without_the_prefix_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SMTP_CA_FILE", str(tmp_path / "ca.pem"))
    with caplog.at_level(logging.WARNING):
        app = make_app(tmp_path)
    assert app.config.get("SMTP_CA_FILE") is None  # not read: the warning says so, and what to set
    assert "sets SMTP_CA_FILE, which settings-ui does not read: set SETTINGS_UI_SMTP_CA_FILE" in caplog.text

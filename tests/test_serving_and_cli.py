"""Health, reverse proxies, gunicorn, and the `flask email-settings` command line."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import text
from werkzeug.security import generate_password_hash

from settings_ui import crypto, database

from .apps import make_app, stored_row
from .helpers import EXAMPLE_PASSWORD, call, post_json
from .processes import PROJECT, GunicornProcess
from .smtp_servers import free_port, smtp_server

COMPLETE = {"smtp_host": "smtp.example.com", "smtp_port": 587, "from_email": "noreply@example.com"}


# --- /healthz -------------------------------------------------------------------------------------


def test_healthz_needs_no_login_and_shows_no_settings(tmp_path: Path) -> None:
    from .helpers import ADMIN, ADMIN_HASH

    app = make_app(tmp_path, ADMIN_USERNAME=ADMIN, ADMIN_PASSWORD_HASH=ADMIN_HASH)
    client = app.test_client()
    assert call(client, "show").status_code == 401  # the settings themselves do need a login
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


def test_healthz_answers_remote_probes_in_loopback_only_mode(client: Any) -> None:
    assert client.get("/healthz", environ_base={"REMOTE_ADDR": "203.0.113.5"}).status_code == 200
    assert client.get("/", environ_base={"REMOTE_ADDR": "203.0.113.5"}).status_code == 403


def test_healthz_reports_a_broken_database(app: Flask, client: Any) -> None:
    with app.app_context(), database.engine().begin() as connection:
        connection.execute(text("DROP TABLE email_settings"))
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["status"] == "unavailable"


# --- Reverse proxies ----------------------------------------------------------------------------------


def test_without_proxy_fix_forwarded_headers_are_not_trusted(client: Any) -> None:
    spoofed = {"REMOTE_ADDR": "203.0.113.5"}
    response = client.get("/", environ_base=spoofed, headers={"X-Forwarded-For": "127.0.0.1"})
    assert response.status_code == 403


def test_with_proxy_fix_the_forwarded_client_is_the_client(tmp_path: Path) -> None:
    app = make_app(tmp_path, PROXY_FIX=1)
    client = app.test_client()
    # The proxy itself is on this machine; the client it forwards is not.
    response = client.get("/", headers={"X-Forwarded-For": "203.0.113.9"})
    assert response.status_code == 403
    assert client.get("/").status_code == 200
    response = client.get("/", headers={"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" in response.headers


# --- gunicorn -------------------------------------------------------------------------------------


def test_gunicorn_config_outlasts_a_test_email() -> None:
    config: dict[str, Any] = {}
    exec((PROJECT / "gunicorn.conf.py").read_text(), config)
    assert config["timeout"] > 10
    assert config["workers"] >= 2 and config["threads"] >= 2
    assert "%(r)s" in config["access_log_format"]


def test_gunicorn_serves_the_app_and_logs_no_secret(tmp_path: Path) -> None:
    server = GunicornProcess(tmp_path / "instance")
    try:
        url = server.url
        params = COMPLETE | {"username": "mailer", "password": EXAMPLE_PASSWORD}
        assert post_json(f"{url}/email-settings/edit", {"params": params})[0] == 200
        assert (
            post_json(f"{url}/email-settings/edit", {"params": {"smtp_port": "x", "password": EXAMPLE_PASSWORD}})[0]
            == 400
        )
    finally:
        server.stop()
    output_text = server.log.read_text()
    assert 'POST /email-settings/edit HTTP/1.1" 200' in output_text
    assert EXAMPLE_PASSWORD not in output_text
    # Started without an admin, it says what protects it.
    assert "only clients on this machine (loopback) are served" in output_text


def test_a_password_typed_as_the_basic_user_name_stays_out_of_the_access_log(tmp_path: Path) -> None:
    admin = {"SETTINGS_UI_ADMIN_USERNAME": "admin", "SETTINGS_UI_ADMIN_PASSWORD_HASH": generate_password_hash("pw")}
    server = GunicornProcess(tmp_path / "instance", admin)
    try:
        mistaken = base64.b64encode(f"{EXAMPLE_PASSWORD}:".encode()).decode()
        status, _ = post_json(
            f"{server.url}/email-settings/show", {"params": {}}, {"Authorization": f"Basic {mistaken}"}
        )
        assert status == 401
    finally:
        server.stop()
    log = server.log.read_text()
    assert 'POST /email-settings/show HTTP/1.1" 401' in log
    assert EXAMPLE_PASSWORD not in log


def test_commands_that_serve_no_one_do_not_print_the_loopback_warning(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETTINGS_UI_")}
    env["SETTINGS_UI_INSTANCE_PATH"] = str(tmp_path / "instance")
    shown = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "email-settings", "show"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["smtp_host"] == ""
    assert "loopback" not in shown.stdout + shown.stderr
    built = subprocess.run(  # a product's or a script's start-up
        [sys.executable, "-c", "import settings_ui; settings_ui.create_app()"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    assert "loopback" not in built.stdout + built.stderr
    sendmail = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "email-settings", "sendmail", "someone@example.com"],
        input="Subject: hello\n\nhi\n",
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert sendmail.returncode == 78  # not configured yet
    assert "loopback" not in sendmail.stdout + sendmail.stderr


def test_flask_run_says_what_protects_it_without_an_admin(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETTINGS_UI_")}
    env["SETTINGS_UI_INSTANCE_PATH"] = str(tmp_path / "instance")
    port = free_port()
    log = tmp_path / "flask-run.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "app", "run", "--port", str(port)],
            cwd=PROJECT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while post_json_or_none(f"http://127.0.0.1:{port}/email-settings/show") is None:
            assert time.monotonic() < deadline and server.poll() is None, log.read_text()
            time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    text_out = log.read_text()
    assert "only clients on this machine (loopback) are served" in text_out
    assert "any other client gets 403" in text_out


def post_json_or_none(url: str) -> int | None:
    try:
        return post_json(url, {"params": {}}, timeout=2)[0]
    except OSError:
        return None


PASSPHRASE = "moving day, late 2026"


# --- The command line ----------------------------------------------------------------------------


def invoke(runner: FlaskCliRunner, *args: str, input: str | None = None) -> Any:
    return runner.invoke(args=["email-settings", *args], input=input)


def test_cli_show_prints_the_settings_as_json(runner: FlaskCliRunner, client: Any) -> None:
    call(client, "edit", COMPLETE)
    result = invoke(runner, "show")
    assert result.exit_code == 0
    assert json.loads(result.output) == call(client, "show").get_json()["result"]


def test_cli_edit_with_password_from_stdin(app: Flask, runner: FlaskCliRunner) -> None:
    result = invoke(
        runner,
        "edit",
        "--smtp-host",
        "mail.example.org",
        "--smtp-port",
        "465",
        "--encryption",
        "TLS",
        "--from-email",
        "ops@example.org",
        "--username",
        "ops",
        "--password-stdin",
        "--allow-selfsigned-certs",
        input=EXAMPLE_PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    assert EXAMPLE_PASSWORD not in result.output
    assert json.loads(result.output)["smtp_port"] == 465
    row = stored_row(app)
    assert (row["smtp_host"], row["encryption"], row["allow_selfsigned_certs"]) == ("mail.example.org", "TLS", True)
    with app.app_context():
        assert crypto.decrypt(row["password_encrypted"]) == EXAMPLE_PASSWORD
    assert invoke(runner, "edit", "--from-email", "ops@example.org").exit_code == 0
    assert stored_row(app)["password_encrypted"] == row["password_encrypted"]  # a partial edit


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--smtp-port", "70000"], "smtp_port must be from 1 to 65535"),
        (["--smtp-port", "abc"], "smtp_port must be an integer, not a string"),
        (["--smtp-port", "\u00b2"], "smtp_port must be an integer, not a string"),
        (["--encryption", "SSL"], "encryption must be one of Plain, StartTLS, TLS"),
        (["--from-email", "a@b.c, d@e.f"], "from_email must be one email address"),
        (["--remove-password"], "password cannot be removed while a username is set"),
    ],
)
def test_cli_edit_rejects_what_the_api_rejects_with_the_same_message(
    app: Flask, runner: FlaskCliRunner, client: Any, args: list[str], message: str
) -> None:
    call(client, "edit", COMPLETE | {"username": "u", "password": "p"})
    before = stored_row(app)
    result = invoke(runner, "edit", *args)
    assert result.exit_code != 0
    assert message in result.output
    assert stored_row(app) == before


def test_cli_detect_says_what_is_wrong_with_a_port_that_is_not_a_number(runner: FlaskCliRunner) -> None:
    result = invoke(runner, "detect", "smtp.example.com", "--ports", "465,\u00b2")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # a message, not a crash
    assert "ports" in result.output


def test_cli_edit_without_options_is_a_usage_error(runner: FlaskCliRunner) -> None:
    result = invoke(runner, "edit")
    assert result.exit_code == 2
    assert "Nothing to change" in result.output


def test_cli_clear_asks_unless_yes(app: Flask, runner: FlaskCliRunner, client: Any) -> None:
    call(client, "edit", COMPLETE)
    before = stored_row(app)
    refused = invoke(runner, "clear", input="n\n")
    assert refused.exit_code != 0
    assert stored_row(app) == before
    assert invoke(runner, "clear", "--yes").exit_code == 0
    assert stored_row(app)["smtp_host"] == ""


def test_cli_test_prints_the_steps(runner: FlaskCliRunner, client: Any) -> None:
    with smtp_server() as (port, handler):
        call(client, "edit", COMPLETE | {"smtp_host": "127.0.0.1", "smtp_port": port, "encryption": "Plain"})
        result = invoke(runner, "test", "--to", "me@example.net")
    assert result.exit_code == 0, result.output
    for step in ["resolve", "connect", "ehlo", "mail_from", "rcpt_to", "data"]:
        assert f"ok   {step}" in result.output
    assert len(handler.received) == 1
    call(client, "edit", {"smtp_port": free_port()})
    failed = invoke(runner, "test", "--to", "me@example.net")
    assert failed.exit_code == 1
    assert "FAIL connect" in failed.output and "refused the connection" in failed.output


def test_cli_test_dry_run_checks_without_sending(runner: FlaskCliRunner, client: Any) -> None:
    with smtp_server() as (port, handler):
        call(client, "edit", COMPLETE | {"smtp_host": "127.0.0.1", "smtp_port": port, "encryption": "Plain"})
        result = invoke(runner, "test", "--to", "me@example.net", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "ok   rcpt_to" in result.output and " data " not in result.output
    assert "nothing was sent" in result.output
    assert handler.accepted_recipients == ["me@example.net"] and handler.received == []


def test_cli_test_takes_a_draft_and_stores_nothing(app: Flask, runner: FlaskCliRunner) -> None:
    before = stored_row(app)
    with smtp_server() as (port, handler):
        draft = ["--smtp-host", "127.0.0.1", "--smtp-port", str(port), "--encryption", "Plain"]
        draft += ["--from-email", "ops@example.org", "--username", "ops", "--password-stdin"]
        result = invoke(runner, "test", "--to", "me@example.net", *draft, input=f"{EXAMPLE_PASSWORD}\n")
    assert result.exit_code != 0  # aiosmtpd offers no AUTH without an authenticator
    assert "FAIL auth" in result.output and EXAMPLE_PASSWORD not in result.output
    with smtp_server() as (port, handler):
        draft = ["--smtp-host", "127.0.0.1", "--smtp-port", str(port), "--encryption", "Plain"]
        result = invoke(runner, "test", "--to", "me@example.net", *draft, "--from-email", "ops@example.org")
    assert result.exit_code == 0, result.output
    assert handler.received[0].mail_from == "ops@example.org"
    assert stored_row(app) == before


def test_cli_export_and_import_move_an_installation(tmp_path: Path, app: Flask, runner: FlaskCliRunner) -> None:
    call(app.test_client(), "edit", COMPLETE | {"username": "mailer", "password": EXAMPLE_PASSWORD})
    plain = invoke(runner, "export")
    assert plain.exit_code == 0
    assert "password" not in json.loads(plain.output)
    exported = invoke(runner, "export", "--with-password", input=f"{PASSPHRASE}\n{PASSPHRASE}\n")
    assert exported.exit_code == 0, exported.output
    document = json.loads(exported.output[exported.output.index("{") :])
    assert EXAMPLE_PASSWORD not in exported.output
    export_file = tmp_path / "export.json"
    export_file.write_text(json.dumps(document))

    elsewhere = make_app(tmp_path / "elsewhere")  # another installation, with another key
    other_runner = elsewhere.test_cli_runner()
    wrong = other_runner.invoke(args=["email-settings", "import", str(export_file)], input="guess\n")
    assert wrong.exit_code != 0 and "passphrase is wrong" in wrong.output
    assert stored_row(elsewhere)["smtp_host"] == ""
    right = other_runner.invoke(args=["email-settings", "import", str(export_file)], input=f"{PASSPHRASE}\n")
    assert right.exit_code == 0, right.output
    row = stored_row(elsewhere)
    assert (row["smtp_host"], row["username"]) == ("smtp.example.com", "mailer")
    with elsewhere.app_context():
        assert crypto.decrypt(row["password_encrypted"]) == EXAMPLE_PASSWORD


def test_cli_edit_refuses_an_empty_password_from_stdin(app: Flask, runner: FlaskCliRunner) -> None:
    call(app.test_client(), "edit", COMPLETE | {"username": "mailer", "password": EXAMPLE_PASSWORD})
    before = stored_row(app)
    result = invoke(runner, "edit", "--password-stdin", input="")
    assert result.exit_code != 0 and "empty" in result.output and "--remove-password" in result.output
    assert stored_row(app) == before


def test_cli_import_of_an_export_without_the_password_takes_it_from_stdin(
    tmp_path: Path, app: Flask, runner: FlaskCliRunner
) -> None:
    call(app.test_client(), "edit", COMPLETE | {"username": "mailer", "password": EXAMPLE_PASSWORD})
    export_file = tmp_path / "export.json"
    assert invoke(runner, "export", "--output", str(export_file)).exit_code == 0
    elsewhere = make_app(tmp_path / "elsewhere")
    other_runner = elsewhere.test_cli_runner()
    without = other_runner.invoke(args=["email-settings", "import", str(export_file)])
    assert without.exit_code != 0 and "password" in without.output and "--password-stdin" in without.output
    assert ". This export holds no password" in without.output  # one sentence ends before the next begins
    assert stored_row(elsewhere)["smtp_host"] == ""
    result = other_runner.invoke(
        args=["email-settings", "import", "--password-stdin", str(export_file)], input=f"{EXAMPLE_PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    assert EXAMPLE_PASSWORD not in result.output
    with elsewhere.app_context():
        assert crypto.decrypt(stored_row(elsewhere)["password_encrypted"]) == EXAMPLE_PASSWORD


def test_a_piped_passphrase_gives_no_terminal_warning(tmp_path: Path) -> None:
    environment = {**os.environ, "SETTINGS_UI_INSTANCE_PATH": str(tmp_path / "instance")}
    flask = [sys.executable, "-m", "flask", "--app", "app", "email-settings"]
    configure = [*flask, "edit", "--smtp-host", "smtp.example.com", "--smtp-port", "587", "--from-email"]
    configure += ["noreply@example.com", "--username", "mailer", "--password-stdin"]
    done = subprocess.run(
        configure, input=f"{EXAMPLE_PASSWORD}\n", env=environment, cwd=PROJECT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    export = [*flask, "export", "--with-password"]
    done = subprocess.run(export, input=f"{PASSPHRASE}\n", env=environment, cwd=PROJECT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "GetPassWarning" not in done.stderr and "echoed" not in done.stderr
    assert json.loads(done.stdout)["password"]


def test_cli_export_refuses_a_short_passphrase_and_writes_nothing(
    tmp_path: Path, app: Flask, runner: FlaskCliRunner
) -> None:
    call(app.test_client(), "edit", COMPLETE | {"username": "mailer", "password": EXAMPLE_PASSWORD})
    target = tmp_path / "export.json"
    short = "x" * 11
    result = invoke(runner, "export", "--with-password", "--output", str(target), input=f"{short}\n{short}\n")
    assert result.exit_code != 0 and "at least 12 characters" in result.output
    assert not target.exists()


def test_cli_export_file_is_readable_by_its_owner_only(tmp_path: Path, app: Flask, runner: FlaskCliRunner) -> None:
    call(app.test_client(), "edit", COMPLETE | {"username": "mailer", "password": EXAMPLE_PASSWORD})
    fresh, existing = tmp_path / "fresh.json", tmp_path / "existing.json"
    existing.write_text("old")
    existing.chmod(0o644)
    for target in (fresh, existing):
        result = invoke(runner, "export", "--with-password", "--output", str(target), input=f"{PASSPHRASE}\n" * 2)
        assert result.exit_code == 0, result.output
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert json.loads(target.read_text())["settings"]["username"] == "mailer"


def test_cli_export_over_a_symlink_replaces_the_link_and_leaves_its_target_alone(
    tmp_path: Path, app: Flask, runner: FlaskCliRunner
) -> None:
    call(app.test_client(), "edit", COMPLETE)
    target, link = tmp_path / "someone-elses.conf", tmp_path / "export.json"
    target.write_text("not yours\n")
    target.chmod(0o644)
    link.symlink_to(target)
    result = invoke(runner, "export", "--output", str(link))
    assert result.exit_code == 0, result.output
    assert target.read_text() == "not yours\n" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert not link.is_symlink() and stat.S_IMODE(link.stat().st_mode) == 0o600
    assert json.loads(link.read_text())["settings"]["smtp_host"] == COMPLETE["smtp_host"]
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")) == []


def test_cli_import_refuses_what_is_not_an_export(tmp_path: Path, app: Flask, runner: FlaskCliRunner) -> None:
    before = stored_row(app)
    for content in ["not json", '{"settings": {}}', json.dumps({"format": "x"})]:
        path = tmp_path / "bad.json"
        path.write_text(content)
        result = invoke(runner, "import", str(path))
        assert result.exit_code != 0 and "not a settings-ui export" in result.output
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"format": "settings-ui/email-settings/1", "settings": COMPLETE | {"smtp_port": 0}}))
    result = invoke(runner, "import", str(invalid))
    assert result.exit_code != 0 and "smtp_port" in result.output
    assert stored_row(app) == before

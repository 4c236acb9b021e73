"""Command-line tools: ``flask --app app hash-password | rotate-key | email-settings ...``."""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from alembic import command as alembic_command
from alembic.config import Config
from cryptography.fernet import Fernet
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from werkzeug.security import generate_password_hash

from . import (
    alerts,
    crypto,
    database,
    detection,
    fields,
    operations,
    outbox,
    password_file,
    rules,
    runtime,
    schema,
    sendmail,
    testmail,
)
from .audit import Actor
from .configuration import as_set_here
from .errors import SettingsError
from .instance_files import write_private


def stdin_line() -> str:
    """The first line of standard input, without its line ending."""
    return sys.stdin.readline().rstrip("\r\n")


def read_secret(prompt: str, *, confirm: bool = False) -> str:
    """A secret typed at the terminal (hidden), or the first line of standard input when it is piped."""
    if sys.stdin.isatty():
        return click.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True)
    # getpass would warn that it cannot hide piped input; there is nothing to hide.
    return stdin_line()


@click.command("hash-password")
def hash_password() -> None:
    """Ask for the admin password twice and print its hash for ADMIN_PASSWORD_HASH."""
    password = click.prompt("Admin password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise click.ClickException("Choose a password of at least 8 characters.")
    click.echo(generate_password_hash(password))


@click.command("rotate-key")
@with_appcontext
def rotate_key() -> None:
    """Re-encrypt the stored SMTP password under a new encryption key.

    With the key in instance/encryption.key, a new key is generated and the old one
    dropped once the password is re-encrypted. With SETTINGS_ENCRYPTION_KEY set, put
    the new key first in that list, run this, then remove the old key.
    """
    app = current_app
    problem = operations.stored_password_problem()
    if problem:
        raise click.ClickException(problem)
    if app.config.get("SETTINGS_ENCRYPTION_KEY"):
        rotated = operations.rotate_encryption()
        click.echo(
            "Re-encrypted the stored password under the first key of SETTINGS_ENCRYPTION_KEY; "
            "the other keys can now be removed."
            if rotated
            else "No password is stored; nothing to re-encrypt."
        )
        return
    instance = runtime.current().instance_path
    old_keys = crypto.load_keys(app.config, instance)
    new_key = Fernet.generate_key().decode()
    # Keep the old keys until the password is re-encrypted, so a crash in between loses nothing.
    crypto.write_key_file([new_key, *old_keys])
    rotated = operations.rotate_encryption()
    crypto.write_key_file([new_key])
    click.echo(
        f"New encryption key written to {crypto.key_file(instance)}"
        + ("; the stored password was re-encrypted under it." if rotated else "; no password was stored.")
    )


email_settings = AppGroup("email-settings", help="Show, change, test, export and import the email settings.")
CLI_ACTOR = Actor("command line")
EXPORT_FORMAT = "settings-ui/email-settings/1"


def _print_settings(settings: operations.Settings) -> None:
    click.echo(json.dumps(settings.public(), indent=2, sort_keys=True))


def _port(_context: click.Context, _parameter: click.Parameter, value: str | None) -> int | str | None:
    # Pass a non-number on as it is, so that the service says what is wrong, as the API would.
    return _integer_or_text(value) if value is not None else None


def _integer_or_text(value: str) -> int | str:
    # Only ASCII digits make a number ("²" is a digit to str.isdigit, not to int); the rest is passed on
    # as text, for the operations to say what is wrong with it.
    value = value.strip()
    return int(value) if re.fullmatch(r"-?[0-9]+", value) else value


# A secret refused only because it was not given again: how to give it on the command line.
_EDIT_REMEDIES = {
    "password": "give it with --password-stdin, or store none with --remove-password",
    "oauth2_client_secret": "give it with --oauth2-client-secret-stdin",
    "google_service_account_key": "give it with --google-service-account-key-stdin < key.json",
}
_TEST_REMEDIES = _EDIT_REMEDIES | {"password": "give it with --password-stdin"}


def _fail(error: SettingsError, remedies: dict[str, str] = _EDIT_REMEDIES) -> click.ClickException:
    return click.ClickException(as_set_here(error.with_remedies(remedies).message))


@email_settings.command("show")
def show_command() -> None:
    """Print the stored settings as JSON (never the password)."""
    _print_settings(operations.show())


def settings_options(command: Callable[..., None]) -> Callable[..., None]:
    """The edit parameters as options, shared by edit and by test (where they make a draft), made
    from the fields' declaration: a secret is read from standard input, never from the command line."""
    for field in reversed(fields.FIELDS):
        flag = "--" + field.name.replace("_", "-")
        if field.write_only:
            secret = field.name.replace("_", " ")
            where = "all of standard input (a file)" if field.multiline else "the first line of standard input"
            option = click.option(f"{flag}-stdin", is_flag=True, help=f"read the {secret} from {where}")
        elif field.type is bool:
            option = click.option(f"{flag}/--no-{flag[2:]}", default=None, help=field.description)
        elif field.type is int:
            option = click.option(flag, callback=_port, help=f"{field.description} ({field.minimum}-{field.maximum})")
        else:
            choices = f" ({', '.join(field.choices)})" if field.choices else ""
            option = click.option(flag, help=field.description + choices)
        command = option(command)
    return command


def _given(password_stdin: bool, options: dict[str, Any]) -> dict[str, Any]:
    """The edit parameters the options give: those not given are left out."""
    secret_stdin = options.pop("oauth2_client_secret_stdin", False)
    key_stdin = options.pop("google_service_account_key_stdin", False)
    if password_stdin + secret_stdin + key_stdin > 1:
        raise click.UsageError(
            "Give one of --password-stdin, --oauth2-client-secret-stdin and --google-service-account-key-stdin: "
            "standard input is read once."
        )
    params = {name: value for name, value in options.items() if value is not None}
    if key_stdin:
        params["google_service_account_key"] = sys.stdin.read(rules.SERVICE_ACCOUNT_KEY_MAX_LENGTH + 1).strip()
        if not params["google_service_account_key"]:
            raise click.UsageError("--google-service-account-key-stdin read nothing: give the JSON key file.")
    if secret_stdin:
        params["oauth2_client_secret"] = stdin_line()
        if not params["oauth2_client_secret"]:
            raise click.UsageError("--oauth2-client-secret-stdin read an empty secret.")
    if password_stdin:
        params["password"] = stdin_line()
        if not params["password"]:
            # An empty line (or /dev/null) would remove the stored password: that takes its own flag.
            raise click.UsageError("--password-stdin read an empty password; to remove it, use --remove-password.")
    return params


@email_settings.command("edit")
@settings_options
@click.option("--remove-password", is_flag=True, help="remove the stored password")
@click.option(
    "--move-password-file",
    is_flag=True,
    help="with SMTP_PASSWORD_FILE set: let its password go to the new server, port, encryption or user given",
)
def edit_command(password_stdin: bool, remove_password: bool, move_password_file: bool, **options: Any) -> None:
    """Change some settings; what is not given keeps its stored value."""
    if password_stdin and remove_password:
        raise click.UsageError("Give --password-stdin or --remove-password, not both.")
    params = _given(password_stdin, options)
    if remove_password:
        params["password"] = ""
    if not params:
        raise click.UsageError("Nothing to change: give at least one option (see --help).")
    try:
        _print_settings(operations.edit(params, actor=CLI_ACTOR, password_file_moves=move_password_file))
    except SettingsError as error:
        raise _fail(error) from None


@email_settings.command("clear")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def clear_command(yes: bool) -> None:
    """Remove all settings, the password included."""
    if not yes:
        click.confirm("Remove all email settings, the password included?", abort=True)
    _print_settings(operations.clear(actor=CLI_ACTOR))


@email_settings.command("test")
@click.option("--to", "to", required=True, help="where to send the test email")
@click.option("--dry-run", is_flag=True, help="check the server, sign-in, sender and recipient; send nothing")
@settings_options
def test_command(to: str, dry_run: bool, password_stdin: bool, **options: Any) -> None:
    """Send a test email and print every step: through the stored settings, or a draft of the
    options given over them (never stored; another server needs its own password)."""
    draft = _given(password_stdin, options)
    try:
        report = testmail.run_test({"to": to, "settings": draft, "dry_run": dry_run}, actor=CLI_ACTOR)
    except SettingsError as error:
        raise _fail(error, _TEST_REMEDIES) from None
    _print_report(report)
    if not report.checked:
        raise click.ClickException(as_set_here(report.message))
    click.echo(report.message)
    for warning in report.warnings:
        click.echo(f"Warning: {as_set_here(warning)}")


def _print_report(report: Any) -> None:
    for step in report.steps:
        click.echo(f"{'ok  ' if step.ok else 'FAIL'} {step.name:<10} {step.ms:>6} ms  {as_set_here(step.detail)}")


def _ports_list(_context: click.Context, _parameter: click.Parameter, value: str | None) -> list[Any] | None:
    if value is None:
        return None
    # Numbers as numbers, anything else as given, so that the service says what is wrong.
    return [_integer_or_text(item) for item in value.split(",")]


@email_settings.command("detect")
@click.argument("host")
@click.option("--username", help="who will sign in; with --password-stdin, the sign-in is tried on the best choice")
@click.option("--password-stdin", is_flag=True, help="read the password from the first line of standard input")
@click.option("--ports", callback=_ports_list, help="comma-separated ports to try (default 465,587,25,2525)")
def detect_command(host: str, username: str | None, password_stdin: bool, ports: list[Any] | None) -> None:
    """Find which ports and encryption HOST's SMTP server offers, and which to use (nothing is
    stored, no mail sent). Exits non-zero when nothing works."""
    params: dict[str, Any] = {"smtp_host": host}
    if username is not None:
        params["username"] = username
    if password_stdin:
        params["password"] = stdin_line()
    if ports is not None:
        params["ports"] = ports
    try:
        found = detection.detect(params, actor=CLI_ACTOR)
    except SettingsError as error:
        raise _fail(error) from None
    click.echo(f"{'port':>5}  {'encryption':<10} {'result':<6} {'cert':<10} {'auth':<9} detail")
    for candidate in found.candidates:
        certificate = candidate.certificate
        trust = "-" if certificate is None else "verified" if certificate.verified else "unverified"
        click.echo(
            f"{candidate.smtp_port:>5}  {candidate.encryption:<10} {_result(candidate.ok, candidate.waited):<6} "
            f"{trust:<10} {candidate.auth:<9} {as_set_here(candidate.detail)}"
        )
    click.echo(f"{as_set_here(found.message)} ({found.elapsed_ms} ms)")
    if found.recommended is None:
        raise click.exceptions.Exit(1)
    click.echo(json.dumps(found.recommended, indent=2, sort_keys=True))


def _result(ok: bool, waited: bool) -> str:
    return "ok" if ok else "FAIL" if waited else "skip"  # skip: a better choice had already answered


def _in_app_context(command: click.Command) -> click.Command:
    """``command`` run in the app's context, like the group's own commands (the `flask` command
    pushes one for them, a test's CLI runner does not)."""
    assert command.callback is not None
    in_app = copy.copy(command)
    in_app.callback = with_appcontext(command.callback)
    return in_app


email_settings.add_command(_in_app_context(sendmail.command))


@email_settings.group("outbox")
def outbox_group() -> None:
    """The outbox: the product's mail that met a temporary failure, tried again later."""


OUTBOX_POLL_SECONDS = 30.0
"""The longest a running runner sleeps: a message queued meanwhile by another process is seen then."""


@outbox_group.command("run")
@click.option("--once", is_flag=True, help="deliver what is due, then exit (for cron or a systemd timer)")
def outbox_run_command(once: bool) -> None:
    """Deliver the outbox's messages as they fall due, until stopped (SIGTERM or Ctrl-C finish the
    message in hand first)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with _one_runner_on_sqlite():
        while not stop.is_set():
            for attempt in outbox.deliver_due(stop):
                click.echo(f"message {attempt.id}: {attempt.outcome}. {as_set_here(attempt.message)}")
            alerts.send_pending()
            if once:
                break
            due = outbox.next_due()
            wait = OUTBOX_POLL_SECONDS if due is None else (due - datetime.now(UTC)).total_seconds()
            stop.wait(min(max(wait, 1.0), OUTBOX_POLL_SECONDS))


@contextlib.contextmanager
def _one_runner_on_sqlite() -> Iterator[None]:
    """On SQLite, one runner at a time, by a lock file beside the database (PostgreSQL's row locks let
    several runners share the work)."""
    if database.engine().dialect.name != "sqlite":
        yield
        return
    path = Path(current_app.instance_path) / "outbox-runner.lock"
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            click.echo(
                f"Another outbox runner is working on this SQLite database (it holds {path}); SQLite takes one "
                "runner at a time, so this one waits for it to stop.",
                err=True,
            )
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


PASSPHRASE_MIN_LENGTH = 12


_SAID = operations.SECRET_NAMES | {"oauth2_client_secret": "OAuth 2.0 client secret"}


def _stored_secrets() -> dict[str, str]:
    """The stored password and client secret in clear (the password only when it is not in SMTP_PASSWORD_FILE)."""
    secrets = {}
    for name in fields.SECRETS:
        if name == "password" and password_file.configured() is not None:
            click.echo(f"No password exported: {password_file.MANAGED_OUTSIDE}.", err=True)
            continue
        try:
            secret = operations.stored_secret(name)
        except crypto.UndecryptablePasswordError as error:
            raise click.ClickException(str(error)) from None
        if secret is not None:
            secrets[name] = secret
    return secrets


@email_settings.command("export")
@click.option(
    "--with-password",
    is_flag=True,
    help="include the password and the OAuth 2.0 client secret, encrypted with a passphrase you choose",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default="-",
    help="file to write, readable by you only (default: standard output)",
)
def export_command(with_password: bool, output: Path) -> None:
    """Write the settings as JSON, for a backup or to move them to another installation."""
    settings = operations.show()
    document: dict[str, Any] = {"format": EXPORT_FORMAT, "settings": settings.public()}
    if with_password:
        secrets = _stored_secrets()
        if secrets:
            passphrase = read_secret(
                f"Passphrase to encrypt the {' and '.join(_SAID[name] for name in secrets)} with "
                f"(at least {PASSPHRASE_MIN_LENGTH} characters)",
                confirm=True,
            )
            if len(passphrase) < PASSPHRASE_MIN_LENGTH:
                # Anyone holding the file may try passphrases offline, as fast as scrypt allows.
                raise click.ClickException(
                    f"The passphrase must be at least {PASSPHRASE_MIN_LENGTH} characters long; nothing was written."
                )
            for name, secret in secrets.items():
                document[name] = crypto.encrypt_with_passphrase(secret, passphrase)
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if str(output) == "-":
        click.echo(text, nl=False)
    else:
        write_private(output, text)


@email_settings.command("import")
@click.argument("file", type=click.File("r"))
@click.option(
    "--password-stdin",
    is_flag=True,
    help="for an export without the password: read the SMTP password from the first line of standard input",
)
def import_command(file: Any, password_stdin: bool) -> None:
    """Store the settings of an export (the password too, given its passphrase, or --password-stdin)."""
    try:
        document = json.load(file)
    except ValueError as error:
        raise click.ClickException(f"{file.name} is not a settings-ui export: {error}") from None
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise click.ClickException(f"{file.name} is not a settings-ui export ({EXPORT_FORMAT}).")
    params = dict(document.get("settings") or {})
    if password_stdin and ("password" in document or file.name == "<stdin>"):
        raise click.UsageError(
            "--password-stdin is for an export without the password, read from a file (not standard input)."
        )
    if password_stdin:
        params["password"] = stdin_line()
    elif "password" not in document and params.get("username") and sys.stdin.isatty():
        # An export without the password: a fresh installation needs it again for this user.
        params["password"] = read_secret(f"SMTP password for {params['username']}")
    sealed = [name for name in fields.SECRETS if name in document]
    if sealed:
        passphrase = read_secret("Passphrase of the export")
        try:
            for name in sealed:
                params[name] = crypto.decrypt_with_passphrase(document[name], passphrase)
        except crypto.UndecryptablePasswordError as error:
            raise click.ClickException(str(error)) from None
    try:
        _print_settings(operations.edit(params, actor=CLI_ACTOR))
    except SettingsError as error:
        if "password" in error.fields and "password" not in params:
            raise click.ClickException(
                f"{error.message.rstrip('.')}. This export holds no password: give it with --password-stdin "
                "(or export with --with-password)."
            ) from None
        raise _fail(error) from None


@email_settings.group("db")
def database_commands() -> None:
    """The migrations of settings-ui's own tables (applied by itself at start-up)."""


@contextlib.contextmanager
def _alembic() -> Iterator[Config]:
    with database.engine().connect() as connection:
        yield schema.alembic_config(connection)
        connection.commit()


@database_commands.command("current")
def database_current() -> None:
    """Show the revision the database is at."""
    with _alembic() as config:
        alembic_command.current(config)


@database_commands.command("check")
def database_check() -> None:
    """Fail when the models differ from the newest migration."""
    with _alembic() as config:
        alembic_command.check(config)


@database_commands.command("revision")
@click.option("-m", "--message", required=True, help="What the migration changes.")
def database_revision(message: str) -> None:
    """Write a new migration from the difference between the models and the database."""
    with _alembic() as config:
        alembic_command.revision(config, message=message, autogenerate=True)


def init_app(app: Flask) -> None:
    app.cli.add_command(hash_password)
    app.cli.add_command(rotate_key)
    app.cli.add_command(email_settings)

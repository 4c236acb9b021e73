"""``flask --app app hash-password`` and ``flask --app app rotate-key``."""

from __future__ import annotations

import click
from cryptography.fernet import Fernet
from flask import Flask, current_app
from flask.cli import with_appcontext
from werkzeug.security import generate_password_hash

from . import crypto, service


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
    app = current_app._get_current_object()
    problem = service.stored_password_problem()
    if problem:
        raise click.ClickException(problem)
    if app.config.get("SETTINGS_ENCRYPTION_KEY"):
        rotated = service.rotate_encryption()
        click.echo(
            "Re-encrypted the stored password under the first key of SETTINGS_ENCRYPTION_KEY; "
            "the other keys can now be removed."
            if rotated
            else "No password is stored; nothing to re-encrypt."
        )
        return
    old_keys = crypto.load_keys(app)
    new_key = Fernet.generate_key().decode()
    # Keep the old keys until the password is re-encrypted, so a crash in between loses nothing.
    crypto.write_key_file(app, [new_key, *old_keys])
    rotated = service.rotate_encryption()
    crypto.write_key_file(app, [new_key])
    click.echo(
        f"New encryption key written to {crypto.key_file(app)}"
        + ("; the stored password was re-encrypted under it." if rotated else "; no password was stored.")
    )


def init_app(app: Flask) -> None:
    app.cli.add_command(hash_password)
    app.cli.add_command(rotate_key)

"""Encryption of the stored SMTP password (Fernet from ``cryptography``).

The key never lives in the database: it comes from ``SETTINGS_ENCRYPTION_KEY``
or from ``instance/encryption.key``, created once with mode 0600. Several keys,
one per line (or comma-separated in the config value), decrypt; the first encrypts.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from . import runtime
from .instance_files import read_or_create

KEY_FILE_NAME = "encryption.key"


class UndecryptablePasswordError(Exception):
    """The stored password was encrypted under a key this server does not have."""


def load_keys(config: Mapping[str, Any], instance_path: Path) -> list[str]:
    configured = config.get("SETTINGS_ENCRYPTION_KEY")
    if configured:
        text, source = str(configured).replace(",", "\n"), "SETTINGS_ENCRYPTION_KEY"
    else:
        text = read_or_create(key_file(instance_path), lambda: Fernet.generate_key().decode())
        source = str(key_file(instance_path))
    keys = [line.strip() for line in text.splitlines() if line.strip()]
    for number, key in enumerate(keys, 1):
        try:
            Fernet(key)  # fails at start-up, not at the first save, on a malformed key
        except ValueError:
            raise ValueError(
                f"{source}: key {number} is not a Fernet key (32 url-safe base64-encoded bytes; "
                "as cryptography's Fernet.generate_key() makes)"
            ) from None
    return keys


def key_file(instance_path: Path) -> Path:
    return instance_path / KEY_FILE_NAME


def cipher(config: Mapping[str, Any], instance_path: Path) -> MultiFernet:
    """The configured keys (or the instance's key file, created on first use) as one cipher."""
    return MultiFernet([Fernet(key) for key in load_keys(config, instance_path)])


def _cipher() -> MultiFernet:
    return runtime.current().cipher


def encrypt(password: str) -> str:
    return _cipher().encrypt(password.encode("utf-8")).decode("ascii")


UNDECRYPTABLE = (
    "The stored SMTP password cannot be decrypted with this server's encryption key "
    "(was the database moved without its instance/encryption.key, or the key changed?). "
    "Enter the password again to store it under the current key."
)


def decrypt(token: str) -> str:
    try:
        return _cipher().decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise UndecryptablePasswordError(UNDECRYPTABLE) from None


def decrypts(token: str) -> bool:
    """Whether ``token`` decrypts with this server's keys."""
    try:
        decrypt(token)
    except UndecryptablePasswordError:
        return False
    return True


def rotate(token: str) -> str:
    """The same password encrypted under the first key."""
    try:
        return _cipher().rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken:
        raise UndecryptablePasswordError(UNDECRYPTABLE) from None


def write_key_file(keys: list[str]) -> None:
    """Replace the key file atomically, mode 0600, and use its keys from now on."""
    state = runtime.current()
    path = key_file(state.instance_path)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write("\n".join(keys) + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    state.cipher = cipher(state.config, state.instance_path)


def encrypt_with_passphrase(secret: str, passphrase: str) -> dict[str, str]:
    """Encrypt ``secret`` for an export: a key derived from ``passphrase`` (scrypt), so any
    installation can read it back given the passphrase, and none can without it."""
    salt = os.urandom(16)
    token = Fernet(_passphrase_key(passphrase, salt)).encrypt(secret.encode("utf-8"))
    return {"kdf": "scrypt", "salt": base64.urlsafe_b64encode(salt).decode(), "token": token.decode()}


def decrypt_with_passphrase(sealed: dict[str, str], passphrase: str) -> str:
    try:
        salt = base64.urlsafe_b64decode(sealed["salt"])
        return Fernet(_passphrase_key(passphrase, salt)).decrypt(sealed["token"].encode()).decode("utf-8")
    except (InvalidToken, KeyError, TypeError, ValueError):
        raise UndecryptablePasswordError(
            "The password in the export cannot be decrypted: the passphrase is wrong or the file is damaged."
        ) from None


def _passphrase_key(passphrase: str, salt: bytes) -> bytes:
    key = Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode("utf-8"))
    return base64.urlsafe_b64encode(key)

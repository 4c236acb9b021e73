"""The SMTP password kept outside the database: SMTP_PASSWORD_FILE, read at each use.

A secret store (Docker or Kubernetes secrets, Vault's agent, systemd credentials) mounts the
file; reading it at each use picks up a rotated secret without a restart. Its contents never
appear in a message: every problem names the file and the fix only.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from . import runtime

_MAX_SIZE = 4096
MANAGED_OUTSIDE = "the password comes from SMTP_PASSWORD_FILE, managed outside the application"


class PasswordFileError(Exception):
    """The password file cannot be used; the message says why and what to do (never what it holds)."""


def configured() -> Path | None:
    """The password file of the current app's configuration, if one is set."""
    path = runtime.current().config.get("SMTP_PASSWORD_FILE")
    return Path(path) if path else None


def read(path: Path) -> str:
    """The password in ``path``, without one trailing line ending.

    Raises :class:`PasswordFileError` when the file is missing, unreadable, readable by other
    users than its owner, or empty.
    """
    try:
        # O_NONBLOCK: a FIFO (or a device) put there would hold a plain open until someone writes to it.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise PasswordFileError(f"SMTP_PASSWORD_FILE {path} does not exist.") from None
    except PermissionError:
        raise PasswordFileError(
            f"SMTP_PASSWORD_FILE {path} cannot be read by this process: give its user read access."
        ) from None
    except OSError as error:
        raise PasswordFileError(f"SMTP_PASSWORD_FILE {path} cannot be read: {error.strerror}.") from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise PasswordFileError(f"SMTP_PASSWORD_FILE {path} is not a regular file.")
        content = os.read(descriptor, _MAX_SIZE + 1)
    except OSError as error:
        raise PasswordFileError(f"SMTP_PASSWORD_FILE {path} cannot be read: {error.strerror}.") from None
    finally:
        os.close(descriptor)
    if len(content) > _MAX_SIZE:
        raise PasswordFileError(f"SMTP_PASSWORD_FILE {path} is larger than a password ({_MAX_SIZE} bytes at most).")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PasswordFileError(
            f"SMTP_PASSWORD_FILE {path} can be read by other users (mode {stat.S_IMODE(mode):04o}): make it "
            "readable by its owner only (chmod 600; for a Docker or Kubernetes secret, mode 0400)."
        )
    text = content.decode("utf-8", "replace")
    password = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
    if not password:
        raise PasswordFileError(f"SMTP_PASSWORD_FILE {path} is empty.")
    return password


def problem() -> str | None:
    """Why the configured password file cannot be used now, or None (also when none is set)."""
    path = configured()
    if path is None:
        return None
    try:
        read(path)
    except PasswordFileError as error:
        return str(error)
    return None

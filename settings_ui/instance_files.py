"""Files of the instance folder (database, keys, locks) and exports: readable by the owner only."""

from __future__ import annotations

import os
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO


def read_or_create(path: Path, make: Callable[[], str]) -> str:
    """Return the content of ``path``, creating it with ``make()`` (mode 0600) the first time.

    ``O_EXCL`` makes creation atomic, so two processes starting together agree on one value.
    """
    make_private_folder(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_complete(path)
    with os.fdopen(fd, "w") as file:
        file.write(make() + "\n")
        file.flush()
        os.fsync(file.fileno())
    return path.read_text().strip()


def _read_complete(path: Path) -> str:
    # Another process may have created the file a moment ago and still be writing it.
    for _ in range(50):
        text = path.read_text()
        if text.endswith("\n"):
            return text.strip()
        time.sleep(0.02)
    raise RuntimeError(f"{path} is empty or incomplete; delete it to generate a new one")


def make_private_folder(path: Path) -> None:
    """Create ``path`` (and its parents) readable by the owner only; an existing folder keeps its mode."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def tighten_folder(path: Path) -> None:
    """Make the existing folder ``path`` the owner's only (git makes a clone's instance/ 0755)."""
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o700)


def readable_by_others(path: Path) -> bool:
    """Whether the file ``path`` exists and other users than its owner may read or change it."""
    try:
        return bool(stat.S_IMODE(path.stat().st_mode) & 0o077)
    except FileNotFoundError:
        return False


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists, before another library creates it
    with the default 0644 (SQLite gives its -wal and -shm files the database file's mode)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def open_private(path: Path) -> IO[str]:
    """Open ``path`` for appending, creating it with mode 0600 (for lock files)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a")


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, as a new file renamed over it: a symlink at ``path``
    is replaced, never followed, so whatever it points to is neither overwritten nor opened up."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise

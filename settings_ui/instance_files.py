"""Secrets generated once and kept in the instance folder, readable by the owner only."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def read_or_create(path: Path, make: Callable[[], str]) -> str:
    """Return the content of ``path``, creating it with ``make()`` (mode 0600) the first time.

    ``O_EXCL`` makes creation atomic, so two processes starting together agree on one value.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
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

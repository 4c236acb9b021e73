"""Appending a benchmark's table to bench/RESULTS.md, with the date and the machine."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path


def record(title: str, how: str, table: str) -> None:
    """Append ``table`` under a heading of the date, ``title`` and this machine, with ``how`` it was run."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.node()}, {platform.machine()}, {platform.python_version()}"
    with (Path(__file__).resolve().parent / "RESULTS.md").open("a") as results:
        results.write(f"\n## {stamp} — {title} ({machine})\n\n{how}\n\n```\n{table}\n```\n")

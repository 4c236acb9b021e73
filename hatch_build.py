"""The build's one step of our own: the package's links to templates/, static/ and migrations/.

Those folders stand beside the package in the repository (the design we were given); the package
finds them inside itself (``settings_ui/templates``, ...), one lookup path for the checkout, an
editable install and the wheel. The links are made here, by every build and install, rather than
kept in git; the wheel and the sdist hold the files behind them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

LINKED = ("templates", "static", "migrations")


class LinkResources(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        for name in LINKED:
            link = root / "settings_ui" / name
            if not link.exists() and (root / name).is_dir():  # an sdist holds the files themselves
                link.symlink_to(Path("..") / name)

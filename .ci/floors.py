"""Print pip constraints that pin every direct dependency (and the dev extra's) to the lowest
version pyproject.toml allows, for a run of the suite on those versions."""

import re
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
for requirement in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
    found = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?>=([0-9][^,;\s]*)", requirement.replace(" ", ""))
    if found is None:
        raise SystemExit(f"no lower bound to pin in {requirement!r}")
    print(f"{found.group(1)}=={found.group(2)}")

"""The README's API examples, run in the order shown, against a fresh installation.

Each `curl` call in the README's shell blocks becomes the same request to the app; where the README
shows the answer (`# {...}` right below), the answer must be that JSON. The test email and detect
examples cannot reach smtp.example.com from here: they must get as far as trying, not be refused as
a bad request.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask
from werkzeug.security import generate_password_hash

from .apps import make_app
from .helpers import basic
from .processes import PROJECT
from .screenshots import SCREENSHOT, page_source_digest, stamp_of

ADMIN_EXAMPLE = ("admin", "the password")


@dataclass
class Example:
    args: list[str]
    shown: str  # the answer printed right below it, if any


def readme_examples() -> list[Example]:
    """The curl calls in the README's ```sh blocks, in order, each with the answer shown below it."""
    examples = []
    for block in re.findall(r"```sh\n(.*?)```", (PROJECT / "README.md").read_text(), re.S):
        lines = block.splitlines()
        index = 0
        while index < len(lines):
            if not lines[index].startswith("curl "):
                index += 1
                continue
            command, index = lines[index], index + 1
            while True:  # a command goes on after a backslash, or inside a quoted body
                try:
                    args = shlex.split(command.replace("\\\n", " "))
                    break
                except ValueError:
                    command, index = command + "\n" + lines[index], index + 1
            shown: list[str] = []
            while index < len(lines) and lines[index].startswith("# ") and (shown or lines[index].startswith("# {")):
                shown.append(lines[index][2:])
                index += 1
            examples.append(Example(args, "\n".join(shown)))
    return examples


def request_of(args: list[str]) -> tuple[str, dict[str, str], str, tuple[str, str] | None]:
    url = next(arg for arg in args if arg.startswith("http"))
    headers, body, user = {}, "", None
    for flag, value in itertools.pairwise(args):
        if flag == "-H":
            name, _, content = value.partition(":")
            headers[name] = content.strip()
        elif flag == "-d":
            body = value
        elif flag == "-u":
            name, _, password = value.partition(":")
            user = (name, password)
    return urlsplit(url).path, headers, body, user


def test_the_readme_examples_run_in_order_and_answer_as_shown(tmp_path: Path) -> None:
    app: Flask = make_app(
        tmp_path,
        SMTP_TIMEOUT=3,
        ADMIN_USERNAME=ADMIN_EXAMPLE[0],
        ADMIN_PASSWORD_HASH=generate_password_hash(ADMIN_EXAMPLE[1]),
    )
    client = app.test_client()
    examples = readme_examples()
    paths = [request_of(example.args)[0] for example in examples]
    assert "/email-settings/edit" in paths and "/email-settings/test" in paths, paths
    for example in examples:
        path, headers, body, user = request_of(example.args)
        headers.update(basic(*(user or ADMIN_EXAMPLE)))
        response = client.post(path, data=body, headers=headers)
        answer = response.get_json()
        where = f"README example {shlex.join(example.args)[:120]}"
        if path.endswith("/test"):
            # No real smtp.example.com here: the test must be tried (steps ran), not refused as invalid.
            assert "fields" not in answer.get("error", {}), (where, answer)
            assert answer.get("result", answer.get("error", {})).get("steps"), (where, answer)
            continue
        if path.endswith("/detect"):
            # Likewise: tried, and what happened said (here, that smtp.example.com cannot be found).
            assert response.status_code == 200 and answer["result"]["message"], (where, answer)
            continue
        if example.shown and "..." not in example.shown:
            assert answer == json.loads(example.shown), (where, answer)
        else:
            assert response.status_code == 200, (where, answer)


def test_the_readme_screenshot_was_taken_of_the_page_as_it_is() -> None:
    assert stamp_of(SCREENSHOT.read_bytes()) == page_source_digest(), (
        "docs/screenshot.png shows other templates or styles than these: retake it with "
        "UPDATE_SCREENSHOT=1 make test PYTEST_ARGS='-k screenshot'"
    )

"""What we ship: the wheel built from the repository, installed into a fresh virtual environment
outside the checkout, serving the page and the API and running the console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import post_json
from .smtp_servers import free_port, smtp_server

PROJECT = Path(__file__).resolve().parent.parent

# Files a working tree may hold that must never reach a wheel (GHSA-gj88-cx6q-38r2 shipped keys that way).
STRAY_FILES = [
    "instance/settings.db",
    "instance/secret_key",
    "instance/encryption.key",
    "templates/settings_ui/backup.key",
    "static/cache.sqlite3",
    "migrations/versions/__pycache__/0001_initial_schema.cpython-311.pyc",
    "settings_ui/__pycache__/rules.cpython-311.pyc",
    "settings_ui/settings.db",
    "settings_ui/server.pem",
    ".env",
]

# Where the package finds what stands beside it in the repository.
_LINKED = ("templates/", "static/", "migrations/")


def _tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT, capture_output=True, check=True)
    return [name for name in listed.stdout.decode().split("\0") if name]


def _shipped(tracked: list[str]) -> set[str]:
    """The package's files as an installed wheel holds them."""
    expected = set()
    for name in tracked:
        if not (PROJECT / name).is_file():
            continue
        if name.startswith("settings_ui/"):
            expected.add(name)
        elif name.startswith(_LINKED):
            expected.add(f"settings_ui/{name}")
    return expected


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A copy of the tracked tree (without the package's links, which the build makes) that also holds
    stray files; and the tracked names."""
    tree = tmp_path_factory.mktemp("tree")
    tracked = _tracked_files()
    for name in tracked:
        source, target = PROJECT / name, tree / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_file():
            shutil.copy2(source, target)
    for name in STRAY_FILES:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("not to be shipped\n")
    return tree, tracked


def _wheel_from(source: Path, out: Path) -> Path:
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)]
    subprocess.run(command, check=True, capture_output=True)
    (wheel,) = out.glob("settings_ui-*.whl")
    return wheel


def _package_files(wheel: Path) -> set[str]:
    return {name for name in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in name}


@pytest.fixture(scope="module")
def built(tree: tuple[Path, list[str]], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The wheel built from that tree; and the tracked names."""
    return _wheel_from(tree[0], tmp_path_factory.mktemp("dist")), tree[1]


def test_the_wheel_holds_the_whole_package_and_nothing_the_repository_does_not_track(
    built: tuple[Path, list[str]],
) -> None:
    wheel, tracked = built
    names = _package_files(wheel)
    expected = _shipped(tracked)
    assert "settings_ui/templates/settings_ui/settings.html" in expected
    assert "settings_ui/migrations/versions/0001_initial_schema.py" in expected
    assert "settings_ui/py.typed" in expected
    assert names == expected


def test_the_sdist_holds_the_package_and_builds_the_same_wheel(tree: tuple[Path, list[str]], tmp_path: Path) -> None:
    command = [sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path / "sdist"), str(tree[0])]
    subprocess.run(command, check=True, capture_output=True)
    (sdist,) = (tmp_path / "sdist").glob("settings_ui-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        archive.extractall(tmp_path / "unpacked", filter="data")
    assert {name for name in names if name.startswith("settings_ui/")} == _shipped(tree[1])
    assert {"README.md", "pyproject.toml", "PKG-INFO"} <= names
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    assert _package_files(_wheel_from(unpacked, tmp_path / "dist")) == _shipped(tree[1])


@pytest.fixture(scope="module")
def installed(built: tuple[Path, list[str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel (and its dependencies) installed: its bin folder."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(built[0])],
        check=True,
        capture_output=True,
    )
    return venv / "bin"


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An unrelated working folder and an environment that names only an instance folder."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SETTINGS_UI_", "PYTHON"))}
    env["SETTINGS_UI_INSTANCE_PATH"] = str(tmp_path / "instance")
    yield {"cwd": str(folder), **env}


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.status, answer.read().decode()


def test_the_installed_wheel_serves_the_page_and_api_and_sends_with_its_console_script(
    installed: Path, elsewhere: dict[str, str]
) -> None:
    cwd = elsewhere.pop("cwd")
    port = free_port()
    server = subprocess.Popen(
        [str(installed / "gunicorn"), "-b", f"127.0.0.1:{port}", "settings_ui:create_app()"],
        cwd=cwd,
        env=elsewhere,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            try:
                status, _ = _get(f"{url}/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline, "the installed app did not start"
                time.sleep(0.1)
        status, html = _get(url + "/")
        assert status == 200
        assert 'name="smtp_host"' in html and "/static/style.css" in html
        assert _get(url + "/static/style.css")[0] == 200

        with smtp_server() as (smtp_port, received):
            params = {"smtp_host": "127.0.0.1", "smtp_port": smtp_port, "encryption": "Plain"}
            status, answer = post_json(f"{url}/email-settings/edit", {"params": {**params, "from_email": "app@x.test"}})
            assert status == 200, answer
            message = b"To: admin@example.com\nSubject: from the wheel\n\nIt works.\n"
            sent = subprocess.run(
                [str(installed / "settings-ui-sendmail"), "-t"],
                input=message,
                cwd=cwd,
                env=elsewhere,
                capture_output=True,
                timeout=60,
            )
            assert sent.returncode == 0, sent.stderr.decode()
            assert [(mail.rcpt_tos, mail.message["Subject"]) for mail in received.received] == [
                (["admin@example.com"], "from the wheel")
            ]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_installed_sendmail_finds_the_instance_folder_where_the_installed_app_does(
    installed: Path, elsewhere: dict[str, str]
) -> None:
    cwd = elsewhere.pop("cwd")
    del elsewhere["SETTINGS_UI_INSTANCE_PATH"]
    compare = (
        "import flask; from pathlib import Path; from settings_ui import runtime; "
        "print(runtime.instance_folder(), Path(flask.Flask('settings_ui').instance_path))"
    )
    found = subprocess.run(
        [str(installed / "python"), "-c", compare], cwd=cwd, env=elsewhere, capture_output=True, text=True, check=True
    )
    ours, flasks = found.stdout.split()
    assert ours == flasks and ours.endswith("/var/settings_ui-instance")

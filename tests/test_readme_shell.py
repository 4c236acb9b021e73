"""The README's shell blocks, run in the order shown, as a newcomer would copy them.

Every ```sh block is run here, is the API examples' block (tests/test_readme.py runs those), or is
listed in NOT_RUN_HERE with the reason and the test that covers it instead. A command passes when
it exits 0; one that talks to the mail server may also end with the exit status it documents for
"not delivered" (smtp.example.com cannot be reached from here), as long as it was tried, not refused.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from .processes import PROJECT

# A block is named by its first line.
NOT_RUN_HERE = {
    "make run     # sets itself up": "serves until stopped: test_serving_and_cli starts the app as `python app.py`",
    "make run    # creates .venv": "`make test` is what runs this test; `make run` is `python app.py` (above)",
    ".venv/bin/pip install flask-sqlalchemy flask-mail": "the product example: tests/test_product.py runs it",
    ".venv/bin/pip wheel --no-deps": "tests/test_wheel.py builds, installs and runs the wheel",
    ".venv/bin/gunicorn app:app": "serves until stopped: test_serving_and_cli runs gunicorn with gunicorn.conf.py",
    "apt-get install nginx": "needs root and systemd: tests/test_nginx.py runs nginx with this configuration",
    "apt-get install wrk": "the benchmark, which is not a test (see Benchmark)",
}
API_EXAMPLES = "\ncurl "  # a block with curl calls: tests/test_readme.py runs those
PASSPHRASE = "a passphrase of the README test"
# What a command that talks to the mail server exits with when the mail did not get through.
NOT_DELIVERED = {"test": {1}, "detect": {1}, "sendmail": {69, 75, 78}}
# Words of a refusal, as opposed to an attempt that the network stopped.
REFUSED = ("must be given again", "Usage:", "No such option", "not both", "Error: Invalid")


def shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", (PROJECT / "README.md").read_text(), re.S)


def commands_of(block: str) -> list[str]:
    """The block's commands: continued lines joined, comment-only lines left out."""
    commands: list[str] = []
    continued = False
    for line in block.splitlines():
        if continued:
            commands[-1] += "\n" + line
        elif line.strip() and not line.lstrip().startswith("#"):
            commands.append(line)
        continued = line.rstrip().endswith("\\")
    return commands


def test_every_shell_block_is_run_or_says_which_test_covers_it() -> None:
    firsts = [block.splitlines()[0] for block in shell_blocks()]
    for reason_for in NOT_RUN_HERE:
        assert any(first.startswith(reason_for) for first in firsts), f"no README block starts {reason_for!r}"
    run = [block for block in shell_blocks() if _runs_here(block)]
    assert any("email-settings edit" in block for block in run) and any("sendmail" in block for block in run)


def _runs_here(block: str) -> bool:
    first = block.splitlines()[0]
    return API_EXAMPLES not in "\n" + block and not any(first.startswith(name) for name in NOT_RUN_HERE)


def _verdict(command: str, status: int, output: str) -> str | None:
    """What is wrong with this outcome, or None."""
    if status == 0:
        return None
    talks_to_the_server = re.search(r"email-settings (test|detect|sendmail)\b|settings-ui-sendmail", command)
    if talks_to_the_server:
        kind = "sendmail" if "sendmail" in talks_to_the_server.group(0) else talks_to_the_server.group(1)
        if status in NOT_DELIVERED[kind] and not any(word in output for word in REFUSED):
            return None
    return f"exit {status}"


def test_the_readme_shell_blocks_run_in_order(tmp_path: Path) -> None:
    for name in (".venv", "app.py"):
        (tmp_path / name).symlink_to(PROJECT / name)
    (tmp_path / "password.txt").write_text("the-readme-password\n")
    (tmp_path / "secret.txt").write_text("the-readme-client-secret\n")
    (tmp_path / "answers.txt").write_text((PASSPHRASE + "\n") * 2)
    (tmp_path / "message.eml").write_text(
        "From: noreply@example.com\nTo: alice@example.net\nSubject: README\n\nHello from the README.\n"
    )
    # Each block in a shell of its own, as in a new terminal: what it exports ends with it.
    script, commands = [], []
    for block in filter(_runs_here, shell_blocks()):
        script.append("(")
        for command in commands_of(block):
            number = len(commands)
            commands.append(command)
            # A command answers its prompts (passphrases, the admin password) from answers.txt.
            script += [f"echo '@@begin {number}'", "{", command, "} < answers.txt 2>&1", f'echo "@@end {number} $?"']
        script.append(")")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SETTINGS_UI_")}
    environment |= {"SETTINGS_UI_INSTANCE_PATH": str(tmp_path / "instance"), "SETTINGS_UI_SMTP_TIMEOUT": "3"}
    finished = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    outcomes = re.findall(r"@@begin (\d+)\n(.*?)@@end \1 (\d+)\n", finished.stdout, re.S)
    assert len(outcomes) == len(commands), finished.stdout[-2000:] + finished.stderr[-2000:]
    problems = []
    for (_, output, status), command in zip(outcomes, commands, strict=True):
        verdict = _verdict(command, int(status), output)
        if verdict:
            problems.append(f"{command}\n  -> {verdict}: {output.strip()[-600:]}")
    assert problems == []
    # The exports were written, the one holding the password encrypted and readable by its owner only.
    assert (tmp_path / "settings.json").exists() and (
        tmp_path / "settings-with-password.json"
    ).stat().st_mode & 0o077 == 0
    assert "the-readme-password" not in finished.stdout

"""The README says what is true of this repository: the test command is the one CI runs, every file it
names is here, and the quickstart defines what its commands use."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
MADE_BY_COMMANDS = {"tests/compat/js/node_modules"}  # npm ci makes it, as the README says


def _bash_block_after(heading_text: str) -> str:
    after = README.split(heading_text, 1)[1]
    return re.search(r"```bash\n(.*?)```", after, re.S).group(1).strip()


def _joined(script: str) -> list[str]:
    """A shell script's commands, one per line: continued lines joined, spaces squeezed."""
    return [" ".join(line.split()) for line in re.sub(r"\\\n", " ", script).splitlines()]


def test_the_test_command_is_the_one_ci_runs():
    command = _joined(_bash_block_after("Install everything and run the whole test suite"))
    assert len(command) == 1, command
    assert command[0] in _joined((ROOT / ".ci" / "run").read_text())


def test_the_stated_prerequisites_cover_what_ci_installs():
    ci = (ROOT / ".ci" / "run").read_text()
    prerequisites = README.split("The tests need", 1)[1].split("\n\n", 1)[0]
    for package in ("redis-server", "chromium"):
        assert package in ci and package in prerequisites, package


def test_every_file_named_is_in_the_repository():
    links = [target for target in re.findall(r"\]\(([^)#]+)\)", README) if not re.match(r"\w+://", target)]
    named = re.findall(r"`((?:tests|fastpush|benches|docs|examples|tools)/[^`\s*{]*)`", README)
    assert links and named
    missing = [path for path in links + named if path.rstrip("/") not in MADE_BY_COMMANDS
               and not (ROOT / path.rstrip("/")).exists()]
    assert missing == []


def test_the_quickstart_defines_cs_before_using_it():
    quickstart = README.split("## Quickstart with the official SDKs", 1)[1].split("\n## ", 1)[0]
    assert 'cs="Endpoint=' in quickstart
    assert quickstart.index('cs="Endpoint=') < quickstart.index('"$cs"')

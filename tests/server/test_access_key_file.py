"""`fastpush serve --access-key-file PATH`: the key survives restarts, the file it makes is 0600, the
key never shows on a command line, and a key given two ways is a one-line startup error."""
from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from fastpush import keyfile
from fastpush.startup import StartupError
from tests.cli_process import ServeProcess, run_fastpush

KEY_VARIABLE = "FASTPUSH_ACCESS_KEY"


@pytest.fixture(autouse=True)
def _no_key_in_the_environment(monkeypatch):
    monkeypatch.delenv(KEY_VARIABLE, raising=False)


def key_of(server: ServeProcess) -> str:
    fields = dict(part.split("=", 1) for part in server.connection_string.split(";") if part)
    return fields["AccessKey"]


def serve_once(*args: str, preexec=None) -> str:
    """Start `fastpush serve ARGS`, stop it cleanly, and return the key it served with."""
    server = ServeProcess(*args, preexec=preexec)
    try:
        return key_of(server)
    finally:
        assert server.stop(signal.SIGTERM) == 0


def refused(*args: str, env: dict[str, str] | None = None) -> str:
    """The one line a `fastpush serve` that must not start prints, checked: exit code 2, no traceback."""
    result = run_fastpush("serve", "--port", "0", *args, env=env)
    lines = result.stderr.splitlines()
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("fastpush: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def test_a_generated_key_is_written_0600_and_kept_across_restarts(tmp_path):
    path = tmp_path / "keys" / "access-key"  # a directory that does not exist yet, too
    # umask 0: the file must still be readable by its owner only
    first = serve_once("--access-key-file", str(path), preexec=lambda: os.umask(0))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == first + "\n"
    assert len(first) == 44  # the shape of Azure's keys
    second = serve_once("--access-key-file", str(path))
    assert second == first
    assert [p.name for p in path.parent.iterdir()] == ["access-key"]  # no temporary file left behind


def test_a_key_written_by_the_operator_is_used_as_it_is(tmp_path):
    path = tmp_path / "access-key"
    path.write_text("operator-chosen-key-0123456789\n")
    path.chmod(0o640)
    assert serve_once("--access-key-file", str(path)) == "operator-chosen-key-0123456789"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # an existing file is only read
    assert path.read_text() == "operator-chosen-key-0123456789\n"


def test_the_key_is_not_on_any_command_line(tmp_path, redis_server):
    """Neither a single server nor a worker cluster (whose workers get the key from the parent)."""
    path = tmp_path / "access-key"
    server = ServeProcess("--workers", "2", "--redis-url", redis_server.url, "--access-key-file", str(path))
    try:
        key = key_of(server)
        assert path.read_text() == key + "\n"
        pids = [server.proc.pid, *_children(server.proc.pid)]
        assert len(pids) == 3
        for pid in pids:
            assert key.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        sent = run_fastpush("send", "--hub", "keys", "hello",
                            env={"FASTPUSH_CONNECTION_STRING": server.connection_string})
        assert (sent.returncode, sent.stderr) == (0, "")
    finally:
        assert server.stop(signal.SIGTERM) == 0


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_key_in_the_file_and_in_the_environment_is_refused(tmp_path):
    path = tmp_path / "access-key"
    line = refused("--access-key-file", str(path), env={KEY_VARIABLE: "another-key"})
    assert "--access-key-file" in line and f"${KEY_VARIABLE}" in line
    assert not path.exists()  # refused before anything is written


def test_a_key_in_the_file_and_on_the_command_line_is_refused(tmp_path):
    path = tmp_path / "access-key"
    line = refused("--access-key-file", str(path), "--access-key", "another-key")
    assert "--access-key-file" in line and "--access-key:" in line
    assert not path.exists()


@pytest.mark.parametrize(("content", "words"), [("", ["is empty"]), ("\n  \n", ["is empty"]),
                                                ("one\ntwo\n", ["more than one line"])])
def test_a_file_without_one_key_is_refused(tmp_path, content, words):
    path = tmp_path / "access-key"
    path.write_text(content)
    line = refused("--access-key-file", str(path))
    assert str(path) in line
    for word in words:
        assert word in line


def test_a_path_that_cannot_be_read_is_refused(tmp_path):
    assert "cannot read --access-key-file" in refused("--access-key-file", str(tmp_path))  # a directory
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = refused("--access-key-file", str(blocker / "access-key"))
    assert f"cannot read --access-key-file {blocker / 'access-key'}: Not a directory" in line
    assert blocker.read_text() == ""


def test_a_file_made_meanwhile_by_another_process_wins(tmp_path, monkeypatch):
    path = tmp_path / "access-key"

    def someone_else_first(target: Path, key: str) -> None:
        target.write_text("the-other-process-key\n")
        raise FileExistsError(target)
    monkeypatch.setattr(keyfile, "_create", someone_else_first)
    assert keyfile.read_or_create_access_key(path) == ("the-other-process-key", False)


def test_a_key_that_cannot_be_written_is_a_startup_error(tmp_path, monkeypatch):
    def refuse(*args: object) -> None:
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(keyfile.os, "link", refuse)
    path = tmp_path / "access-key"
    with pytest.raises(StartupError, match=r"cannot write a new access key to --access-key-file .*: Permission denied"):
        keyfile.read_or_create_access_key(path)
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too

"""`fastpush serve --help` is enough on its own: it names every environment variable fastpush reads
and every key of the config file, and points at no Python module."""
from __future__ import annotations

import re
import textwrap

import msgspec
import pytest

from fastpush.config import Config, load_config
from tests.cli_process import REPO, run_fastpush


@pytest.fixture(scope="module")
def serve_help() -> str:
    result = run_fastpush("serve", "--help", timeout=30)
    assert (result.returncode, result.stderr) == (0, "")
    return result.stdout


def _variables_read() -> set[str]:
    """Every FASTPUSH_* name in the package's source (the variables it reads, or sets for its workers)."""
    return {name for path in (REPO / "fastpush").rglob("*.py")
            for name in re.findall(r"\bFASTPUSH_[A-Z_]+\b", path.read_text())}


def _config_keys(struct: type = Config) -> set[str]:
    """Every key the config file may hold, at every level, as written in the file."""
    keys: set[str] = set()
    for field in msgspec.structs.fields(struct):
        keys.add(field.encode_name)
        for inner in _structs_in(field.type):
            keys |= _config_keys(inner)
    return keys


def _structs_in(annotation: object) -> list[type]:
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return [annotation]
    return [struct for argument in getattr(annotation, "__args__", ()) for struct in _structs_in(argument)]


def test_every_environment_variable_is_explained(serve_help):
    variables = _variables_read()
    assert {"FASTPUSH_ACCESS_KEY", "FASTPUSH_SECONDARY_KEY", "FASTPUSH_REDIS_URL", "FASTPUSH_NO_EXTENSIONS",
            "FASTPUSH_CONNECTION_STRING"} <= variables
    environment = serve_help.split("\nenvironment:\n", 1)[1].split("\nconfig file (", 1)[0]
    assert [name for name in sorted(variables) if name not in environment] == []


def test_every_config_key_is_shown(serve_help):
    keys = _config_keys()
    assert {"hubs", "eventHandlers", "urlTemplate", "userEventPattern", "systemEvents", "anonymousConnectPolicy",
            "upstreamTimeoutSeconds", "redisUrl"} <= keys
    config = _config_example(serve_help)
    assert [key for key in sorted(keys) if key not in config] == []


def test_help_points_at_no_python_module(serve_help):
    assert re.findall(r"\bfastpush\.[a-z_]+\b|\b[a-z_/]+\.py\b", serve_help) == []
    assert "docs/operations.md" in serve_help  # by name: the help does not assume a checkout


def _config_example(serve_help: str) -> str:
    """The config file lines of the help, from its heading to the line that points at the docs."""
    section = serve_help.split("\nconfig file (--config FILE", 1)[1].split("\nMore in ", 1)[0]
    return textwrap.dedent(section.split("\n", 1)[1])


def test_the_config_shown_in_the_help_is_a_valid_config_file(serve_help, tmp_path):
    """Copied as it is, the help's example is a file --config accepts."""
    path = tmp_path / "hubs.toml"
    path.write_text(_config_example(serve_help))
    config = load_config(path)
    assert config.redis_url == "redis://127.0.0.1:6379"
    handler = config.hubs["chat"].event_handlers[0]
    assert handler.url_template == "http://127.0.0.1:3000/api/webpubsub/hubs/{hub}/{event}"
    assert handler.system_events == ["connect", "connected", "disconnected"]

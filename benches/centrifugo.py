"""Centrifugo, the Go push server the benchmarks compare with: where its binary is, building it when Go
is here, its configuration and the connect command its clients send.

The binary is `$CENTRIFUGO` if set, else `centrifugo` on PATH, else Go's install directory; it must be
VERSION. When it is missing and `go` is on PATH, `go install` builds it (a few minutes, once); without
Go the row is skipped with a note saying so.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["PACKAGE", "VERSION", "binary", "config", "connect_command", "find_or_build"]

VERSION = "6.9.1"
PACKAGE = f"github.com/centrifugal/centrifugo/v6@v{VERSION}"
BUILD_TIMEOUT = 1800
PATH_SUFFIX = "/connection/websocket"


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def _is_version(path: str) -> bool:
    """A release binary says its version; one built by `go install` says v0.0.0 (the version is set at
    release time), but Go's build information names the module version it was built from."""
    if f"v{VERSION}" in _output([path, "version"]):
        return True
    built = _output(["go", "version", "-m", path]) if shutil.which("go") else ""
    return any(line.split()[:3] == ["mod", "github.com/centrifugal/centrifugo/v6", f"v{VERSION}"]
               for line in built.splitlines())


def _go_bin_dir() -> Path | None:
    if shutil.which("go") is None:
        return None
    done = subprocess.run(["go", "env", "GOBIN", "GOPATH"], check=False, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return None
    gobin, gopath = [*done.stdout.splitlines(), "", ""][:2]
    if gobin:
        return Path(gobin)
    return Path(gopath.split(os.pathsep)[0]) / "bin" if gopath else None


def binary() -> str | None:
    """A Centrifugo VERSION binary already here, or None."""
    candidates = [os.environ.get("CENTRIFUGO"), shutil.which("centrifugo")]
    go_bin = _go_bin_dir()
    if go_bin is not None:
        candidates.append(str(go_bin / "centrifugo"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and _is_version(candidate):
            return candidate
    return None


def find_or_build(build: bool) -> tuple[str | None, str | None]:
    """(path to the binary, None), or (None, why the Centrifugo row is skipped). Builds it with `go install`
    when `build` is true, it is missing and Go is here."""
    found = binary()
    if found:
        return found, None
    if shutil.which("go") is None:
        return None, (f"Centrifugo v{VERSION} is not installed and Go is not on PATH to build it "
                      f"(`go install {PACKAGE}`, or set CENTRIFUGO to a v{VERSION} binary)")
    if not build:
        return None, f"Centrifugo v{VERSION} is not built; a full run builds it (`go install {PACKAGE}`)"
    print(f"building Centrifugo v{VERSION}: go install {PACKAGE} (once; it takes minutes)", flush=True)
    try:
        done = subprocess.run(["go", "install", PACKAGE], check=False, capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, f"`go install {PACKAGE}` did not finish within {BUILD_TIMEOUT} s"
    if done.returncode != 0:
        return None, f"`go install {PACKAGE}` failed: {done.stderr.strip()[-300:]}"
    found = binary()
    return (found, None) if found else (None, f"`go install {PACKAGE}` succeeded but no v{VERSION} binary was found")


def config(port: int) -> dict:
    """Clients connect without a token (anonymous) and may subscribe and publish to any channel without a
    namespace; history and presence stay off (the defaults), as do usage statistics; only warnings are
    logged."""
    allowed = {f"allow_{action}_for_{who}": True
               for action in ("subscribe", "publish") for who in ("client", "anonymous")}
    return {"log": {"level": "warn"}, "usage_stats": {"disabled": True},
            "http_server": {"address": "127.0.0.1", "port": port},
            "client": {"allow_anonymous_connect_without_token": True},
            "channel": {"without_namespace": allowed}}


def connect_command(channels: list[str]) -> str:
    """A client's first command: connect, subscribing to `channels` in the same round trip."""
    return json.dumps({"id": 1, "connect": {"subs": {channel: {} for channel in channels}}}, separators=(",", ":"))

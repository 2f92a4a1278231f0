"""Machine and software versions, recorded with every result so a figure can be traced to its setup."""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import resource
import subprocess

from .servers import PEERS_DIR, ROOT

__all__ = ["machine", "versions"]

_PACKAGES = ("fastpush", "picows", "uvloop", "websockets", "msgspec", "httptools", "matplotlib")


def machine() -> dict:
    return {"platform": platform.platform(), "cpu": _cpu_model(), "cpus": os.cpu_count(),
            "memory_bytes": _mem_total(), "open_files_limit": _open_files_limit()}


def versions() -> dict:
    found: dict[str, object] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    found["node"] = _run(["node", "--version"])
    found["ws"] = _node_package_version("ws")
    found["git_commit"] = _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    found["git_dirty"] = bool(_run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]))
    return found


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        return None


def _mem_total() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        return None


def _open_files_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def _run(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _node_package_version(name: str) -> str | None:
    try:
        return json.loads((PEERS_DIR / "node_modules" / name / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None

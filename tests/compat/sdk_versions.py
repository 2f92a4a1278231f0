"""Which versions of each Azure SDK the compatibility tests run on, read from where each is pinned.

A scenario is written once and takes the version as a parameter (test ids such as
`[js-server-1.1.4]`), so adding a version is a pin, never a new test:

- npm packages: every entry of tests/compat/js/package.json for the package, under its own name
  or as an npm alias (`"@azure/web-pubsub-1.1.4": "npm:@azure/web-pubsub@1.1.4"`); `npm install`
  then updates package-lock.json, which CI installs with `npm ci`.
- the Python server SDK: the version pyproject.toml's `test` extra installs, plus each of
  PYTHON_SERVER_OLDER, which `python3 -m tests.compat.install_sdks` (run by .ci/run) installs with its
  dependencies into a directory of its own under .compat-sdks/ (`pip install --target`);
  those are driven in a subprocess with that directory first on PYTHONPATH.
- the Java server SDK: JAVA_SERVER_VERSIONS, passed to Maven as `-Dwebpubsub.version=`.

The server SDKs' older versions run on the compiled fan-out's pass only (FASTPUSH_NO_EXTENSIONS unset):
what they exercise is the SDK's REST calls and tokens, which the pure-Python twin does not change, and
the suite runs twice. Both client SDK generations run on both passes (the twin frames what they get).
"""
from __future__ import annotations

import json
import os
from importlib.metadata import version as installed_version
from pathlib import Path

COMPAT_DIR = Path(__file__).parent
JS_DIR = COMPAT_DIR / "js"
#: git-ignored; outside tests/ so that neither pytest nor ruff reads the installed packages
PYTHON_SDKS_DIR = COMPAT_DIR.parent.parent / ".compat-sdks"
PYTHON_SERVER_DISTRIBUTION = "azure-messaging-webpubsubservice"

#: older releases of azure-messaging-webpubsubservice (1.2.2: the last before 1.3.0)
PYTHON_SERVER_OLDER = ("1.2.2",)
#: the seed's version (its quickstart pins 1.0.0) and the newest release on Maven Central
JAVA_SERVER_VERSIONS = ("1.0.0", "1.4.0")


def newest_only() -> bool:
    """On the pure-Python twin's pass each server SDK runs at its newest version only."""
    return os.environ.get("FASTPUSH_NO_EXTENSIONS") == "1"


def npm_packages(package: str) -> dict[str, str]:
    """{version: installed package name} for each pin of `package` in js/package.json, the plain
    entry first (the one the seed's code imports)."""
    dependencies = json.loads((JS_DIR / "package.json").read_text())["dependencies"]
    packages = {dependencies[package]: package} if package in dependencies else {}
    for name, spec in dependencies.items():
        if spec.startswith(f"npm:{package}@"):
            packages.setdefault(spec.rpartition("@")[2], name)
    return packages


def js_server_packages() -> dict[str, str]:
    """@azure/web-pubsub versions to test: all pinned ones, or only the plain entry on the twin's pass."""
    packages = npm_packages("@azure/web-pubsub")
    return dict(list(packages.items())[:1]) if newest_only() else packages


def python_server_sdk_dir(version: str) -> Path:
    return PYTHON_SDKS_DIR / f"{PYTHON_SERVER_DISTRIBUTION}-{version}"


def python_server_versions() -> dict[str, Path | None]:
    """{version: directory to put first on PYTHONPATH, None for the one installed in this environment}."""
    versions: dict[str, Path | None] = {installed_version(PYTHON_SERVER_DISTRIBUTION): None}
    if not newest_only():
        versions.update((version, python_server_sdk_dir(version)) for version in PYTHON_SERVER_OLDER)
    return versions


def java_server_versions() -> tuple[str, ...]:
    return JAVA_SERVER_VERSIONS[-1:] if newest_only() else JAVA_SERVER_VERSIONS

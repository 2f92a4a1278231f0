"""Install the older Python server SDK versions the compatibility tests run on (tests/compat/sdk_versions.py),
each with its own dependencies into a directory of its own, beside (never over) the environment's version.

    python3 -m tests.compat.install_sdks

Run by .ci/run; a directory already there is kept (delete it to reinstall).
"""
from __future__ import annotations

import subprocess
import sys

from tests.compat.sdk_versions import PYTHON_SERVER_DISTRIBUTION, PYTHON_SERVER_OLDER, python_server_sdk_dir


def main() -> None:
    for version in PYTHON_SERVER_OLDER:
        target = python_server_sdk_dir(version)
        if target.is_dir():
            continue
        partial = target.with_name(target.name + ".partial")  # never leave a half install under the real name
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-compile", "--target", str(partial), f"{PYTHON_SERVER_DISTRIBUTION}=={version}"],
                       check=True)
        partial.rename(target)


if __name__ == "__main__":
    main()

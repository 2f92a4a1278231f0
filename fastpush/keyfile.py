"""`fastpush serve --access-key-file PATH`: the primary access key kept in a file, so a restart keeps
the key the application servers have, and the key never appears on a command line (`ps`).

The file holds the key on one line. If it does not exist, a new key is generated and written to it
with mode 0600, all at once: a temporary file in the same directory, then a hard link to the name,
which fails if another process made the file first (then that process's key is read).
"""
from __future__ import annotations

import os
from pathlib import Path

from .auth.tokens import generate_access_key
from .startup import StartupError, reason

__all__ = ["read_or_create_access_key"]

FLAG = "--access-key-file"


def read_or_create_access_key(path: Path) -> tuple[str, bool]:
    """The key in path, and whether it was generated now; StartupError if the file cannot be read,
    holds no key or more than one line, or cannot be created."""
    try:
        return _read(path), False
    except FileNotFoundError:
        pass
    key = generate_access_key()
    try:
        _create(path, key)
    except FileExistsError:  # made by another process meanwhile (or a link to nothing): read what is there
        try:
            return _read(path), False
        except FileNotFoundError as exc:
            raise StartupError(f"cannot read {FLAG} {path}: {reason(exc)}") from None
    except OSError as exc:
        raise StartupError(f"cannot write a new access key to {FLAG} {path}: {reason(exc)}") from None
    return key, True


def _read(path: Path) -> str:
    """The one key the file holds; FileNotFoundError if there is no file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"cannot read {FLAG} {path}: {reason(exc)}") from None
    lines = text.strip().splitlines()
    if not lines:
        raise StartupError(f"{FLAG} {path} is empty: put the key on its one line, or delete the file to have "
                           f"one generated")
    if len(lines) > 1:
        raise StartupError(f"{FLAG} {path} holds more than one line: it must hold the access key alone")
    return lines[0].strip()


def _create(path: Path, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o600)  # whatever the umask
            file.write(key + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)

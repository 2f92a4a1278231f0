"""The page's files (HTML, CSS, JavaScript modules), shipped in the package as package data and
read once: the dashboard works offline and loads nothing from anywhere else."""
from __future__ import annotations

from importlib import resources
from typing import Final

__all__ = ["StaticFiles"]

_TYPES: Final = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


class StaticFiles:
    """File name -> (bytes, content type), for the files of fastpush/dashboard/static."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[bytes, str]] = {}
        for entry in resources.files(__package__).joinpath("static").iterdir():
            suffix = "." + entry.name.rpartition(".")[2]
            if entry.is_file() and suffix in _TYPES:
                self._files[entry.name] = (entry.read_bytes(), _TYPES[suffix])

    def get(self, name: str) -> tuple[bytes, str] | None:
        return self._files.get(name)

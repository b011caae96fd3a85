"""The SHA-256 of a run's input, as manifests record it: a file's bytes, or a folder's files (each
one's path relative to the folder and its bytes, in sorted order), so a rerun on changed data is
told apart from a resume on the same data."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of the file ``path``, or of the folder ``path``'s files (relative path, a NUL,
    the bytes, a NUL; sorted by path)."""
    root, digest = Path(path), hashlib.sha256()
    if root.is_file():
        digest.update(root.read_bytes())
        return digest.hexdigest()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()

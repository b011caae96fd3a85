"""Atomic replacement of a file or folder, and a full disk named as one.

Every file a run keeps is written under a temporary name beside its place and renamed into it
(``os.replace`` is atomic on POSIX), so a killed writer leaves the old version or the new one,
never half of one; the temporary is removed when the write fails. Writers below this (parquet,
``torch.save``, safetensors) report a full disk in their own words (pyarrow's "Error writing bytes",
torch's "unexpected pos 7488 vs 7382") and without the file: a failed write on a filesystem left
with less than ``FULL_BELOW`` bytes free is raised again as ``OSError(ENOSPC)`` naming the path.
Imports nothing heavy: the result store and the checkpoint savers both use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

FULL_BELOW = 1 << 20  # bytes: a write that failed with less than this free ran out of space
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or the user's quota on it


def out_of_space(error: BaseException) -> bool:
    """``error`` is a write that found no space (a full disk or a spent quota)."""
    return isinstance(error, OSError) and error.errno in NO_SPACE


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def replaced(path: str | os.PathLike, folder: bool = False):
    """Yield a temporary path beside ``path`` (an empty folder if ``folder``) for the block to write;
    rename it over ``path`` when the block ends. Any failure removes the temporary; an ``OSError`` or
    a failed write on a full disk is raised as ``OSError`` naming ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if folder:
            tmp = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        else:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, (0o777 if folder else 0o666) & ~_UMASK)  # mkstemp/mkdtemp are owner-only
        if folder and path.is_dir():
            shutil.rmtree(path)  # a folder cannot be renamed over a non-empty one
        os.replace(tmp, path)
    except OSError as err:
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err
    except Exception as err:
        if _full(path.parent):
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({err})", str(path)) from err
        raise
    finally:
        if tmp is not None and os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True) if os.path.isdir(tmp) else os.unlink(tmp)


def _full(folder: Path) -> bool:
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < FULL_BELOW

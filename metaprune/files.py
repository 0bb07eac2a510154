"""Atomic writes: a file or folder appears whole at its path, or not at all.

Everything that must never be seen half-written (a model folder, a ticket file, a store being created, the
units and tables of an evaluation) is written to a temporary sibling of its path (a dot name, in the same
folder so the rename stays on one file system) and renamed into place once complete. A failure or an
interruption removes the temporary sibling and leaves whatever was at the path untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, *, folder: bool = False, tag: str = "partial") -> Iterator[Path]:
    """A temporary file (or, with ``folder``, an empty folder) beside ``path`` for the block to write.

    When the block ends without an error the temporary is renamed onto ``path``: a file replaces a file
    (``os.replace``); a folder replaces an existing folder by setting it aside first, then removing it.
    When the block raises, the temporary is removed and ``path`` is as it was. Its name is
    ``.<name>.<tag>-<random>`` (``tag`` lets a caller find the leftovers of a killed process).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.{tag}-"
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        _commit(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def _commit(tmp: Path, path: Path) -> None:
    if not (tmp.is_dir() and path.exists()):
        os.replace(tmp, path)
        return
    aside = path.with_name(f".{path.name}.old-{os.getpid()}")
    remove(aside)
    path.rename(aside)
    tmp.rename(path)
    remove(aside)


def remove(path: Path) -> None:
    """Remove a file or folder if it is there (a temporary, or an old copy set aside)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())

"""Atomic writes (a file or folder appears whole at its path, or not at all), and the check that an output
folder can be written, made before any work.

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

from metaprune.errors import MetapruneError, RuntimeFailure


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


def _may_write(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def check_folder_writable(folder: str | Path, what: str, option: str) -> Path:
    """Refuse, before any work, an output folder that cannot be written or created: one line naming it and
    what is needed. A file in its way is a bad argument (exit 2); no write permission on the folder, or on
    the folder it would be created in, is an environment fault (exit 1). ``what`` names the output
    ("results folder"), ``option`` the argument that chose it (``--out``)."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise MetapruneError(
            f"cannot write {what} {folder}: {existing} is a file, not a folder; accepted: another {option}"
        )
    if not _may_write(existing):
        doing = f"write in {folder}" if existing == folder else f"create it in {existing}"
        raise RuntimeFailure(
            f"cannot write {what} {folder}: no permission to {doing}; it needs write permission on {existing}, "
            f"or another {option}"
        )
    return folder


def write_failed(what: str, path: str | Path, exc: OSError) -> RuntimeFailure:
    """The one line of a write that failed anyway (permissions, a read-only file system, a full disk)."""
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return RuntimeFailure(
        f"cannot write {what} {path}: {exc.strerror or type(exc).__name__}{where}; it needs a folder you can "
        "write in, with free space"
    )

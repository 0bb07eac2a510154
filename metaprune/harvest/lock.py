"""A lock file that keeps two harvests out of one store.

The lock is the file ``<store>.lock`` beside the store (so that the store itself can be created in a
temporary folder and renamed into place atomically), created with ``O_CREAT | O_EXCL`` and holding JSON
``{"pid", "host", "time", "command"}``. A lock held by a live process (or by any process on another host,
whose liveness cannot be checked from here) refuses the second harvest with one line naming the holder.
A lock whose holder is on this host and no longer alive is stale (a harvest killed with SIGKILL): it is
taken over and the takeover is reported as a note.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from metaprune.errors import StoreError

LOCK_SUFFIX = ".lock"


def lock_path(store: str | Path) -> Path:
    store = Path(store)
    return store.with_name(store.name + LOCK_SUFFIX)


@dataclass
class LockInfo:
    pid: int
    host: str
    time: str
    command: str = ""

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.time}"


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    """A zombie (dead, not yet reaped) counts as dead; /proc tells on Linux, elsewhere assume alive."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def read_lock(path: Path) -> LockInfo | None:
    try:
        data = json.loads(path.read_text())
        return LockInfo(int(data["pid"]), str(data["host"]), str(data.get("time", "?")), str(data.get("command", "")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return LockInfo(-1, "?", "?", "unreadable")


class StoreLock:
    """Exclusive harvest lock of one store; use as a context manager or call acquire/release."""

    def __init__(self, store: str | Path) -> None:
        self.store = Path(store)
        self.path = lock_path(self.store)
        self.notes: list[str] = []
        self._held = False
        self._token = uuid.uuid4().hex

    def _payload(self) -> str:
        return json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "command": " ".join(sys.argv)[:500],
                "token": self._token,
            }
        )

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(self._payload())
            f.flush()
            os.fsync(f.fileno())
        return True

    def acquire(self) -> StoreLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._try_create():
                self._held = True
                return self
            info = read_lock(self.path)
            if info is None:
                continue  # released in between: try again
            if info.command == "unreadable":
                raise StoreError(
                    f"store {self.store} has an unreadable lock file {self.path}; accepted: make sure no harvest "
                    "writes into it, then delete that file"
                )
            here = socket.gethostname()
            if info.host != here:
                raise StoreError(
                    f"store {self.store} is being written by another harvest ({info.describe()}); "
                    f"accepted: wait for it, or if that harvest is gone, delete {self.path}"
                )
            if pid_alive(info.pid):
                raise StoreError(
                    f"store {self.store} is being written by another harvest ({info.describe()}); "
                    "accepted: wait for it to finish, or use another --out"
                )
            # stale: move it aside atomically (only one taker wins), then retry the exclusive create
            aside = self.path.with_name(f"{self.path.name}.stale-{self._token}")
            try:
                os.replace(self.path, aside)
            except FileNotFoundError:
                continue
            with contextlib.suppress(OSError):
                aside.unlink()
            self.notes.append(
                f"took over a stale lock of {info.describe()} (that process is gone); incomplete seeds are redone"
            )
        raise StoreError(f"could not take the lock {self.path}; accepted: retry, or delete it if no harvest runs")

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.path.read_text())
            if data.get("token") == self._token:
                self.path.unlink()

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

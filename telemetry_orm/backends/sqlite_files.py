"""The files of a SQLite store: a path checked before it is opened
(:func:`check_path`), a read that must create no file its owner cannot
use, ``sqlite:///`` URLs, and the database object that knows every
connection it opened (:class:`StoreDatabase`)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any, Dict, List, Tuple

import peewee
from playhouse import db_url

from ..errors import DatabaseError, TelemetryValidationError

# Connections inherited through fork() belong to the parent. Closing one in
# the child would close file descriptors that share the child's own POSIX
# locks on the same file (closing any descriptor drops all of a process's
# locks on that file) and would run SQLite's close-time clean-up on state the
# parent owns. The child keeps them alive and unused here instead.
_INHERITED: List[sqlite3.Connection] = []

class StoreDatabase(peewee.SqliteDatabase):
    """A ``SqliteDatabase`` that knows every connection it opened, so a store
    can close all of them (not only the calling thread's) and can drop them
    after a fork."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._opened: List[sqlite3.Connection] = []
        self._opened_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = super()._connect()  # type: ignore[misc]
        with self._opened_lock:
            self._opened.append(conn)
        return conn

    def close_all(self) -> None:
        """Close every connection this process opened, in any thread."""
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._state.reset()

    def forget_inherited(self) -> None:
        """In a forked child: stop using the parent's connections."""
        # Fresh locks and connection state first: another thread of the
        # parent may have held them at the moment of the fork, and that
        # thread does not exist in the child to let go.
        self._opened_lock = threading.Lock()
        if self.thread_safe:
            self._lock = threading.Lock()
        self._state = type(self._state)()  # type: ignore[has-type]
        _INHERITED.extend(self._opened)
        self._opened = []


def own_connection(database: Any, busy_timeout: int) -> sqlite3.Connection:
    """A ``sqlite3`` connection of the store's own (autocommit) to the file of
    an application's database: for a thread that may not use the
    application's connections (a pooled one belongs to its thread)."""
    params = getattr(database, "connect_params", None) or {}
    return sqlite3.connect(str(database.database), uri=bool(params.get("uri")),
                           timeout=busy_timeout / 1000, isolation_level=None)


def check_path(path: str) -> None:
    """Refuse, without opening or changing anything, a path that cannot be our
    database: a folder, something other than a regular file, a file this
    process may not read and write, or a folder where SQLite cannot create
    its ``-wal`` and ``-shm`` files. Creates missing parent folders (as the
    original store did).

    Whether an existing file is a SQLite database is left to SQLite itself
    (see :meth:`SqliteBackend.prepare`): reading the header here would mean
    opening and closing the file, and closing any descriptor of a file drops
    every POSIX lock this process holds on it, including those of another
    store already open on the same file.
    """
    target = Path(path)
    try:
        mode = target.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        if target.is_symlink():
            raise DatabaseError(f"{path}: is a symbolic link to nothing") from None
        _make_folder(path, target.parent)
    except OSError as exc:
        raise DatabaseError(f"{path}: cannot be reached ({exc.strerror})") from exc
    else:
        if stat.S_ISDIR(mode):
            raise DatabaseError(f"{path}: is a directory, not a database file")
        if not stat.S_ISREG(mode):
            raise DatabaseError(f"{path}: is not a regular file")
        if not os.access(target, os.R_OK):
            raise DatabaseError(f"{path}: cannot be read (permission denied)")
        if not os.access(target, os.W_OK):
            raise DatabaseError(
                f"{path}: is read-only (permission denied); the store needs to write to it"
            )
    folder = target.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DatabaseError(
            f"{path}: its folder {str(folder)!r} is not writable (SQLite needs to create "
            "the -wal and -shm files beside the database)"
        )


def _make_folder(path: str, folder: Path) -> None:
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise DatabaseError(f"{path}: {str(existing)!r} is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(
            f"{path}: cannot create its folder {str(folder)!r} ({exc.strerror})"
        ) from exc


# Descriptors opened to read a file's header, kept open: closing one would
# drop every POSIX lock this process holds on that file (see check_path).
_HEADER_FDS: Dict[Tuple[int, int], int] = {}


def _in_wal_mode(path: str) -> bool:
    """Whether the file's header says WAL (bytes 18 and 19 are 2)."""
    info = os.stat(path)
    key = (info.st_dev, info.st_ino)
    fd = _HEADER_FDS.get(key)
    if fd is None:
        fd = _HEADER_FDS[key] = os.open(path, os.O_RDONLY)
    header = os.pread(fd, 20, 0)
    return len(header) == 20 and header[18] == 2


def check_read_creates_nothing_foreign(path: str) -> None:
    """Refuse a read that would leave files the owner cannot use, or that
    cannot be done without creating files where none may be created.

    Reading a WAL database needs its ``-shm`` (and ``-wal``) file; when they
    are not there (no connection has the file open), even a ``mode=ro``
    reader creates them, owned by whoever reads, and leaves them behind.
    That is harmless for the file's owner (or root: SQLite then gives them
    to the owner), but files made by another user lock the owner out, and a
    read-only folder cannot take them at all.
    """
    if os.path.exists(f"{path}-shm"):
        return
    folder = os.path.dirname(os.path.abspath(path))
    owner = os.stat(path).st_uid
    me = os.geteuid()
    foreign = me not in (0, owner)
    read_only = not os.access(folder, os.W_OK | os.X_OK)
    if not (foreign or read_only) or not _in_wal_mode(path):
        return
    if read_only:
        raise DatabaseError(
            f"{path}: cannot be read without creating its -wal and -shm files, and its folder "
            "is read-only; read it where it can have them, or while a store has it open"
        )
    try:
        import pwd

        name = pwd.getpwuid(owner).pw_name
    except (ImportError, KeyError):
        name = f"uid {owner}"
    raise DatabaseError(
        f"{path}: reading it would create its -wal and -shm files owned by this user, which "
        f"its owner ({name}) could not write; read it as {name}, or while a store has it open"
    )


def url_path(url: str) -> str:
    """The file of a ``sqlite:///path`` URL (``sqlite://`` is ``':memory:'``)."""
    params = db_url.parse(url)
    path = params.pop("database")
    if params:
        raise TelemetryValidationError(
            "db_path", f"a sqlite URL takes no parameters, got {', '.join(sorted(params))}"
        )
    return str(path)

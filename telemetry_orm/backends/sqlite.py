"""What is particular to SQLite: opening a file safely, pragmas, schema
versions in ``PRAGMA user_version``, WAL checkpoints, and date arithmetic."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Sequence, Tuple, Type

import peewee

from .. import schema
from ..errors import DatabaseError, StoreBusyError, TelemetryError
from ..record import FIELD_NAMES
from ..schema import TABLE_NAME, Execution

_log = logging.getLogger("telemetry_orm")

#: How long a write waits for another connection's write lock, in
#: milliseconds, before :class:`~telemetry_orm.StoreBusyError` (the original
#: store's ``busy_timeout``).
BUSY_TIMEOUT_MS = 5000

#: Size, in bytes, the ``-wal`` file is cut back to once checkpoints have
#: caught up (``PRAGMA journal_size_limit``).
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024

#: Per-connection settings with their defaults (``journal_mode`` is set once
#: per file, after the file has been checked, since it writes to the file).
PRAGMAS: Tuple[Tuple[str, Any], ...] = (
    ("busy_timeout", BUSY_TIMEOUT_MS),
    ("synchronous", "NORMAL"),
    # Keeps the -wal file from staying huge after a big purge or a reader
    # that held an old snapshot: checkpoints shrink it back to this size.
    ("journal_size_limit", JOURNAL_SIZE_LIMIT),
)

#: Busy timeout of the TRUNCATE checkpoint after a big purge. That checkpoint
#: holds the write lock while it waits for readers, so a long wait would stall
#: every writer; if it gives up, ``journal_size_limit`` still cuts the log.
TRUNCATE_BUSY_TIMEOUT_MS = 50
_TRUNCATE_ATTEMPTS = 5

#: Rows deleted by a purge's first write transaction. Later ones are sized
#: from the time the previous one held the write lock (see
#: :class:`SqlitePurgePacer`), between :data:`PURGE_CHUNK_MIN` and
#: :data:`PURGE_CHUNK_MAX` rows.
PURGE_CHUNK = 5000
PURGE_CHUNK_MIN = 100
PURGE_CHUNK_MAX = 100_000

#: Seconds a purge aims to hold the write lock per chunk: well under 50 ms,
#: so another writer never waits long, and long enough that the chunks add
#: up to little more than one DELETE.
PURGE_HOLD = 0.020

#: Times, in ms after its first attempt, at which a writer that found the
#: write lock taken tries again: SQLite's default busy handler (what
#: ``busy_timeout`` installs, in this package, Python's sqlite3 and
#: ``bun:sqlite``) sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, then 100 ms.
#: The write lock has no queue: a writer gets it only if one of its retries
#: falls while it is free.
BUSY_RETRIES_MS = (1, 3, 8, 18, 33, 53, 78, 103, 128, 178, 228, 328)

#: Added to each free gap a purge leaves, for the scheduling delay of a
#: writer that wakes up to retry.
PURGE_PAUSE_MARGIN = 0.002

#: While nobody else has written for this many seconds, a purge leaves the
#: lock free only once in about :data:`PURGE_QUIET_SPAN` seconds instead of
#: after every chunk.
PURGE_BUSY_MEMORY = 1.0
PURGE_QUIET_SPAN = 0.125

# Connections inherited through fork() belong to the parent. Closing one in
# the child would close file descriptors that share the child's own POSIX
# locks on the same file (closing any descriptor drops all of a process's
# locks on that file) and would run SQLite's close-time clean-up on state the
# parent owns. The child keeps them alive and unused here instead.
_INHERITED: List[sqlite3.Connection] = []

_BUSY_MESSAGES = ("database is locked", "database is busy", "database table is locked")


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


def is_busy(exc: BaseException) -> bool:
    """True when ``exc`` says another connection holds a lock."""
    message = str(exc).lower()
    return any(text in message for text in _BUSY_MESSAGES)


def describe(path: str, exc: BaseException) -> TelemetryError:
    """Turn a driver error met while opening into a :class:`DatabaseError`."""
    message = str(exc)
    if "file is not a database" in message:
        return DatabaseError(f"{path}: not a SQLite database ({message})")
    if "unable to open" in message:
        return DatabaseError(
            f"{path}: cannot open the database file ({message}); "
            "check that the location exists and is readable and writable"
        )
    if "readonly" in message or "read-only" in message:
        return DatabaseError(f"{path}: the database is read-only ({message})")
    if is_busy(exc):
        return StoreBusyError(f"{path}: database is busy ({message})")
    return DatabaseError(f"{path}: {message}")


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


class SqliteBackend:
    """The SQLite part of a store: what :class:`~telemetry_orm.store.PeeweeTelemetryStore`
    asks of its database engine."""

    name = "sqlite"
    model_base: Type[Execution] = Execution
    #: Driver errors a store turns into :class:`~telemetry_orm.TelemetryError`.
    driver_errors: Tuple[Type[BaseException], ...] = (sqlite3.Error,)

    def __init__(
        self,
        path: str,
        *,
        busy_timeout: int = BUSY_TIMEOUT_MS,
        journal_size_limit: int = JOURNAL_SIZE_LIMIT,
    ) -> None:
        self.path = path
        self.memory = path == ":memory:"
        self.busy_timeout = busy_timeout
        self.pragmas: Tuple[Tuple[str, Any], ...] = tuple(
            (name, {"busy_timeout": busy_timeout, "journal_size_limit": journal_size_limit}
             .get(name, value))
            for name, value in PRAGMAS
        )

    def open(self) -> StoreDatabase:
        """A database object for the path, checked first (no connection yet)."""
        if not self.memory:
            check_path(self.path)
        # ':memory:' is one database per connection, so a memory store shares
        # one connection among its threads (the store serialises its use).
        return StoreDatabase(
            self.path,
            pragmas=list(self.pragmas),
            timeout=self.busy_timeout / 1000,
            thread_safe=not self.memory,
            check_same_thread=False,
        )

    @contextlib.contextmanager
    def connection(self, database: peewee.Database) -> Iterator[sqlite3.Connection]:
        """This thread's connection, opened on first use and kept until close."""
        yield database.connection()

    def prepare(self, database: peewee.Database, model: Type[Execution]) -> None:
        """Check the file, switch it to WAL and bring its schema up to date.

        Reads first and writes only what is needed, so opening a current file
        writes nothing and several processes can open one file at once. A file
        that is refused (not SQLite, a foreign table, a newer schema) is only
        read, never written.
        """
        try:
            # SQLite checks the header on the first read: a file that is not
            # a database fails here, before anything is written.
            conn = database.connection()
            version = _version(conn)
            columns = _columns(conn)
            _check_compatible(self.path, version, columns)
            if not self.memory:
                self._use_wal(conn)
            if not _is_current(version, columns):
                self._upgrade(database, model)
        except (sqlite3.Error, peewee.DatabaseError) as exc:
            raise describe(self.path, exc) from exc

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL unless it already is (a write, so done
        only when needed).

        Two processes switching a new file at the same moment can get
        "database is locked" at once, without the busy timeout being applied
        (SQLite gives up rather than risk a deadlock between their locks), so
        this retries until the busy timeout is spent.
        """
        deadline = time.monotonic() + self.busy_timeout / 1000
        pause = 0.001
        while True:
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if mode == "wal":
                return
            try:
                mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(pause)
                pause = min(2 * pause, 0.05)
                continue
            if mode != "wal":
                raise DatabaseError(
                    f"{self.path}: cannot switch the database to WAL mode (it stays in "
                    f"{mode!r} mode); the store needs WAL for concurrent use"
                )
            return

    def _upgrade(self, database: peewee.Database, model: Type[Execution]) -> None:
        conn = database.connection()
        # IMMEDIATE: take the write lock before reading, so processes opening
        # a new file at once queue on the busy timeout instead of failing.
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the lock: another process may have done it.
            version = _version(conn)
            columns = _columns(conn)
            _check_compatible(self.path, version, columns)
            if not _is_current(version, columns):
                steps = schema.MIGRATIONS[version:] if columns else schema.MIGRATIONS
                for step in steps:
                    step(database, model, columns)
                    columns = _columns(conn)
                conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
                _log.info(
                    "%s: schema %s version %d (steps: %s)",
                    self.path, "upgraded to" if version or columns else "created at",
                    schema.SCHEMA_VERSION, ", ".join(step.__name__ for step in steps),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def exclusive_transaction(self, database: peewee.Database, name: str) -> Iterator[None]:
        """``BEGIN IMMEDIATE``: the file's write lock, taken before reading,
        so a read-then-write transaction never fails half-way."""
        with database.atomic(lock_type="IMMEDIATE"):
            yield

    def insert_sql(self, database: peewee.Database) -> str:
        """The INSERT every ``record()`` runs, built once per store."""
        columns = ", ".join(quote(database, name) for name in FIELD_NAMES)
        marks = ", ".join(database.param for _ in FIELD_NAMES)
        return f"INSERT INTO {quote(database, TABLE_NAME)} ({columns}) VALUES ({marks})"

    def insert(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> int:
        """Run the INSERT for one row (autocommit); return its id."""
        return conn.execute(sql, params).lastrowid or 0

    def insert_one(self, database: peewee.Database, sql: str, params: Sequence[Any]) -> int:
        """:meth:`insert` on this thread's connection: ``record()``'s whole
        path to the database, with nothing between it and ``sqlite3``."""
        return database.connection().execute(sql, params).lastrowid or 0

    def insert_many(
        self, conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]
    ) -> List[int]:
        """Insert ``rows`` in one write transaction; return their ids in order.

        ``executemany`` reports no id per row (a multi-row ``INSERT …
        RETURNING id`` would need its SQL rebuilt per batch size, within
        SQLite's limit on parameters). The ids are still known: the transaction takes
        the write lock before the first row (``BEGIN IMMEDIATE``), so no other
        connection inserts in between, and the caller holds the store's lock,
        so no other thread uses this connection. Each row then gets the next
        id after the previous one (``AUTOINCREMENT`` takes the larger of the
        highest id and the table's sequence, plus one), so the ids are
        ``last_insert_rowid() - n + 1`` to ``last_insert_rowid()``. Inside a
        transaction the caller already opened, a savepoint is used instead; the
        first row takes the write lock and keeps it until that transaction
        ends, so the same holds. (This assumes no trigger of one's own inserts
        into the table.)
        """
        nested = conn.in_transaction
        conn.execute("SAVEPOINT insert_many" if nested else "BEGIN IMMEDIATE")
        try:
            conn.executemany(sql, rows)
            last: int = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
            conn.execute("RELEASE insert_many" if nested else "COMMIT")
        except BaseException:
            if nested:
                conn.execute("ROLLBACK TO insert_many")
                conn.execute("RELEASE insert_many")
            elif conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return list(range(last - len(rows) + 1, last + 1))

    def copy_rows(
        self,
        conn: sqlite3.Connection,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        """One INSERT run for every row (``executemany``), in the caller's transaction."""
        names = ", ".join(f'"{c}"' for c in columns)
        marks = ", ".join("?" for _ in columns)
        conn.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', rows)

    def checkpoint(
        self, conn: sqlite3.Connection, mode: str, *, blocking: bool = True
    ) -> Tuple[int, int, int]:
        """``PRAGMA wal_checkpoint(mode)``: (busy, log pages, pages checkpointed).

        A ``RESTART`` or ``TRUNCATE`` checkpoint holds the write lock while it copies the log
        and waits for readers, stalling every writer meanwhile; a PASSIVE pass
        first copies the bulk while they keep writing. With ``blocking=False``
        (after a big purge) it also waits for readers at most
        :data:`TRUNCATE_BUSY_TIMEOUT_MS` instead of the busy timeout; if it
        gives up (``busy`` is 1), the ``-wal`` file is still cut to
        ``journal_size_limit`` once the log restarts.
        """
        if mode.upper() not in ("RESTART", "TRUNCATE"):
            return _checkpoint(conn, mode)
        # The bulk first, without the write lock; if another connection's
        # checkpoint (the helper thread's, say) is running, after it.
        for _ in range(_TRUNCATE_ATTEMPTS * 10):
            busy, pages, _done = _checkpoint(conn, "PASSIVE")
            if not busy or pages >= 0:
                break
            time.sleep(0.01)
        if blocking:
            return _checkpoint(conn, mode)
        conn.execute(f"PRAGMA busy_timeout = {min(TRUNCATE_BUSY_TIMEOUT_MS, self.busy_timeout)}")
        try:
            for _ in range(_TRUNCATE_ATTEMPTS):
                busy, pages, done = _checkpoint(conn, mode)
                # -1 pages: it could not start because another connection
                # (a writer's automatic checkpoint) is checkpointing right
                # now, which ends shortly; unlike a reader, that is worth
                # another try.
                if not busy or pages >= 0:
                    break
                time.sleep(0.01)
            return busy, pages, done
        finally:
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout}")

    def cutoff(self, conn: sqlite3.Connection, days: float) -> str:
        """``datetime('now', '-N days')`` by the database's own (UTC) clock."""
        amount = str(int(days)) if float(days).is_integer() else f"{days:.6f}"
        row = conn.execute("SELECT datetime('now', ?)", (f"-{amount} days",)).fetchone()
        return str(row[0])

    def count_before(self, conn: sqlite3.Connection, when: str) -> int:
        sql = f'SELECT COUNT(*) FROM "{TABLE_NAME}" WHERE created_at < ?'
        return int(conn.execute(sql, (when,)).fetchone()[0])

    def delete_chunk_before(
        self, conn: sqlite3.Connection, when: str, limit: int
    ) -> Tuple[int, float]:
        """Delete up to ``limit`` rows older than ``when`` in one transaction;
        return how many, and the seconds it held the write lock."""
        conn.execute("BEGIN IMMEDIATE")
        locked = time.perf_counter()
        try:
            cursor = conn.execute(
                f'DELETE FROM "{TABLE_NAME}" WHERE id IN '
                f'(SELECT id FROM "{TABLE_NAME}" WHERE created_at < ? LIMIT ?)',
                (when, limit),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return int(cursor.rowcount), time.perf_counter() - locked

    def set_autocheckpoint(self, conn: sqlite3.Connection, pages: int) -> int:
        """``PRAGMA wal_autocheckpoint = pages`` on ``conn``; return the old value."""
        return _set_autocheckpoint(conn, pages)

    def purge_pacer(self) -> SqlitePurgePacer:
        return SqlitePurgePacer()

    def is_busy(self, exc: BaseException) -> bool:
        return is_busy(exc)

    def close_all(self, database: peewee.Database) -> None:
        assert isinstance(database, StoreDatabase)
        database.close_all()

    def forget_inherited(self, database: peewee.Database) -> None:
        assert isinstance(database, StoreDatabase)
        database.forget_inherited()


def retry_gap(waited: float) -> float:
    """The longest time, in seconds, between two attempts of a writer that
    has been waiting for the write lock at most ``waited`` seconds."""
    gap, previous = 0, 0
    for retry in BUSY_RETRIES_MS:
        # A retry due at the very moment the lock comes free may be missed.
        if previous > waited * 1000:
            return gap / 1000
        gap, previous = max(gap, retry - previous), retry
    return max(gap, 100) / 1000


class SqlitePurgePacer:
    """Sizes a purge's chunks and the free gaps it leaves between them.

    Each chunk is sized to hold the write lock about :data:`PURGE_HOLD`
    seconds. After it, the lock is left free for as long as SQLite's busy
    handler may make a waiting writer sleep (:func:`retry_gap`), so every
    writer that began waiting during the chunk gets in before the next one.
    That gap is most of a purge's cost over one DELETE, so it is only left
    after every chunk while other connections are writing (``PRAGMA
    data_version`` says so); while none has written for
    :data:`PURGE_BUSY_MEMORY` seconds, chunks follow each other and a gap is
    left once the lock has been taken for about :data:`PURGE_QUIET_SPAN`
    seconds, long enough for a newcomer's retries at that point.

    It also turns off SQLite's automatic checkpoint on the purging
    connection for the purge: that checkpoint would run on every chunk's
    commit, stalling the purge with disk syncs; the store copies the log into
    the file on its helper thread meanwhile instead.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        #: Rows the next chunk may delete.
        self.rows = PURGE_CHUNK
        self._clock = clock
        self._version = -1
        self._busy_until = 0.0
        self._free_since = clock()
        self._autocheckpoint = 1000

    def start(self, conn: sqlite3.Connection) -> None:
        self._autocheckpoint = _set_autocheckpoint(conn, 0)
        self._version = _data_version(conn)
        self._free_since = self._clock()

    def after_chunk(self, conn: sqlite3.Connection, held: float) -> float:
        """Take note of a chunk that held the lock ``held`` seconds; set
        :attr:`rows` for the next and return the pause before it."""
        now = self._clock()
        version = _data_version(conn)
        if version != self._version:
            self._version = version
            self._busy_until = now + PURGE_BUSY_MEMORY
        if held > 0:
            wanted = self.rows * PURGE_HOLD / held
            self.rows = int(min(max(wanted, self.rows / 2, PURGE_CHUNK_MIN),
                                self.rows * 2, PURGE_CHUNK_MAX))
        waited = now - self._free_since
        if now < self._busy_until or waited + held > PURGE_QUIET_SPAN:
            pause = retry_gap(waited) + PURGE_PAUSE_MARGIN
            self._free_since = now + pause
            return pause
        return 0.0

    def finish(self, conn: sqlite3.Connection) -> None:
        _set_autocheckpoint(conn, self._autocheckpoint)


def _set_autocheckpoint(conn: sqlite3.Connection, pages: int) -> int:
    old = int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
    conn.execute(f"PRAGMA wal_autocheckpoint = {int(pages)}")
    return old


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def _columns(conn: sqlite3.Connection) -> List[str]:
    return [row[1] for row in conn.execute(f'PRAGMA table_info("{TABLE_NAME}")')]


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _checkpoint(conn: sqlite3.Connection, mode: str) -> Tuple[int, int, int]:
    row = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
    return (int(row[0]), int(row[1]), int(row[2]))


def _check_compatible(path: str, version: int, columns: Sequence[str]) -> None:
    """Refuse a file this version must not write to (nothing written yet)."""
    current = schema.SCHEMA_VERSION
    if version and not columns:
        raise DatabaseError(
            f"{path}: PRAGMA user_version is {version} but there is no '{TABLE_NAME}' "
            "table: this looks like another application's database"
        )
    schema.check_compatible(path, version, columns)
    missing = [c for c in _all_columns() if c not in columns]
    if version == current and missing:
        raise DatabaseError(
            f"{path}: schema version {version} but the '{TABLE_NAME}' table lacks "
            f"columns {', '.join(missing)}; it was changed by hand"
        )


def _all_columns() -> Tuple[str, ...]:
    return ("id", "created_at") + FIELD_NAMES


def _is_current(version: int, columns: Sequence[str]) -> bool:
    return version == schema.SCHEMA_VERSION and all(c in columns for c in _all_columns())


def quote(database: peewee.Database, name: str) -> str:
    """``name`` quoted as an identifier in the database's dialect."""
    sql: str = database.get_sql_context().sql(peewee.Entity(name)).query()[0]
    return sql

"""What is particular to SQLite: pragmas, schema versions in ``PRAGMA
user_version``, the write lock, date arithmetic, read-only opening and the
report dialect. Its files are checked in
:mod:`~telemetry_orm.backends.sqlite_files`; the upkeep of the write-ahead
log lives in :mod:`~telemetry_orm.backends.sqlite_wal` (with its tools in
:mod:`~telemetry_orm.backends.sqlite_checkpoint`), and the pacing of purges
in :mod:`~telemetry_orm.backends.sqlite_purge`."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import time
import urllib.parse
from typing import Any, ContextManager, Iterator, List, Optional, Sequence, Tuple, Type

import peewee
from peewee import SQL, Case, Cast, ColumnBase, NodeList, Value, fn

from .. import clock, label_rollups, rollups, schema, zone_days
from .. import sql as _sql
from ..checks import EARLIEST
from ..errors import DatabaseError, StoreBusyError, TelemetryError, TelemetryValidationError
from ..labels import LabelSql
from ..schema import TABLE_NAME, Execution
from ..zones import Offset
from .base import (
    BUSY_TIMEOUT_MS,
    Backend,
    Fold,
    PurgeChunk,
    ReportDialect,
    Storage,
    StoreAccess,
    in_transaction_error,
    operation_error,
)
from .base import LOG_SIZE_LIMIT as JOURNAL_SIZE_LIMIT
from .sqlite_files import StoreDatabase, check_path, check_read_creates_nothing_foreign, url_path
from .sqlite_purge import PURGE_WALK_DENSITY, IdWalk, SqlitePurgePacer, move_gone_keys
from .sqlite_wal import SqliteUpkeep

__all__ = ["BUSY_TIMEOUT_MS", "JOURNAL_SIZE_LIMIT", "PRAGMAS", "SqliteBackend", "is_busy"]

_log = logging.getLogger("telemetry_orm")

#: Per-connection settings with their defaults (``journal_mode`` is set once
#: per file, after the file has been checked, since it writes to the file).
PRAGMAS: Tuple[Tuple[str, Any], ...] = (
    ("busy_timeout", BUSY_TIMEOUT_MS),
    ("synchronous", "NORMAL"),
    # Keeps the -wal file from staying huge after a big purge or a reader
    # that held an old snapshot: checkpoints shrink it back to this size.
    ("journal_size_limit", JOURNAL_SIZE_LIMIT),
)

_BUSY_MESSAGES = ("database is locked", "database is busy", "database table is locked")


# Only for building SQL text in SQLite's dialect (never connected).
_DIALECT_DATABASE = peewee.SqliteDatabase(None)


def is_busy(exc: BaseException) -> bool:
    """True when ``exc`` says another connection holds a lock."""
    message = str(exc).lower()
    return any(text in message for text in _BUSY_MESSAGES)


def _failure(exc: BaseException) -> BaseException:
    # A COMMIT that fails on a full disk is rolled back by SQLite itself, so
    # the ROLLBACK asked for after it fails with "no transaction is active"
    # and hides the failure: show the one it was handling.
    while "no transaction is active" in str(exc) and exc.__context__ is not None:
        exc = exc.__context__
    return exc


def _full_disk(path: str, exc: BaseException) -> Optional[TelemetryError]:
    """The error of a write that found the disk full, or ``None``."""
    if "database or disk is full" not in str(exc):
        return None
    return DatabaseError(
        f"{path}: the disk is full: the write failed and was rolled back, so nothing was "
        f"lost; free some space and run it again ({exc})")


def describe(path: str, exc: BaseException) -> TelemetryError:
    """Turn a driver error met while opening into a :class:`DatabaseError`."""
    exc = _failure(exc)
    full = _full_disk(path, exc)
    if full is not None:
        return full
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


def _columns(conn: sqlite3.Connection) -> List[str]:
    table = _sql.quote(_DIALECT_DATABASE, TABLE_NAME)
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


@contextlib.contextmanager
def _write_transaction(conn: sqlite3.Connection, name: str) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (the write lock first), or the
    savepoint ``name`` inside a transaction the caller already opened;
    rolled back if the block raises."""
    nested = conn.in_transaction
    conn.execute(f"SAVEPOINT {name}" if nested else "BEGIN IMMEDIATE")
    try:
        yield
        conn.execute(f"RELEASE {name}" if nested else "COMMIT")
    except BaseException:
        if nested:
            conn.execute(f"ROLLBACK TO {name}")
            conn.execute(f"RELEASE {name}")
        elif conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _is_table(conn: sqlite3.Connection) -> bool:
    """False when ``executions`` exists as something else than a table (a view)."""
    row = conn.execute("SELECT type FROM sqlite_master WHERE name = ?", (TABLE_NAME,)).fetchone()
    return row is None or row[0] == "table"


def _check(path: str, conn: sqlite3.Connection, purpose: str) -> Tuple[int, List[str]]:
    """Read the schema version and columns and refuse what ``purpose`` cannot use."""
    version, columns = _version(conn), _columns(conn)
    schema.check_table(path, version, columns, purpose=purpose, is_table=_is_table(conn))
    return version, columns


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _iso_week(column: ColumnBase) -> ColumnBase:
    # strftime('%W') is not the ISO week. The ISO week of a day is the week of
    # its Thursday (Monday to Sunday), and the ISO year is that Thursday's year.
    thursday = fn.date(column, "-3 days", "weekday 4")
    week = (Cast(fn.strftime("%j", thursday), "INTEGER") + 6) / 7
    return fn.printf("%s-W%02d", fn.strftime("%Y", thursday), week)


def _local(column: ColumnBase, offsets: Sequence[Offset]) -> ColumnBase:
    # datetime(created_at, '-28800 seconds'): the modifier picked per row by
    # the instant the zone's offset changes (the text compares as the time).
    modifiers = [f"{offset.seconds:+d} seconds" for offset in offsets]
    if len(offsets) == 1:
        return fn.datetime(column, modifiers[0])
    return fn.datetime(column, Case(None, [
        (column < schema.format_timestamp(until), modifier)
        for (until, _), modifier in zip(offsets[:-1], modifiers[:-1], strict=True)
        if until is not None], modifiers[-1]))


def _bucket(column: ColumnBase) -> ColumnBase:
    # rollups.bucket() in SQL: ceil(ln(d) / ln(γ) - 1e-9) + 1, and 0 for 0 ms.
    # ln(γ) as a parameter: the very double Python divides by.
    return Case(None, [(column > 0, Cast(fn.ceil(fn.ln(column) / Value(rollups.LOG_GAMMA)
                                                  - SQL("1e-9")), "INTEGER") + 1)], 0)


def _prepare(database: peewee.Database) -> None:
    # ln() and ceil() are a compile option of SQLite (3.35 and later): where
    # they are missing, Python's, which give the same doubles.
    conn = database.connection()
    try:
        conn.execute("SELECT ln(2.0), ceil(0.5)")
    except sqlite3.OperationalError:
        conn.create_function("ln", 1, _ln, deterministic=True)
        conn.create_function("ceil", 1, _ceil, deterministic=True)


def _ln(value: Any) -> Optional[float]:
    return None if value is None or value <= 0 else math.log(value)


def _ceil(value: Any) -> Optional[float]:
    return None if value is None else float(math.ceil(value))


#: SQLite's report SQL. ``no_index`` is the unary ``+``: with indexes on
#: ``created_at`` and ``repo``, ``… WHERE created_at >= X GROUP BY repo``
#: would otherwise walk the repo index over the whole table.
DIALECT = ReportDialect(
    buckets={
        "day": lambda column: fn.strftime("%Y-%m-%d", column),
        "week": _iso_week,
        "month": lambda column: fn.strftime("%Y-%m", column),
    },
    local=_local,
    hour=lambda column: fn.strftime("%Y-%m-%d %H:00:00", column),
    month=lambda column: fn.strftime("%Y-%m-01 00:00:00", column),
    day=lambda column: fn.strftime("%Y-%m-%d 00:00:00", column),
    bucket=_bucket,
    prepare=_prepare,
    no_index=lambda column: NodeList((SQL("+"), column), glue=""),
    # A write transaction holds the file's lock: no row locks to take.
    row_lock="",
    as_text=lambda column: column,
    # SUM() of integers fails past 2**63 - 1 ("integer overflow"); TOTAL()
    # adds in a double: exact up to 2**53, approximate beyond, never failing.
    total=fn.TOTAL,
    add_rows=rollups.add_each,
)


class SqliteBackend(Backend):
    """The SQLite part of a store: what :class:`~telemetry_orm.store.PeeweeTelemetryStore`
    asks of its database engine (see :class:`~telemetry_orm.backends.base.Backend`)."""

    name = "sqlite"
    model_base: Type[Execution] = Execution
    key_model: Type[peewee.Model] = schema.SqliteExecutionKey
    label_model: Type[peewee.Model] = schema.SqliteExecutionLabel
    rollup_models: Tuple[Type[peewee.Model], ...] = (
        *rollups.MODELS, *zone_days.MODELS, *label_rollups.MODELS)
    driver_errors: Tuple[Type[BaseException], ...] = (sqlite3.Error,)
    dialect = DIALECT
    sql_database = _DIALECT_DATABASE
    check_row = None  # stores every valid record, NUL characters included
    fold_scale = 1

    def __init__(
        self,
        path: str,
        *,
        busy_timeout: int = BUSY_TIMEOUT_MS,
        journal_size_limit: int = JOURNAL_SIZE_LIMIT,
    ) -> None:
        self.path = path
        self.memory = self.one_connection = path == ":memory:"
        self.busy_timeout = busy_timeout
        self.borrowed = False
        self.configure = True
        self._database: Optional[peewee.Database] = None
        #: Why ``store.background()`` is refused on this database (``None``: it is not).
        self.no_background: Optional[str] = None
        self.pragmas: Tuple[Tuple[str, Any], ...] = tuple(
            (name, {"busy_timeout": busy_timeout, "journal_size_limit": journal_size_limit}
             .get(name, value))
            for name, value in PRAGMAS
        )

    @classmethod
    def from_location(
        cls, location: str, *, busy_timeout: int = BUSY_TIMEOUT_MS,
        log_size_limit: int = JOURNAL_SIZE_LIMIT,
    ) -> SqliteBackend:
        """A file path, ``':memory:'``, or ``sqlite:///path`` (``sqlite://``
        alone is ``':memory:'``)."""
        path = url_path(location) if location.lower().startswith("sqlite:") else location
        return cls(path, busy_timeout=busy_timeout, journal_size_limit=log_size_limit)

    @classmethod
    def from_database(
        cls, database: peewee.Database, *, configure: bool = False,
        busy_timeout: int = BUSY_TIMEOUT_MS, log_size_limit: int = JOURNAL_SIZE_LIMIT,
    ) -> SqliteBackend:
        """A store on an application's ``SqliteDatabase`` (or a subclass: a
        pooled one, ``SqliteExtDatabase`` …). Its connections keep the
        application's settings, unless ``configure``: the store's pragmas
        (``busy_timeout``, ``synchronous``, ``journal_size_limit``) are then
        added to the database's own, for every connection, and the file is
        switched to WAL."""
        path = str(database.database)
        backend = cls(path, busy_timeout=busy_timeout, journal_size_limit=log_size_limit)
        backend.borrowed, backend.configure, backend._database = True, configure, database
        # A private database per connection: '' is a temporary file.
        backend.memory = (path == "" or ":memory:" in path or "mode=memory" in path
                          or "vfs=memdb" in path)
        # One connection shared by every thread, as a ':memory:' store's.
        backend.one_connection = not database.thread_safe
        if backend.one_connection:
            backend.no_background = (
                "the database was made with thread_safe=False, so its threads share one "
                "connection, and the recorder's batches would join whatever transaction "
                "another thread has open on it; record() directly")
        elif backend.memory:
            backend.no_background = (
                "an in-memory database is one database per connection, and the recorder's "
                "thread would write into a new, empty one; record() directly")
        return backend

    # -- opening ------------------------------------------------------------

    def missing(self) -> Optional[str]:
        if self.memory or os.path.isfile(self.path):
            return None
        return "is not a file" if os.path.exists(self.path) else "no such database file"

    def files(self) -> Tuple[str, ...]:
        if self.memory or (self._database is not None and self.path.startswith("file:")):
            return ()
        return (self.path, f"{self.path}-wal", f"{self.path}-shm")

    def open(self) -> StoreDatabase:
        """A database object for the path, checked first (no connection yet);
        an application's own database as it is."""
        if self._database is not None:
            return self._database  # type: ignore[return-value]
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

    def open_readonly(self, *, purpose: str = "read") -> peewee.Database:
        """The file opened with ``mode=ro``: nothing can be created or
        changed (SQLite may leave empty ``-wal``/``-shm`` files beside a WAL
        database). A missing file, or one without a usable telemetry table,
        raises :class:`~telemetry_orm.DatabaseError` naming the path."""
        path = self.path
        why = "no such database file" if self.memory else self.missing()
        if why:
            raise DatabaseError(f"{path}: {why}")
        check_read_creates_nothing_foreign(path)
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
        database = peewee.SqliteDatabase(
            uri, uri=True, pragmas=[("busy_timeout", self.busy_timeout)]
        )
        try:
            _check(path, database.connection(), purpose)
        except (sqlite3.Error, peewee.DatabaseError) as exc:
            database.close()
            raise self.describe(exc) from exc
        except TelemetryError:
            database.close()
            raise
        return database

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
            if not isinstance(conn, sqlite3.Connection):
                raise TelemetryValidationError(
                    "database", f"{type(database).__name__} connects with "
                    f"{type(conn).__module__}.{type(conn).__name__}; the store needs the "
                    "standard library's sqlite3")
            # Every refusal before the first write (the switch to WAL is one).
            version, columns = _check(self.path, conn, "write")
            current = schema.is_current(version, columns)
            if self.borrowed and not current and conn.in_transaction:
                raise in_transaction_error(self.path, "create or upgrade its tables")
            if self.borrowed and self.configure:
                for name, value in self.pragmas:
                    database.pragma(name, value, permanent=True)  # type: ignore[attr-defined]
            if self.memory:
                pass
            elif self.configure:
                self._use_wal(conn)
            else:
                self._check_wal(conn)
            if not current:
                self._upgrade(database, model)
        except (sqlite3.Error, peewee.DatabaseError) as exc:
            raise self.describe(exc) from exc

    def _check_wal(self, conn: sqlite3.Connection) -> None:
        """An application's database not in WAL mode is used as it is, said once."""
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        if mode != "wal":
            _log.warning(
                "%s: the database is in %r journal mode, not WAL: readers (reports, "
                "exports) wait for writers and writers for readers. Open it with "
                "pragmas={'journal_mode': 'wal'}, or pass configure=True to "
                "create_telemetry_store to have the store's settings applied", self.path, mode)

    @classmethod
    def in_transaction(cls, database: peewee.Database) -> bool:
        return not database.is_closed() and bool(database.connection().in_transaction)

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
            version, columns = _check(self.path, conn, "write")
            if not schema.is_current(version, columns):
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

    def upkeep(self, database: peewee.Database, store: StoreAccess) -> SqliteUpkeep:
        """The write-ahead log's upkeep for a store on ``database``."""
        return SqliteUpkeep(database, store, busy_timeout=self.busy_timeout, memory=self.memory,
                            borrowed=self.borrowed, shared=self.borrowed and self.one_connection)

    # -- statements ---------------------------------------------------------

    @contextlib.contextmanager
    def connection(self, database: peewee.Database) -> Iterator[sqlite3.Connection]:
        """This thread's connection, opened on first use and kept until close."""
        yield database.connection()

    @contextlib.contextmanager
    def exclusive_transaction(self, database: peewee.Database, name: str) -> Iterator[None]:
        """``BEGIN IMMEDIATE``: the file's write lock, taken before reading,
        so a read-then-write transaction never fails half-way."""
        with database.atomic(lock_type="IMMEDIATE"):
            yield

    def write_transaction(self, conn: sqlite3.Connection, name: str) -> ContextManager[None]:
        """``BEGIN IMMEDIATE`` (the write lock first), or a savepoint."""
        return _write_transaction(conn, name)

    def insert_one(self, database: peewee.Database, sql: str, params: Sequence[Any]) -> int:
        """The INSERT for one row (autocommit) on this thread's connection:
        ``record()``'s whole path to the database, with nothing between it
        and ``sqlite3``; return its id."""
        return database.connection().execute(sql, params).lastrowid or 0

    def insert_one_labelled(self, database: peewee.Database, sql: str, params: Sequence[Any],
                            label_sql: LabelSql, labels: Sequence[Tuple[str, str]]) -> int:
        """The INSERT and the labels' after ``BEGIN IMMEDIATE`` (or in a savepoint)."""
        conn = database.connection()
        with _write_transaction(conn, "telemetry_one"):
            row_id: int = conn.execute(sql, params).lastrowid or 0
            conn.executemany(label_sql.insert, [(row_id, *label) for label in labels])
        return row_id

    def insert_keyed(
        self, database: peewee.Database, sql: _sql.KeyedSql, rows: Sequence[Sequence[Any]],
        keys: Sequence[Optional[str]], replace: Optional[_sql.Replacing],
        written: Optional[_sql.Written] = None,
    ) -> List[int]:
        """``BEGIN IMMEDIATE`` (the write lock before the keys are looked up,
        so two processes recording one key at once give one row), or a
        savepoint inside a transaction already open."""
        conn = database.connection()
        if len(rows) == 1 and not conn.in_transaction:  # record(key=…): the short way
            conn.execute("BEGIN IMMEDIATE")
            try:
                row_id = _sql.record_keyed(conn, sql, rows[0], keys[0], replace, written)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return [row_id]
        nested = conn.in_transaction
        with _write_transaction(conn, "record_keyed"):
            if nested:
                # Inside a transaction of the caller's (BEGIN IMMEDIATE
                # was not ours to choose): a write first, which waits for
                # the write lock with the busy timeout. A look-up first
                # would take a snapshot, and another connection's commit
                # after it would fail the INSERT at once ("database is
                # locked"), whatever the busy timeout.
                conn.execute(sql.lock)
            return _sql.record_all_keyed(conn, sql, rows, keys, replace, written,
                                          self.insert_many)

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
        with _write_transaction(conn, "insert_many"):
            conn.executemany(sql, rows)
            last: int = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        return list(range(last - len(rows) + 1, last + 1))

    @classmethod
    def cutoff(cls, conn: sqlite3.Connection, days: float) -> Optional[str]:
        """``datetime('now', '-N days')`` by the database's own (UTC) clock,
        or from the instant :func:`telemetry_orm.clock.pinned` sets; ``None``
        before :data:`~telemetry_orm.checks.EARLIEST`, where the instants rows
        are written at begin (no such row is older)."""
        amount = str(int(days)) if float(days).is_integer() else f"{days:.6f}"
        pinned = clock.pinned_now()
        start = "now" if pinned is None else schema.format_timestamp(pinned)
        row = conn.execute("SELECT datetime(?, ?)", (start, f"-{amount} days")).fetchone()
        # Text order is time order from year 0000 on; '-0164-…' sorts first too.
        if row[0] is None or str(row[0]) < schema.format_timestamp(EARLIEST):
            return None
        return str(row[0])

    def purge_start(self, conn: sqlite3.Connection, model: Type[Execution], when: str) -> IdWalk:
        """Where a purge begins: the walk over the ids of the expired rows
        (see :class:`IdWalk`), or, when they are few among the ids they
        span, none (chunks then take the oldest rows)."""
        count, first, last = conn.execute(*_sql.expired_span(model, when)).fetchone()
        if not count or count < PURGE_WALK_DENSITY * (last - first + 1):
            return IdWalk(0, 0)
        return IdWalk(first - 1, last)

    def delete_chunk_before(
        self, conn: sqlite3.Connection, model: Type[Execution], when: str, limit: int,
        position: IdWalk, fold: Optional[Fold] = None,
    ) -> PurgeChunk:
        """Delete, in one transaction, the expired rows of the next ``limit``
        ids of the walk, or once it is over up to ``limit`` of the oldest
        rows; say how many, and the seconds it held the write lock."""
        if position.after < position.last:
            upto = min(position.after + limit, position.last)
            rows = _sql.ids_before(model, when, position.after, upto, no_index=DIALECT.no_index)
            deleted, held = self._delete(conn, model, rows, fold, upto)
            # Past the walk, rows written meanwhile with an old created_at
            # (a copy from another database, say) are left to the oldest-first
            # chunks; there are seldom any.
            done = upto >= position.last and conn.execute(
                *_sql.any_before(model, when)).fetchone() is None
            return PurgeChunk(deleted, held, IdWalk(upto, position.last), done)
        deleted, held = self._delete(conn, model, _sql.oldest_before(model, when, limit), fold,
                                     None)
        return PurgeChunk(deleted, held, position, deleted < limit)

    @staticmethod
    def _delete(conn: sqlite3.Connection, model: Type[Execution], rows: Any,
                fold: Optional[Fold], most: Optional[int]) -> Tuple[int, float]:
        conn.execute("BEGIN IMMEDIATE")
        locked = time.perf_counter()
        try:
            if fold is not None:  # counted before they go, in the same transaction
                fold(conn, rows, most)
            cursor = conn.execute(*_sql.render(model._meta.database, model.delete().where(rows)))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return int(cursor.rowcount), time.perf_counter() - locked

    @classmethod
    def snapshot(cls, database: peewee.Database) -> None:
        """Nothing to do: a SQLite transaction reads one snapshot."""

    @contextlib.contextmanager
    def fold_transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        """``BEGIN IMMEDIATE``: one writer at a time folds rows in."""
        with _write_transaction(conn, "rollup"):
            yield

    def newest_id(self, conn: sqlite3.Connection, model: Type[Execution]) -> Optional[int]:
        # Ids are given out inside write transactions, one at a time and
        # increasing, so none at or below this one can still appear.
        row = conn.execute(*_sql.render(model._meta.database,
                                        model.select(fn.MAX(model.id)))).fetchone()
        return int(row[0] or 0)

    @classmethod
    def has_table(cls, conn: sqlite3.Connection, name: str) -> bool:
        row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                           (name,)).fetchone()
        return row is not None

    def purge_pacer(self) -> SqlitePurgePacer:
        return SqlitePurgePacer()

    def move_gone_keys(self, database: peewee.Database, conn: sqlite3.Connection, keys: Any,
                       purged: Any, model: Type[Execution], after: Optional[str],
                       last: Optional[str], stamp: str, *,
                       ahead: bool = False) -> Tuple[int, float, float]:
        """The gone keys looked for once, before the lock while nobody
        else writes (see :func:`.sqlite_purge.move_gone_keys`)."""
        return move_gone_keys(database, conn, keys, purged, model, after, last, stamp,
                              upsert=self.dialect.upsert, ahead=ahead)

    # -- errors and facts ---------------------------------------------------

    def translate(self, exc: BaseException) -> TelemetryError:
        exc = _failure(exc)
        busy = is_busy(exc)
        if busy and self._database is not None and self.in_transaction(self._database):
            return StoreBusyError(
                f"{self.path}: could not write inside the transaction open on this thread's "
                f"connection ({exc}): another connection held the write lock longer than the "
                "busy timeout, or the transaction had read before this write and another "
                "connection wrote since, which SQLite refuses at once; open transactions that "
                "read and then record with database.atomic(lock_type='IMMEDIATE') (the write "
                "lock first, waited for) or record before reading; nothing was written")
        return _full_disk(self.path, exc) or operation_error(self.path, exc, busy=busy)

    def describe(self, exc: BaseException) -> TelemetryError:
        return describe(self.path, exc)

    @classmethod
    def storage(cls, database: peewee.Database, path: str) -> Storage:
        conn = database.connection()
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        wal = path + "-wal"
        wal_bytes = os.path.getsize(wal) if os.path.exists(wal) else 0
        return Storage(os.path.getsize(path), wal_bytes, _version(conn), mode)



"""What a store asks of its database engine: the :class:`Backend` base class.

:class:`~telemetry_orm.store.PeeweeTelemetryStore` validates, serialises
and counts; everything an engine may do differently is one member of
:class:`Backend`: opening (for writing and read-only), schema set-up and
its version, the INSERT, date arithmetic, chunked deletes and their pacing,
the upkeep of an open store (its log, its connections across ``fork()``
and close), what a driver error means, the SQL dialect of reports and
upserts, and the column types of its tables. What engines do alike is the
base class's default; each engine is one module under ``backends/`` with a
subclass that overrides only what differs (as ``playhouse.migrate``'s
migrators do), picked by :mod:`telemetry_orm.engines`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import (
    Any,
    Callable,
    ContextManager,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
)

import peewee
from peewee import ColumnBase

from .. import label_rollups, rollups, zone_days
from .. import labels as _labels
from .. import sql as _sql
from ..errors import DatabaseError, StoreBusyError, TelemetryError, TransactionOpenError
from ..labels import LabelSql
from ..schema import (
    Execution,
    ExecutionKey,
    ExecutionLabel,
    KeyState,
    PurgedKey,
    with_columns,
)
from ..sql import KeyedSql, Replacing, Upsert
from ..zones import Offset
from .upkeep import (
    PURGE_CHUNK,
    CheckpointResult,
    FixedPacer,
    Logger,
    PurgePacer,
    ServerUpkeep,
    StoreAccess,
    Upkeep,
)

__all__ = [
    "BUSY_TIMEOUT_MS", "LOG_SIZE_LIMIT", "PURGE_CHUNK", "Backend", "CheckpointResult",
    "FixedPacer", "KeySweep", "Logger", "PurgeChunk", "PurgePacer", "ReportDialect",
    "ServerUpkeep", "Storage", "StoreAccess", "Upkeep", "in_transaction_error",
    "operation_error",
]

#: How long, in milliseconds, a write waits for another connection's lock
#: before :class:`~telemetry_orm.StoreBusyError` (the original store's
#: ``busy_timeout``).
BUSY_TIMEOUT_MS = 5000

#: Size, in bytes, an engine that keeps its log in a file beside the
#: database cuts that file back to once its changes are copied.
LOG_SIZE_LIMIT = 64 * 1024 * 1024

@dataclasses.dataclass(frozen=True)
class ReportDialect:
    """How an engine spells what reports need.

    ``buckets`` turn ``created_at`` into a ``day``/``week``/``month`` label;
    ``no_index`` wraps a column so that the planner cannot use an index on
    it (where a planner would pick the wrong one); ``as_text`` renders
    ``created_at`` as SQLite stores it (UTC ``YYYY-MM-DD HH:MM:SS``);
    ``total`` sums a column without failing on overflow (every value the
    store accepts, or finds in a file, must add up); ``local`` turns
    ``created_at`` into the wall time of a zone whose offsets (a list of
    :class:`~telemetry_orm.zones.Offset`) are given, in a form ``buckets``
    take; ``upsert`` spells an INSERT that updates a row whose key is
    taken (the rollups', the keys').
    """

    buckets: Mapping[str, Callable[[ColumnBase], ColumnBase]]
    local: Callable[[ColumnBase, Sequence[Offset]], ColumnBase]
    #: ``created_at`` truncated to its UTC hour (the rollups' ``hour``).
    hour: Callable[[ColumnBase], ColumnBase]
    #: ``created_at`` truncated to its UTC month, and to its UTC day.
    month: Callable[[ColumnBase], ColumnBase]
    day: Callable[[ColumnBase], ColumnBase]
    #: A duration's sketch bucket (:func:`telemetry_orm.rollups.bucket`).
    bucket: Callable[[ColumnBase], ColumnBase]
    as_text: Callable[[ColumnBase], ColumnBase]
    total: Callable[[ColumnBase], ColumnBase]
    #: ``query`` (an INSERT) made an upsert (see
    #: :func:`~telemetry_orm.sql.upsert_on_conflict`, the default).
    upsert: Upsert = _sql.upsert_on_conflict
    #: Makes a connection of ``database`` ready for ``bucket`` (default: nothing to do).
    prepare: Callable[[Any], None] = lambda database: None
    #: Default: the column as it is (a server's planner picks indexes well).
    no_index: Callable[[ColumnBase], ColumnBase] = lambda column: column
    #: ``add_rows(query, key, fields)``: ``query`` (an INSERT of one row per
    #: execution) made to add each row's ``fields`` to the row of its
    #: ``key``, for an engine that does that faster than it groups the rows
    #: first (and takes one key twice in a statement); ``None``: rows are
    #: grouped, then added through :attr:`upsert`.
    add_rows: Optional[Callable[[Any, Sequence[Any], Sequence[Any]], Any]] = None
    #: What ends a SELECT that locks the rows it reads until its transaction
    #: ends (a budget's row during a reservation); ``""`` where a write
    #: transaction locks everything (SQLite's file lock).
    row_lock: str = " FOR UPDATE"


@dataclasses.dataclass(frozen=True)
class Storage:
    """Where and how the data is kept, for ``stats``."""

    #: The database file, or on a server the table with its indexes.
    data_bytes: int
    #: The log file beside the database (0: none, or the server's own).
    log_bytes: int
    schema_version: int
    #: SQLite's journal mode, ``server`` for a server's own log.
    journal_mode: str


@dataclasses.dataclass(frozen=True)
class PurgeChunk:
    """One chunk of a purge, as :meth:`Backend.delete_chunk_before` ran it."""

    #: Rows it deleted.
    deleted: int
    #: Seconds it held the engine's write lock.
    held: float
    #: Where the next chunk goes on, in the engine's own terms: what the
    #: store passes to the next :meth:`Backend.delete_chunk_before`.
    position: Any
    #: No row older than the cutoff is left: the purge is over.
    done: bool


#: Called by a purge chunk inside its transaction, with the driver
#: connection, the condition of the rows it is about to delete and the
#: largest id they can have (``None``: not known).
Fold = Callable[[Any, Any, Optional[int]], None]


@dataclasses.dataclass(frozen=True)
class KeySweep:
    """One step of a purge's sweep of the keys (:mod:`telemetry_orm.keys`)."""

    #: Keys it moved (their rows were gone) or forgot.
    deleted: int
    #: Seconds it held the engine's write lock (0 when it deleted none).
    held: float
    #: The last key it looked at: where the next step goes on.
    after: Optional[str]
    #: Every key has been looked at.
    done: bool
    #: Seconds it read before it took the lock (see :meth:`Backend.move_gone_keys`).
    free: float = 0.0




class Backend:
    """The engine-specific part of a store: what engines do alike, here,
    and what one does differently, overridden in its subclass (each engine
    is one module under ``backends/``).

    A subclass must give :attr:`name`, :attr:`dialect`, :attr:`driver_errors`,
    :attr:`sql_database` and the methods that raise
    :exc:`NotImplementedError` here (opening, schema set-up, the two
    exclusive transactions, ``insert_many``, the clock, ``newest_id``,
    ``storage``); every other member has a default that suits a server
    engine reached through DB-API connections (docs/contributing.md lists
    them). Column types: :meth:`column`.

    Methods that take ``conn`` get the connection :meth:`connection` yields:
    one whose ``execute(sql, params)`` returns a cursor (``sqlite3``'s and
    psycopg 3's do; an engine whose driver's does not wraps it). They run
    one statement or one short transaction.
    """

    #: Short engine name (``"sqlite"``, ``"postgresql"``), for messages and logs.
    name: str = ""
    #: Where the data lives, safe to print (no password).
    path: str = ""
    #: The model class a store binds to its database (columns suited to the engine).
    model_base: Type[Execution] = Execution
    #: The model of the keys table (``store.record(entry, key=…)``) on this engine.
    key_model: Type[peewee.Model] = ExecutionKey
    #: The model of the labels table (``TelemetryRecord(labels=…)``) on this engine.
    label_model: Type[peewee.Model] = ExecutionLabel
    #: The models of the rollups: per hour, duration sketches, the state row,
    #: per month, month sketches, the fold's scratch table, per day.
    rollup_models: Tuple[Type[peewee.Model], ...] = (
        *rollups.MODELS, *zone_days.MODELS, *label_rollups.MODELS)
    #: The models beside the keys table: the purged keys and the key state.
    side_models: Tuple[Type[peewee.Model], ...] = (PurgedKey, KeyState)
    #: Driver errors a store turns into :class:`~telemetry_orm.TelemetryError`.
    driver_errors: Tuple[Type[BaseException], ...] = (peewee.PeeweeException,)
    #: How reports (and the rollups' upserts) spell SQL on this engine.
    dialect: ReportDialect
    #: A peewee database of the engine's class, never connected: SQL text
    #: in its dialect (quoting, placeholders) is built with it.
    sql_database: peewee.Database
    #: Checks a validated record's row against what this engine cannot store
    #: (raising :class:`~telemetry_orm.TelemetryValidationError` naming the
    #: field), or ``None`` when it stores every valid record.
    check_row: Optional[Callable[[Sequence[Any]], None]] = None
    #: Every thread of the store shares one connection (SQLite's ``':memory:'``,
    #: where a new connection would be a new, empty database), so even a
    #: read must hold the store's lock.
    one_connection: bool = False
    #: Each connection is a database of its own, gone when it closes.
    memory: bool = False
    #: How many times its usual rows (``folding.FOLD_ROWS``, ``TIER_ROWS``,
    #: ``AHEAD_HOUR_ROWS``) a step of ``rollup()`` or of a purge's fold ahead
    #: takes. A server's writers do not queue for one write lock behind a
    #: fold, so its steps are long and pay their statements' fixed costs
    #: less often (PostgreSQL, 200,000 rows: 11.1 s at 1x, 8.1 s at 10x,
    #: 6.7 s at 50x); SQLite's write lock keeps its steps short.
    fold_scale: int = 20
    #: Why ``store.background()`` cannot be used on this database (``None``: it can).
    no_background: Optional[str] = None
    #: The database is an application's (see :meth:`from_database`).
    borrowed: bool = False
    #: The record's INSERT answers the new id as a row (``RETURNING id``);
    #: false: the cursor's ``lastrowid`` has it.
    returning: bool = False
    #: SQL naming the schema where the store keeps its tables, for
    #: :meth:`has_table`.
    current_schema: str = "current_schema()"

    # -- column types -------------------------------------------------------------

    @classmethod
    def column(cls, field: peewee.Field) -> Optional[peewee.Field]:
        """The field this engine declares in place of ``field``, a column
        of a telemetry table as :mod:`~telemetry_orm.schema` and
        :mod:`~telemetry_orm.rollups` declare it, or ``None`` to keep it
        (the default). Text that is indexed or part of a key is a
        :class:`~telemetry_orm.schema.KeyTextField`, a UTC instant kept as
        text a :class:`~telemetry_orm.schema.TimeTextField`.

        A subclass that overrides it has every table built from it (see
        :meth:`__init_subclass__`): ``executions``, the keys, the purged
        keys and the key state, the rollups."""
        return None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """An engine that overrides :meth:`column` gets its tables built
        from it: each of :attr:`model_base`, :attr:`key_model`, :attr:`label_model`,
        :attr:`side_models` and :attr:`rollup_models` it does not set
        itself is its base class's with those columns replaced
        (:func:`~telemetry_orm.schema.with_columns`)."""
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if "column" not in own:
            return
        column = cls.column
        if "model_base" not in own:
            cls.model_base = with_columns(cls.model_base, column)
        if "key_model" not in own:
            cls.key_model = with_columns(cls.key_model, column)
        if "label_model" not in own:
            cls.label_model = with_columns(cls.label_model, column)
        for name in ("side_models", "rollup_models"):
            if name not in own:
                setattr(cls, name, tuple(with_columns(m, column) for m in getattr(cls, name)))

    # -- opening (each engine its own) ----------------------------------------

    @classmethod
    def from_location(cls, location: str, *, busy_timeout: int,
                      log_size_limit: int) -> Backend:
        """The backend for a path or URL of this engine (nothing is opened)."""
        raise NotImplementedError

    @classmethod
    def from_database(cls, database: peewee.Database, *, configure: bool, busy_timeout: int,
                      log_size_limit: int) -> Backend:
        """The backend of a store on a database an application opened and
        owns: :meth:`open` returns it, nothing closes it, and its
        connections keep their settings (``configure``: apply the store's
        own, ``busy_timeout`` and ``log_size_limit`` among them)."""
        raise NotImplementedError

    @classmethod
    def in_transaction(cls, database: peewee.Database) -> bool:
        """Whether this thread's connection of ``database`` (if it has one
        open) is inside a transaction; opens nothing."""
        raise NotImplementedError

    def open(self) -> peewee.Database:
        """A peewee database for this location (checked, not yet connected)."""
        raise NotImplementedError

    def open_readonly(self, *, purpose: str = "read") -> peewee.Database:
        """A database that can only be read, its telemetry table checked
        for ``purpose`` (see :func:`telemetry_orm.schema.check_table`);
        nothing is created. Close it with ``database.close()``."""
        raise NotImplementedError

    def prepare(self, database: peewee.Database, model: Type[Execution]) -> None:
        """Check the database and create or upgrade its schema."""
        raise NotImplementedError

    def missing(self) -> Optional[str]:
        """Why there is no database at this location ("no such database
        file"), or ``None`` when there is one or only connecting can tell
        (the default: a server)."""
        return None

    def files(self) -> Tuple[str, ...]:
        """The files the database lives in (none for a server, the default,
        or ``:memory:``), so that nothing writes over them."""
        return ()

    def upkeep(self, database: peewee.Database, store: StoreAccess) -> Upkeep:
        """The upkeep of one store opened on ``database`` (default: a
        server's, :class:`ServerUpkeep`)."""
        return ServerUpkeep(database, borrowed=self.borrowed)

    # -- transactions -----------------------------------------------------------

    @contextlib.contextmanager
    def connection(self, database: peewee.Database) -> Iterator[Any]:
        """The driver connection for one operation of this thread. The
        default opens one (from the pool) for the operation and hands it back
        after, so threads that come and go hold none; inside another
        operation of the same thread, that one's."""
        opened = database.connect(reuse_if_open=True)
        try:
            yield self.statements(database)
        finally:
            if opened:
                database.close()

    @classmethod
    def statements(cls, database: peewee.Database) -> Any:
        """This thread's open connection of ``database`` with ``execute()``
        (reports, ``stats`` and the demo hold only a database). Default: the
        driver's own; an engine whose driver's has none wraps it."""
        return database.connection()

    def exclusive_transaction(self, database: peewee.Database, name: str) -> ContextManager[None]:
        """A write transaction on ``database``'s connection of this thread that
        no other connection runs work ``name`` in at the same time."""
        raise NotImplementedError

    def write_transaction(self, conn: Any, name: str) -> ContextManager[None]:
        """A write transaction on ``conn`` (the savepoint ``name`` inside one
        already open), committed when the block ends, rolled back if it raises."""
        raise NotImplementedError

    def fold_transaction(self, conn: Any) -> ContextManager[None]:
        """A write transaction on ``conn`` that no other connection folds
        rows into the rollups in at the same time."""
        raise NotImplementedError

    def locking_transaction(self, database: peewee.Database) -> ContextManager[Any]:
        """A transaction on this thread's connection that reads, then writes
        (a budget's check-and-hold), whose reads after a lock (see
        ``ReportDialect.row_lock``) see what the lock's previous holder
        committed. Default: :meth:`write_transaction` (PostgreSQL's READ
        COMMITTED; SQLite's ``BEGIN IMMEDIATE``)."""
        return self.write_transaction(self.statements(database), "telemetry_budget")

    @classmethod
    def snapshot(cls, database: peewee.Database) -> None:
        """Make the transaction just begun on ``database`` read one snapshot
        in all its statements (a report's queries must agree). Default:
        nothing (the engine's transactions already do)."""

    # -- writing ------------------------------------------------------------------

    def insert_sql(self, model: Type[Execution]) -> str:
        """The INSERT every ``record()`` runs, built once per store."""
        return _sql.record_insert_sql(model, returning=self.returning)

    def new_id(self, cursor: Any) -> int:
        """The id of the row the :meth:`insert_sql` just run on ``cursor`` added."""
        return int(cursor.fetchone()[0]) if self.returning else int(cursor.lastrowid or 0)

    def insert_one(self, database: peewee.Database, sql: str, params: Sequence[Any]) -> int:
        """Run ``sql`` with one record's values on this thread's connection
        (the hot path); return the new row id."""
        with self.connection(database) as conn:
            return self.new_id(conn.execute(sql, params))

    def insert_one_labelled(self, database: peewee.Database, sql: str, params: Sequence[Any],
                            label_sql: LabelSql, labels: Sequence[Tuple[str, str]]) -> int:
        """:meth:`insert_one`, and the row's ``labels`` (name, value pairs)
        in the same transaction (a savepoint inside one already open)."""
        with self.connection(database) as conn, self.write_transaction(conn, "telemetry_one"):
            row_id = self.new_id(conn.execute(sql, params))
            _labels.write(conn, label_sql, [(row_id, *label) for label in labels])
        return row_id

    def keyed_sql(self, model: Type[Execution], keys: Any, purged: Any) -> KeyedSql:
        """The statements of a keyed ``record()``, built once per store
        (``keys`` and ``purged``: the bound key models)."""
        return _sql.keyed_sql(model, keys, purged, returning=self.returning,
                              upsert=self.dialect.upsert)

    def insert_keyed(
        self, database: peewee.Database, sql: KeyedSql, rows: Sequence[Sequence[Any]],
        keys: Sequence[Optional[str]], replace: Optional[Replacing],
        written: Optional[_sql.Written] = None,
    ) -> List[int]:
        """Record each row under its key (``None``: no key) in one
        transaction that no other connection records keys in at the same
        time (a savepoint inside a transaction already open): for a key
        already recorded, that row (when ``replace`` is given and the row is
        there, set to the new values inside it), else a new row and its
        key. Return the rows' ids in order. Default: one
        :meth:`exclusive_transaction` named ``keys``."""
        with self.connection(database) as conn, self.exclusive_transaction(database, "keys"):
            return _sql.record_all_keyed(conn, sql, rows, keys, replace, written,
                                          self.insert_many)

    def insert_many(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> List[int]:
        """Run ``sql`` for every row in one transaction (a savepoint inside a
        transaction already open); return the new ids in order."""
        raise NotImplementedError

    def copy_rows(
        self, conn: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert ``rows`` into ``table`` as fast as the engine allows, within
        the caller's transaction; no ids are returned (bulk loads, copies).
        Default: one INSERT run for every row (``executemany``)."""
        cursor = conn.cursor()
        try:
            cursor.executemany(_sql.insert_sql(self.sql_database, table, columns), rows)
        finally:
            cursor.close()

    # -- purging --------------------------------------------------------------------

    @classmethod
    def cutoff(cls, conn: Any, days: float) -> Any:
        """The database clock's "now" minus ``days`` days, as ``created_at``
        compares; ``None`` when that is before the earliest time the engine
        represents (no row can be older)."""
        raise NotImplementedError

    @classmethod
    def count_before(cls, conn: Any, model: Type[Execution], when: Any) -> int:
        """How many rows have ``created_at`` before ``when``."""
        return int(conn.execute(*_sql.count_before(model, when)).fetchone()[0])

    def purge_start(self, conn: Any, model: Type[Execution], when: Any) -> Any:
        """Where a purge of the rows older than ``when`` begins: the
        ``position`` of its first :meth:`delete_chunk_before`. Only reads,
        so the store need not hold its lock meanwhile. Default: ``None``,
        every chunk takes the oldest rows."""
        return None

    def delete_chunk_before(
        self, conn: Any, model: Type[Execution], when: Any, limit: int, position: Any,
        fold: Optional[Fold] = None,
    ) -> PurgeChunk:
        """Delete up to ``limit`` rows older than ``when``, going on from
        ``position``, in one short transaction; say how many, the seconds it
        held its locks, where the next chunk goes on, and whether any such
        row is left (their keys stay: see :mod:`telemetry_orm.keys`).
        ``fold``, when given, is called in that transaction, before the
        rows go, with the connection and the rows' condition (the rollups
        count them).

        Default: in a :meth:`fold_transaction`, the ids of the oldest
        ``limit`` rows are read once and every statement names them (a
        sub-select run twice could pick rows the fold did not count, and
        some engines cannot delete from a table a sub-select of it limits);
        fewer than ``limit`` ends the purge."""
        started = time.perf_counter()
        with self.fold_transaction(conn):
            ids = [row[0] for row in conn.execute(*_sql.oldest_ids(model, when, limit)).fetchall()]
            if ids:
                rows = model.id.in_(ids)
                if fold is not None:
                    fold(conn, rows, max(ids))
                conn.execute(*_sql.render(model._meta.database, model.delete().where(rows)))
        return PurgeChunk(len(ids), time.perf_counter() - started, None, len(ids) < limit)

    def purge_pacer(self) -> PurgePacer:
        """A new pacer for one purge (default: :class:`FixedPacer`)."""
        return FixedPacer()

    def move_gone_keys(self, database: peewee.Database, conn: Any, keys: Any, purged: Any,
                       model: Type[Execution], after: Optional[str], last: Optional[str],
                       stamp: str, *, ahead: bool = False) -> Tuple[int, float, float]:
        """One step of a purge's sweep of the keys, in one short
        :meth:`exclusive_transaction` named ``keys``: copy the keys past
        ``after`` up to ``last`` (``None``: from the first, to the last)
        whose row is gone into ``purged``, stamped ``stamp`` (one already
        there stays as it is), and delete them from ``keys`` (see
        :mod:`telemetry_orm.keys`). Return how many were deleted, the
        seconds the transaction held the lock, and the seconds spent
        reading before it took it. ``ahead``: nobody else has written
        lately, so the step may look for the gone keys before it takes the
        lock (an engine that does must look again, under the lock, if
        anyone wrote meanwhile).

        Default: two statements over the stretch, each looking the rows up,
        nothing read ahead."""
        with self.exclusive_transaction(database, "keys"):
            started = time.perf_counter()
            conn.execute(*_sql.move_gone_keys(keys, purged, model, after, last, stamp,
                                              upsert=self.dialect.upsert))
            cursor = conn.execute(*_sql.delete_gone_keys(keys, model, after, last))
            held = time.perf_counter() - started
        return max(0, int(cursor.rowcount)), held, 0.0

    def newest_id(self, conn: Any, model: Type[Execution]) -> Optional[int]:
        """The largest id of ``executions`` such that no row with a smaller
        one can still be committed (0 for an empty table); ``None`` when that
        cannot be known now without making writers wait."""
        raise NotImplementedError

    # -- facts --------------------------------------------------------------------

    @classmethod
    def has_table(cls, conn: Any, name: str) -> bool:
        """Whether the table ``name`` exists (where the store keeps its
        tables: the schema :attr:`current_schema` names)."""
        sql = ("SELECT 1 FROM information_schema.tables WHERE table_schema = "
               f"{cls.current_schema} AND table_name = {cls.sql_database.param}")
        return conn.execute(sql, (name,)).fetchone() is not None

    @classmethod
    def storage(cls, database: peewee.Database, path: str) -> Storage:
        """Sizes, schema version and log of ``database`` (opened from
        ``path``), read inside the caller's transaction."""
        raise NotImplementedError

    # -- errors -------------------------------------------------------------------

    def is_busy(self, exc: BaseException) -> bool:
        """Whether a driver error says another connection held a lock (or
        the pool stayed full) too long. Default: no error does."""
        return False

    def translate(self, exc: BaseException) -> TelemetryError:
        """A driver error met during an operation, as the package's error:
        :class:`~telemetry_orm.StoreBusyError` when another connection holds
        a lock (:meth:`is_busy`), else :class:`~telemetry_orm.DatabaseError`."""
        return operation_error(self.path, exc, busy=self.is_busy(exc))

    def describe(self, exc: BaseException) -> TelemetryError:
        """A driver error met while opening, explained (default: busy or not)."""
        if self.is_busy(exc):
            return StoreBusyError(f"{self.path}: database is busy ({exc})")
        return DatabaseError(f"{self.path}: {exc}")

def operation_error(path: str, exc: BaseException, *, busy: bool) -> TelemetryError:
    """The package's error for a driver error met during an operation:
    what every backend's :meth:`Backend.translate` returns."""
    if busy:
        return StoreBusyError(
            f"{path}: database is busy (another connection held the write "
            f"lock longer than the busy timeout); nothing was written: {exc}"
        )
    return DatabaseError(f"{path}: {exc}")


def in_transaction_error(path: str, what: str) -> TelemetryError:
    """The error of work that runs transactions of its own, asked for inside
    one the application has open on this thread's connection."""
    hint = ("; open the store once at start-up, outside any transaction "
            "(create_telemetry_store(database), or store.prepare() for a store made on a "
            "DatabaseProxy)" if "tables" in what else "; call it outside the transaction")
    return TransactionOpenError(
        f"{path}: cannot {what} inside a transaction open on this thread's connection "
        f"(database.atomic()): that work commits in steps of its own{hint}")

"""What a store asks of its database engine: the :class:`Backend` protocol.

:class:`~telemetry_orm.store.PeeweeTelemetryStore` validates, serialises
and counts; everything an engine does differently is one method here:
opening (for writing and read-only), schema set-up and its version, the
INSERT, date arithmetic, chunked deletes and their pacing, the upkeep of an
open store (its log, its connections across ``fork()`` and close), what a
driver error means, and the SQL dialect of reports. Each engine is one
module under ``backends/``, picked by :mod:`telemetry_orm.engines`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import (
    Any,
    Callable,
    ContextManager,
    List,
    Mapping,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Type,
    Union,
)

import peewee
from peewee import ColumnBase

from ..errors import DatabaseError, StoreBusyError, TelemetryError, TransactionOpenError
from ..schema import Execution
from ..sql import KeyedSql, Replacing
from ..zones import Offset

Logger = Union[logging.Logger, "logging.LoggerAdapter[Any]"]

#: How long, in milliseconds, a write waits for another connection's lock
#: before :class:`~telemetry_orm.StoreBusyError` (the original store's
#: ``busy_timeout``).
BUSY_TIMEOUT_MS = 5000

#: Size, in bytes, an engine that keeps its log in a file beside the
#: database cuts that file back to once its changes are copied.
LOG_SIZE_LIMIT = 64 * 1024 * 1024

#: Rows a purge deletes in its first transaction (engines may size later ones).
PURGE_CHUNK = 5000


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
    take.
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
    #: Makes a connection of ``database`` ready for ``bucket``.
    prepare: Callable[[Any], None]
    no_index: Callable[[ColumnBase], ColumnBase]
    as_text: Callable[[ColumnBase], ColumnBase]
    total: Callable[[ColumnBase], ColumnBase]


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
class CheckpointResult:
    """What :meth:`~telemetry_orm.store.PeeweeTelemetryStore.checkpoint` did."""

    #: False when the engine keeps its log itself (a server): nothing was done.
    applies: bool
    #: Another connection (a reader's snapshot, say) kept it from finishing.
    busy: bool = False
    #: Changes in the log before it ran, in the engine's unit (SQLite: pages).
    logged: int = 0
    #: Of those, how many are now in the database file.
    copied: int = 0
    #: Whether the log file was emptied (a ``truncate`` checkpoint that finished).
    emptied: bool = False
    #: The log file beside the database, where the engine keeps one.
    log_file: Optional[str] = None

    @property
    def complete(self) -> bool:
        """Every logged change is in the database file."""
        return not self.busy and self.copied >= self.logged


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
#: connection and the condition of the rows it is about to delete.
Fold = Callable[[Any, Any], None]


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


class PurgePacer(Protocol):
    """How one purge sizes its chunks and paces them for other writers."""

    #: Rows the next chunk may delete (an engine that deletes a stretch of
    #: ids at a time takes it as the stretch's width, which bounds the rows).
    rows: int

    def start(self, conn: Any) -> None:
        """Before the first chunk, on the purging connection."""
        ...

    def after_chunk(self, conn: Any, held: float) -> float:
        """After a chunk that held its locks ``held`` seconds (with the
        connection still reserved): update :attr:`rows` and return the
        seconds to leave other writers before the next chunk."""
        ...

    def finish(self, conn: Any) -> None:
        """After the last chunk (or a failed one)."""
        ...


class StoreAccess(Protocol):
    """What an :class:`Upkeep` may use of its store."""

    path: str
    log: Logger

    @property
    def closed(self) -> bool: ...

    def connection(self, *, locked: bool = True) -> ContextManager[Any]:
        """This thread's driver connection for one operation (with the
        store's lock held unless ``locked=False``)."""
        ...


class Upkeep(Protocol):
    """The engine's care of one open store, beside its statements: its log,
    its connections across ``fork()``, and closing them. The store calls
    these hooks at the moments named; an engine that has nothing to do at
    one makes it a no-op."""

    def checkpoint(self, *, truncate: bool = False, wait: bool = True) -> CheckpointResult:
        """Copy the log into the database; ``truncate``: also empty the log
        file; ``wait=False``: in the background (the result then says what
        was asked, not what was done)."""
        ...

    def purge_gap(self, pause: float) -> None:
        """Between two purge chunks: leave other writers ``pause`` seconds
        (the pacer's figure), doing log upkeep meanwhile."""
        ...

    def after_purge(self, deleted: int) -> None:
        """After a purge that deleted ``deleted`` rows."""
        ...

    def before_write(self) -> None:
        """Before a write on this thread (the store's lock held)."""
        ...

    def after_write(self, rows: int) -> None:
        """After a committed write of ``rows`` rows (the store's lock held);
        must not raise: the rows are written."""
        ...

    def stream_started(self) -> Any:
        """This thread will now commit batch after batch (a background
        writer); return what :meth:`stream_ended` needs to undo."""
        ...

    def between_batches(self) -> None:
        """Between two batches of such a stream."""
        ...

    def stream_ended(self, token: Any) -> None:
        """The stream of this thread is over."""
        ...

    def close(self) -> None:
        """Stop any helper and close every connection the store opened."""
        ...

    def before_fork(self) -> None: ...

    def after_fork_in_parent(self) -> None: ...

    def after_fork_in_child(self) -> None:
        """In a forked child: stop using the parent's connections and threads."""
        ...


class Backend(Protocol):
    """The engine-specific part of a store.

    Methods that take ``conn`` get the driver's own connection, as yielded by
    :meth:`connection`; they run one statement or one short transaction.
    """

    #: Short engine name (``"sqlite"``, ``"postgresql"``), for messages and logs.
    name: str
    #: Where the data lives, safe to print (no password).
    path: str
    #: The model class a store binds to its database (columns suited to the engine).
    model_base: Type[Execution]
    #: The model of the keys table (``store.record(entry, key=…)``) on this engine.
    key_model: Type[peewee.Model]
    #: The models of the rollups: per hour, duration sketches, the state row.
    rollup_models: Tuple[Type[peewee.Model], ...]
    #: Driver errors a store turns into :class:`~telemetry_orm.TelemetryError`.
    driver_errors: Tuple[Type[BaseException], ...]
    #: How reports spell buckets and the rest on this engine.
    dialect: ReportDialect
    #: Checks a validated record's row against what this engine cannot store
    #: (raising :class:`~telemetry_orm.TelemetryValidationError` naming the
    #: field), or ``None`` when it stores every valid record.
    check_row: Optional[Callable[[Sequence[Any]], None]]
    #: Every thread of the store shares one connection (SQLite's ``':memory:'``,
    #: where a new connection would be a new, empty database), so even a
    #: read must hold the store's lock.
    one_connection: bool
    #: Each connection is a database of its own, gone when it closes.
    memory: bool
    #: Why ``store.background()`` cannot be used on this database (``None``: it can).
    no_background: Optional[str]

    @classmethod
    def from_location(cls, location: str, *, busy_timeout: int,
                      log_size_limit: int) -> Backend:
        """The backend for a path or URL of this engine (nothing is opened)."""
        ...

    @classmethod
    def from_database(cls, database: peewee.Database, *, configure: bool, busy_timeout: int,
                      log_size_limit: int) -> Backend:
        """The backend of a store on a database an application opened and
        owns: :meth:`open` returns it, nothing closes it, and its
        connections keep their settings (``configure``: apply the store's
        own, ``busy_timeout`` and ``log_size_limit`` among them)."""
        ...

    #: The database is an application's (see :meth:`from_database`).
    borrowed: bool

    @classmethod
    def in_transaction(cls, database: peewee.Database) -> bool:
        """Whether this thread's connection of ``database`` (if it has one
        open) is inside a transaction; opens nothing."""
        ...

    def missing(self) -> Optional[str]:
        """Why there is no database at this location ("no such database
        file"), or ``None`` when there is one or only connecting can tell."""
        ...

    def open(self) -> peewee.Database:
        """A peewee database for this location (checked, not yet connected)."""
        ...

    def files(self) -> Tuple[str, ...]:
        """The files the database lives in (none for a server or ``:memory:``),
        so that nothing writes over them."""
        ...

    def open_readonly(self, *, purpose: str = "read") -> peewee.Database:
        """A database that can only be read, its telemetry table checked
        for ``purpose`` (see :func:`telemetry_orm.schema.check_table`);
        nothing is created. Close it with ``database.close()``."""
        ...

    def prepare(self, database: peewee.Database, model: Type[Execution]) -> None:
        """Check the database and create or upgrade its schema."""
        ...

    def upkeep(self, database: peewee.Database, store: StoreAccess) -> Upkeep:
        """The upkeep of one store opened on ``database``."""
        ...

    def connection(self, database: peewee.Database) -> ContextManager[Any]:
        """The driver connection to use for one operation of this thread."""
        ...

    def exclusive_transaction(self, database: peewee.Database, name: str) -> ContextManager[None]:
        """A write transaction on ``database``'s connection of this thread that
        no other connection runs work ``name`` in at the same time."""
        ...

    def insert_sql(self, model: Type[Execution]) -> str:
        """The INSERT every ``record()`` runs, built once per store."""
        ...

    def insert_one(self, database: peewee.Database, sql: str, params: Sequence[Any]) -> int:
        """Run ``sql`` with one record's values on this thread's connection
        (the hot path); return the new row id."""
        ...

    def keyed_sql(self, model: Type[Execution], keys: Any, purged: Any) -> KeyedSql:
        """The statements of a keyed ``record()``, built once per store
        (``keys`` and ``purged``: the bound key models)."""
        ...

    def insert_keyed(
        self, database: peewee.Database, sql: KeyedSql, rows: Sequence[Sequence[Any]],
        keys: Sequence[Optional[str]], replace: Optional[Replacing],
    ) -> List[int]:
        """Record each row under its key (``None``: no key) in one
        transaction that no other connection records the same keys in at the
        same time (a savepoint inside a transaction already open): for a key
        already recorded, that row (when ``replace`` is given and the row is
        there, set to the new values inside it), else a new row and its
        key. Return the rows' ids in order."""
        ...

    def insert_many(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> List[int]:
        """Run ``sql`` for every row in one transaction (a savepoint inside a
        transaction already open); return the new ids in order."""
        ...

    def copy_rows(
        self, conn: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert ``rows`` into ``table`` as fast as the engine allows, within
        the caller's transaction; no ids are returned (bulk loads, copies)."""
        ...

    @classmethod
    def cutoff(cls, conn: Any, days: float) -> Any:
        """The database clock's "now" minus ``days`` days, as ``created_at``
        compares; ``None`` when that is before the earliest time the engine
        represents (no row can be older)."""
        ...

    @classmethod
    def count_before(cls, conn: Any, model: Type[Execution], when: Any) -> int:
        """How many rows have ``created_at`` before ``when``."""
        ...

    def purge_start(self, conn: Any, model: Type[Execution], when: Any) -> Any:
        """Where a purge of the rows older than ``when`` begins: the
        ``position`` of its first :meth:`delete_chunk_before`. Only reads,
        so the store need not hold its lock meanwhile."""
        ...

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
        count them)."""
        ...

    @classmethod
    def snapshot(cls, database: peewee.Database) -> None:
        """Make the transaction just begun on ``database`` read one snapshot
        in all its statements (a report's queries must agree)."""
        ...

    def fold_transaction(self, conn: Any) -> ContextManager[None]:
        """A write transaction on ``conn`` that no other connection folds
        rows into the rollups in at the same time."""
        ...

    def newest_id(self, conn: Any, model: Type[Execution]) -> Optional[int]:
        """The largest id of ``executions`` such that no row with a smaller
        one can still be committed (0 for an empty table); ``None`` when that
        cannot be known now without making writers wait."""
        ...

    @classmethod
    def has_table(cls, conn: Any, name: str) -> bool:
        """Whether the table ``name`` exists (where the store keeps its tables)."""
        ...

    def purge_pacer(self) -> PurgePacer:
        """A new pacer for one purge."""
        ...

    def translate(self, exc: BaseException) -> TelemetryError:
        """A driver error met during an operation, as the package's error:
        :class:`~telemetry_orm.StoreBusyError` when another connection holds
        a lock, else :class:`~telemetry_orm.DatabaseError`."""
        ...

    def describe(self, exc: BaseException) -> TelemetryError:
        """A driver error met while opening, explained."""
        ...

    @classmethod
    def storage(cls, database: peewee.Database, path: str) -> Storage:
        """Sizes, schema version and log of ``database`` (opened from
        ``path``), read inside the caller's transaction."""
        ...


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

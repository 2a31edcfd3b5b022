"""The store facade: open a database, record executions, purge, checkpoint, close.

:class:`PeeweeTelemetryStore` validates, serialises and counts; everything
an engine does differently is its backend's (``store.backend``, see
:mod:`telemetry_orm.backends.base`), picked from the location by
:mod:`telemetry_orm.engines`.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import datetime as _dt
import logging
import os
import threading
import time
import weakref
from types import TracebackType
from typing import (
    Any,
    Callable,
    ContextManager,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    Union,
)

import peewee
from peewee import SQL, fn

from . import background as _background
from . import engines, forking, rollups
from . import keys as _keys
from .backends.base import (
    BUSY_TIMEOUT_MS,
    LOG_SIZE_LIMIT,
    Backend,
    CheckpointResult,
    Fold,
    Logger,
    in_transaction_error,
)
from .checks import check_count, check_key, check_number
from .engines import backend_for
from .errors import (
    BackgroundWriteError,
    DatabaseError,
    StoreClosedError,
    TelemetryError,
    TelemetryValidationError,
    TransactionOpenError,
)
from .record import TelemetryRecord, row_of, rows_of
from .reports import Report, report
from .rollups import RollupResult
from .schema import KEYS_TABLE, Execution, bind_model, format_timestamp, parse_timestamp
from .sql import KeyedSql, render

LOGGER_NAME = "telemetry_orm"

#: Writes between two automatic checkpoints (the original store's TELEM-08).
CHECKPOINT_EVERY = 1000

#: Default of ``journal_size_limit`` (bytes): see :func:`create_telemetry_store`.
JOURNAL_SIZE_LIMIT = LOG_SIZE_LIMIT

#: Rows a step of :meth:`PeeweeTelemetryStore.rollup` folds in, about
#: (some 40 ms of SQLite's write lock: folding costs about 15 µs a row).
FOLD_ROWS = 2_500

#: Days a purged key is kept (see :mod:`telemetry_orm.keys`).
KEY_DAYS = _keys.KEY_DAYS

#: Seconds ``fork()`` waits for the writes in progress on an application's
#: database (see :meth:`PeeweeTelemetryStore.before_fork`).
FORK_WAIT = 5.0

Entry = Union[TelemetryRecord, Mapping[str, Any]]
PathLike = Union[str, "os.PathLike[str]"]
Row = Tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class PurgeProgress:
    """Where a running purge is, passed to ``progress`` after each chunk."""

    deleted: int
    chunks: int


@dataclasses.dataclass(frozen=True)
class PurgeResult:
    """What :meth:`PeeweeTelemetryStore.purge` did."""

    #: Rows deleted.
    deleted: int
    #: Write transactions it took.
    chunks: int
    #: The longest time, in seconds, one of them held the engine's write lock.
    longest_hold: float
    #: Rows older than this (the database clock's time, as ``created_at``
    #: compares) were deleted.
    cutoff: Any
    seconds: float


class TelemetryStore(abc.ABC):
    """What every telemetry store does. Also a context manager that closes it.

    >>> with create_telemetry_store(":memory:") as store:
    ...     row_id = store.record({"repo": "acme/api", "eventType": "push",
    ...                            "model": "claude-sonnet-4-5", "conclusion": "success"})
    """

    @property
    @abc.abstractmethod
    def model(self) -> Type[Execution]:
        """The store's own ``Execution`` model class, bound to its database."""

    @abc.abstractmethod
    def record(self, entry: Entry, *, key: Optional[str] = None, replace: bool = False) -> int:
        """Validate and insert one execution (once per ``key``); return its row id."""

    @abc.abstractmethod
    def record_many(self, entries: Iterable[Entry]) -> List[int]:
        """Validate every entry, then insert all in one transaction; return
        their row ids in order."""

    @abc.abstractmethod
    def background(
        self,
        max_batch: int = _background.MAX_BATCH,
        max_delay: float = _background.MAX_DELAY,
        *,
        max_queue: int = _background.MAX_QUEUE,
        retries: int = _background.RETRIES,
        retry_delay: float = _background.RETRY_DELAY,
    ) -> _background.BackgroundRecorder:
        """A recorder that validates in the caller and writes in batches from a thread."""

    @abc.abstractmethod
    def purge_older_than(self, days: float) -> int:
        """Delete rows older than ``days`` days; return how many."""

    @abc.abstractmethod
    def count_older_than(self, days: float) -> int:
        """How many rows :meth:`purge_older_than` would delete now."""

    @abc.abstractmethod
    def checkpoint(self) -> CheckpointResult:
        """Move the engine's log into the database (where it keeps one)."""

    @abc.abstractmethod
    def report(self, **options: Any) -> Report:
        """A usage report of the store's executions."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the database; later calls raise :class:`StoreClosedError`."""

    def __enter__(self) -> TelemetryStore:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


class _Users:
    """Counts the operations running without the store lock, so that
    :meth:`PeeweeTelemetryStore.close` can wait for them."""

    def __init__(self, *, closed: bool = False) -> None:
        self._changed = threading.Condition()
        self._count = 0
        self._mine = threading.local()  # this thread's share of _count
        self.closed = closed
        self._paused = False

    @contextlib.contextmanager
    def use(self, path: str, let_through: Optional[Callable[[], bool]] = None
            ) -> Iterator[None]:
        with self._changed:
            # While fork() waits, new operations wait, but not those nested
            # in one this thread has running (it is waited for), nor those
            # ``let_through`` says must go on (a call inside a transaction
            # of the caller's: another operation may wait for its end).
            while self._paused and not getattr(self._mine, "count", 0) and not (
                    let_through is not None and let_through()):
                self._changed.wait()
            if self.closed:
                raise StoreClosedError(f"{path}: the telemetry store is closed")
            self._count += 1
            self._mine.count = getattr(self._mine, "count", 0) + 1
        try:
            yield
        finally:
            with self._changed:
                self._count -= 1
                self._mine.count -= 1
                self._changed.notify_all()

    def close(self, *, wait: bool = True) -> None:
        """Refuse new operations; unless ``wait=False``, wait for the other
        threads' running ones to end (a thread closing the store inside its
        own read goes on)."""
        with self._changed:
            self.closed = True
            while wait and self._count > getattr(self._mine, "count", 0):
                self._changed.wait()

    def pause(self, timeout: float) -> bool:
        """Hold new operations back (see :meth:`use`) until :meth:`resume`,
        and wait, at most ``timeout`` seconds, for the other threads'
        running ones to end; say whether they did."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._paused = True
            while self._count > getattr(self._mine, "count", 0):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def resume(self) -> None:
        with self._changed:
            self._paused = False
            self._changed.notify_all()


class BatchWriter:
    """The store's hook for a thread that commits batch after batch (the
    background recorder's writer): :meth:`write` inserts validated rows as
    ``record_many`` does, and tells the engine a stream is going on, so it
    can keep its log in shape between batches. Made by
    :meth:`PeeweeTelemetryStore.batch_writer`; use it from one thread and
    :meth:`close` it from that thread when the stream ends."""

    def __init__(self, store: PeeweeTelemetryStore) -> None:
        self.store = store
        self._started = False
        self._pending = False  # a batch was written since the last upkeep
        self._token: Any = None

    def write(self, rows: List[Row], keys: Optional[List[Optional[str]]] = None) -> List[int]:
        """Insert ``rows`` (INSERT parameters of validated records) in one
        transaction, each under its key in ``keys`` when given (see
        :meth:`PeeweeTelemetryStore.record_many`); return their ids."""
        if not self._started:
            # At the first batch, not when the thread starts: in a forked
            # child the store is ready by now.
            self._token = self.store._upkeep.stream_started()
            self._started = True
        elif self._pending:
            # Between two batches (not after the last one's commit, so that
            # whoever waits for that batch is not kept waiting).
            self.store._upkeep.between_batches()
        self._pending = True
        if keys is not None:
            return self.store._write_keyed(rows, keys, False)
        return self.store._insert_rows(rows)

    def close(self) -> None:
        """The stream is over: the engine undoes what it set up for it."""
        if self._started:
            self._started = False
            if self._pending and not self.store.closed:
                self.store._upkeep.between_batches()
            self.store._upkeep.stream_ended(self._token)


class PeeweeTelemetryStore(TelemetryStore):
    """A :class:`TelemetryStore` on a peewee database, made by
    :func:`create_telemetry_store`.

    ``database`` is its peewee database and ``model`` its own ``Execution``
    class bound to it, for queries:
    ``store.model.select().where(store.model.repo == "acme/api")``.
    What differs between engines lives in ``backend``.

    Thread-safe: the store serialises its own writes in-process (SQLite
    serialises writers anyway), and each thread of a file store has its own
    connection. A ``':memory:'`` store shares its one connection among
    threads, since every new connection would be a new, empty database.

    On an application's own database (see :func:`create_telemetry_store`)
    writes are not serialised in-process: each runs on its thread's
    connection, maybe inside that thread's transaction, and waiting for
    another thread there while holding a lock of the store could wait for
    ever. ``opener`` then makes the backend at the first use (a
    ``DatabaseProxy`` initialized later): :meth:`prepare` does it at once.
    """

    def __init__(
        self,
        backend: Optional[Backend],
        logger: Optional[Logger] = None,
        *,
        checkpoint_every: int = CHECKPOINT_EVERY,
        opener: Optional[Callable[[], Backend]] = None,
        path: str = "",
    ) -> None:
        self.log = logger or logging.getLogger(LOGGER_NAME)
        self.checkpoint_every = checkpoint_every
        self._lock = threading.RLock()
        self._closed = False
        #: Operations running without the store lock (reads, the helper's
        #: checkpoints): close() waits for them before closing connections.
        self._unlocked = _Users()
        self._writes = 0
        self._recorders: weakref.WeakSet[_background.BackgroundRecorder] = weakref.WeakSet()
        self._opener = opener
        self.path = path
        #: What fork() lets through while it waits (see _Users.use): on an
        #: application's database, the calls inside a transaction.
        self._let_through: Optional[Callable[[], bool]] = None
        if backend is not None:
            self._open(backend)

    #: What exists only once the store is open (see :meth:`__getattr__`).
    _OPENED = frozenset({"backend", "database", "_model", "_upkeep", "_insert_sql",
                         "_check_row", "_keyed_sql", "_rollups", "_insert_one", "_serial"})

    def __getattr__(self, name: str) -> Any:
        # Only for what is not set yet: a store on a proxy, before its first use.
        if name in self._OPENED and self.__dict__.get("_opener") is not None:
            self.prepare()
            return getattr(self, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def prepare(self) -> PeeweeTelemetryStore:
        """Open the store now if it is not yet: on an application's
        ``DatabaseProxy`` (or a database made with ``None``) the store opens
        at its first use, which creates the tables when they are missing; call
        this at start-up, once the proxy is initialized and outside any
        transaction. Returns the store; does nothing when it is open."""
        if self.__dict__.get("_opener") is None:
            if self._closed:
                raise StoreClosedError(f"{self.path}: the telemetry store is closed")
            return self
        with self._lock:
            if self._closed:
                raise StoreClosedError(f"{self.path}: the telemetry store is closed")
            opener = self._opener
            if opener is not None:
                self._open(opener())
                self._opener = None
        return self

    def _open(self, backend: Backend) -> None:
        """Open the database, set up its schema and the store's state. On
        failure nothing of it is left set (a store on a proxy can try again
        at its next use)."""
        database: peewee.Database = backend.open()
        # A connection opened here for the set-up, on an application's
        # database, is closed after it: the calling thread had none (a
        # pre-fork server's master, a thread that connects per request).
        # Not an in-memory one: closing it would drop the data.
        opened_here = backend.borrowed and database.is_closed() and not backend.memory
        model: Type[Execution] = bind_model(database, backend.model_base)
        upkeep = backend.upkeep(database, self)
        # Known to fork() before the first connection opens, and set up
        # under the lock, so a fork never lands in the middle of a schema
        # upgrade.
        forking.track(upkeep, forking.ENGINE)
        forking.track(self, forking.STORE)
        made: Optional[Tuple[Type[peewee.Model], ...]] = None
        try:
            with self._lock:
                backend.prepare(database, model)
                if backend.borrowed:
                    # The keys and rollup tables with the schema, not at
                    # their first use: that use may be inside one of the
                    # application's transactions, which might roll them back.
                    made = _create_tables(backend, database,
                                          (*backend.rollup_models, backend.key_model,
                                           *_keys.SIDE_MODELS),
                                          outside_transaction="create its keys and rollup "
                                                              "tables")
        except BaseException:
            forking.untrack(self)
            forking.untrack(upkeep)
            upkeep.close()
            if opened_here and not database.is_closed() and not database.in_transaction():
                database.close()
            raise
        self.path = backend.path
        # Made at open on an application's database, and bound now: looking
        # the tables up at the first keyed record or replace would read
        # inside the caller's transaction before its write, and on SQLite a
        # transaction that has read cannot take the write lock once another
        # connection wrote.
        self._keyed_sql: Optional[KeyedSql] = None
        self._rollups: Optional[Tuple[Type[peewee.Model], ...]] = None
        if made is not None:
            n = len(backend.rollup_models)
            self._rollups = made[:n]
            self._keyed_sql = backend.keyed_sql(model, made[n], made[n + 1])
        #: Writes hold the store's lock: not on an application's database
        #: (unless its threads share one connection).
        self._serial = not backend.borrowed or backend.one_connection
        if not self._serial:
            self._let_through = self._in_transaction
        self._insert_sql = backend.insert_sql(model)
        self._insert_one = backend.insert_one
        self._upkeep = upkeep
        self.database = database
        self._model = model
        self.backend = backend
        # Last: a thread that finds it set finds the store open.
        self._check_row = backend.check_row
        # The original store checkpoints once at start-up (TELEM-08); not
        # inside an application's transaction (it would only be busy).
        if not backend.in_transaction(database):
            self.checkpoint()
        if opened_here and not database.is_closed():
            database.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self.path!r} ({state})>"

    @property
    def model(self) -> Type[Execution]:
        """The store's own ``Execution`` class, bound to ``database`` alone."""
        return self._model

    # -- writing ---------------------------------------------------------

    def record(self, entry: Entry, *, key: Optional[str] = None, replace: bool = False) -> int:
        """Validate ``entry`` (a :class:`TelemetryRecord` or a mapping) and
        insert it; return the new row id.

        ``created_at`` is set by the database (UTC). Nothing is written for an
        invalid entry. Every ``checkpoint_every`` writes, :meth:`checkpoint`
        runs (in the background: this call does not wait for it).

        With a ``key`` (a webhook's delivery id, say) recording is
        idempotent: if a row was recorded under that key in this store,
        nothing is written and its id is returned; with ``replace=True``
        that row's columns are set to the new values instead (its id and
        ``created_at`` kept), and the rollups move with them. Keys live in a
        table beside ``executions``, written in the same transaction as the
        row; two processes recording one key at once give one row. A key
        outlives its row's purge by ``key_days`` (see :meth:`purge`): until
        then it answers its row's old id and writes nothing (``replace``
        too: the rollups count that row as it was).
        """
        params = row_of(entry)
        if self._check_row is not None:
            self._check_row(params)
        if key is not None:
            return self._record_keyed(params, key, replace)
        with self._writing():
            if self._closed:
                raise StoreClosedError(f"{self.path}: the telemetry store is closed")
            self._upkeep.before_write()
            try:
                row_id = self._insert_one(self.database, self._insert_sql, params)
            except self.backend.driver_errors as exc:
                raise self.backend.translate(exc) from exc
            self._writes += 1
            if self._writes >= self.checkpoint_every:
                self._count_writes(0)
            self._upkeep.after_write(1)
        return row_id

    def _record_keyed(self, params: Row, key: Any, replace: bool) -> int:
        check_key("key", key)
        return self._write_keyed([params], [key], replace)[0]

    def _write_keyed(self, rows: List[Row], keys: List[Optional[str]], replace: bool
                     ) -> List[int]:
        # Rows and keys already checked.
        with self._writing():
            if self._closed:
                raise StoreClosedError(f"{self.path}: the telemetry store is closed")
            self._upkeep.before_write()
            if replace:
                self.prepare_replace()
            try:
                ids = self.backend.insert_keyed(
                    self.database, self._keyed_sql or self.keyed_sql(), rows, keys,
                    self.replacing if replace else None)
            except self.backend.driver_errors as exc:
                raise self.backend.translate(exc) from exc
            self._count_writes(len(rows))
            self._upkeep.after_write(len(rows))
        return ids

    def keyed_sql(self) -> KeyedSql:
        """The statements of keyed writes, built (and the keys table created
        if need be) at the first."""
        with self._lock:
            if self._closed:
                raise StoreClosedError(f"{self.path}: the telemetry store is closed")
            if self._keyed_sql is None:
                key_model, purged, _ = _create_tables(
                    self.backend, self.database, [self.backend.key_model, *_keys.SIDE_MODELS])
                self._keyed_sql = self.backend.keyed_sql(self._model, key_model, purged)
            return self._keyed_sql

    @contextlib.contextmanager
    def replacing(self, conn: Any, row_id: int) -> Iterator[None]:
        """Around the UPDATE that replaces the values of row ``row_id`` (a
        keyed write with ``replace``, on ``conn``, inside its transaction):
        if the rollups count the row, its old values go out of them before,
        and after it the new ones go in if the row, maybe at another
        ``created_at``, counts then; no other connection folds meanwhile."""
        with self.backend.fold_transaction(conn):
            models = self._rollups
            if models is None and self.backend.has_table(conn, rollups.STATE_TABLE):
                # Made by another store since prepare_replace(): all at once.
                models = tuple(bind_model(self.database, base)
                               for base in self.backend.rollup_models)
            bound: Tuple[Type[peewee.Model], ...] = models or ()
            where = None
            if bound:
                counted = rollups.counted(self._model, rollups.read_state(conn, bound))
                if counted is not None:
                    where = (self._model.id == row_id) & counted
            if where is not None:
                self._fold(conn, bound, where, unfold=True)
            yield
            if where is not None:
                self._fold(conn, bound, where)

    def record_many(
        self,
        entries: Iterable[Entry],
        *,
        keys: Optional[Sequence[Optional[str]]] = None,
        replace: bool = False,
    ) -> List[int]:
        """Validate every entry, then insert them all in one transaction;
        return their row ids, in the order of ``entries``.

        If any entry is bad, :class:`~telemetry_orm.TelemetryValidationError`
        names its position and field (``entry 3: cost_usd: …``) and nothing
        is written. The rows are committed together or not at all; inside a
        transaction of your own (``store.database.atomic()``) they become part
        of it. Each row counts towards the automatic checkpoint as a
        :meth:`record` does.

        The entries are all held in memory first: for a long stream, call it
        once per batch of a few thousand, or use :meth:`background`.

        ``keys``, one per entry (``None``: no key), make each keyed entry
        idempotent as :meth:`record` does, ``replace`` included.

        >>> with create_telemetry_store(":memory:") as store:
        ...     run = {"event_type": "push", "model": "m", "conclusion": "success"}
        ...     store.record_many([{**run, "repo": "acme/api"}, {**run, "repo": "acme/web"}])
        [1, 2]
        """
        rows = self.checked_rows(entries)
        if keys is None:
            if replace:
                raise TelemetryValidationError("replace", "needs keys")
            return self._insert_rows(rows)
        try:
            key_list: Optional[List[Optional[str]]] = (
                None if isinstance(keys, (str, bytes)) else list(keys))
        except TypeError:
            key_list = None
        if key_list is None or len(key_list) != len(rows):
            raise TelemetryValidationError(
                "keys", f"must be a sequence of one key (or None) per entry ({len(rows)})")
        for index, key in enumerate(key_list):
            if key is not None:
                try:
                    check_key("keys", key)
                except TelemetryValidationError as exc:
                    raise exc.at_index(index) from None
        return self._write_keyed(rows, key_list, replace)

    def checked_rows(self, entries: Iterable[Entry]) -> List[Row]:
        """The INSERT parameters of every entry, validated as records and
        against what this store's engine cannot store; a bad one raises
        :class:`~telemetry_orm.TelemetryValidationError` naming its position."""
        rows = rows_of(entries)
        check = self._check_row
        if check is not None:
            for index, row in enumerate(rows):
                try:
                    check(row)
                except TelemetryValidationError as exc:
                    raise exc.at_index(index) from None
        return rows

    def checked_row(self, entry: Entry) -> Row:
        """One entry's INSERT parameters, checked as :meth:`checked_rows` does."""
        row = row_of(entry)
        if self._check_row is not None:
            self._check_row(row)
        return row

    def _insert_rows(self, rows: List[Row]) -> List[int]:
        # Rows already validated (by record_many, or by a batch writer).
        with self.connection() as conn:
            if not rows:
                return []
            self._upkeep.before_write()
            ids = self.backend.insert_many(conn, self._insert_sql, rows)
            self._count_writes(len(rows))
            self._upkeep.after_write(len(rows))
        return ids

    def batch_writer(self) -> BatchWriter:
        """The hook of a thread that writes batch after batch of validated
        rows (see :class:`BatchWriter`); :class:`~telemetry_orm.BackgroundRecorder`
        is its user."""
        return BatchWriter(self)

    def background(
        self,
        max_batch: int = _background.MAX_BATCH,
        max_delay: float = _background.MAX_DELAY,
        *,
        max_queue: int = _background.MAX_QUEUE,
        retries: int = _background.RETRIES,
        retry_delay: float = _background.RETRY_DELAY,
    ) -> _background.BackgroundRecorder:
        """A :class:`~telemetry_orm.BackgroundRecorder` writing to this store:
        ``record()`` validates and queues, a writer thread commits batches of
        up to ``max_batch`` records at least every ``max_delay`` seconds.

        Closing the store closes its recorders first, writing what they hold.

        >>> with create_telemetry_store(":memory:") as store:
        ...     with store.background() as recorder:
        ...         recorder.record({"repo": "acme/api", "event_type": "push",
        ...                          "model": "m", "conclusion": "success"})
        ...     store.model.select().count()
        1
        """
        why = self.backend.no_background
        if why:
            raise DatabaseError(f"{self.path}: a background recorder cannot be used here: {why}")
        recorder = _background.BackgroundRecorder(
            self,
            max_batch=max_batch,
            max_delay=max_delay,
            max_queue=max_queue,
            retries=retries,
            retry_delay=retry_delay,
        )
        self._recorders.add(recorder)
        return recorder

    def _count_writes(self, count: int) -> None:
        # Called with the lock held.
        self._writes += count
        if self._writes >= self.checkpoint_every:
            self._writes = 0
            # The rows are committed: a failing checkpoint (no new thread
            # during interpreter shutdown, a busy file …) must not make the
            # caller believe otherwise and write them again.
            try:
                self.checkpoint(wait=False)
            except Exception as exc:  # noqa: BLE001 - logged; the write succeeded
                self.log.warning("automatic checkpoint failed: %s", exc)

    # -- retention -------------------------------------------------------

    def count_older_than(self, days: float) -> int:
        """How many rows :meth:`purge_older_than` would delete now (a dry run)."""
        value = check_number("days", days, "days")
        with self.connection() as conn:
            when = self.backend.cutoff(conn, value)
            return 0 if when is None else self.backend.count_before(conn, self._model, when)

    def purge_older_than(self, days: float) -> int:
        """Delete rows whose ``created_at`` is more than ``days`` days before
        the database's clock; return how many were deleted.

        Deletes in short transactions (on SQLite each holds the write lock
        about 20 ms) and leaves other writers, in this process or others, a
        free moment between them, so none waits long however many rows
        expire. Meanwhile the engine keeps its log in shape (on SQLite the
        deleted rows are copied into the file by a helper thread, and after
        a large purge the ``-wal`` file is emptied so it does not stay big).
        If a chunk fails (:class:`~telemetry_orm.StoreBusyError`), the chunks
        before it stay deleted; running the purge again finishes the work.
        :meth:`purge` does the same and tells more.
        """
        return self.purge(days).deleted

    def purge(
        self, days: float, *, progress: Optional[Callable[[PurgeProgress], None]] = None,
        key_days: float = KEY_DAYS,
    ) -> PurgeResult:
        """:meth:`purge_older_than`, returning a :class:`PurgeResult` (rows,
        chunks, the longest lock hold); ``progress`` is called after each chunk.

        The keys of the deleted rows are kept ``key_days`` days (default
        :data:`KEY_DAYS`) after this purge, so the same executions recorded
        or imported again within them are not counted twice; then they are
        forgotten, and an import refuses keyed rows created before that
        (see :mod:`telemetry_orm.keys`)."""
        value = check_number("days", days, "days")
        keep = check_number("key_days", key_days, "days")
        self._outside_transaction("purge")
        started = time.perf_counter()
        pacer = self.backend.purge_pacer()
        with self.connection() as conn:
            now = _naive(self.backend.cutoff(conn, 0.0))
            when = self.backend.cutoff(conn, value)
            if when is None:  # before the engine's earliest time: no row is older
                self.log.info("purged 0 executions older than %s days (before any time)", days)
                return PurgeResult(0, 0, 0.0, None, time.perf_counter() - started)
            pacer.start(conn)
        total = chunks = 0
        longest = 0.0
        try:
            # Only reads: this process's writers need not wait for it (unless
            # they share its one connection).
            with self.connection(locked=self.backend.one_connection) as conn:
                position = self.backend.purge_start(conn, self._model, when)
            key_tables = self._keys_if_any()
            models = self._rollup_models()
            fold = self._purge_fold(models, when)
            with self.connection() as conn:
                state = rollups.read_state(conn, models)
            if state.counted_before is None or state.counted_before < _naive(when):
                # Chunks will fold rows in first: start them as small as a
                # rollup step, the pacer sizes the rest.
                pacer.rows = min(pacer.rows, FOLD_ROWS)
            while True:
                limit = pacer.rows
                # The store lock is let go between chunks so this process's
                # writers get their turn too.
                with self.connection() as conn:
                    chunk = self.backend.delete_chunk_before(
                        conn, self._model, when, limit, position, fold
                    )
                    pause = pacer.after_chunk(conn, chunk.held)
                deleted, held, position = chunk.deleted, chunk.held, chunk.position
                total += deleted
                chunks += 1
                longest = max(longest, held)
                self.log.debug("purge chunk %d: %d rows, locked %.1f ms, then %.1f ms free",
                               chunks, deleted, held * 1000, pause * 1000)
                if progress is not None:
                    progress(PurgeProgress(total, chunks))
                if chunk.done:
                    break
                self._upkeep.purge_gap(pause)
            if key_tables is not None:
                moved, forgot, held = self._sweep_keys(key_tables, pacer, now, keep)
                longest = max(longest, held)
                self.log.debug("purge: kept %d keys whose rows are gone, forgot %d", moved,
                               forgot)
        finally:
            if self.backend.borrowed:
                # The connection is the application's, and keeps what the
                # purge set unless it is put back, closed store or not.
                with contextlib.suppress(TelemetryError, *self.backend.driver_errors), \
                        self.backend.connection(self.database) as conn:
                    pacer.finish(conn)
            elif not self._closed:
                with contextlib.suppress(TelemetryError), self.connection() as conn:
                    pacer.finish(conn)
        self._upkeep.after_purge(total)
        self.log.info("purged %d executions older than %s days (before %s) in %d chunks",
                      total, days, when, chunks)
        return PurgeResult(total, chunks, longest, when, time.perf_counter() - started)

    # -- rollups -------------------------------------------------------------

    def rollup(self) -> RollupResult:
        """Fold every complete hour (by the database's clock) into the
        rollups, with the rows that arrived since for hours folded before;
        return what was done. Running it again counts no row twice.

        Works in short write transactions of at most about
        :data:`FOLD_ROWS` rows (the store's lock is let go between them), so
        writers keep going meanwhile. Rows purged by this package are
        counted too: a purge folds in, before deleting them, the rows not
        counted yet. See :mod:`telemetry_orm.rollups`.
        """
        self._outside_transaction("roll up")
        started = time.perf_counter()
        models = self._rollup_models()
        with self.connection() as conn:
            # None: no id can be vouched for now; hours still fold in, for
            # the ids counted so far.
            target = self.backend.newest_id(conn, self._model) or 0
            now = self.backend.cutoff(conn, 0.0)
        until = rollups.floor_hour(_naive(now))
        rows = steps = 0
        state = rollups.State()
        while True:
            with self.connection() as conn, self.backend.fold_transaction(conn):
                state = rollups.read_state(conn, models)
                step = self._next_fold(conn, state, max(target, state.counted_ids), until)
                if step is None:
                    break
                where, state = step
                if where is not None:
                    rows += self._fold(conn, models, where)
                rollups.write_state(conn, models, state)
            steps += 1
        self.log.info("rolled up %d executions in %d steps; counted before %s", rows, steps,
                      state.counted_before)
        counted = state.counted_before
        return RollupResult(rows, steps, counted and counted.replace(tzinfo=_dt.timezone.utc),
                            state.counted_ids, time.perf_counter() - started)

    def _next_fold(self, conn: Any, state: rollups.State, target: int,
                   until: _dt.datetime) -> Optional[Tuple[Any, rollups.State]]:
        """The rows of the next step of :meth:`rollup` (``None``: only the
        state moves) and the state after it; ``None`` when all is counted."""
        m = self._model
        counted, before = state.counted_ids, state.counted_before
        if counted < target:
            if before is None:  # nothing is counted by time yet
                return None, dataclasses.replace(state, counted_ids=target)
            # Rows that came after the last fold for hours already counted.
            upto = min(counted + FOLD_ROWS, target)
            where = ((m.id > counted) & (m.id <= upto)
                     & (m.created_at < format_timestamp(before)))
            return where, dataclasses.replace(state, counted_ids=upto)
        if before is None:
            first = conn.execute(*render(self.database, m.select(
                self.backend.dialect.as_text(fn.MIN(m.created_at))))).fetchone()[0]
            start = until if first is None else min(until, rollups.floor_hour(
                _naive(parse_timestamp(first))))
            return None, dataclasses.replace(state, counted_before=start)
        if before >= until:
            return None
        # The next hours, up to about FOLD_ROWS rows.
        row = conn.execute(*render(self.database, m.select(
            self.backend.dialect.as_text(m.created_at)).where(
            m.created_at >= format_timestamp(before)).order_by(m.created_at)
            .limit(1).offset(FOLD_ROWS))).fetchone()
        step_end = until if row is None else min(until, max(
            rollups.floor_hour(_naive(parse_timestamp(row[0]))),
            before + _dt.timedelta(hours=1)))
        where = ((m.id <= counted) & (m.created_at >= format_timestamp(before))
                 & (m.created_at < format_timestamp(step_end)))
        return where, dataclasses.replace(state, counted_before=step_end)

    def _fold(self, conn: Any, models: Tuple[Type[peewee.Model], ...], where: Any, *,
              unfold: bool = False) -> int:
        """Fold the rows matching ``where`` in (``unfold``: take them out),
        inside the caller's transaction; return how many."""
        m = self._model
        n = int(conn.execute(*render(self.database, m.select(fn.COUNT(SQL("*"))).where(where))
                             ).fetchone()[0])
        if n:
            self.backend.dialect.prepare(self.database)
            build = rollups.unfold if unfold else rollups.fold
            for statement in build(models, m, self.backend.dialect, where):
                conn.execute(*statement)
        return n

    def _purge_fold(self, models: Tuple[Type[peewee.Model], ...], when: Any) -> Fold:
        """What a purge chunk runs before it deletes: fold in its rows not
        counted yet, and remember the cutoff."""
        cutoff = _naive(when if isinstance(when, _dt.datetime) else parse_timestamp(when))

        def fold(conn: Any, rows: Any) -> None:
            state = rollups.read_state(conn, models)
            self._fold(conn, models, rows & rollups.uncounted(self._model, state))
            if state.purged_before is None or state.purged_before < cutoff:
                rollups.write_state(conn, models,
                                    dataclasses.replace(state, purged_before=cutoff))

        return fold

    def _outside_transaction(self, what: str) -> None:
        """Refuse work that commits in steps of its own inside a transaction
        open on this thread's connection: it could not commit them (or, on
        PostgreSQL, would hold its locks until that transaction ends)."""
        if self._closed:
            raise StoreClosedError(f"{self.path}: the telemetry store is closed")
        # One connection for every thread: under the lock, or another
        # thread's write would look like this thread's transaction.
        guard = self._lock if self.backend.one_connection else contextlib.nullcontext()
        with guard:
            if self.backend.in_transaction(self.database):
                raise in_transaction_error(self.path, what)

    def _rollup_models(self) -> Tuple[Type[peewee.Model], ...]:
        """The bound rollup models, their tables created at the first use."""
        with self._lock:
            if self._closed:
                raise StoreClosedError(f"{self.path}: the telemetry store is closed")
            if self._rollups is None:
                self._rollups = _create_tables(self.backend, self.database,
                                               self.backend.rollup_models)
            return self._rollups

    def prepare_replace(self) -> None:
        """Before a keyed write that may replace rows (outside its
        transaction): when the rollups exist, their tables are all made (a
        file rolled up by an older version may lack the newer ones), so that
        :meth:`replacing` finds them."""
        if self._rollups is None:
            with self.connection() as conn:
                exists = self.backend.has_table(conn, rollups.STATE_TABLE)
            if exists:
                self._rollup_models()

    def _keys_if_any(self) -> Optional[_keys.Tables]:
        """The bound key models when the keys table exists (any store, in any
        process, may have created it), its side tables created if need be;
        else ``None``."""
        with self.connection() as conn:
            if not self.backend.has_table(conn, KEYS_TABLE):
                return None
        _create_tables(self.backend, self.database, _keys.SIDE_MODELS)
        return _keys.tables(self.database, self.backend.key_model)

    def _sweep_keys(self, tables: _keys.Tables, pacer: Any, now: _dt.datetime,
                    key_days: float) -> Tuple[int, int, float]:
        """After a purge's rows: move the keys whose row is gone to the
        purged keys, stamped ``now``, then forget the purged keys stamped
        more than ``key_days`` days before ``now``; in steps, with the
        store's lock let go between them. Return how many keys moved, how
        many were forgotten, and the longest time a step held the write lock."""
        stamp = format_timestamp(now)
        try:
            horizon: Optional[_dt.datetime] = now - _dt.timedelta(days=key_days)
        except OverflowError:  # before the first day there is: nothing to forget
            horizon = None
        moved = forgot = 0
        longest = 0.0
        after: Optional[str] = None
        while True:
            with self.connection() as conn:
                step = _keys.move_gone(self.backend, self.database, conn, tables,
                                       self._model, after, stamp)
                pause = pacer.after_chunk(conn, step.held) if step.deleted else 0.0
            moved += step.deleted
            longest = max(longest, step.held)
            if step.done:
                break
            after = step.after
            if pause:
                self._upkeep.purge_gap(pause)
        while horizon is not None:
            with self.connection() as conn:
                step = _keys.forget(self.backend, self.database, conn, tables, horizon)
                pause = pacer.after_chunk(conn, step.held) if step.deleted else 0.0
            forgot += step.deleted
            longest = max(longest, step.held)
            if step.done:
                break
            if pause:
                self._upkeep.purge_gap(pause)
        return moved, forgot, longest

    # -- upkeep ------------------------------------------------------------

    def checkpoint(self, *, truncate: bool = False, wait: bool = True) -> CheckpointResult:
        """Copy the engine's log into the database file without waiting for
        readers, and say what was done. Harmless on ``':memory:'``; nothing
        to do on PostgreSQL, whose server manages its own log
        (``result.applies`` is then false).

        ``truncate=True`` also empties the log file: it waits (up to the
        busy timeout) for readers; ``result.emptied`` says whether it could.

        The automatic checkpoints pass ``wait=False``: they then run on a
        helper thread with a connection of their own, so the writer that
        triggered them does not wait for their disk syncs.
        """
        if self._closed:
            raise StoreClosedError(f"{self.path}: the telemetry store is closed")
        return self._upkeep.checkpoint(truncate=truncate, wait=wait)

    # -- reading -----------------------------------------------------------

    @contextlib.contextmanager
    def reading(self) -> Iterator[peewee.Database]:
        """The store's database, for queries that only read (reports).

        A ``':memory:'`` store shares one connection among threads: the lock
        is held so that no other thread's write joins the reading
        transaction. On PostgreSQL the pooled connection borrowed here is
        handed back afterwards.
        """
        guard = self._lock if self.backend.one_connection else contextlib.nullcontext()
        with guard, self.connection(locked=False):
            yield self.database

    def report(self, **options: Any) -> Report:
        """A usage report of this store's executions; the options (``since``,
        ``until``, ``repo``, ``group_by`` …) are those of
        :func:`telemetry_orm.reports.report`. Reads only."""
        with self.reading() as database:
            return report(database, **options)

    # -- closing -----------------------------------------------------------

    def close(self) -> None:
        """Close the store's background recorders (writing what they hold),
        then every connection of this store, once the reads running in other
        threads (reports, a purge's first look) have ended; new ones are
        refused with :class:`StoreClosedError`. Calling it again does nothing.

        On an application's own database only what the store's threads
        opened is closed; the database and the connections of the
        application's threads stay open, and calls running on other threads
        are not waited for (they finish on those connections). Inside a
        transaction, while a background recorder is open, it raises
        :class:`~telemetry_orm.TransactionOpenError` and closes nothing.

        A recorder's :class:`~telemetry_orm.BackgroundWriteError` is raised
        after the store is closed.
        """
        failure: Optional[BaseException] = None
        backend = self.__dict__.get("backend")
        recorders = [r for r in self._recorders if not r.closed]
        if recorders and backend is not None and backend.borrowed \
                and backend.in_transaction(self.database):
            # Closing a recorder waits for it to write what it holds, which
            # may wait for the locks this transaction holds: for ever.
            raise TransactionOpenError(
                f"{self.path}: cannot close the store inside a transaction open on this "
                "thread's connection while a background recorder is open (it writes what "
                "it holds first, and those writes may wait for this transaction); nothing "
                "was closed. Close it after the transaction ends.")
        for recorder in recorders:
            try:
                recorder.close()
            except BackgroundWriteError as exc:
                failure = failure or exc
        # Reads that run without the store lock finish first (new ones are
        # refused): closing a connection another thread is using breaks it.
        # Not under the lock: such a read may take the lock itself. On an
        # application's database the store closes none of the connections
        # they use, and one of them may be waiting for a lock this thread's
        # own transaction holds: nothing to wait for.
        self._unlocked.close(wait=backend is None or not backend.borrowed)
        upkeep = self.__dict__.get("_upkeep")  # None: never opened (a proxy's)
        with self._lock:
            if not self._closed:
                if upkeep is not None:
                    upkeep.close()
                self._closed = True
        forking.untrack(self)
        if upkeep is not None:
            forking.untrack(upkeep)
        if failure is not None:
            raise failure

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    # -- for backends --------------------------------------------------------

    def _writing(self) -> ContextManager[Any]:
        """What a write holds: the store's lock, or on an application's
        database only a place among the operations close() and fork() wait
        for (one inside a transaction of the caller's is let through while
        fork() waits: another write may be waiting for that transaction)."""
        if self._serial:
            return self._lock
        return self._unlocked.use(self.path, self._let_through)

    def _in_transaction(self) -> bool:
        try:
            return self.backend.in_transaction(self.database)
        except Exception:  # noqa: BLE001 - a question asked while fork() waits
            return False

    @contextlib.contextmanager
    def connection(self, *, locked: bool = True) -> Iterator[Any]:
        """This thread's driver connection for one operation, with the
        store's lock held unless ``locked=False`` (on an application's
        database, see :meth:`_writing`); driver errors raised inside (and
        while connecting) become :class:`TelemetryError`."""
        guard = self._writing() if locked else self._unlocked.use(self.path, self._let_through)
        with guard:
            if self._closed:
                raise StoreClosedError(f"{self.path}: the telemetry store is closed")
            try:
                with self.backend.connection(self.database) as conn:
                    yield conn
            except self.backend.driver_errors as exc:
                raise self.backend.translate(exc) from exc

    # -- fork() --------------------------------------------------------------

    def before_fork(self) -> None:
        # Let every store call in progress finish first. A connection forked
        # in the middle of a transaction leaves the engine's in-process lock
        # records saying "locked" in the child, where nobody will ever unlock
        # them.
        self._fork_locked = True
        # A store on a proxy not opened yet takes the way of an
        # application's database (it may be opening right now).
        if self.__dict__.get("_serial", self.__dict__.get("_opener") is None):
            if not self._lock.acquire(blocking=False):
                self.log.debug("%s: fork() waits for a store call in progress", self.path)
                self._lock.acquire()
            return
        # Writes on an application's database hold no lock: wait for them,
        # but not for ever (one may wait for a lock that this thread's own
        # open transaction holds); then for the lock, held only briefly
        # there (by a store opening at its first use, say). Calls inside a
        # transaction are let through meanwhile (see _writing).
        if not self._unlocked.pause(FORK_WAIT):
            self.log.warning("%s: fork() went ahead with a store write still running "
                             "after %.0f s", self.path, FORK_WAIT)
        self._fork_locked = self._lock.acquire(timeout=FORK_WAIT)
        if not self._fork_locked:
            self.log.warning("%s: fork() went ahead while the store was opening", self.path)

    def after_fork_in_parent(self) -> None:
        self._unlocked.resume()
        if self._fork_locked:
            self._lock.release()

    def after_fork_in_child(self) -> None:
        self._lock = threading.RLock()
        self._unlocked = _Users(closed=self._unlocked.closed)


def _create_tables(
    backend: Backend, database: peewee.Database, bases: Sequence[Type[peewee.Model]], *,
    outside_transaction: str = "",
) -> Tuple[Type[peewee.Model], ...]:
    """``bases`` bound to ``database``, their missing tables created (temporary
    ones are each connection's own) under the schema lock, so that processes
    doing it at once do not race. With ``outside_transaction``, that work
    is refused inside a transaction of the caller's (a rollback would undo
    the tables). Driver errors become :class:`TelemetryError`."""
    models = tuple(bind_model(database, base) for base in bases)
    errors: Tuple[Type[BaseException], ...] = (peewee.PeeweeException, *backend.driver_errors)
    try:
        with backend.connection(database) as conn:
            missing = [m for m in models if not m._meta.temporary
                       and not backend.has_table(conn, m._meta.table_name)]
            if missing:
                if outside_transaction and backend.in_transaction(database):
                    raise in_transaction_error(backend.path, outside_transaction)
                with backend.exclusive_transaction(database, "schema"):
                    for model in missing:
                        model.create_table(safe=True)
    except errors as exc:
        raise backend.translate(exc) from exc
    return models


def create_telemetry_store(
    db_path: Union[PathLike, peewee.Database, peewee.DatabaseProxy],
    logger: Optional[Logger] = None,
    *,
    busy_timeout: int = BUSY_TIMEOUT_MS,
    journal_size_limit: int = JOURNAL_SIZE_LIMIT,
    configure: bool = False,
) -> PeeweeTelemetryStore:
    """Open (creating if needed) the telemetry database at ``db_path``.

    ``db_path`` is a file path (``str`` or ``os.PathLike``), ``':memory:'``,
    or a database URL: ``sqlite:///relative/path``, ``sqlite:////absolute/path``,
    or ``postgresql://user:password@host:5432/dbname`` (needs the ``postgres``
    extra; query parameters such as ``?sslmode=require`` go to the driver,
    ``max_connections`` and ``timeout`` to the connection pool).

    For a file, missing parent folders are created; the file is switched to
    WAL, its schema created or upgraded, and a checkpoint runs. On PostgreSQL
    the schema is created or upgraded under an advisory lock. A location that
    is not a usable telemetry database raises
    :class:`~telemetry_orm.DatabaseError` naming it, and is left untouched.

    ``busy_timeout`` (milliseconds, default 5000) is how long a write waits
    for another connection's write lock before raising
    :class:`~telemetry_orm.StoreBusyError` (on PostgreSQL: the sessions'
    ``lock_timeout``, unless the URL sets one). ``journal_size_limit``
    (bytes, default 64 MiB) is the size checkpoints cut the ``-wal`` file
    back to (SQLite only).

    ``db_path`` may also be an application's own peewee database: a
    ``SqliteDatabase`` or ``PostgresqlDatabase`` (psycopg 3), a pooled one,
    or a ``DatabaseProxy`` of one (then, like a database made with ``None``,
    used from the first call on: see :meth:`PeeweeTelemetryStore.prepare`).
    The store then records on the calling thread's connection, so inside
    ``database.atomic()`` a record is part of that transaction; it never
    closes that database, and leaves its connections' settings as they are
    (``busy_timeout`` and ``journal_size_limit`` do not apply) unless
    ``configure=True``, which adds the store's SQLite pragmas to the
    database's and switches the file to WAL. See docs/peewee-apps.md.

    >>> store = create_telemetry_store(":memory:")
    >>> store.close()
    """
    check_count("busy_timeout", busy_timeout)
    check_count("journal_size_limit", journal_size_limit)
    if engines.is_database(db_path):
        database = db_path

        def opener() -> Backend:
            why = engines.pending(database)
            if why is not None:
                raise DatabaseError(why)
            return engines.backend_of_database(
                database, configure=configure, busy_timeout=busy_timeout,
                log_size_limit=journal_size_limit)

        why = engines.pending(database)
        if why is None:
            return PeeweeTelemetryStore(opener(), logger)
        return PeeweeTelemetryStore(None, logger, opener=opener,
                                    path=f"<{type(database).__name__} not yet initialized>")
    if configure:
        raise TelemetryValidationError(
            "configure", "applies to a peewee database given in place of a path or URL")
    try:
        path = os.fspath(db_path)  # type: ignore[arg-type]
    except TypeError:
        path = None
    if not path or not isinstance(path, str):
        raise TelemetryValidationError(
            "db_path", "must be a file path, ':memory:', a database URL or a peewee "
            f"database, got {db_path!r}"
        )
    backend = backend_for(path, busy_timeout=busy_timeout, log_size_limit=journal_size_limit)
    return PeeweeTelemetryStore(backend, logger)


def _naive(value: Any) -> _dt.datetime:
    """A database time (UTC text as stored, or a datetime) as a naive UTC datetime."""
    if isinstance(value, str):
        value = parse_timestamp(value)
    if value.tzinfo is not None:
        value = value.astimezone(_dt.timezone.utc)
    return value.replace(tzinfo=None)  # type: ignore[no-any-return]

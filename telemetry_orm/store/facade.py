"""The store facade: validate, let through the gate, delegate, count.

Opening lives in :mod:`~telemetry_orm.store.opening`, the gate in
:mod:`~telemetry_orm.store.gate`, writes in
:mod:`~telemetry_orm.store.writes`, the purge in
:mod:`~telemetry_orm.store.purging`, the rollup planner in
:mod:`telemetry_orm.folding`, and everything an engine does differently in
its backend (``store.backend``).
"""

from __future__ import annotations

import abc
import contextlib
import datetime as _dt
import logging
import os
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

from .. import background as _background
from .. import engines, folding, zone_days
from ..backends.base import (
    BUSY_TIMEOUT_MS,
    LOG_SIZE_LIMIT,
    Backend,
    CheckpointResult,
    Logger,
    in_transaction_error,
)
from ..checks import check_count, check_instant, check_key, check_time
from ..errors import DatabaseError, TelemetryValidationError
from ..record import TelemetryRecord, entries_of, entry_of, rows_of
from ..reports import Report, report
from ..rollups import RollupResult
from ..schema import Execution
from ..sql import KeyedSql
from ..tables import Tables
from .budgeting import BudgetMethods
from .closing import close_store
from .gate import Gate
from .opening import Opened, Opening
from .purging import KEY_DAYS, Purge, PurgeProgress, PurgeResult, count_older_than, paced
from .writes import BatchWriter, Copy, Writes

LOGGER_NAME = "telemetry_orm"

#: Writes between two automatic checkpoints (the original store's TELEM-08).
CHECKPOINT_EVERY = 1000

#: Default of ``journal_size_limit`` (bytes): see :func:`create_telemetry_store`.
JOURNAL_SIZE_LIMIT = LOG_SIZE_LIMIT

Entry = Union[TelemetryRecord, Mapping[str, Any]]
PathLike = Union[str, "os.PathLike[str]"]
Row = Tuple[Any, ...]


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
    def record(self, entry: Entry, *, key: Optional[str] = None, replace: bool = False,
               at: Optional[_dt.datetime] = None) -> int:
        """Validate and insert one execution (once per ``key``, created ``at``
        that instant or now); return its row id."""

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


class PeeweeTelemetryStore(BudgetMethods, TelemetryStore):
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
        self._recorders: weakref.WeakSet[_background.BackgroundRecorder] = weakref.WeakSet()
        self._gate = Gate(path, self.log, serial=opener is None)
        self._writes = Writes(self)
        self._opening = Opening(self._gate, self, opener=opener)
        if backend is not None:
            self._opening.open(backend)

    @property
    def gate(self) -> Gate:
        """Who may use the database now (see :mod:`telemetry_orm.store.gate`)."""
        return self._gate

    @property
    def opened(self) -> Opened:
        """The open store's state, opening it now if it waits for its first use."""
        return self._opening.get()

    @property
    def path(self) -> str:
        """Where the data lives, safe to print (no password)."""
        return self._gate.path

    @property
    def backend(self) -> Backend:
        """The engine's part of the store."""
        return self.opened.backend

    @property
    def database(self) -> peewee.Database:
        """The store's peewee database."""
        return self.opened.database

    @property
    def model(self) -> Type[Execution]:
        """The store's own ``Execution`` class, bound to ``database`` alone."""
        return self.opened.model

    @property
    def tables(self) -> Tables:
        """The store's tables: ``executions``, the keys and the rollups, bound once."""
        return self.opened.tables

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._gate.closed

    def prepare(self) -> PeeweeTelemetryStore:
        """Open the store now if it is not yet: on an application's
        ``DatabaseProxy`` (or a database made with ``None``) the store opens
        at its first use, which creates the tables when they are missing; call
        this at start-up, once the proxy is initialized and outside any
        transaction. Returns the store; does nothing when it is open."""
        self._opening.prepare()
        return self

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<{type(self).__name__} {self.path!r} ({state})>"

    # -- writing ---------------------------------------------------------

    def record(self, entry: Entry, *, key: Optional[str] = None, replace: bool = False,
               at: Optional[_dt.datetime] = None) -> int:
        """Validate ``entry`` (a :class:`TelemetryRecord` or a mapping) and
        insert it; return the new row id.

        ``created_at`` is set by the database (UTC), or is ``at``: a past
        instant (a run finished earlier, an intake catching up), aware or
        naive meaning UTC, from year 1000 to 9998; the row then counts in
        its own hour (the rollups take it at once in reports and fold it in
        at the next :meth:`rollup`, once). Nothing is written for an
        invalid entry or ``at``. Every ``checkpoint_every`` writes, :meth:`checkpoint`
        runs (in the background: this call does not wait for it).

        With a ``key`` (a webhook's delivery id, say) recording is
        idempotent: if a row was recorded under that key in this store,
        nothing is written and its id is returned; with ``replace=True``
        that row's columns are set to the new values instead (its id kept,
        and its ``created_at`` too unless ``at`` moves it), and the rollups
        move with them. Keys live in a
        table beside ``executions``, written in the same transaction as the
        row; two processes recording one key at once give one row. A key
        outlives its row's purge by ``key_days`` (see :meth:`purge`): until
        then it answers its row's old id and writes nothing (``replace``
        too: the rollups count that row as it was). A keyed row ``at`` an
        instant before the purged keys were forgotten, whose key is not
        known, is refused (it may have been counted already), as an import
        refuses it.
        """
        params, labels = self.checked_entry(entry)
        when = _instant("at", at)
        labelled = [labels] if labels else None
        if key is None:
            return self._writes.one(params, when, labels or None)
        check_key("key", key)
        if when is None:
            return self._writes.keyed([params], [key], replace, None, labelled)[0]
        refused = self._writes.forgotten([key], [when])
        if refused:
            raise TelemetryValidationError("at", refused[0][1])
        return self._writes.keyed([params], [key], replace, [when], labelled)[0]

    def record_many(
        self,
        entries: Iterable[Entry],
        *,
        keys: Optional[Sequence[Optional[str]]] = None,
        replace: bool = False,
        at: Optional[Sequence[Optional[_dt.datetime]]] = None,
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
        idempotent as :meth:`record` does, ``replace`` included; ``at``, one
        instant per entry (``None``: now), sets their ``created_at`` as
        :meth:`record`'s ``at`` does.

        >>> with create_telemetry_store(":memory:") as store:
        ...     run = {"event_type": "push", "model": "m", "conclusion": "success"}
        ...     store.record_many([{**run, "repo": "acme/api"}, {**run, "repo": "acme/web"}])
        [1, 2]
        """
        rows, labels = self.checked_entries(entries)
        instants = None
        if at is not None:
            instants = _per_entry("at", at, len(rows), "instant")
            for index, when in enumerate(instants):
                try:
                    instants[index] = _instant("at", when)
                except TelemetryValidationError as exc:
                    raise exc.at_index(index) from None
        if keys is None:
            if replace:
                raise TelemetryValidationError("replace", "needs keys")
            return self._writes.many(rows, instants, labels)
        key_list = _per_entry("keys", keys, len(rows), "key")
        for index, key in enumerate(key_list):
            if key is not None:
                try:
                    check_key("keys", key)
                except TelemetryValidationError as exc:
                    raise exc.at_index(index) from None
        if instants is not None:
            refused = self._writes.forgotten(key_list, instants)
            if refused:
                raise TelemetryValidationError("at", refused[0][1]).at_index(refused[0][0])
        return self._writes.keyed(rows, key_list, replace, instants, labels)

    def forgotten_keys(self, keys: Sequence[Optional[str]], at: Sequence[Optional[_dt.datetime]]
                       ) -> List[Tuple[int, str]]:
        """Every entry :meth:`record_many` (with these ``keys`` and ``at``)
        refuses because its key may have been forgotten (see :meth:`record`),
        as its position and why, in one pass; ``record_many`` names the first."""
        return self._writes.forgotten(keys, [_instant("at", when) for when in at])

    def checked_rows(self, entries: Iterable[Entry]) -> List[Row]:
        """The INSERT parameters of every entry, validated as records and
        against what this store's engine cannot store; a bad one raises
        :class:`~telemetry_orm.TelemetryValidationError` naming its position.
        Labels are left out (see :meth:`checked_entries`)."""
        return self._checked(rows_of(entries))

    def checked_entries(self, entries: Iterable[Entry]
                        ) -> Tuple[List[Row], Optional[List[Mapping[str, str]]]]:
        """:meth:`checked_rows` and the entries' labels, one mapping per
        entry (``None``: no entry has any)."""
        rows, labels = entries_of(entries)
        return self._checked(rows), labels

    def _checked(self, rows: List[Row]) -> List[Row]:
        check = self.opened.check_row
        if check is not None:
            for index, row in enumerate(rows):
                try:
                    check(row)
                except TelemetryValidationError as exc:
                    raise exc.at_index(index) from None
        return rows

    def checked_entry(self, entry: Entry) -> Tuple[Row, Mapping[str, str]]:
        """One entry's INSERT parameters and labels, checked as
        :meth:`checked_rows` does."""
        row, labels = entry_of(entry)
        check = self.opened.check_row
        if check is not None:
            check(row)
        return row, labels

    def checked_row(self, entry: Entry) -> Row:
        """One entry's INSERT parameters, checked as :meth:`checked_rows` does."""
        return self.checked_entry(entry)[0]

    def keyed_sql(self) -> KeyedSql:
        """The statements of keyed writes, built (and the keys table created
        if need be) at the first."""
        return self._writes.keyed_sql()

    def copying(self, name: str, *, keyed: bool = False, replace: bool = False,
                labelled: bool = False) -> ContextManager[Copy]:
        """A bulk copy of rows with their own ``created_at`` (a migrate, an
        import) in one write transaction that no other connection runs
        work ``name`` in at the same time, through the store's write path
        (see :class:`~telemetry_orm.store.writes.Copy`)."""
        return self._writes.copying(name, keyed=keyed, replace=replace, labelled=labelled)

    def batch_writer(self) -> BatchWriter:
        """The hook of a thread that writes batch after batch of validated
        rows (see :class:`BatchWriter`); :class:`~telemetry_orm.BackgroundRecorder`
        is its user."""
        return BatchWriter(self, self._writes)

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
            self, max_batch=max_batch, max_delay=max_delay, max_queue=max_queue,
            retries=retries, retry_delay=retry_delay)
        self._recorders.add(recorder)
        return recorder

    # -- retention -------------------------------------------------------

    def count_older_than(self, days: float) -> int:
        """How many rows :meth:`purge_older_than` would delete now (a dry run)."""
        return count_older_than(self, days)

    def purge_older_than(self, days: float) -> int:
        """Delete rows whose ``created_at`` is more than ``days`` days before
        the database's clock; return how many were deleted.

        Deletes in short transactions (on SQLite each holds the write lock
        about 15 ms) and leaves other writers, in this process or others, a
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
        return Purge(self, self._writes.rollup_models).run(days, progress, key_days)

    # -- rollups -------------------------------------------------------------

    def rollup(self, *, zones: Iterable[Any] = (), forget_zones: Iterable[Any] = ()
               ) -> RollupResult:
        """Fold every complete hour (by the database's clock) into the
        rollups, with the rows that arrived since for hours folded before;
        return what was done. Running it again counts no row twice.

        Works in short write transactions of about :data:`~telemetry_orm.folding.FOLD_ROWS`
        rows on SQLite, more on a server (``Backend.fold_scale``; the store's
        lock is let go between them), so writers keep going meanwhile. Rows purged
        by this package are counted too: a purge folds in, before deleting
        them, the rows not counted yet. See :mod:`telemetry_orm.rollups`.

        ``zones`` (IANA names): keep these zones' days too, from now on, for
        reports by day or week in them; ``forget_zones``: stop keeping those
        (see :mod:`telemetry_orm.zone_days`)."""
        keep = zone_days.zone_names(zones, "zones")
        drop = zone_days.zone_names(forget_zones, "forget_zones")
        self.outside_transaction("roll up")
        started = time.perf_counter()
        self._writes.rollup_models()
        opened = self.opened
        kept = folding.keep_zones(opened.backend, opened.tables, self.connection, keep, drop)
        with paced(self) as pacing:
            rows, steps, state = folding.roll_up(opened.backend, opened.tables,
                                                 self.connection, pacing)
        self.log.info("rolled up %d executions in %d steps; counted before %s", rows, steps,
                      state.counted_before)
        counted = state.counted_before
        return RollupResult(rows, steps, counted and counted.replace(tzinfo=_dt.timezone.utc),
                            state.counted_ids, time.perf_counter() - started, kept)

    def outside_transaction(self, what: str) -> None:
        """Refuse work that commits in steps of its own inside a transaction
        open on this thread's connection: it could not commit them (or, on
        PostgreSQL, would hold its locks until that transaction ends)."""
        self._gate.check_open()
        opened = self.opened
        # One connection for every thread: under the lock, or another
        # thread's write would look like this thread's transaction.
        guard = self._gate.lock if opened.backend.one_connection else contextlib.nullcontext()
        with guard:
            if opened.backend.in_transaction(opened.database):
                raise in_transaction_error(self.path, what)

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
        self._gate.check_open()
        return self.opened.upkeep.checkpoint(truncate=truncate, wait=wait)

    # -- reading -----------------------------------------------------------

    @contextlib.contextmanager
    def reading(self) -> Iterator[peewee.Database]:
        """The store's database, for queries that only read (reports).

        A ``':memory:'`` store shares one connection among threads: the lock
        is held so that no other thread's write joins the reading
        transaction. On PostgreSQL the pooled connection borrowed here is
        handed back afterwards.
        """
        opened = self.opened
        guard = self._gate.lock if opened.backend.one_connection else contextlib.nullcontext()
        with guard, self.connection(locked=False):
            yield opened.database

    def report(self, **options: Any) -> Report:
        """A usage report of this store's executions; the options (``since``,
        ``until``, ``repo``, ``group_by`` …) are those of
        :func:`telemetry_orm.reports.report`. Reads only."""
        with self.reading() as database:
            return report(database, **options)

    @contextlib.contextmanager
    def connection(self, *, locked: bool = True) -> Iterator[Any]:
        """This thread's driver connection for one operation, with the
        store's lock held unless ``locked=False`` (on an application's
        database, see :meth:`Gate.writing`); driver errors raised inside
        (and while connecting) become :class:`TelemetryError`."""
        opened = self.opened
        with self._gate.entered(locked=locked):
            try:
                with opened.backend.connection(opened.database) as conn:
                    yield conn
            except opened.backend.driver_errors as exc:
                raise opened.backend.translate(exc) from exc

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
        close_store(self.path, self._opening.opened, self._recorders, self._gate)


def _per_entry(name: str, values: Any, count: int, what: str) -> List[Any]:
    """``values`` as a list of one value (or ``None``) per entry."""
    try:
        found: Optional[List[Any]] = (
            None if isinstance(values, (str, bytes)) else list(values))
    except TypeError:
        found = None
    if found is None or len(found) != count:
        raise TelemetryValidationError(
            name, f"must be a sequence of one {what} (or None) per entry ({count})")
    return found


def _instant(name: str, value: Any) -> Optional[_dt.datetime]:
    """A row's instant (aware, or naive meaning UTC) checked as aware UTC;
    ``None`` stays ``None`` (now)."""
    when = check_time(name, value)
    return None if when is None else check_instant(name, when)


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
    or ``postgresql://user:password@host:5432/dbname`` (psycopg 3, the
    ``postgres`` extra; ``postgresql+psycopg2://`` for psycopg2, the
    ``postgres2`` extra; query parameters such as ``?sslmode=require`` go to the driver,
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
    ``SqliteDatabase`` or ``PostgresqlDatabase`` (psycopg 3 or psycopg2), a pooled one,
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
    backend = engines.backend_for(path, busy_timeout=busy_timeout,
                                  log_size_limit=journal_size_limit)
    return PeeweeTelemetryStore(backend, logger)


"""The store facade: open a database, record executions, purge, checkpoint, close."""

from __future__ import annotations

import abc
import contextlib
import logging
import math
import numbers
import os
import re
import threading
import time
import weakref
from types import TracebackType
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Tuple, Type, Union

import peewee
from playhouse import db_url

from . import background as _background
from .backends.base import Backend
from .backends.sqlite import BUSY_TIMEOUT_MS, JOURNAL_SIZE_LIMIT, PURGE_CHUNK, SqliteBackend
from .errors import (
    BackgroundWriteError,
    DatabaseError,
    StoreBusyError,
    StoreClosedError,
    TelemetryError,
    TelemetryValidationError,
)
from .record import TelemetryRecord, row_of, rows_of
from .reports import Report, report
from .schema import Execution, bind_model

LOGGER_NAME = "telemetry_orm"

#: Writes between two automatic checkpoints (the original store's TELEM-08).
CHECKPOINT_EVERY = 1000

Entry = Union[TelemetryRecord, Mapping[str, Any]]
PathLike = Union[str, "os.PathLike[str]"]


class TelemetryStore(abc.ABC):
    """What every telemetry store does. Also a context manager that closes it.

    >>> with create_telemetry_store(":memory:") as store:
    ...     row_id = store.record({"repo": "acme/api", "eventType": "push",
    ...                            "model": "claude-sonnet-4-5", "conclusion": "success"})
    """

    @abc.abstractmethod
    def record(self, entry: Entry) -> int:
        """Validate and insert one execution; return its row id."""

    @abc.abstractmethod
    def record_many(self, entries: Iterable[Entry]) -> List[int]:
        """Validate every entry, then insert all in one transaction; return
        their row ids in order."""

    @abc.abstractmethod
    def purge_older_than(self, days: float) -> int:
        """Delete rows older than ``days`` days; return how many."""

    @abc.abstractmethod
    def checkpoint(self) -> None:
        """Move the write-ahead log into the database file (passive)."""

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


def _check_days(days: Any) -> float:
    if isinstance(days, bool) or not isinstance(days, numbers.Real):
        raise TelemetryValidationError(
            "days", f"must be a number of days >= 0, got {type(days).__name__}"
        )
    value = float(days)
    if not math.isfinite(value) or value < 0:
        raise TelemetryValidationError("days", f"must be a finite number >= 0, got {days!r}")
    return value


#: Longest time, in seconds, a purge or a background writer waits for the
#: helper thread's checkpoint to finish before restarting the log.
LOG_CATCH_UP = 0.25

#: Log size, in pages, past which a purge or a background writer has the
#: log restarted (see :meth:`PeeweeTelemetryStore._restart_long_log`).
LOG_RESTART_PAGES = 16384


class _Checkpointer:
    """Runs a store's automatic checkpoints on a thread of their own,
    started at the first one. Requests made while one runs merge into one."""

    def __init__(
        self,
        run: Callable[[], None],
        log: Union[logging.Logger, logging.LoggerAdapter[Any]],
    ) -> None:
        self._run = run
        self._log = log
        self._changed = threading.Condition()
        self._due = False
        self._busy = False
        self._stopped = False
        self._thread: Optional[threading.Thread] = None
        #: Held while a checkpoint runs (fork() waits for it).
        self.running = threading.Lock()

    def request(self) -> None:
        with self._changed:
            if self._stopped:
                return
            self._due = True
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="telemetry_orm-checkpoint", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, until no checkpoint runs or is
        due; return whether that happened."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (self._due or self._busy) and not self._stopped:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def stop(self) -> None:
        """Let a running checkpoint finish, drop any that is due, end the thread."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _loop(self) -> None:
        while True:
            with self._changed:
                while not (self._due or self._stopped):
                    self._changed.wait()
                if self._stopped:
                    return
                self._due = False
                self._busy = True
            try:
                with self.running:
                    self._run()
            except Exception as exc:  # noqa: BLE001 - housekeeping must not kill the thread
                self._log.warning("automatic checkpoint failed: %s", exc)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()


# Stores to reset in a forked child (gunicorn-style pre-fork servers).
_LIVE_STORES: weakref.WeakSet[PeeweeTelemetryStore] = weakref.WeakSet()
# Stores whose lock the forking thread holds while fork() runs.
_HELD_FOR_FORK: List[PeeweeTelemetryStore] = []


def _before_fork() -> None:
    # Let every store call (and automatic checkpoint) in progress finish
    # first. A connection forked in the middle of a transaction or a
    # checkpoint leaves SQLite's in-process lock records saying "locked" in
    # the child, where nobody will ever unlock them: the child could then
    # never write to that file, or never checkpoint it.
    for store in list(_LIVE_STORES):
        for lock in (store._lock, store._checkpointer.running):
            if not lock.acquire(blocking=False):
                store.log.debug("%s: fork() waits for a store call in progress", store.path)
                lock.acquire()
        _HELD_FOR_FORK.append(store)


def _after_fork_in_parent() -> None:
    while _HELD_FOR_FORK:
        store = _HELD_FOR_FORK.pop()
        store._checkpointer.running.release()
        store._lock.release()


def _after_fork_in_child() -> None:
    _HELD_FOR_FORK.clear()
    for store in list(_LIVE_STORES):
        store._forget_inherited_connections()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


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
    """

    def __init__(
        self,
        backend: Backend,
        logger: Optional[Union[logging.Logger, logging.LoggerAdapter[Any]]] = None,
        *,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        self.backend = backend
        self.path = backend.path
        self.log = logger or logging.getLogger(LOGGER_NAME)
        self.checkpoint_every = checkpoint_every
        self.database: peewee.Database = backend.open()
        self.model: Type[Execution] = bind_model(self.database, backend.model_base)
        self._lock = threading.RLock()
        self._closed = False
        self._writes = 0
        self._recorders: weakref.WeakSet[_background.BackgroundRecorder] = weakref.WeakSet()
        self._checkpointer = _Checkpointer(self._checkpoint_in_helper, self.log)
        #: Log size, in pages, at the last checkpoint (SQLite).
        self._log_pages = 0
        self._insert_sql = backend.insert_sql(self.database)
        self._insert_one = backend.insert_one
        # Known to fork() before the first connection opens, and set up
        # under the lock, so a fork never lands in the middle of a schema
        # upgrade.
        _LIVE_STORES.add(self)
        try:
            with self._lock:
                backend.prepare(self.database, self.model)
        except BaseException:
            _LIVE_STORES.discard(self)
            backend.close_all(self.database)
            raise
        # The original store checkpoints once at start-up (TELEM-08).
        self.checkpoint()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self.path!r} ({state})>"

    # -- writing ---------------------------------------------------------

    def record(self, entry: Entry) -> int:
        """Validate ``entry`` (a :class:`TelemetryRecord` or a mapping) and
        insert it; return the new row id.

        ``created_at`` is set by the database (UTC). Nothing is written for an
        invalid entry. Every ``checkpoint_every`` writes, :meth:`checkpoint`
        runs (on a helper thread: this call does not wait for it).
        """
        params = row_of(entry)
        with self._lock:
            if self._closed:
                raise StoreClosedError(f"{self.path}: the telemetry store is closed")
            try:
                row_id = self._insert_one(self.database, self._insert_sql, params)
            except self.backend.driver_errors as exc:
                raise self._translate(exc) from exc
            self._writes += 1
            if self._writes >= self.checkpoint_every:
                self._count_writes(0)
        return row_id

    def record_many(self, entries: Iterable[Entry]) -> List[int]:
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

        >>> with create_telemetry_store(":memory:") as store:
        ...     run = {"event_type": "push", "model": "m", "conclusion": "success"}
        ...     store.record_many([{**run, "repo": "acme/api"}, {**run, "repo": "acme/web"}])
        [1, 2]
        """
        return self._insert_rows(rows_of(entries))

    def _insert_rows(self, rows: List[Tuple[Any, ...]]) -> List[int]:
        # Rows already validated (by record_many, or by a background recorder).
        with self._lock:
            with self._connection() as conn:
                if not rows:
                    return []
                ids = self.backend.insert_many(conn, self._insert_sql, rows)
            self._count_writes(len(rows))
        return ids

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

    def count_older_than(self, days: float) -> int:
        """How many rows :meth:`purge_older_than` would delete now (a dry run)."""
        value = _check_days(days)
        with self._lock, self._connection() as conn:
            return self.backend.count_before(conn, self.backend.cutoff(conn, value))

    def purge_older_than(self, days: float) -> int:
        """Delete rows whose ``created_at`` is more than ``days`` days before
        the database's clock; return how many were deleted.

        Deletes in short transactions (on SQLite each holds the write lock
        about 20 ms) and leaves other writers, in this process or others, a
        free moment between them, so none waits long however many rows
        expire. Meanwhile the deleted rows are copied into the file on the
        helper thread, and after a large purge the log is truncated so the
        ``-wal`` file does not stay big. If a chunk fails
        (:class:`~telemetry_orm.StoreBusyError`), the chunks before it stay
        deleted; running the purge again finishes the work.
        """
        value = _check_days(days)
        pacer = self.backend.purge_pacer()
        with self._lock, self._connection() as conn:
            when = self.backend.cutoff(conn, value)
            pacer.start(conn)
        total = chunks = 0
        try:
            while True:
                limit = pacer.rows
                # The store lock is let go between chunks so this process's
                # writers get their turn too.
                with self._lock, self._connection() as conn:
                    deleted, held = self.backend.delete_chunk_before(conn, when, limit)
                    pause = pacer.after_chunk(conn, held)
                total += deleted
                chunks += 1
                self.log.debug("purge chunk %d: %d rows, locked %.1f ms, then %.1f ms free",
                               chunks, deleted, held * 1000, pause * 1000)
                if deleted < limit:
                    break
                # The helper thread copies the chunk into the file, while
                # the next chunks run if nobody else is writing.
                self.checkpoint(wait=False)
                if pause:
                    # Writers get their moment; meanwhile the helper catches
                    # up with the log (so the next chunk can start it afresh
                    # if nobody else wrote), which is restarted if it grew
                    # long anyway.
                    began = time.monotonic()
                    if self._checkpointer.wait_idle(LOG_CATCH_UP):
                        self._restart_long_log()
                    pause -= time.monotonic() - began
                time.sleep(max(0.0, pause))
        finally:
            if not self._closed:
                with contextlib.suppress(TelemetryError), self._lock, self._connection() as conn:
                    pacer.finish(conn)
        if total >= PURGE_CHUNK:
            # Not blocking: waiting for a reader would stall every writer.
            self._checkpoint("TRUNCATE", blocking=False)
        self.log.info("purged %d executions older than %s days (before %s) in %d chunks",
                      total, days, when, chunks)
        return total

    def _checkpoints_on_helper_only(self) -> Optional[int]:
        """Turn SQLite's automatic checkpoint off on this thread's connection
        (for a writer that commits batch after batch: it would sync the disk
        inside its commits, the helper thread does that work beside it);
        return the setting to restore, or ``None`` (a ``:memory:`` store,
        whose one connection is shared, has no log to checkpoint)."""
        if not self.database.thread_safe:
            return None
        try:
            # Under the store lock, so that fork() never copies the
            # connection half-opened.
            with self._lock, self._connection() as conn:
                return self.backend.set_autocheckpoint(conn, 0)
        except TelemetryError:
            return None

    def _restore_autocheckpoint(self, pages: Optional[int]) -> None:
        if pages is None or self._closed:
            return
        with contextlib.suppress(TelemetryError), self._lock, self._connection() as conn:
            self.backend.set_autocheckpoint(conn, pages)

    def _restart_long_log(self) -> None:
        """Between two batches of a writer without automatic checkpoints:
        once the log passes :data:`LOG_RESTART_PAGES`, let the helper finish
        copying it and run a ``RESTART`` checkpoint (which holds the write
        lock only for the last pages), so that the next write starts the log
        from its beginning. Without it a log that is always being appended
        to is never fully copied when a write begins, and SQLite grows it
        for as long as the writing goes on."""
        if self._log_pages < LOG_RESTART_PAGES or not self._checkpointer.wait_idle(LOG_CATCH_UP):
            return
        try:
            self._checkpoint("RESTART", blocking=False)
        except TelemetryError as exc:  # housekeeping: the writes went through
            self.log.warning("checkpoint RESTART failed: %s", exc)

    def checkpoint(self, *, truncate: bool = False, wait: bool = True) -> None:
        """``PRAGMA wal_checkpoint(PASSIVE)``: copy the log into the file
        without waiting for readers. Harmless on ``':memory:'``; does nothing
        on PostgreSQL, whose server manages its own log.

        ``truncate=True`` runs a ``TRUNCATE`` checkpoint instead: it waits
        (up to the busy timeout) for readers and empties the ``-wal`` file.

        The automatic checkpoints pass ``wait=False``: the passive checkpoint
        then runs on a helper thread with a connection of its own, so the
        writer that triggered it does not wait for its disk syncs. One asked
        for while another runs follows it once.
        """
        if wait or truncate or not self.database.thread_safe:
            self._checkpoint("TRUNCATE" if truncate else "PASSIVE")
            return
        if self._closed:
            raise StoreClosedError(f"{self.path}: the telemetry store is closed")
        self._checkpointer.request()

    def _checkpoint(self, mode: str, *, blocking: bool = True) -> None:
        with self._lock:
            self._run_checkpoint(mode, blocking=blocking)

    def _run_checkpoint(self, mode: str, *, blocking: bool = True) -> None:
        started = time.perf_counter()
        with self._connection() as conn:
            busy, pages, done = self.backend.checkpoint(conn, mode, blocking=blocking)
        if pages >= 0:
            self._log_pages = pages
        self.log.debug("checkpoint %s: %d of %d log pages (busy=%d) in %.1f ms", mode, done,
                       pages, busy, (time.perf_counter() - started) * 1000)

    def _checkpoint_in_helper(self) -> None:
        # On the helper thread: its own connection, and no store lock, since
        # SQLite lets a passive checkpoint run beside a writer.
        self._run_checkpoint("PASSIVE")

    def report(self, **options: Any) -> Report:
        """A usage report of this store's executions; the options (``since``,
        ``until``, ``repo``, ``group_by`` …) are those of
        :func:`telemetry_orm.reports.report`. Reads only."""
        # A ':memory:' store shares one connection among threads: hold the
        # lock so that no other thread's write joins the report's transaction.
        guard = contextlib.nullcontext() if self.database.thread_safe else self._lock
        # The report runs on the connection borrowed here (on PostgreSQL, a
        # pooled one handed back afterwards).
        with guard, self._connection():
            return report(self.database, **options)

    def close(self) -> None:
        """Close the store's background recorders (writing what they hold),
        then every connection of this store. Calling it again does nothing.

        A recorder's :class:`~telemetry_orm.BackgroundWriteError` is raised
        after the store is closed.
        """
        failure: Optional[BaseException] = None
        for recorder in list(self._recorders):
            try:
                recorder.close()
            except BackgroundWriteError as exc:
                failure = failure or exc
        self._checkpointer.stop()
        with self._lock:
            if not self._closed:
                self._closed = True
                self.backend.close_all(self.database)
        _LIVE_STORES.discard(self)
        if failure is not None:
            raise failure

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    # -- internals -------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """The backend's connection for one operation; driver errors raised
        inside (and while connecting) become :class:`TelemetryError`."""
        if self._closed:
            raise StoreClosedError(f"{self.path}: the telemetry store is closed")
        try:
            with self.backend.connection(self.database) as conn:
                yield conn
        except self.backend.driver_errors as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: BaseException) -> Exception:
        if self.backend.is_busy(exc):
            return StoreBusyError(
                f"{self.path}: database is busy (another connection held the write "
                f"lock longer than the busy timeout); nothing was written: {exc}"
            )
        return DatabaseError(f"{self.path}: {exc}")

    def _forget_inherited_connections(self) -> None:
        self._lock = threading.RLock()
        self._checkpointer = _Checkpointer(self._checkpoint_in_helper, self.log)
        self.backend.forget_inherited(self.database)


#: URL schemes of a PostgreSQL server (``+pool`` as peewee spells it;
#: a PostgreSQL store always pools its connections).
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+pool", "postgres+pool")

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def sqlite_url_path(url: str) -> str:
    """The file of a ``sqlite:///path`` URL (``sqlite://`` is ``':memory:'``)."""
    params = db_url.parse(url)
    path = params.pop("database")
    if params:
        raise TelemetryValidationError(
            "db_path", f"a sqlite URL takes no parameters, got {', '.join(sorted(params))}"
        )
    return str(path)


def backend_for(
    location: str,
    *,
    busy_timeout: int = BUSY_TIMEOUT_MS,
    journal_size_limit: int = JOURNAL_SIZE_LIMIT,
) -> Backend:
    """The backend for a path, ``':memory:'``, or a ``sqlite:``/``postgresql:`` URL
    (nothing is opened). Other URL schemes raise
    :class:`~telemetry_orm.TelemetryValidationError`."""
    match = _URL.match(location)
    sqlite_options = {"busy_timeout": busy_timeout, "journal_size_limit": journal_size_limit}
    if match is None:
        return SqliteBackend(location, **sqlite_options)
    scheme = match.group(1).lower()
    if scheme == "sqlite":
        return SqliteBackend(sqlite_url_path(location), **sqlite_options)
    if scheme in POSTGRES_SCHEMES:
        # Imported here so that SQLite users need no PostgreSQL driver.
        from .backends.postgres import PostgresBackend

        # busy_timeout becomes the sessions' lock_timeout; the server keeps
        # its own log, so journal_size_limit has no meaning there.
        return PostgresBackend(location, busy_timeout=busy_timeout)
    raise TelemetryValidationError(
        "db_path",
        f"unsupported URL scheme {scheme!r}; expected postgresql://user:password@host/db, "
        "sqlite:///path or a file path",
    )


def create_telemetry_store(
    db_path: PathLike,
    logger: Optional[Union[logging.Logger, logging.LoggerAdapter[Any]]] = None,
    *,
    busy_timeout: int = BUSY_TIMEOUT_MS,
    journal_size_limit: int = JOURNAL_SIZE_LIMIT,
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

    >>> store = create_telemetry_store(":memory:")
    >>> store.close()
    """
    try:
        path = os.fspath(db_path)
    except TypeError:
        path = None
    if not path or not isinstance(path, str):
        raise TelemetryValidationError(
            "db_path", f"must be a file path, ':memory:' or a database URL, got {db_path!r}"
        )
    for name, value in (("busy_timeout", busy_timeout),
                        ("journal_size_limit", journal_size_limit)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TelemetryValidationError(name, f"must be an integer >= 0, got {value!r}")
    backend = backend_for(path, busy_timeout=busy_timeout, journal_size_limit=journal_size_limit)
    return PeeweeTelemetryStore(backend, logger)

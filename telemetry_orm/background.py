"""Fire-and-forget recording: validate in the caller, write in batches from a thread.

A request handler should not wait for a commit. :class:`BackgroundRecorder`
(made by :meth:`~telemetry_orm.store.PeeweeTelemetryStore.background`) checks
each entry in the calling thread, puts its row on a bounded queue and returns;
one writer thread commits the queue in batches, as ``store.record_many`` does::

    with store.background(max_batch=500, max_delay=0.2) as recorder:
        recorder.record({"repo": "acme/api", "event_type": "push",
                         "model": "claude-sonnet-4-5", "conclusion": "success"})
    # leaving the block flushed and closed the recorder

Nothing is dropped: a full recorder makes ``record()`` wait; a batch that
keeps failing is kept and raised from the next :meth:`~BackgroundRecorder.flush`
or :meth:`~BackgroundRecorder.close` (or from ``record()`` once the failed
records fill the recorder) as :class:`~telemetry_orm.BackgroundWriteError`
with its records attached; interpreter exit flushes what is still queued, and
:func:`write_queues_on_sigterm` makes SIGTERM do so too.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
import weakref
from collections import deque
from types import TracebackType
from typing import Any, Deque, List, Mapping, Optional, Protocol, Sequence, Tuple, Type, Union

from . import forking
from .checks import NO_LABELS, check_count, check_key, check_number
from .errors import BackgroundWriteError, StoreClosedError
from .record import FIELD_NAMES, Entry, TelemetryRecord

Row = Tuple[Any, ...]
Logger = Union[logging.Logger, "logging.LoggerAdapter[Any]"]


class BatchWriter(Protocol):
    """What the writer thread needs of the store's batch writer
    (``store.batch_writer()``): one transaction a batch, then a close."""

    def write(self, rows: List[Row], keys: Optional[List[Optional[str]]] = None,
              labels: Optional[Sequence[Mapping[str, str]]] = None) -> List[int]:
        """Insert ``rows`` (each under its key in ``keys`` when given); their ids."""

    def close(self) -> None:
        """The stream of batches is over."""


class RecordingStore(Protocol):
    """What a recorder needs of its store: the store satisfies it as it is,
    and this module needs nothing else of it (so it never imports the store)."""

    @property
    def path(self) -> str:
        """Where the store writes, for messages."""

    @property
    def log(self) -> Logger:
        """The store's logger, the recorder's by default."""

    def checked_entry(self, entry: Entry) -> Tuple[Row, Mapping[str, str]]:
        """``entry``'s INSERT parameters, validated."""

    def batch_writer(self) -> BatchWriter:
        """The hook of a thread that writes batch after batch."""


#: Defaults of :meth:`~telemetry_orm.store.PeeweeTelemetryStore.background`.
MAX_BATCH = 500
MAX_DELAY = 0.2
MAX_QUEUE = 10_000
RETRIES = 3
RETRY_DELAY = 0.05


class BackgroundRecorder:
    """Records executions from a writer thread, in batches.

    ``record()`` validates the entry in the caller (a bad one raises
    :class:`~telemetry_orm.TelemetryValidationError` at once and is not
    queued), queues it and returns. The writer commits a batch as soon as
    ``max_batch`` records wait, or when the oldest has waited ``max_delay``
    seconds, or when someone calls :meth:`flush` or :meth:`close`. Batches
    are written in the order the records were queued.

    A batch that fails is tried again ``retries`` times, waiting
    ``retry_delay`` seconds and doubling; after that it is logged and kept,
    and the next :meth:`flush` or :meth:`close` raises
    :class:`~telemetry_orm.BackgroundWriteError` whose ``records`` are the
    records that were not written, in order (pass them to
    ``store.record_many`` to try again).

    What the recorder holds (:attr:`held`: queued, being written, or failed
    and not yet raised) never exceeds ``max_queue``, so memory stays bounded
    however long the writes fail. When it is full, ``record()`` waits for
    the writer to commit a batch; if it is full and holds failed records,
    ``record()`` raises :class:`~telemetry_orm.BackgroundWriteError` at once
    instead, with those records and then the one it was given (which is not
    queued): nothing is dropped, and the caller learns of the failure.

    A process ended by SIGTERM under the default handler writes nothing
    that is still queued (atexit does not run); call
    :func:`write_queues_on_sigterm` to have it written first.

    :meth:`close` (also on leaving a ``with`` block, on ``store.close()``, and
    at interpreter exit) writes what is queued and stops the writer. In a
    forked child the recorder starts afresh: records queued before the fork
    are the parent's to write.
    """

    def __init__(
        self,
        store: RecordingStore,
        *,
        max_batch: int = MAX_BATCH,
        max_delay: float = MAX_DELAY,
        max_queue: int = MAX_QUEUE,
        retries: int = RETRIES,
        retry_delay: float = RETRY_DELAY,
        logger: Optional[Logger] = None,
    ) -> None:
        self.store = store
        self.max_batch = check_count("max_batch", max_batch, 1)
        self.max_delay = check_number("max_delay", max_delay, "seconds")
        self.max_queue = check_count("max_queue", max_queue, 1)
        self.retries = check_count("retries", retries, 0)
        self.retry_delay = check_number("retry_delay", retry_delay, "seconds")
        self.log = logger or store.log
        self._start()
        atexit.register(self._at_exit)
        forking.track(self, forking.RECORDER)
        _OPEN.add(self)

    def _start(self) -> None:
        # One lock guards all the state below; the writer waits on one
        # condition, callers of record() and flush() on the other.
        self._lock = threading.Lock()
        self._wake_writer = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        # Rows (the INSERT's parameters) of validated entries.
        self._pending: Deque[Row] = deque()
        self._oldest = 0.0  # when the oldest pending record was queued
        self._queued = 0  # records accepted so far
        self._finished = 0  # of those, written or given up (always a prefix)
        self._flushing = 0  # flush() calls waiting: the writer must not linger
        self._closing = False
        self._writer_gone = False
        self._failed: List[Row] = []
        self._failure: Optional[BaseException] = None
        self._thread = threading.Thread(
            target=self._run, name="telemetry_orm-background", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        return f"<{type(self).__name__} {self.store.path!r} ({state}, {self.pending} pending)>"

    # -- callers ---------------------------------------------------------

    def record(self, entry: Entry, *, key: Optional[str] = None) -> None:
        """Validate ``entry`` here, queue it for the writer and return.

        With a ``key``, the writer records it as ``store.record(entry,
        key=key)`` does: once per key. Blocks only while the recorder is
        full (see the class). Raises :class:`~telemetry_orm.StoreClosedError`
        once the recorder is closed.
        """
        row, labels = self.store.checked_entry(entry)
        if key is not None or labels:
            row = _TaggedRow(row, None if key is None else check_key("key", key), labels)
        with self._lock:
            pending = self._pending
            if self._closing or self._held() >= self.max_queue:
                self._wait_for_room(row)
            if not pending:
                self._oldest = time.monotonic()
                self._wake_writer.notify()
            pending.append(row)
            self._queued += 1
            if len(pending) == self.max_batch:
                self._wake_writer.notify()

    def _held(self) -> int:
        # Called with the lock held: queued or being written, and failed.
        return self._queued - self._finished + len(self._failed)

    def _wait_for_room(self, row: Row) -> None:
        # Called with the lock held.
        if not self._closing:
            self.log.debug(
                "background queue full (%d executions held); record() waits for the writer",
                self._held(),
            )
        while not (self._closing or self._writer_gone) and self._held() >= self.max_queue:
            if self._failed:
                # Full of records that could not be written: hand them back
                # now, with this one, rather than hold more.
                failure = self._take_failure([row])
                assert failure is not None
                raise failure
            self._progress.wait()
        if self._closing:
            raise StoreClosedError(f"{self.store.path}: the background recorder is closed")
        if self._writer_gone:
            raise StoreClosedError(f"{self.store.path}: the background writer has stopped")

    def flush(self) -> None:
        """Wait until every record queued so far is committed.

        Raises :class:`~telemetry_orm.BackgroundWriteError` if a batch could
        not be written since the last ``flush()``; its ``records`` are the
        ones lost from the database, in order.
        """
        with self._lock:
            target = self._queued
            self._flushing += 1
            self._wake_writer.notify()
            try:
                while self._finished < target and not self._writer_gone:
                    self._progress.wait()
            finally:
                self._flushing -= 1
            failure = self._take_failure()
            stuck = self._queued - self._finished if self._writer_gone else 0
        if failure is not None:
            raise failure
        if stuck:
            raise StoreClosedError(
                f"{self.store.path}: the background writer has stopped; "
                f"{stuck} executions were not written"
            )

    def close(self) -> None:
        """Write everything queued, stop the writer, and refuse new records.

        Raises :class:`~telemetry_orm.BackgroundWriteError` as :meth:`flush`
        does. Calling it again does nothing.
        """
        with self._lock:
            self._closing = True
            self._wake_writer.notify()
            self._progress.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()
        atexit.unregister(self._at_exit)
        forking.untrack(self)
        _OPEN.discard(self)
        with self._lock:
            failure = self._take_failure()
        if failure is not None:
            raise failure

    @property
    def pending(self) -> int:
        """How many records are queued or being written, not yet committed."""
        return self._queued - self._finished

    @property
    def held(self) -> int:
        """How many records the recorder holds: queued, being written, or
        failed and not yet raised (at most ``max_queue``)."""
        with self._lock:
            return self._held()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closing

    def __enter__(self) -> BackgroundRecorder:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    # -- the writer thread -------------------------------------------------

    def _run(self) -> None:
        # The store's hook for a stream of batches: the engine keeps its log
        # in shape between them.
        writer = self.store.batch_writer()
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                if self._write(writer, batch):
                    with self._lock:
                        self._finished += len(batch)
                        self._progress.notify_all()
        finally:
            writer.close()
            with self._lock:
                self._writer_gone = True
                self._progress.notify_all()

    def _next_batch(self) -> Optional[List[Row]]:
        """Wait for a batch worth writing and take it; ``None`` means stop."""
        with self._lock:
            pending = self._pending
            while not pending and not self._closing:
                self._wake_writer.wait()
            if not pending:
                return None
            while len(pending) < self.max_batch and not (self._closing or self._flushing):
                remaining = self._oldest + self.max_delay - time.monotonic()
                if remaining <= 0:
                    break
                self._wake_writer.wait(remaining)
            count = min(len(pending), self.max_batch)
            batch = [pending.popleft() for _ in range(count)]
            # What is left arrived while the last batch was being written.
            self._oldest = time.monotonic()
            self._progress.notify_all()
        return batch

    def _write(self, writer: BatchWriter, batch: List[Row]) -> bool:
        """Write ``batch``; ``False`` when it failed (then it is counted
        finished and kept as failed in one step: ``held`` never counts it
        twice, which could exceed ``max_queue``)."""
        delay = self.retry_delay
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                if any(type(row) is _TaggedRow for row in batch):
                    keys = [getattr(row, "key", None) for row in batch]
                    labels = [getattr(row, "labels", NO_LABELS) for row in batch]
                    ids = writer.write(batch, keys if any(keys) else None,
                                       labels if any(labels) else None)
                else:
                    ids = writer.write(batch)
                self.log.debug(
                    "background wrote %d executions (ids %d to %d)", len(ids), ids[0], ids[-1]
                )
                return True
            except StoreClosedError as exc:
                error: Exception = exc
                break  # trying again cannot help
            except Exception as exc:  # noqa: BLE001 - kept and raised from flush()
                error = exc
                if attempt < attempts:
                    self.log.warning(
                        "background write of %d executions failed (attempt %d of %d); "
                        "retrying in %.3fs: %s",
                        len(batch), attempt, attempts, delay, exc,
                    )
                    time.sleep(delay)
                    delay *= 2
        with self._lock:
            kept = len(self._failed) + len(batch)
        # Logged before flush() can see the batch finished.
        self.log.error(
            "background write of %d executions failed after %d attempts: %s; "
            "%d executions are kept and raised from the next flush() or close()",
            len(batch), attempt, error, kept,
        )
        with self._lock:
            self._failed.extend(batch)
            self._failure = error
            self._finished += len(batch)
            self._progress.notify_all()
        return False

    def _take_failure(self, refused: Sequence[Row] = ()) -> Optional[BackgroundWriteError]:
        # Called with the lock held.
        if not self._failed:
            return None
        rows, self._failed = self._failed, []
        every = (*rows, *refused)
        records = [TelemetryRecord(**dict(zip(FIELD_NAMES, row, strict=True)),
                                   labels=getattr(row, "labels", NO_LABELS)) for row in every]
        cause, self._failure = self._failure, None
        also = (f" (the recorder is full: the last {len(refused)} given to record() "
                "were not queued)") if refused else ""
        failure = BackgroundWriteError(
            f"{self.store.path}: {len(records)} executions could not be written "
            f"in the background{also}: {cause}",
            records,
            keys=[getattr(row, "key", None) for row in every],
        )
        failure.__cause__ = cause
        return failure

    def _at_exit(self) -> None:
        try:
            self.close()
        except BackgroundWriteError as exc:
            self.log.error("at exit: %s", exc)

    # -- fork() ---------------------------------------------------------------

    def before_fork(self) -> None:
        pass

    def after_fork_in_parent(self) -> None:
        pass

    def after_fork_in_child(self) -> None:
        # The parent's writer thread does not exist here, and its queue is
        # the parent's to write; the child gets a fresh lock, queue and writer.
        if not self._closing:
            self._start()


class _TaggedRow(tuple):  # type: ignore[type-arg]
    """A queued row (the INSERT's parameters) with the key it is recorded
    under (``None``: none) and its labels."""

    key: Optional[str]
    labels: Mapping[str, str]

    def __new__(cls, row: Row, key: Optional[str], labels: Mapping[str, str]) -> _TaggedRow:
        made = super().__new__(cls, row)
        made.key = key
        made.labels = labels
        return made


# Recorders not closed yet, for write_queues_on_sigterm().
_OPEN: weakref.WeakSet[BackgroundRecorder] = weakref.WeakSet()


def write_queues_on_sigterm() -> Any:
    """Have SIGTERM write what every open recorder holds before the process
    ends; return the handler that was installed before.

    Under the default handler a SIGTERM ends the process at once and queued
    records are lost (``atexit`` does not run). After this call, a SIGTERM
    puts the previous handler back, closes every open recorder (writing its
    queue) on a thread of its own, then delivers the signal again to that
    handler:
    with the default one the process then ends by SIGTERM as before. Never
    installed by the library itself; call it from the main thread, after
    any handler of your own::

        store = create_telemetry_store("data/telemetry.db")
        recorder = store.background()
        write_queues_on_sigterm()
    """
    previous = signal.getsignal(signal.SIGTERM)

    def write_then_deliver() -> None:
        for recorder in list(_OPEN):
            try:
                recorder.close()
            except Exception as exc:  # noqa: BLE001 - logged; the signal still goes on
                recorder.log.error("on SIGTERM: %s", exc)
        os.kill(os.getpid(), signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        # The previous handler takes the signal again once the queues are
        # written (a second SIGTERM meanwhile goes to it at once). The writing
        # is not done here: the interrupted code may hold a recorder's lock.
        signal.signal(signal.SIGTERM, previous)
        threading.Thread(target=write_then_deliver, name="telemetry_orm-sigterm").start()

    signal.signal(signal.SIGTERM, on_sigterm)
    return previous

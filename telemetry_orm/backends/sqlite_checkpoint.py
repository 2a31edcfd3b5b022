"""SQLite's checkpoints and its ``-wal`` file, the tools of the log's upkeep
(:mod:`telemetry_orm.backends.sqlite_wal`): ``PRAGMA wal_checkpoint`` with
the care a ``RESTART`` or ``TRUNCATE`` needs (:func:`checkpoint`), the
helper thread that runs a store's automatic ones (:class:`Checkpointer`),
and the file itself (:class:`WalFile`)."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
from typing import Callable, Optional

from ..errors import StoreClosedError, TelemetryError
from .base import CheckpointResult, Logger, StoreAccess

#: Busy timeout of the TRUNCATE checkpoint after a big purge. That checkpoint
#: holds the write lock while it waits for readers, so a long wait would stall
#: every writer; if it gives up, ``journal_size_limit`` still cuts the log.
TRUNCATE_BUSY_TIMEOUT_MS = 50
_TRUNCATE_ATTEMPTS = 5

#: SQLite's own default of ``wal_autocheckpoint``, in pages.
AUTOCHECKPOINT_PAGES = 1000

#: While a reader holds the log back, the helper writes the log's new pages
#: to disk once this many have come since it last did: copying the log after
#: the reader lets go then waits for little more than the database file's
#: own sync (see :meth:`SqliteUpkeep._sync_held_log`).
LOG_SYNC_PAGES = 512

def checkpoint(
    conn: sqlite3.Connection, mode: str, *, busy_timeout: int, blocking: bool = True
) -> CheckpointResult:
    """``PRAGMA wal_checkpoint(mode)`` on ``conn``.

    A ``RESTART`` or ``TRUNCATE`` checkpoint holds the write lock while it
    copies the log and waits for readers, stalling every writer meanwhile; a
    PASSIVE pass first copies the bulk while they keep writing. With
    ``blocking=False`` (after a big purge, between a writer's batches) it
    does not wait at all when that pass shows a reader holding an older
    snapshot (it could not copy the whole log), and otherwise waits for
    readers at most :data:`TRUNCATE_BUSY_TIMEOUT_MS` instead of
    ``busy_timeout``; if it gives up (``busy``), ``journal_size_limit``
    still cuts the ``-wal`` file once the log restarts.
    """
    mode = mode.upper()
    if mode not in ("RESTART", "TRUNCATE"):
        return _checkpoint(conn, mode)
    # The bulk first, without the write lock; if another connection's
    # checkpoint (the helper thread's, say) is running, after it.
    for _ in range(_TRUNCATE_ATTEMPTS * 10):
        passive = _checkpoint(conn, "PASSIVE")
        if not passive.busy or passive.logged >= 0:
            break
        time.sleep(0.01)
    if blocking:
        return _checkpoint(conn, mode)
    if 0 <= passive.copied < passive.logged:
        # A reader holds a snapshot older than the end of the log: the pass
        # could not copy beyond it, and the RESTART or TRUNCATE would only
        # wait for that reader for its busy timeout, then give up (a writer
        # that tried between each of its batches spent most of its time
        # waiting). It is worth trying once that reader has moved on, which
        # the next pass shows by copying the rest.
        return dataclasses.replace(passive, busy=True)
    saved = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
    conn.execute(f"PRAGMA busy_timeout = {min(TRUNCATE_BUSY_TIMEOUT_MS, busy_timeout)}")
    try:
        for _ in range(_TRUNCATE_ATTEMPTS):
            result = _checkpoint(conn, mode)
            # -1 pages: it could not start because another connection (a
            # writer's automatic checkpoint) is checkpointing right now,
            # which ends shortly; unlike a reader, that is worth another try.
            if not result.busy or result.logged >= 0:
                break
            time.sleep(0.01)
        return result
    finally:
        conn.execute(f"PRAGMA busy_timeout = {saved}")


def _checkpoint(conn: sqlite3.Connection, mode: str) -> CheckpointResult:
    busy, logged, copied = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
    emptied = mode == "TRUNCATE" and not busy
    return CheckpointResult(True, bool(busy), int(logged), int(copied), emptied)


def set_autocheckpoint(conn: sqlite3.Connection, pages: int) -> int:
    """``PRAGMA wal_autocheckpoint = pages`` on ``conn``; return the old value."""
    old = int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
    conn.execute(f"PRAGMA wal_autocheckpoint = {int(pages)}")
    return old


class Checkpointer:
    """Runs a store's automatic checkpoints on a thread of their own,
    started at the first one. Requests made while one runs merge into one."""

    def __init__(self, run: Callable[[], None], log: Logger) -> None:
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

    def idle(self) -> bool:
        """Whether no checkpoint runs or is due."""
        with self._changed:
            return not (self._due or self._busy)

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
            except StoreClosedError:
                pass  # the store is closing: nothing left to keep
            except Exception as exc:  # noqa: BLE001 - housekeeping must not kill the thread
                self._log.warning("automatic checkpoint failed: %s", exc)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()


class WalFile:
    """The ``-wal`` file of one store's database: where it is, how big it
    is, and writing a log that a reader holds back to disk (:meth:`sync_held`)."""

    def __init__(self, store: StoreAccess) -> None:
        self.store = store
        #: Its path and the page size, read from SQLite at the first need.
        self.path: Optional[str] = None
        self.page_size = 4096
        #: Log pages when the helper last synced it.
        self.synced_pages = 0

    def sync_held(self, pages: int, conn: sqlite3.Connection) -> None:
        """On the helper thread, while a reader holds the log (``pages``
        long) back: write its pages to disk once :data:`LOG_SYNC_PAGES` have
        come since the last time.

        With ``synchronous=NORMAL`` no commit syncs the log; SQLite syncs it
        before copying any of it into the database file. A log that a reader
        held back is then all in the page cache when the reader lets go, and
        the first copy waits for all of it (300 ms for 100 MB here) while
        the writes go on growing it. Synced here, beside the writers, that
        copy waits for the last few pages only."""
        if pages < self.synced_pages:
            self.synced_pages = 0  # restarted since
        if pages - self.synced_pages < LOG_SYNC_PAGES:
            return
        try:
            fd = os.open(self.locate(conn), os.O_RDONLY)
            try:
                _datasync(fd)
            finally:
                os.close(fd)
        except (OSError, sqlite3.Error) as exc:  # the checkpoint syncs it anyway
            self.store.log.debug("syncing the log failed: %s", exc)
            return
        self.synced_pages = pages

    def locate(self, conn: sqlite3.Connection) -> str:
        """Its path (and the page size), read on ``conn`` the first time."""
        if self.path is None:
            self.page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            self.path = wal_file(conn)
        return self.path

    def size(self) -> int:
        """Bytes in the ``-wal`` file (0 if there is none)."""
        try:
            if self.path is None:
                with self.store.connection(locked=False) as conn:
                    self.locate(conn)
            assert self.path is not None
            return os.stat(self.path).st_size
        except (OSError, TelemetryError):
            return 0


def wal_file(conn: sqlite3.Connection) -> str:
    """The path of the ``-wal`` file of ``conn``'s main database."""
    for _, name, path in conn.execute("PRAGMA database_list"):
        if name == "main":
            return f"{path}-wal"
    raise sqlite3.OperationalError("no main database")


#: ``fdatasync`` where the platform has it (it skips the file's times).
_datasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)

"""SQLite's write-ahead log, kept in shape for one store.

- **Checkpoints** (:func:`~telemetry_orm.backends.sqlite_checkpoint.checkpoint`):
  ``PRAGMA wal_checkpoint`` copies the log into the database file. The
  automatic ones the store asks for (every 1000 writes) run passive on a
  helper thread (:class:`~telemetry_orm.backends.sqlite_checkpoint.Checkpointer`),
  so the writer that triggered it never waits for its disk syncs.
- **Log restarts**: a writer that commits batch after batch (a background
  writer, a purge) turns SQLite's automatic checkpoint off on its own
  connection; once the log passes :data:`LOG_RESTART_PAGES` a ``RESTART``
  checkpoint lets the next write start it afresh, or it would grow for as
  long as the writing goes on.
- **Catching up after a reader** (:meth:`SqliteUpkeep.before_write`,
  :meth:`SqliteUpkeep.after_write`): while a reader holds an old snapshot,
  the log grows; once it lets go, writes that keep coming would keep it
  from ever being fully copied, or one of them would copy it inside its
  commit. The helper thread then takes the log in hand until it has caught
  up, and a write restarts it. Meanwhile it writes the held log to disk
  (SQLite syncs a log before copying it: 100 MB took 300 ms here), and a
  writer that sees the log outgrow what the reader held, or many rows
  written since the helper last looked, looks itself (waiting for the
  helper's copy if one runs), so the file stays near that size.

The pacing of purges is :mod:`telemetry_orm.backends.sqlite_purge`'s.
:class:`SqliteUpkeep` ties these to one store (the
:class:`~telemetry_orm.backends.base.Upkeep` the store calls).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import threading
import time
from typing import Any, Optional, Tuple

from ..errors import StoreClosedError, TelemetryError
from .base import PURGE_CHUNK, CheckpointResult, StoreAccess
from .sqlite_checkpoint import (
    AUTOCHECKPOINT_PAGES,
    Checkpointer,
    WalFile,
    checkpoint,
    set_autocheckpoint,
)
from .sqlite_files import own_connection

#: Log size, in pages, past which a purge or a background writer has the
#: log restarted (see :meth:`SqliteUpkeep.restart_long_log`).
LOG_RESTART_PAGES = 16384

#: Longest time, in seconds, a purge or a background writer waits for the
#: helper thread's checkpoint to finish before restarting the log.
LOG_CATCH_UP = 0.25

#: Log size, in pages, past which the helper thread takes the log in hand
#: from writers that record row by row or batch by batch, and has it
#: restarted (see :meth:`SqliteUpkeep._checkpoint_in_helper`). Their commits'
#: own checkpoints (every 1000 pages) keep it far shorter, unless something
#: keeps them from restarting it: a reader holding it back, or the helper's
#: own passes, which they cannot run beside.
LONG_LOG_PAGES = 4096

#: Writes between two of the helper's checkpoints while a reader holds the
#: log back or it is past :data:`LONG_LOG_PAGES`, so that the helper starts
#: catching up soon after the reader lets go.
BEHIND_CHECKPOINT_EVERY = 100

#: Log pages a helper's pass may have left to copy for the log to count as
#: caught up: what a write's ``RESTART`` then copies is about what SQLite's
#: own automatic checkpoint copies inside a commit.
CAUGHT_UP_PAGES = 1000

#: Rows this store's writers may add to a log after a reader was last seen
#: holding it back, before a writer looks itself (see
#: :meth:`SqliteUpkeep._catch_up_here`): the helper may be busy, or slow on
#: a loaded machine, and a batch of 1,000 rows is written before it wakes.
UNCHECKED_ROWS = 1000

#: How far, as a fraction of its size when a reader was last seen holding
#: it back (and at least :data:`HELD_GROWTH_MIN` bytes), the ``-wal`` file
#: may grow before a writer looks itself whether the reader let go.
HELD_GROWTH = 0.05
HELD_GROWTH_MIN = 1024 * 1024

#: Tries, 2 ms apart, of a helper's checkpoint that finds another
#: connection checkpointing (it then learns nothing about the log).
_HELPER_ATTEMPTS = 8
#: Passes in a row of one helper run catching up with a long log.
_CATCH_UP_PASSES = 8


class _WriterState(threading.local):
    """Per writing thread: whether its connection's commit-time checkpoint
    is off while the helper has the log in hand (and the setting to
    restore), and whether the thread is a stream's (which has it off for
    good, see :meth:`SqliteUpkeep.stream_started`)."""

    holding = False
    saved = AUTOCHECKPOINT_PAGES
    streaming = False
    #: The stream opened this thread's connection of an application's database.
    opened = False


class SqliteUpkeep:
    """The log upkeep of one SQLite store (see the module's docstring).

    ``database`` is the store's :class:`~telemetry_orm.backends.sqlite.StoreDatabase`;
    ``memory``: a ``':memory:'`` database, whose one connection is shared
    and has no log to keep.

    ``borrowed``: ``database`` is an application's, whose connections are
    its own: their settings are left alone (no commit-time checkpoints
    turned off while the helper catches up with the log; SQLite's own, every
    1000 pages, keep the log short), and they are not closed. The helper
    thread checkpoints on a ``sqlite3`` connection of its own, opened for
    each pass (a pooled connection may not be used by another thread than
    the one that opened it). A background writer's thread closes the
    connection it opened from that database when its stream ends (back to
    the pool of a pooled database).
    """

    def __init__(
        self,
        database: Any,
        store: StoreAccess,
        *,
        busy_timeout: int,
        memory: bool,
        borrowed: bool = False,
        shared: bool = False,
    ) -> None:
        self.database = database
        self.borrowed = borrowed
        self.store = store
        self.busy_timeout = busy_timeout
        self.memory = memory
        #: No helper thread or stream settings: no log (``:memory:``), or
        #: one connection every thread shares (an application's database
        #: made with ``thread_safe=False``).
        self.inline = memory or shared
        #: Log size, in pages, at the last checkpoint.
        self.log_pages = 0
        self._checkpointer = Checkpointer(self._checkpoint_in_helper, store.log)
        self._reset_catch_up()

    def _reset_catch_up(self) -> None:
        #: Set by the helper while a reader holds the log back, or it is
        #: long, until it has caught up: writers then leave checkpoints to it.
        self._helper_copies = False
        #: ... or while its last pass did not copy the whole log: the helper
        #: then runs every BEHIND_CHECKPOINT_EVERY writes.
        self._log_behind = False
        self._behind_writes = 0
        #: Set by the helper once it has copied a long log up to its last few
        #: pages: the next write restarts it (see _restart_here).
        self._restart_due = False
        #: Log pages at the last restart (until a write starts the log
        #: afresh, a pass sees it just as long), and how many restarts.
        self._restarted_at = -1
        self._restarts = 0
        #: Size in bytes of the -wal file when a reader was last seen holding
        #: the log back (0: none since the last restart), rows written since
        #: then (or since a writer last looked), and the file.
        self._held_size = 0
        self._unchecked = 0
        self._wal = WalFile(self.store)
        #: Streams (background writers) writing now.
        self._streams = 0
        self._streams_lock = threading.Lock()
        self._writer = _WriterState()

    # -- hooks of the store -------------------------------------------------

    def checkpoint(self, *, truncate: bool = False, wait: bool = True) -> CheckpointResult:
        """Passive (or ``TRUNCATE``) at once, or passive on the helper thread
        (``wait=False``: one asked for while another runs follows it once)."""
        if wait or truncate or self.inline:
            return self.run("TRUNCATE" if truncate else "PASSIVE")
        if self.store.closed:
            raise StoreClosedError(f"{self.store.path}: the telemetry store is closed")
        self._checkpointer.request()
        return CheckpointResult(True)

    def purge_gap(self, pause: float) -> None:
        # The helper copies the chunk meanwhile; caught up with a long log, it
        # would skip its passes until a write restarted it (chunks do not).
        self._restart_due = False
        self.checkpoint(wait=False)
        if pause:
            # Writers get their moment; meanwhile the helper catches up with
            # the log, which is restarted here if it grew long.
            began = time.monotonic()
            if self._checkpointer.wait_idle(LOG_CATCH_UP):
                self.restart_long_log()
            pause -= time.monotonic() - began
        time.sleep(max(0.0, pause))

    def after_purge(self, deleted: int) -> None:
        if deleted >= PURGE_CHUNK:
            # Not blocking: waiting for a reader would stall every writer.
            self.run("TRUNCATE", blocking=False)

    def stream_started(self) -> Optional[int]:
        """Turn SQLite's automatic checkpoint off on this thread's connection
        (a writer that commits batch after batch would sync the disk inside
        its commits; the helper thread does that work beside it); return the
        setting to restore, or ``None`` (``:memory:``, no log)."""
        if self.inline:
            return None
        state = self._writer
        # On an application's database: whether this thread had a
        # connection open before (the application's: it stays open).
        state.opened = self.borrowed and self.database.is_closed()
        try:
            # Under the store lock, so that fork() never copies the
            # connection half-opened.
            with self.store.connection() as conn:
                token = set_autocheckpoint(conn, 0)
        except TelemetryError:
            return None
        with self._streams_lock:
            self._streams += 1
        if state.holding:
            # Off for the helper's catch-up already: what to restore is the
            # setting from before that.
            token, state.holding = state.saved, False
        state.streaming = True
        return token

    def between_batches(self) -> None:
        self.restart_long_log()

    def stream_ended(self, token: Optional[int]) -> None:
        if token is None:
            self._release_connection()
            return
        self._writer.streaming = False
        with self._streams_lock:
            self._streams -= 1
        if self.borrowed:
            # The application's database: put the setting back, closed
            # store or not (unless the connection is gone already).
            if not self.database.is_closed():
                with contextlib.suppress(sqlite3.Error):
                    set_autocheckpoint(self.database.connection(), token)
        elif not self.store.closed:
            with contextlib.suppress(TelemetryError), self.store.connection() as conn:
                set_autocheckpoint(conn, token)
        self._release_connection()

    def _release_connection(self) -> None:
        """On an application's database, close the connection this thread's
        stream opened: it goes back to the pool, or is not left open for
        good. One the thread had open before is the application's."""
        if self._writer.opened:
            self._writer.opened = False
            with contextlib.suppress(Exception):
                self.database.close()

    def close(self) -> None:
        self._checkpointer.stop()
        if not self.borrowed:
            self.database.close_all()

    def before_fork(self) -> None:
        # A connection forked in the middle of a checkpoint leaves SQLite's
        # in-process lock records saying "locked" in the child.
        running = self._checkpointer.running
        if not running.acquire(blocking=False):
            self.store.log.debug("%s: fork() waits for a checkpoint", self.store.path)
            running.acquire()

    def after_fork_in_parent(self) -> None:
        self._checkpointer.running.release()

    def after_fork_in_child(self) -> None:
        self._checkpointer = Checkpointer(self._checkpoint_in_helper, self.store.log)
        self._reset_catch_up()
        if not self.borrowed:
            self.database.forget_inherited()

    def before_write(self) -> None:
        """Before a write on this thread (the store lock held): while the
        helper has the log in hand, this thread's commits leave checkpoints
        to it (see :meth:`_hold_commit_checkpoints`)."""
        state = self._writer
        if self._helper_copies is not state.holding and not state.streaming:
            self._hold_commit_checkpoints(self._helper_copies)

    def after_write(self, rows: int) -> None:
        """After a committed write of ``rows`` rows (the store lock held):
        while the helper catches up with a long log, ask it for a pass every
        :data:`BEHIND_CHECKPOINT_EVERY` rows; once it has, restart the log.
        After a reader held the log back, look here whether it still does
        once :data:`UNCHECKED_ROWS` rows have come since the last look or
        the file has outgrown what it held (:meth:`_catch_up_here`).
        Never raises: the rows are written."""
        if self._restart_due:
            # Not waiting for the helper to be idle: on a loaded machine it
            # may take a while to wake for a pass it was asked for, and a
            # pass of its running now only makes this try again next write.
            self._restart_here()
        elif self._log_behind:
            if self._held_size:
                self._unchecked += rows
                if (self._unchecked >= UNCHECKED_ROWS
                        or self._wal.size() > self._held_size + max(
                            self._held_size * HELD_GROWTH, HELD_GROWTH_MIN)):
                    self._catch_up_here()
                    return
            self._behind_writes += rows
            if self._behind_writes >= BEHIND_CHECKPOINT_EVERY:
                self._behind_writes = 0
                self._checkpointer.request()
        elif not self.inline:
            # A log that grew long behind this store's back (a reader in
            # another process held it while other processes wrote): the
            # helper's every-1000-writes pass may be far off.
            self._behind_writes += rows
            if self._behind_writes >= BEHIND_CHECKPOINT_EVERY:
                self._behind_writes = 0
                if self._wal.size() > self._long_log_pages() * self._wal.page_size:
                    self._checkpointer.request()

    # -- the log --------------------------------------------------------------

    def restart_long_log(self) -> None:
        """Between two batches of a writer without automatic checkpoints:
        once the log passes :data:`LOG_RESTART_PAGES`, let the helper finish
        copying it and run a ``RESTART`` checkpoint (which holds the write
        lock only for the last pages), so that the next write starts the log
        from its beginning. Without it a log that is always being appended
        to is never fully copied when a write begins, and SQLite grows it
        for as long as the writing goes on."""
        if self.log_pages < LOG_RESTART_PAGES or not self._checkpointer.wait_idle(LOG_CATCH_UP):
            return
        try:
            self.run("RESTART", blocking=False)
        except TelemetryError as exc:  # housekeeping: the writes went through
            self.store.log.warning("checkpoint RESTART failed: %s", exc)

    def run(self, mode: str, *, blocking: bool = True, locked: bool = True,
            conn: Optional[sqlite3.Connection] = None) -> CheckpointResult:
        """One checkpoint of ``mode`` on this thread's connection (or ``conn``)."""
        started = time.perf_counter()
        if conn is not None:
            result = checkpoint(conn, mode, busy_timeout=self.busy_timeout, blocking=blocking)
        else:
            with self.store.connection(locked=locked) as own:
                result = checkpoint(own, mode, busy_timeout=self.busy_timeout,
                                    blocking=blocking)
        if result.logged >= 0:
            self.log_pages = result.logged
        if not self.memory:
            result = dataclasses.replace(result, log_file=f"{self.store.path}-wal")
        self.store.log.debug(
            "checkpoint %s: %d of %d log pages (busy=%d) in %.1f ms", mode, result.copied,
            result.logged, result.busy, (time.perf_counter() - started) * 1000,
        )
        return result

    def _checkpoint_in_helper(self) -> None:
        """Passive checkpoints, beside the writers; after a reader held the
        log back, until it is caught up with.

        On the helper thread: its own connection, and no store lock, since
        SQLite lets a passive checkpoint run beside a writer. But writes that
        keep coming add to the log while it copies, so a pass never ends with
        the whole log copied, and SQLite restarts the log only at a write
        that finds it so: a log that grew long (a reader held it back) grows
        for as long as the writes go on, unless a write's own checkpoint
        copies the rest (if it gets to run: it cannot while this one does),
        and that write then waits for the copy.

        So while a reader holds back more than :data:`CAUGHT_UP_PAGES`, or the
        log is past :data:`LONG_LOG_PAGES`, writers leave checkpoints to this
        thread (:meth:`_hold_commit_checkpoints`), which then runs every
        :data:`BEHIND_CHECKPOINT_EVERY` writes. Once nothing holds the log
        back, it copies it in passes until the last one had at most
        :data:`CAUGHT_UP_PAGES` to copy (or no fewer than the one before);
        then the writers take over again, and if the log is long the next
        write restarts it (:meth:`_restart_here`)."""
        if self.borrowed:
            # Passes only: taking the log in hand would mean changing the
            # settings of the application's connections.
            conn = own_connection(self.database, self.busy_timeout)
            try:
                result = self._passive_in_helper(conn)
                if result is not None and result[0] - result[1] > CAUGHT_UP_PAGES:
                    self._wal.sync_held(result[0], conn)
            finally:
                conn.close()
            return
        if self._restart_due:
            return  # caught up: a write restarts the log
        restarts = self._restarts
        copied_to = todo = -1
        long_log = False
        for _ in range(_CATCH_UP_PASSES):
            result = self._passive_in_helper()
            if result is None:
                # Other connections kept checkpointing (several processes'
                # commits and helpers, each failing to copy past a reader, can
                # take turns for a while): look again soon, and meanwhile let
                # no commit here copy what may be a long log.
                self._helper_copies = self._log_behind = True
                return
            pages, done = result
            if pages == done == self._restarted_at:
                return  # restarted; the next write starts it afresh
            long_log = pages >= self._long_log_pages()
            held_back = pages - done > CAUGHT_UP_PAGES
            self._log_behind = held_back or long_log or self._helper_copies
            if held_back:
                # A reader holds the log back (a writer in its transaction
                # may too for a moment, but only by its last few pages).
                self._helper_copies = True
                self._held_size = self._wal.size()
                self._unchecked = 0
                with self.store.connection(locked=False) as conn:
                    self._wal.sync_held(pages, conn)
                return
            if done < pages or not (long_log or self._helper_copies):
                return
            self._helper_copies = True
            if copied_to >= 0:
                # Caught up, or no longer gaining on the writes (a batch can
                # add more than CAUGHT_UP_PAGES at once).
                last, todo = todo, pages - copied_to
                if todo <= CAUGHT_UP_PAGES or 0 <= last <= todo:
                    break
            copied_to = pages
        # Caught up (or the writes outrun the copying: go on regardless, so
        # that the log stays bounded).
        if restarts != self._restarts:
            return  # a write had it restarted meanwhile
        if long_log:
            self._restart_due = True
        else:
            self._helper_copies = self._log_behind = False
            self._held_size = 0

    def _passive_in_helper(self, conn: Optional[sqlite3.Connection] = None
                           ) -> Optional[Tuple[int, int]]:
        """A passive checkpoint (on ``conn``, else the helper thread's
        connection of the store's database): (log pages, pages copied), or
        ``None`` if another connection kept checkpointing."""
        for attempt in range(_HELPER_ATTEMPTS):
            result = self.run("PASSIVE", locked=False, conn=conn)
            if result.logged >= 0:
                return result.logged, result.copied
            # Another connection is checkpointing (a commit's automatic
            # checkpoint, another process's helper); it ends shortly.
            if attempt < _HELPER_ATTEMPTS - 1:
                time.sleep(0.002)
        return None

    def _long_log_pages(self) -> int:
        # A stream's commits do not checkpoint by design: it restarts the
        # log itself, past LOG_RESTART_PAGES (see restart_long_log).
        return LOG_RESTART_PAGES if self._streams else LONG_LOG_PAGES

    def _hold_commit_checkpoints(self, hold: bool) -> None:
        """Turn SQLite's automatic checkpoint off on this thread's connection
        while the helper thread has the log in hand (``hold``), and back on
        once it has caught up.

        Otherwise the first commit after the reader lets go copies the whole
        log inside the caller's write (it syncs the log and writes every page
        the log changed: 40-100 ms for a 100 MB log), and until then every
        commit tries and fails (each try sorts the log's page list first: 140
        instead of 35 us a row). Called with the store lock held, before the
        write, so that a thread's first write does not copy it either."""
        state = self._writer
        try:
            with self.store.connection() as conn:
                if hold:
                    state.saved = set_autocheckpoint(conn, 0)
                else:
                    set_autocheckpoint(conn, state.saved)
        except TelemetryError as exc:  # housekeeping: the write goes ahead
            self.store.log.warning("setting the automatic checkpoint failed: %s", exc)
            return
        state.holding = hold

    def _catch_up_here(self) -> None:
        """On a writer's thread, with the store lock held, after a reader
        held the log back: look here whether it still does, and if not,
        have the log restarted before the next write.

        The helper looks every :data:`BEHIND_CHECKPOINT_EVERY` rows, but it
        may be busy (copying the log the reader let go: 24 MB of pages took
        200 ms here) or slow to wake on a loaded machine, while each row adds
        some 17 KB to the log and a batch of 1,000 rows is written before it
        wakes. So after :data:`UNCHECKED_ROWS` rows, or once the file has
        grown :data:`HELD_GROWTH` past its size when the reader was last
        seen, the writer looks itself, waiting for a copy in progress at most
        ``busy_timeout`` (as it would for the write lock). While the reader
        is still there, this is a passive checkpoint that copies nothing
        (under 1 ms for a 100 MB log)."""
        self._restart_here(wait=self.busy_timeout / 1000)

    def _restart_here(self, wait: float = 0.0) -> None:
        """A passive checkpoint on this thread (the store lock held), tried
        for up to ``wait`` seconds while another connection checkpoints;
        then, unless a reader still holds the log back, a ``RESTART``
        checkpoint if the log is long.

        Run once the helper has copied a long log up to its last few pages
        (about :data:`CAUGHT_UP_PAGES`, what a commit's own checkpoint
        copies), or by :meth:`_catch_up_here`. The ``RESTART`` holds the write
        lock only while it copies what the passive pass left and waits for
        readers at most :data:`TRUNCATE_BUSY_TIMEOUT_MS`; then the next write
        starts the log afresh and its commit cuts the file to
        ``journal_size_limit``. Run by a writer, with the store lock held,
        rather than by the helper: it then gets the write lock at once, where
        the helper would poll for it against this process's own writes and,
        with writes back to back, can miss it for its whole busy timeout."""
        deadline = time.monotonic() + wait
        try:
            result = self.run("PASSIVE")
            while result.logged < 0 and time.monotonic() < deadline:
                # Another connection is checkpointing: most likely this
                # store's helper, copying the log a reader let go.
                time.sleep(0.002)
                result = self.run("PASSIVE")
            if result.logged < 0:
                return  # a later write tries again
            self._restart_due = False
            self._unchecked = 0
            if result.logged - result.copied > CAUGHT_UP_PAGES:
                # A reader still holds the log back: look again once the
                # file has outgrown this.
                self._held_size = self._wal.size()
                return
            # Another process's store may have had it restarted already.
            if result.logged >= self._long_log_pages():
                result = self.run("RESTART", blocking=False)
        except TelemetryError as exc:  # housekeeping: the write went through
            self._restart_due = False
            self.store.log.warning("checkpoint RESTART failed: %s", exc)
            return
        if result.busy:
            # A reader on a recent snapshot outwaited the RESTART: try again
            # once the file has grown further.
            if self._held_size:
                self._held_size = self._wal.size()
            return
        # (A pass that ended meanwhile may have asked for it again.)
        self._helper_copies = self._log_behind = self._restart_due = False
        self._held_size = 0
        self._restarted_at = result.logged
        self._restarts += 1

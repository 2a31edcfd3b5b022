"""Who may use a store's database now: its lock, the operations running
without it, the one "is this store closed" check, and ``fork()``.

A store serialises its writes with its lock, except on an application's
database (``serial`` false): there each write runs on its thread's
connection, maybe inside that thread's transaction, and waiting for another
thread there while holding a lock of the store's could wait for ever. Reads
(and there, writes too) take a place among the *users* instead, which
:meth:`Gate.close` and ``fork()`` wait for.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, ContextManager, Iterator, Optional

from ..backends.base import Logger
from ..errors import StoreClosedError

#: Seconds ``fork()`` waits for the writes in progress on an application's
#: database (see :meth:`Gate.before_fork`).
FORK_WAIT = 5.0


class _Users:
    """Counts the operations running without the store lock, so that
    closing can wait for them."""

    def __init__(self, *, closed: bool = False) -> None:
        self._changed = threading.Condition()
        self._count = 0
        self._mine = threading.local()  # this thread's share of _count
        self.closed = closed
        self._paused = False

    @contextlib.contextmanager
    def use(self, refuse: Callable[[], None], let_through: Optional[Callable[[], bool]] = None
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
                refuse()
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


class Gate:
    """The store's lock, its users and its closed state (see the module).

    ``path`` names the store in messages; ``serial`` says whether writes
    hold the lock (set when the store opens; until then a store opening at
    its first use counts as an application's); ``let_through`` is what
    ``fork()`` lets through while it waits (on an application's database,
    the calls inside a transaction)."""

    def __init__(self, path: str, log: Logger, *, serial: bool) -> None:
        self.path = path
        self.log = log
        self.serial = serial
        self.let_through: Optional[Callable[[], bool]] = None
        self.lock = threading.RLock()
        self.closed = False
        #: Operations running without the lock (reads, the engine's
        #: checkpoints): closing waits for them before closing connections.
        self._users = _Users()
        self._fork_locked = False

    def check_open(self) -> None:
        """Raise :class:`~telemetry_orm.StoreClosedError` once the store is closed."""
        if self.closed:
            self.refuse()

    def refuse(self) -> None:
        raise StoreClosedError(f"{self.path}: the telemetry store is closed")

    def writing(self) -> ContextManager[Any]:
        """What a write holds: the lock, or on an application's database
        only a place among the users (one inside a transaction of the
        caller's is let through while ``fork()`` waits: another write may
        be waiting for that transaction)."""
        if self.serial:
            return self.lock
        return self._users.use(self.refuse, self.let_through)

    @contextlib.contextmanager
    def entered(self, *, locked: bool = True) -> Iterator[None]:
        """Held for one operation: :meth:`writing` (``locked``) or a place
        among the users; refused once the store is closed."""
        with self.writing() if locked else self._users.use(self.refuse, self.let_through):
            self.check_open()
            yield

    def close(self, finish: Callable[[], None]) -> None:
        """Mark the store closed, once: ``finish`` runs first, under the lock."""
        with self.lock:
            if not self.closed:
                finish()
                self.closed = True

    def close_users(self, *, wait: bool) -> None:
        """Refuse new unlocked operations; ``wait``: for the running ones too."""
        self._users.close(wait=wait)

    # -- fork() --------------------------------------------------------------

    def before_fork(self) -> None:
        # Let every store call in progress finish first. A connection forked
        # in the middle of a transaction leaves the engine's in-process lock
        # records saying "locked" in the child, where nobody will ever unlock
        # them.
        self._fork_locked = True
        if self.serial:
            if not self.lock.acquire(blocking=False):
                self.log.debug("%s: fork() waits for a store call in progress", self.path)
                self.lock.acquire()
            return
        # Writes on an application's database hold no lock: wait for them,
        # but not for ever (one may wait for a lock that this thread's own
        # open transaction holds); then for the lock, held only briefly
        # there (by a store opening at its first use, say). Calls inside a
        # transaction are let through meanwhile (see writing()).
        if not self._users.pause(FORK_WAIT):
            self.log.warning("%s: fork() went ahead with a store write still running "
                             "after %.0f s", self.path, FORK_WAIT)
        self._fork_locked = self.lock.acquire(timeout=FORK_WAIT)
        if not self._fork_locked:
            self.log.warning("%s: fork() went ahead while the store was opening", self.path)

    def after_fork_in_parent(self) -> None:
        self._users.resume()
        if self._fork_locked:
            self.lock.release()

    def after_fork_in_child(self) -> None:
        self.lock = threading.RLock()
        self._users = _Users(closed=self._users.closed)

"""An open store's upkeep, as its engine keeps it: the :class:`Upkeep`
hooks around writes, purges, close and ``fork()``; the :class:`PurgePacer`
that sizes a purge's chunks; and the server defaults a backend gets unless
it overrides them (:class:`ServerUpkeep`, :class:`FixedPacer`). SQLite's
own are in ``sqlite_wal.py`` and ``sqlite_purge.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, ContextManager, List, Optional, Protocol, Union

import peewee

Logger = Union[logging.Logger, "logging.LoggerAdapter[Any]"]

#: Rows a purge deletes in its first transaction (engines may size later ones).
PURGE_CHUNK = 5000


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


class PurgePacer(Protocol):
    """How one purge sizes its chunks and paces them for other writers."""

    #: Rows the next chunk may delete (an engine that deletes a stretch of
    #: ids at a time takes it as the stretch's width, which bounds the rows).
    rows: int
    #: Rows of the first chunk when the chunks must fold rows into the
    #: rollups before deleting them (folding a row costs several times
    #: deleting it).
    fold_rows: int
    #: The fewest rows a chunk is sized to.
    least: int

    @property
    def quiet(self) -> bool:
        """No other connection has written lately: a step may do its reads
        before it takes the lock (see ``Backend.move_gone_keys``)."""
        ...

    def start(self, conn: Any) -> None:
        """Before the first chunk, on the purging connection."""
        ...

    def after_chunk(self, conn: Any, held: float, free: float = 0.0) -> float:
        """After a chunk that held its locks ``held`` seconds (with the
        connection still reserved), having left them free ``free`` seconds
        just before while it read: update :attr:`rows` and return the
        seconds to leave other writers before the next chunk."""
        ...

    def wary(self) -> None:
        """Right after :meth:`start`, before a long fold: pace its first
        moments as if other connections were writing."""
        ...

    def step_rows(self, most: int, rows: Optional[int], held: float) -> int:
        """The rows of the next step of a long fold (``rollup()``), whose
        steps of that kind take ``most`` at most: after one of ``rows`` rows
        that held the locks ``held`` seconds (``rows`` ``None``: before the
        first), with :meth:`after_chunk` told already."""
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


class FixedPacer:
    """Chunks of :data:`PURGE_CHUNK` rows and no pause: the default pacer, for
    an engine whose chunk DELETE locks only the rows it deletes (writers
    never wait for it)."""

    rows = PURGE_CHUNK
    #: A rollup step's rows (``folding.FOLD_ROWS``).
    fold_rows = 2_500
    least = PURGE_CHUNK
    #: Its steps have no reason to read ahead: nobody waits for them.
    quiet = False

    def start(self, conn: Any) -> None:
        pass

    def after_chunk(self, conn: Any, held: float, free: float = 0.0) -> float:
        return 0.0

    def wary(self) -> None:
        pass

    def step_rows(self, most: int, rows: Optional[int], held: float) -> int:
        return most

    def finish(self, conn: Any) -> None:
        pass


class ServerUpkeep:
    """The default :class:`Upkeep`, a server's: it keeps its own log, so
    every hook is a no-op but ``close`` (the store's own pool), the pause
    between purge chunks, and a forked child's fresh pool."""

    def __init__(self, database: peewee.Database, *, borrowed: bool = False) -> None:
        self.database: Any = database
        #: An application's database: its connections are its own.
        self.borrowed = borrowed

    def checkpoint(self, *, truncate: bool = False, wait: bool = True) -> CheckpointResult:
        """Nothing to do: the server checkpoints its own log."""
        return CheckpointResult(applies=False)

    def purge_gap(self, pause: float) -> None:
        time.sleep(pause)

    def after_purge(self, deleted: int) -> None:
        pass

    def before_write(self) -> None:
        pass

    def after_write(self, rows: int) -> None:
        pass

    def stream_started(self) -> None:
        return None

    def between_batches(self) -> None:
        pass

    def stream_ended(self, token: Any) -> None:
        pass

    def close(self) -> None:
        if self.borrowed:
            return  # the application's connections
        if hasattr(self.database, "close_all"):  # a pool: every thread's connections
            self.database.close_all()
        else:
            self.database.close()

    def before_fork(self) -> None:
        pass

    def after_fork_in_parent(self) -> None:
        pass

    def after_fork_in_child(self) -> None:
        """The child starts an empty pool and never closes the inherited
        connections (that would end the parent's sessions); an application's
        pool is left as it is."""
        if self.borrowed or not hasattr(self.database, "_connections"):
            return
        pool = self.database
        _INHERITED.append((pool._connections, pool._in_use, pool._state))
        # The parent's locks may have been held at the fork: fresh ones first.
        pool._lock = threading.RLock()
        pool._pool_lock = threading.RLock()
        if hasattr(pool, "_pool_available"):  # peewee 4
            pool._pool_available = threading.Condition(pool._pool_lock)
        pool._connections, pool._in_use = [], {}
        pool._state = type(pool._state)()


# A forked child's inherited connections: the parent's, kept referenced, never closed.
_INHERITED: List[Any] = []

"""How a SQLite purge goes: the stretch of ids it walks (:class:`IdWalk`),
the size of its chunks and the gaps it leaves other writers between
them (:class:`SqlitePurgePacer`), and how its sweep moves the keys whose
row is gone (:func:`move_gone_keys`)."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from typing import Any, Callable, Optional, Tuple

import peewee

from .. import sql as _sql
from .base import PURGE_CHUNK
from .sqlite_checkpoint import AUTOCHECKPOINT_PAGES, set_autocheckpoint

#: Later purge chunks are sized from the time the previous one held the
#: write lock, between these many rows.
PURGE_CHUNK_MIN = 100
PURGE_CHUNK_MAX = 100_000

#: Rows of a purge's first chunk when its rows may need folding into the
#: rollups: such a chunk holds the write lock several times as long a row as
#: one that only deletes (a rollup step's 2,500 rows held it 55-110 ms on a
#: loaded 2-core machine); the pacer doubles it at most per chunk from here.
PURGE_FOLD_CHUNK = 500

#: Seconds a purge aims to hold the write lock per chunk: well under 50 ms,
#: so another writer never waits long, and long enough that the chunks add
#: up to little more than one DELETE. A chunk may hold it two or three times
#: as long on a loaded machine (aiming at 20 ms, the longest of a purge of
#: 1,000,000 keyed rows was 28-38 ms; at 15 ms, 22-30 ms, in the same time).
PURGE_HOLD = 0.015

#: Times, in ms after its first attempt, at which a writer that found the
#: write lock taken tries again: SQLite's default busy handler (what
#: ``busy_timeout`` installs, in this package, Python's sqlite3 and
#: ``bun:sqlite``) sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, then 100 ms.
#: The write lock has no queue: a writer gets it only if one of its retries
#: falls while it is free.
BUSY_RETRIES_MS = (1, 3, 8, 18, 33, 53, 78, 103, 128, 178, 228, 328)

#: Added to each free gap a purge leaves, for the scheduling delay of a
#: writer that wakes up to retry.
PURGE_PAUSE_MARGIN = 0.002

#: While nobody else has written for this many seconds, a purge leaves the
#: lock free only once in about :data:`PURGE_QUIET_SPAN` seconds instead of
#: after every chunk.
PURGE_BUSY_MEMORY = 1.0
PURGE_QUIET_SPAN = 0.125

#: Seconds a long fold's step (``rollup()``) aims to hold the write lock while
#: other connections write: below a chunk's, since a writer that waits for a
#: whole step of more than 33 ms sleeps in the busy handler until 53 ms, and
#: on a loaded 2-core machine steps sized to 15 ms held up to 37 ms; sized to
#: 10 ms, one run in five still kept a writer 57 ms (5 runs each, 200,000
#: rows: the worst waits 22-57 ms at 10 ms, 19-37 ms at 6 ms, for a rollup()
#: about a quarter slower while the writer writes).
FOLD_BUSY_HOLD = 0.006

#: While other connections write, the first step of a long fold (``rollup()``)
#: takes this share of its usual rows: the usual steps held the lock 35-75 ms
#: on a loaded 2-core machine, and a writer that began waiting as one began
#: slept in the busy handler until its retry at 53 or 78 ms.
FOLD_BUSY_START = 0.25
#: ... and no step is sized below this share: a step's statements and commit
#: cost some milliseconds whatever its rows, and steps sized down to a few
#: rows would pay them over and over for hardly a shorter hold.
FOLD_BUSY_LEAST = 0.05

#: Page cache, in KiB, of the purging connection during a purge (SQLite's
#: default is 2 MiB): on 1,000,000 rows with scattered ``created_at`` a
#: 32 MiB cache took the purge from 1.8x to 1.3x one DELETE.
PURGE_CACHE_KIB = 32 * 1024

#: The scratch table of a sweep step (in the purging connection's ``temp``
#: schema, made and dropped inside the step's transaction).
GONE_KEYS = "telemetry_orm_gone_keys"

#: A purge walks the ids (see :class:`IdWalk`) when at least this share of
#: the ids between the first and the last expired row are expired rows;
#: fewer, and a walk would read mostly rows it keeps.
PURGE_WALK_DENSITY = 0.05


@dataclasses.dataclass(frozen=True)
class IdWalk:
    """Where a SQLite purge is: its chunks delete the expired rows among the
    ids after ``after``, a stretch at a time, up to ``last``, the largest
    expired id when it began.

    Each chunk then changes neighbouring pages of the table, which later
    chunks do not touch again. Chunks of the oldest rows instead pick rows
    spread over the whole table whenever ``created_at`` does not follow the
    ids (rows imported or copied from elsewhere, backdated ones), and write
    nearly every table page into the log once per chunk: on 200,000 such
    rows, half expired, chunks of 1,500 of the oldest rows (what 20 ms
    allowed) wrote 153,226 log pages, 16 times the 9,692 of one DELETE (each
    table page 12 times, the ``repo`` index 49 times); chunks of 6,000 ids
    (3,000 rows, about 20 ms each) wrote 39,970, each table page once, and
    took about the time of the DELETE. Once ``after`` reaches ``last`` the
    chunks take the oldest rows.
    """

    after: int
    last: int


def retry_gap(waited: float) -> float:
    """The longest time, in seconds, between two attempts of a writer that
    has been waiting for the write lock at most ``waited`` seconds."""
    gap, previous = 0, 0
    for retry in BUSY_RETRIES_MS:
        # A retry due at the very moment the lock comes free may be missed.
        if previous > waited * 1000:
            return gap / 1000
        gap, previous = max(gap, retry - previous), retry
    return max(gap, 100) / 1000


class SqlitePurgePacer:
    """Sizes a purge's chunks and the free gaps it leaves between them.

    Each chunk is sized to hold the write lock about :data:`PURGE_HOLD`
    seconds. After it, the lock is left free for as long as SQLite's busy
    handler may make a waiting writer sleep (:func:`retry_gap`), so every
    writer that began waiting during the chunk gets in before the next one.
    That gap is most of a purge's cost over one DELETE, so it is only left
    after every chunk while other connections are writing (``PRAGMA
    data_version`` says so); while none has written for
    :data:`PURGE_BUSY_MEMORY` seconds, chunks follow each other and a gap is
    left once the lock has been taken for about :data:`PURGE_QUIET_SPAN`
    seconds, long enough for a newcomer's retries at that point.

    It also turns off SQLite's automatic checkpoint on the purging
    connection for the purge: that checkpoint would run on every chunk's
    commit, stalling the purge with disk syncs; the store's helper thread
    copies the log into the file meanwhile instead.
    """

    fold_rows = PURGE_FOLD_CHUNK
    #: The fewest rows a chunk is sized to (a purge that folds raises it:
    #: a fold's statements cost the same for a few rows as for hundreds).
    least = PURGE_CHUNK_MIN

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        #: Rows the next chunk may delete.
        self.rows = PURGE_CHUNK
        self._clock = clock
        self._version = -1
        self._busy_until = 0.0
        self._free_since = clock()
        self._autocheckpoint = AUTOCHECKPOINT_PAGES
        self._cache_size: Optional[int] = None

    def start(self, conn: sqlite3.Connection) -> None:
        self._autocheckpoint = set_autocheckpoint(conn, 0)
        # A page cache large enough that the chunks of a purge whose expired
        # rows lie all over the file (scattered created_at) find the index
        # pages the previous chunks changed still in memory.
        self._cache_size = int(conn.execute("PRAGMA cache_size").fetchone()[0])
        conn.execute(f"PRAGMA cache_size = {-PURGE_CACHE_KIB}")
        self._version = _data_version(conn)
        self._free_since = self._clock()

    def wary(self) -> None:
        """Pace the next :data:`PURGE_QUIET_SPAN` seconds as if others were
        writing: a writer asleep in the busy handler since just before the
        start shows no sign until it gets in, and while the pacer took the
        database for quiet, steps back to back kept one waiting 130 ms
        (``rollup()`` with a writer every 2 ms). One that gets in during
        these gaps shows in ``PRAGMA data_version``, and the pacer then
        keeps leaving gaps for it."""
        self._busy_until = max(self._busy_until, self._clock() + PURGE_QUIET_SPAN)

    @property
    def quiet(self) -> bool:
        """Nobody else has written for :data:`PURGE_BUSY_MEMORY` seconds."""
        return self._clock() >= self._busy_until

    def after_chunk(self, conn: sqlite3.Connection, held: float, free: float = 0.0) -> float:
        """Take note of a chunk that held the lock ``held`` seconds, after
        leaving it free ``free`` seconds while it read; set :attr:`rows` for
        the next and return the pause before it."""
        now = self._clock()
        version = _data_version(conn)
        if version != self._version:
            self._version = version
            self._busy_until = now + PURGE_BUSY_MEMORY
        taken = now - held
        if free > 0 and free >= retry_gap(taken - free - self._free_since) + PURGE_PAUSE_MARGIN:
            # As long free as a gap would have been: every writer waiting
            # when the reading began had a retry meanwhile.
            self._free_since = taken
        if held > 0:
            wanted = self.rows * PURGE_HOLD / held
            self.rows = int(min(max(wanted, self.rows / 2, self.least),
                                self.rows * 2, PURGE_CHUNK_MAX))
        waited = now - self._free_since
        if now < self._busy_until or waited + held > PURGE_QUIET_SPAN:
            pause = retry_gap(waited) + PURGE_PAUSE_MARGIN
            self._free_since = now + pause
            return pause
        return 0.0

    def step_rows(self, most: int, rows: Optional[int], held: float) -> int:
        """The rows of a long fold's next step: ``most`` while nobody else
        writes (their hold costs nobody a wait, and smaller steps cost
        commits); while others do, sized as chunks are to hold the lock
        about :data:`FOLD_BUSY_HOLD` seconds (a writer that waits for a
        whole step then gets in at its retry at 18 or 33 ms), starting from
        :data:`FOLD_BUSY_START` of ``most`` and never below
        :data:`FOLD_BUSY_LEAST` of it."""
        if self.quiet:
            return most
        least = max(1, int(most * FOLD_BUSY_LEAST))
        if rows is None or held <= 0:
            return max(least, int(most * FOLD_BUSY_START))
        wanted = rows * FOLD_BUSY_HOLD / held
        return int(min(max(wanted, rows / 2, least), rows * 2, most))

    def finish(self, conn: sqlite3.Connection) -> None:
        set_autocheckpoint(conn, self._autocheckpoint)
        if self._cache_size is not None:
            conn.execute(f"PRAGMA cache_size = {self._cache_size}")
            # What the larger cache held is given back now, not at close.
            conn.execute("PRAGMA shrink_memory")


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def move_gone_keys(database: peewee.Database, conn: sqlite3.Connection, keys: Any,
                   purged: Any, model: Any, after: Optional[str], last: Optional[str],
                   stamp: str, *, upsert: _sql.Upsert,
                   ahead: bool = False) -> Tuple[int, float, float]:
    """:meth:`~telemetry_orm.backends.base.Backend.move_gone_keys` on SQLite:
    the stretch's gone keys are looked for once, into a scratch table, then
    copied and deleted by key. Looking up each key's row is most of a step
    (SQLite cannot join the keys to the rows but by one look-up a key), and
    the engines' default does it twice: on 200,000 keys, half gone, the
    steps took 0.65x the time.

    ``ahead``: the look-ups run before ``BEGIN IMMEDIATE``, which leaves the
    lock free meanwhile (the pacer counts that as a gap, see
    :meth:`SqlitePurgePacer.after_chunk`); if another connection committed
    since (``PRAGMA data_version``), they run again under the lock, so the
    keys moved are those whose row is gone at the step's commit either way.
    ``upsert``: the dialect's, as every upsert of the keys."""
    scratch: Any = peewee.Table(GONE_KEYS, ("key", "execution_id"), schema="temp")
    name = _sql.quote(database, GONE_KEYS)
    gather = [
        # Made and filled again for each step; dropped inside its
        # transaction, so a failed step leaves at most an empty table.
        (f"CREATE TEMP TABLE IF NOT EXISTS {name} "
         "(key TEXT PRIMARY KEY, execution_id INTEGER NOT NULL) WITHOUT ROWID", []),
        (f"DELETE FROM temp.{name}", []),
        _sql.render(database, scratch.insert(_sql.gone_keys(keys, model, after, last),
                                             [scratch.key, scratch.execution_id])),
    ]
    version: Optional[int] = None
    free = 0.0
    if ahead:
        started = time.perf_counter()
        version = _data_version(conn)
        for statement in gather:
            conn.execute(*statement)
        free = time.perf_counter() - started
    with database.atomic(lock_type="IMMEDIATE"):
        started = time.perf_counter()
        if version is None or _data_version(conn) != version:
            for statement in gather:
                conn.execute(*statement)
        # WHERE: an INSERT … SELECT … ON CONFLICT needs one to parse.
        picked = scratch.select(scratch.key, scratch.execution_id, peewee.Value(stamp)).where(
            peewee.SQL("1"))
        conn.execute(*_sql.render(database, upsert(purged.insert_from(
            picked, [purged.key, purged.execution_id, purged.purged_at]).returning(),
            [purged.key], [], False)))
        within = keys.key.in_(scratch.select(scratch.key))
        if after is not None:
            within &= keys.key > after
        if last is not None:
            within &= keys.key <= last
        moved = conn.execute(*_sql.render(database, keys.delete().where(within))).rowcount
        conn.execute(f"DROP TABLE temp.{name}")
        held = time.perf_counter() - started
    return max(0, int(moved)), held, free

"""Record keys after their rows are gone: what a purge keeps, and for how long.

A keyed execution (``store.record(entry, key=…)``, an imported transcript
or export) is counted once. The rollups go on counting a row after a purge
deletes it, so its key must outlive the row, or the same execution sent
again (a redelivered webhook, a transcript or export imported again) would
be counted a second time.

So after its chunks a purge sweeps the keys: those whose row is gone move
from ``telemetry_orm_keys`` to ``telemetry_orm_purged_keys``, stamped with
the purge's time (the database clock); a key recorded again finds its row's
old id there and nothing is written. A key whose row is gone but that the
sweep has not moved yet counts the same (a purge stopped half-way loses
nothing). A purged key is forgotten once its stamp is more than
``key_days`` days (default :data:`KEY_DAYS`: a year of re-imports, and
more) before a purge. That purge writes in ``telemetry_orm_key_state`` the
time keys may be forgotten before; an import then refuses (skips and
lists) a keyed row created before it whose key it does not know, since it
cannot tell whether that row was counted already, and ``record(…, key=…,
at=…)`` refuses such a row the same way. ``record()`` without ``at`` is never
refused: its rows are created now.

The key table thus holds the keys of the rows there, and of the rows
purged in the last ``key_days`` days.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Any, Optional, Type

import peewee

from . import sql as _sql
from .backends.base import Backend, KeySweep
from .schema import Execution, format_timestamp
from .tables import KeyTables

#: Days a purged key is kept after the purge that found its row gone (by
#: default): longer than a year, so re-importing a year's transcripts or
#: exports, or a webhook redelivered within it, is recognised.
KEY_DAYS = 400

#: Keys the first step of a sweep moves or keeps (later steps are sized
#: by the purge's pacer, as its chunks are); the most a forgetting step
#: forgets.
SWEEP_STEP = 2500

#: The keys, purged keys and key state models bound to one database
#: (``tables_of(database).keys``, see :mod:`telemetry_orm.tables`).
Tables = KeyTables


def move_gone(backend: Backend, database: peewee.Database, conn: Any, bound: Tables,
              model: Type[Execution], after: Optional[str], stamp: str,
              step: int = SWEEP_STEP, *, ahead: bool = False) -> KeySweep:
    """Among the next ``step`` keys past ``after``, move those
    whose row is gone to the purged keys, stamped ``stamp``, in one short
    transaction (``ahead``: nobody else writes now, so the engine may look
    for them before it takes the lock; see ``Backend.move_gone_keys``)."""
    keys, purged, _ = bound
    # Where the stretch ends, read from the key index alone without the
    # write lock. Keys are random (delivery GUIDs, hashes), so after a purge
    # of any size nearly every stretch holds a key whose row is gone: the
    # stretch is looked at once, under the lock, rather than first without.
    started = time.perf_counter()
    end = conn.execute(*_sql.key_past(keys, after, max(1, step) - 1)).fetchone()
    last: Optional[str] = None if end is None else str(end[0])
    ended = time.perf_counter() - started
    # A key whose row is there stays (a write may have given one a row
    # since the purge's chunks); one another sweep moved is not moved twice.
    moved, held, free = backend.move_gone_keys(database, conn, keys, purged, model, after,
                                               last, stamp, ahead=ahead)
    # Reading where the stretch ends left the lock free too, just before.
    return KeySweep(moved, held, last, last is None, free + ended)


def forget(backend: Backend, database: peewee.Database, conn: Any, bound: Tables,
           horizon: _dt.datetime) -> KeySweep:
    """Forget up to :data:`SWEEP_STEP` purged keys stamped before
    ``horizon`` in one short transaction, and record that keys before it
    may be forgotten (in that transaction, so no import misses it)."""
    _, purged, state = bound
    when = format_timestamp(horizon)
    with backend.exclusive_transaction(database, "keys"):
        started = time.perf_counter()
        # Read first, then deleted by name: a DELETE cannot take its rows
        # from a limited sub-select of its own table on every engine (MySQL).
        doomed = [key for (key,) in conn.execute(
            *_sql.purged_before(purged, when, SWEEP_STEP)).fetchall()]
        deleted = _rows(conn.execute(*_sql.render(
            database, purged.delete().where(purged.key.in_(doomed))))) if doomed else 0
        if deleted:
            known = forgotten_before(conn, state)
            if known is None or known < when:
                conn.execute(*_sql.render(database, backend.dialect.upsert(
                    state.insert(id=1, forgotten_before=when).returning(), [state.id],
                    [state.forgotten_before], False)))
        held = time.perf_counter() - started
    return KeySweep(deleted, held, None, deleted < SWEEP_STEP)


def forgotten_before(conn: Any, state: Any) -> Optional[str]:
    """Before when (UTC text) purged keys may have been forgotten; ``None``: none was."""
    row = conn.execute(*_sql.render(state._meta.database, state.select(
        state.forgotten_before).where(state.id == 1))).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def _rows(cursor: Any) -> int:
    return max(0, int(cursor.rowcount))


def too_old(created_at: _dt.datetime, forgotten: Optional[str]) -> Optional[str]:
    """Why a keyed row created at ``created_at`` whose key is not known
    cannot be recorded (its key may have been forgotten), else ``None``."""
    if forgotten is None or format_timestamp(created_at) >= forgotten:
        return None
    return (f"created_at {format_timestamp(created_at)} is before {forgotten}, before which "
            "the keys of purged executions are forgotten: whether it was counted already "
            "cannot be checked")


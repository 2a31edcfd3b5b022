"""The instant a store takes as "now": the database's clock, unless pinned.

Retention (:meth:`~telemetry_orm.PeeweeTelemetryStore.purge_older_than`, its
dry run :meth:`~telemetry_orm.PeeweeTelemetryStore.count_older_than`), the
hour up to which :meth:`~telemetry_orm.PeeweeTelemetryStore.rollup` folds,
and the command line's relative times (``--since 7d``) count back from "now".
By default that is the database's own clock (SQLite's ``datetime('now')``,
PostgreSQL's ``now()``), read in the statement that needs it, so that every
process using one database agrees on it whatever their machines' clocks say.

Tests that need a "now" they control pin it for the whole process::

    from telemetry_orm import clock

    with clock.pinned(datetime(2026, 3, 1, 12, tzinfo=timezone.utc)):
        store.purge_older_than(90)  # deletes rows before 2025-12-01 12:00 UTC

Pinning changes only where "now" comes from: the cutoff is still computed
and compared as before (on SQLite, ``datetime(<pinned>, '-90 days')`` in UTC
text). New rows still take ``created_at`` from the database's clock; a test
places its rows at the instants it needs.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import threading
from typing import Iterator, Optional

from .checks import to_utc

_lock = threading.Lock()
_pinned: Optional[_dt.datetime] = None


def pinned_now() -> Optional[_dt.datetime]:
    """The pinned instant (aware, UTC), or ``None``: ask the database."""
    return _pinned


@contextlib.contextmanager
def pinned(instant: _dt.datetime) -> Iterator[_dt.datetime]:
    """Take ``instant`` (an aware datetime) as "now" in every store of this
    process, every thread, until the block ends; blocks nest. Yields the
    instant in UTC. Meant for tests: other processes keep their own clock."""
    global _pinned
    if not isinstance(instant, _dt.datetime) or instant.utcoffset() is None:
        raise TypeError(f"clock.pinned() needs an aware datetime, not {instant!r}")
    value = to_utc(instant)
    with _lock:
        previous, _pinned = _pinned, value
    try:
        yield value
    finally:
        with _lock:
            _pinned = previous

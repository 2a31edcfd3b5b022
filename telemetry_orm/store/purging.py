"""The paced purge: delete old rows (and their labels) in short chunks
with free moments between them, fold in what the rollups do not count
yet, then sweep the keys of the rows gone (see :mod:`telemetry_orm.keys`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import time
from typing import Any, Callable, Iterator, Optional, Tuple

from .. import budgets as _budgets
from .. import folding, label_rollups, rollups
from .. import keys as _keys
from .. import labels as _labels
from ..backends.base import Fold
from ..checks import check_number
from ..errors import TelemetryError
from ..schema import KEYS_TABLE, LABELS_TABLE, format_timestamp
from ..tables import KeyTables
from .opening import Host

#: Days a purged key is kept (see :mod:`telemetry_orm.keys`).
KEY_DAYS = _keys.KEY_DAYS


@dataclasses.dataclass(frozen=True)
class PurgeProgress:
    """Where a running purge is, passed to ``progress`` after each chunk."""

    deleted: int
    chunks: int


@dataclasses.dataclass(frozen=True)
class PurgeResult:
    """What :meth:`~telemetry_orm.store.PeeweeTelemetryStore.purge` did."""

    #: Rows deleted.
    deleted: int
    #: Transactions that deleted rows (``progress`` is called after each).
    chunks: int
    #: The longest time, in seconds, one of them, or one of the steps that
    #: folded rows in ahead of them, held the engine's write lock.
    longest_hold: float
    #: Rows older than this (the database clock's time, as ``created_at``
    #: compares) were deleted.
    cutoff: Any
    seconds: float


def count_older_than(host: Host, days: float) -> int:
    """How many rows a purge of ``days`` would delete now."""
    value = check_number("days", days, "days")
    with host.connection() as conn:
        opened = host.opened
        when = opened.backend.cutoff(conn, value)
        return 0 if when is None else opened.backend.count_before(conn, opened.model, when)


def _unless_counted(fold: Callable[[Any, Any, Optional[rollups.State]], None],
                    models: Tuple[Any, ...],
                    cutoff: _dt.datetime) -> Fold:
    """``fold``, skipped for a chunk whose rows the rollups all count
    already (they are older than ``cutoff``: with ids up to ``most`` and
    ``counted_ids`` at least that, and ``counted_before`` past ``cutoff``)
    once the purge's cutoff is recorded: what ``fold`` would find to do
    then is nothing, and finding it out costs a count of the chunk's rows."""

    def run(conn: Any, rows: Any, most: Optional[int]) -> None:
        state = None
        if most is not None:
            state = rollups.read_state(conn, models)  # in the chunk's transaction
            if (state.counted_before is not None and state.counted_before >= cutoff
                    and most <= state.counted_ids and state.purged_before is not None
                    and state.purged_before >= cutoff):
                return
        fold(conn, rows, state)

    return run


class Purge:
    """One purge of rows older than ``days`` days (see
    :meth:`~telemetry_orm.store.PeeweeTelemetryStore.purge`);
    ``rollup_models`` gives the bound rollup models, their tables made."""

    def __init__(self, host: Host, rollup_models: Callable[[], Tuple[Any, ...]]) -> None:
        self._host = host
        self._rollup_models = rollup_models

    def run(self, days: float, progress: Optional[Callable[[PurgeProgress], None]],
            key_days: float) -> PurgeResult:
        host, log = self._host, self._host.log
        value = check_number("days", days, "days")
        keep = check_number("key_days", key_days, "days")
        host.outside_transaction("purge")
        started = time.perf_counter()
        opened = host.opened
        backend, model = opened.backend, opened.model
        pacer = backend.purge_pacer()
        with host.connection() as conn:
            now = folding.naive_utc(backend.cutoff(conn, 0.0))
            when = backend.cutoff(conn, value)
            if when is None:  # before the engine's earliest time: no row is older
                log.info("purged 0 executions older than %s days (before any time)", days)
                return PurgeResult(0, 0, 0.0, None, time.perf_counter() - started)
            pacer.start(conn)
        total = chunks = 0
        longest = 0.0
        try:
            # Only reads: this process's writers need not wait for it (unless
            # they share its one connection).
            with host.connection(locked=backend.one_connection) as conn:
                position = backend.purge_start(conn, model, when)
            key_tables = self._keys_if_any()
            models = self._rollup_models()
            fold = _unless_counted(folding.purge_fold(opened.tables, when), models,
                                   folding.naive_utc(when))
            labelled = self._has(LABELS_TABLE)
            if labelled:
                fold = _labels.deleting(opened.tables.labels, model, fold)
                with host.connection() as conn:
                    # Labelled rows cost more to fold and delete: smaller chunks.
                    weight = label_rollups.weight(conn, backend, opened.tables.labels,
                                                  backend.newest_id(conn, model) or 0)
                pacer.rows = max(1, int(pacer.rows / weight))
                pacer.fold_rows = max(1, int(pacer.fold_rows / weight))
            if self._has(_budgets.SPEND_TABLE):
                spend, state_model = (opened.tables.side(m) for m in _budgets.MODELS[3:])
                fold = _budgets.purging(spend, state_model, fold)
            with host.connection() as conn:
                state = rollups.read_state(conn, models)
            cutoff = folding.naive_utc(when)
            if state.counted_before is None or state.counted_before < cutoff:
                # The expired rows' hours folded in first, as rollup() folds
                # them (up to the end of the cutoff's hour, if complete):
                # steps that write the rollups only. A chunk that folded as
                # it deleted held the lock for both, so chunks were a third
                # as long, and each wrote the pages the rows' indexes share
                # into the log again: 2x the same work done at once, against
                # 1.5x now (200,000 rows).
                longest = self._fold_ahead(pacer, rollups.ceil_hour(cutoff))
                with host.connection() as conn:
                    state = rollups.read_state(conn, models)
            if state.counted_before is None or state.counted_before < cutoff:
                # Chunks will fold rows in first: start them as the engine's
                # pacer says (small enough for the hold), it sizes the rest.
                pacer.rows = min(pacer.rows, pacer.fold_rows)
                # Most of a fold's hold is its statements, whatever the rows:
                # chunks sized down to a few rows would pay them again and
                # again for hardly a shorter hold.
                pacer.least = max(pacer.least, pacer.fold_rows // 2)
            while True:
                limit = pacer.rows
                # The store lock is let go between chunks so this process's
                # writers get their turn too.
                with host.connection() as conn:
                    chunk = backend.delete_chunk_before(conn, model, when, limit, position, fold)
                    pause = pacer.after_chunk(conn, chunk.held)
                deleted, held, position = chunk.deleted, chunk.held, chunk.position
                total += deleted
                chunks += 1
                longest = max(longest, held)
                log.debug("purge chunk %d: %d rows, locked %.1f ms, then %.1f ms free",
                          chunks, deleted, held * 1000, pause * 1000)
                if progress is not None:
                    progress(PurgeProgress(total, chunks))
                if chunk.done:
                    break
                opened.upkeep.purge_gap(pause)
            if labelled:
                longest = max(longest, self._sweep_labels(pacer))
            if key_tables is not None:
                moved, forgot, held = self._sweep_keys(key_tables, pacer, now, keep)
                longest = max(longest, held)
                log.debug("purge: kept %d keys whose rows are gone, forgot %d", moved, forgot)
        finally:
            _finish(host, pacer)
        opened.upkeep.after_purge(total)
        log.info("purged %d executions older than %s days (before %s) in %d chunks",
                 total, days, when, chunks)
        return PurgeResult(total, chunks, longest, when, time.perf_counter() - started)

    def _fold_ahead(self, pacer: Any, until: _dt.datetime) -> float:
        """Fold the hours before ``until`` in (:func:`folding.fold_up`), paced
        by the purge's ``pacer``, up to the first hour too dense for one step
        (:data:`folding.AHEAD_HOUR_ROWS`); return the longest time a step
        held the write lock."""
        opened = self._host.opened
        longest = 0.0
        # The pacer sizes the chunks from each hold it is told of: the steps'
        # holds (a step that folds nothing holds next to nothing) must not
        # size the first chunk, which would then delete all the rows at once.
        first_chunk = pacer.rows

        def after(conn: Any, held: float) -> float:
            nonlocal longest
            longest = max(longest, held)
            return float(pacer.after_chunk(conn, held))

        try:
            rows, steps, _ = folding.fold_up(
                opened.backend, opened.tables, self._host.connection,
                folding.Pacing(after, opened.upkeep.purge_gap, pacer.step_rows), until,
                folding.AHEAD_HOUR_ROWS * opened.backend.fold_scale)
        finally:
            pacer.rows = first_chunk
        self._host.log.debug("purge: folded %d executions in first, in %d steps", rows, steps)
        return longest

    def _has(self, table: str) -> bool:
        """Whether ``table`` exists (any store, in any process, may have made it)."""
        with self._host.connection() as conn:
            return self._host.opened.backend.has_table(conn, table)

    def _keys_if_any(self) -> Optional[KeyTables]:
        """The bound key models when the keys table exists, its side tables
        created if need be; else ``None``."""
        opened = self._host.opened
        if not self._has(KEYS_TABLE):
            return None
        opened.tables.create_missing(opened.backend, opened.tables.keys[1:])
        return opened.tables.keys

    def _sweep_labels(self, pacer: Any) -> float:
        """After the chunks (which deleted their rows' labels): delete, in
        short transactions, the labels whose rows another program deleted
        (see :func:`telemetry_orm.labels.orphans_below`); return the longest
        time a step held the write lock."""
        host = self._host
        opened = host.opened
        backend, tables = opened.backend, opened.tables
        delete = _labels.gone_sql(tables.labels, tables.executions)
        longest = 0.0
        while True:
            with host.connection() as conn:
                gone = _labels.orphans_below(conn, tables.labels, tables.executions,
                                             _keys.SWEEP_STEP)
                if not gone:
                    return longest
                locked = time.perf_counter()
                with backend.write_transaction(conn, "telemetry_labels"):
                    conn.cursor().executemany(delete, [(i, i) for i, in gone])
                held = time.perf_counter() - locked
                pause = pacer.after_chunk(conn, held)
            longest = max(longest, held)
            opened.upkeep.purge_gap(pause)

    def _sweep_keys(self, tables: KeyTables, pacer: Any, now: _dt.datetime,
                    key_days: float) -> Tuple[int, int, float]:
        """After a purge's rows: move the keys whose row is gone to the
        purged keys, stamped ``now``, then forget the purged keys stamped
        more than ``key_days`` days before ``now``; in steps, with the
        store's lock let go between them. Return how many keys moved, how
        many were forgotten, and the longest time a step held the write lock."""
        host = self._host
        opened = host.opened
        backend, database = opened.backend, opened.database
        stamp = format_timestamp(now)
        try:
            horizon: Optional[_dt.datetime] = now - _dt.timedelta(days=key_days)
        except OverflowError:  # before the first day there is: nothing to forget
            horizon = None
        moved = forgot = 0
        longest = 0.0
        after: Optional[str] = None
        # Steps are sized to their hold as chunks are, from a step short
        # enough for a cold cache.
        pacer.rows = _keys.SWEEP_STEP
        while True:
            with host.connection() as conn:
                step = _keys.move_gone(backend, database, conn, tables, opened.model, after,
                                       stamp, pacer.rows, ahead=pacer.quiet)
                pause = pacer.after_chunk(conn, step.held, step.free)
            moved += step.deleted
            longest = max(longest, step.held)
            if step.done:
                break
            after = step.after
            opened.upkeep.purge_gap(pause)  # log upkeep too, as between chunks
        while horizon is not None:
            with host.connection() as conn:
                step = _keys.forget(backend, database, conn, tables, horizon)
                pause = pacer.after_chunk(conn, step.held) if step.deleted else 0.0
            forgot += step.deleted
            longest = max(longest, step.held)
            if step.done:
                break
            if pause:
                opened.upkeep.purge_gap(pause)
        return moved, forgot, longest


@contextlib.contextmanager
def paced(host: Host) -> Iterator[folding.Pacing]:
    """The pauses of a long fold between its steps (``rollup()``), as the
    purge's: the engine's purge pacer set up on the store's connection for
    the while (on SQLite: a larger page cache, the log copied by the helper
    thread between steps) and put back after."""
    opened = host.opened
    backend = opened.backend
    pacer = backend.purge_pacer()
    with host.connection() as conn:
        pacer.start(conn)
    pacer.wary()
    try:
        yield folding.Pacing(pacer.after_chunk, opened.upkeep.purge_gap, pacer.step_rows)
    finally:
        _finish(host, pacer)


def _finish(host: Host, pacer: Any) -> None:
    """Put back what ``pacer.start`` changed on the store's connection."""
    opened = host.opened
    backend = opened.backend
    if backend.borrowed:
        # The connection is the application's, and keeps what the pacer set
        # unless it is put back, closed store or not.
        with contextlib.suppress(TelemetryError, *backend.driver_errors), \
                backend.connection(opened.database) as conn:
            pacer.finish(conn)
    elif not host.gate.closed:
        with contextlib.suppress(TelemetryError), host.connection() as conn:
            pacer.finish(conn)

"""The store's write path: one row, keyed rows, batches, and the
:class:`BatchWriter` a background recorder commits through.

Rows arrive here validated (as INSERT parameters, see
:func:`telemetry_orm.record.row_of`); each write runs under the store's
gate, tells the engine's upkeep before and after, and counts towards the
automatic checkpoint.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, List, Optional, Tuple

from .. import rollups
from ..sql import KeyedSql
from .opening import Host

Row = Tuple[Any, ...]


class Writes:
    """The write path of one store (see the module)."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._count = 0  # writes since the last automatic checkpoint

    def one(self, params: Row) -> int:
        """Insert one row; return its id."""
        host = self._host
        opened = host.opened
        with host.gate.writing():
            host.gate.check_open()
            opened.upkeep.before_write()
            try:
                row_id = opened.insert_one(opened.database, opened.insert_sql, params)
            except opened.backend.driver_errors as exc:
                raise opened.backend.translate(exc) from exc
            self.count(1)
            opened.upkeep.after_write(1)
        return row_id

    def many(self, rows: List[Row]) -> List[int]:
        """Insert ``rows`` in one transaction; return their ids."""
        with self._host.connection() as conn:
            if not rows:
                return []
            opened = self._host.opened
            opened.upkeep.before_write()
            ids = opened.backend.insert_many(conn, opened.insert_sql, rows)
            self.count(len(rows))
            opened.upkeep.after_write(len(rows))
        return ids

    def keyed(self, rows: List[Row], keys: List[Optional[str]], replace: bool) -> List[int]:
        """Insert ``rows`` in one transaction, each under its key (``None``:
        none), or find the row already under it (``replace``: and set its
        values); return the ids."""
        host = self._host
        opened = host.opened
        with host.gate.writing():
            host.gate.check_open()
            opened.upkeep.before_write()
            if replace:
                self.prepare_replace()
            try:
                ids = opened.backend.insert_keyed(
                    opened.database, opened.keyed_sql or self.keyed_sql(), rows, keys,
                    self.replacing if replace else None)
            except opened.backend.driver_errors as exc:
                raise opened.backend.translate(exc) from exc
            self.count(len(rows))
            opened.upkeep.after_write(len(rows))
        return ids

    def keyed_sql(self) -> KeyedSql:
        """The statements of keyed writes, built (and the keys table created
        if need be) at the first."""
        host = self._host
        opened = host.opened
        with host.gate.lock:
            host.gate.check_open()
            if opened.keyed_sql is None:
                tables = opened.tables
                tables.create_missing(opened.backend, tables.keys)
                opened.keyed_sql = opened.backend.keyed_sql(tables.executions,
                                                            *tables.keys[:2])
            return opened.keyed_sql

    def rollup_models(self) -> Tuple[Any, ...]:
        """The bound rollup models, their tables created at the first use."""
        host = self._host
        opened = host.opened
        with host.gate.lock:
            host.gate.check_open()
            if not opened.rolled_up:
                opened.tables.create_missing(opened.backend, opened.tables.rollups)
                opened.rolled_up = True
            return opened.tables.rollups

    def prepare_replace(self) -> None:
        """Before a keyed write that may replace rows (outside its
        transaction): when the rollups exist, their tables are all made (a
        file rolled up by an older version may lack the newer ones), so
        that :meth:`replacing` finds them."""
        opened = self._host.opened
        if not opened.rolled_up:
            with self._host.connection() as conn:
                exists = opened.backend.has_table(conn, rollups.STATE_TABLE)
            if exists:
                self.rollup_models()

    @contextlib.contextmanager
    def replacing(self, conn: Any, row_id: int) -> Iterator[None]:
        """Around the UPDATE that replaces the values of row ``row_id`` (see
        :func:`telemetry_orm.rollups.refolding`)."""
        opened = self._host.opened
        with rollups.refolding(opened.backend, opened.tables, opened.rolled_up, conn, row_id):
            yield

    def count(self, rows: int) -> None:
        """Count written rows; every ``checkpoint_every``, a checkpoint
        starts in the background. Called with the gate held."""
        self._count += rows
        if self._count >= self._host.checkpoint_every:
            self._count = 0
            # The rows are committed: a failing checkpoint (no new thread
            # during interpreter shutdown, a busy file …) must not make the
            # caller believe otherwise and write them again.
            try:
                self._host.checkpoint(wait=False)
            except Exception as exc:  # noqa: BLE001 - logged; the write succeeded
                self._host.log.warning("automatic checkpoint failed: %s", exc)


class BatchWriter:
    """The store's hook for a thread that commits batch after batch (the
    background recorder's writer): :meth:`write` inserts validated rows as
    ``record_many`` does, and tells the engine a stream is going on, so it
    can keep its log in shape between batches. Made by
    :meth:`~telemetry_orm.store.PeeweeTelemetryStore.batch_writer`; use it
    from one thread and :meth:`close` it from that thread when the stream
    ends."""

    def __init__(self, host: Host, writes: Writes) -> None:
        self.store = host
        self._writes = writes
        self._started = False
        self._pending = False  # a batch was written since the last upkeep
        self._token: Any = None

    def write(self, rows: List[Row], keys: Optional[List[Optional[str]]] = None) -> List[int]:
        """Insert ``rows`` (INSERT parameters of validated records) in one
        transaction, each under its key in ``keys`` when given (see
        :meth:`~telemetry_orm.store.PeeweeTelemetryStore.record_many`);
        return their ids."""
        upkeep = self.store.opened.upkeep
        if not self._started:
            # At the first batch, not when the thread starts: in a forked
            # child the store is ready by now.
            self._token = upkeep.stream_started()
            self._started = True
        elif self._pending:
            # Between two batches (not after the last one's commit, so that
            # whoever waits for that batch is not kept waiting).
            upkeep.between_batches()
        self._pending = True
        if keys is not None:
            return self._writes.keyed(rows, keys, False)
        return self._writes.many(rows)

    def close(self) -> None:
        """The stream is over: the engine undoes what it set up for it."""
        if self._started:
            self._started = False
            upkeep = self.store.opened.upkeep
            if self._pending and not self.store.gate.closed:
                upkeep.between_batches()
            upkeep.stream_ended(self._token)

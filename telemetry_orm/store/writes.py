"""The store's write path: one row, keyed rows, batches, bulk copies, and
the :class:`BatchWriter` a background recorder commits through.

Rows arrive here validated (as INSERT parameters, see
:func:`telemetry_orm.record.row_of`); each write runs under the store's
gate, tells the engine's upkeep before and after, and counts towards the
automatic checkpoint.

A row written with an instant (``record(…, at=…)``, an import, a migrate)
is *timed*: its INSERT names ``created_at`` too, its parameters start with
that instant as the column stores it (:data:`TIMED_COLUMNS`). Rows of one
call are all timed or none; a timed call's rows without an instant take
the database clock's time read just before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple

from .. import budgets, folding, rollups
from .. import keys as _keys
from .. import labels as _labels
from ..checks import NO_LABELS
from ..labels import LabelSql
from ..record import FIELD_NAMES
from ..schema import TABLE_NAME
from ..sql import KeyedSql, insert_sql, quote
from .opening import Host, Opened

Row = Tuple[Any, ...]
Instants = Optional[Sequence[Optional[_dt.datetime]]]
#: One mapping of labels per row, or ``None``: no row has any.
Labelsets = Optional[Sequence[Mapping[str, str]]]

#: The columns of a timed row, in the order of its parameters.
TIMED_COLUMNS: Tuple[str, ...] = ("created_at",) + FIELD_NAMES


class Writes:
    """The write path of one store (see the module)."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._count = 0  # writes since the last automatic checkpoint
        self._timed_sql: Optional[_Timed] = None

    def one(self, params: Row, at: Optional[_dt.datetime] = None,
            labels: Optional[Mapping[str, str]] = None) -> int:
        """Insert one row (created ``at`` that instant, when given; with its
        ``labels``, in its transaction, when given); return its id."""
        host = self._host
        opened = host.opened
        sql = opened.insert_sql
        if at is not None:
            sql, params = self._timed(opened).insert, (_stamp(opened, at), *params)
        label_sql = None if labels is None else (opened.label_sql or self.label_sql())
        with host.gate.writing():
            host.gate.check_open()
            opened.upkeep.before_write()
            try:
                if label_sql is None or labels is None:
                    row_id = opened.insert_one(opened.database, sql, params)
                else:
                    row_id = opened.backend.insert_one_labelled(
                        opened.database, sql, params, label_sql, list(labels.items()))
            except opened.backend.driver_errors as exc:
                raise opened.backend.translate(exc) from exc
            self.count(1)
            opened.upkeep.after_write(1)
        return row_id

    def many(self, rows: List[Row], at: Instants = None, labels: Labelsets = None
             ) -> List[int]:
        """Insert ``rows`` in one transaction (each created at its instant
        in ``at``, when given; with its labels in ``labels``, when given);
        return their ids."""
        label_sql = self.label_sql() if labels is not None else None
        with self._host.connection() as conn:
            if not rows:
                return []
            opened = self._host.opened
            backend = opened.backend
            sql = opened.insert_sql
            if at is not None:
                sql, rows = self._timed(opened).insert, self._stamped(conn, opened, rows, at)
            opened.upkeep.before_write()
            if label_sql is None or labels is None:
                ids = backend.insert_many(conn, sql, rows)
            else:
                with backend.write_transaction(conn, "telemetry_labelled"):
                    ids = backend.insert_many(conn, sql, rows)
                    _labels.write(conn, label_sql, _labels.label_rows(ids, labels))
            self.count(len(rows))
            opened.upkeep.after_write(len(rows))
        return ids

    def keyed(self, rows: List[Row], keys: List[Optional[str]], replace: bool,
              at: Instants = None, labels: Labelsets = None) -> List[int]:
        """Insert ``rows`` in one transaction, each under its key (``None``:
        none), or find the row already under it (``replace``: and set its
        values, ``created_at`` too when ``at`` is given, and its labels);
        return the ids. A new row gets its labels in ``labels``."""
        host = self._host
        opened = host.opened
        sql = opened.keyed_sql or self.keyed_sql()
        if at is not None:
            rows, sql = self._stamped(None, opened, rows, at), self._timed(opened).keyed(sql)
        written = None
        if labels is not None or replace:
            written = _labels.written(self.label_sql(), labels or [NO_LABELS] * len(rows))
        with host.gate.writing():
            host.gate.check_open()
            opened.upkeep.before_write()
            if replace:
                self.prepare_replace()
            try:
                ids = opened.backend.insert_keyed(
                    opened.database, sql, rows, keys, self.replacing if replace else None,
                    written)
            except opened.backend.driver_errors as exc:
                raise opened.backend.translate(exc) from exc
            self.count(len(rows))
            opened.upkeep.after_write(len(rows))
        return ids

    def forgotten(self, keys: Sequence[Optional[str]], at: Sequence[Optional[_dt.datetime]]
                  ) -> List[Tuple[int, str]]:
        """Every keyed row (its index, and why) created at an instant before
        the keys of purged rows may have been forgotten whose key is not
        known: whether it was counted already cannot be checked (an import
        skips such rows, see :mod:`telemetry_orm.keys`). One pass."""
        opened = self._host.opened
        sql = opened.keyed_sql or self.keyed_sql()
        refused: List[Tuple[int, str]] = []
        with self._host.connection() as conn:
            forgotten = _keys.forgotten_before(conn, opened.tables.keys[2])
            if forgotten is None:
                return refused
            for index, (key, when) in enumerate(zip(keys, at, strict=True)):
                reason = None if key is None or when is None else _keys.too_old(when, forgotten)
                if reason is not None and conn.execute(sql.find, (key, key)).fetchone() is None:
                    refused.append((index, f"key {key!r}: {reason}"))
        return refused

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

    def label_sql(self) -> LabelSql:
        """The statements of labels, built (and the labels table created if
        need be) at the first labelled write."""
        host = self._host
        opened = host.opened
        with host.gate.lock:
            host.gate.check_open()
            if opened.label_sql is None:
                tables = opened.tables
                tables.create_missing(opened.backend, [tables.labels])
                opened.label_sql = _labels.label_sql(tables.labels)
            return opened.label_sql

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
        :func:`telemetry_orm.folding.refolding`)."""
        opened = self._host.opened
        if opened.backend.has_table(conn, budgets.STATE_TABLE):
            # The row's old cost may be inside what reservations counted:
            # this makes them count again (see reservations.Reserver).
            name, replaced = (quote(opened.database, n) for n in (budgets.STATE_TABLE,
                                                                  "replaced"))
            conn.execute(f"UPDATE {name} SET {replaced} = {replaced} + 1")
        with folding.refolding(opened.backend, opened.tables, opened.rolled_up, conn, row_id):
            yield

    def timed_insert(self) -> str:
        """The INSERT of a timed row (its parameters: :data:`TIMED_COLUMNS`)."""
        return self._timed(self._host.opened).insert

    def _timed(self, opened: Opened) -> _Timed:
        if self._timed_sql is None:
            self._timed_sql = _Timed(opened)
        return self._timed_sql

    def _stamped(self, conn: Any, opened: Opened, rows: List[Row],
                 at: Sequence[Optional[_dt.datetime]]) -> List[Row]:
        """``rows`` as timed rows; those without an instant take the
        database clock's time now (read on ``conn``, or on a connection of
        its own when ``None``)."""
        now: Optional[_dt.datetime] = None
        if any(when is None for when in at):
            if conn is None:
                with self._host.connection() as own:
                    return self._stamped(own, opened, rows, at)
            now = folding.naive_utc(opened.backend.cutoff(conn, 0.0))
        return [(_stamp(opened, when or now), *row) for row, when in zip(rows, at, strict=True)]

    @contextlib.contextmanager
    def copying(self, name: str, *, keyed: bool = False, replace: bool = False,
                labelled: bool = False) -> Iterator[Copy]:
        """One write transaction that no other connection runs work
        ``name`` in at the same time, for a bulk copy of timed rows (see
        :class:`Copy`), through the gate; the rows it wrote count as
        ``record_many``'s do. ``keyed``: it writes keyed rows (the keys
        tables are made first); ``replace``: they may replace rows;
        ``labelled``: it writes labels (the labels table is made first)."""
        host = self._host
        opened = host.opened
        keyed_sql = self._timed(opened).keyed(self.keyed_sql()) if keyed else None
        label_sql = self.label_sql() if labelled else None
        if replace:
            self.prepare_replace()
        with host.connection() as conn:
            opened.upkeep.before_write()
            with opened.backend.exclusive_transaction(opened.database, name):
                copy = Copy(self, opened, conn, keyed_sql, label_sql)
                yield copy
            self.count(copy.written)
            opened.upkeep.after_write(copy.written)

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


def _stamp(opened: Opened, when: Any) -> Any:
    """An instant as the ``created_at`` column stores it."""
    return opened.model.created_at.db_value(when)


class _Timed:
    """The statements of timed rows, built once per store from the same
    builders as the engine's own (its INSERT answers the new id as a row
    where the engine's does); the keyed ones at the first keyed timed write."""

    def __init__(self, opened: Opened) -> None:
        database = self._database = opened.database
        returns = opened.insert_sql.rstrip().endswith(f"RETURNING {quote(database, 'id')}")
        self.insert = insert_sql(database, TABLE_NAME, TIMED_COLUMNS,
                                 returning="id" if returns else "")
        self._keyed: Optional[KeyedSql] = None

    def keyed(self, plain: KeyedSql) -> KeyedSql:
        """The engine's keyed statements ``plain``, their INSERT and UPDATE timed."""
        if self._keyed is None:
            database = self._database
            sets = ", ".join(f"{quote(database, name)} = {database.param}"
                             for name in TIMED_COLUMNS)
            self._keyed = dataclasses.replace(
                plain,
                insert=insert_sql(database, TABLE_NAME, TIMED_COLUMNS,
                                  returning="id" if plain.returning else ""),
                # A replaced row takes the new instant too.
                update=(f"UPDATE {quote(database, TABLE_NAME)} SET {sets} "
                        f"WHERE {quote(database, 'id')} = {database.param}"))
        return self._keyed


class Copy:
    """A bulk copy in progress (made by
    :meth:`~telemetry_orm.store.PeeweeTelemetryStore.copying`): ``conn``
    is its driver connection, inside its transaction."""

    def __init__(self, writes: Writes, opened: Opened, conn: Any,
                 keyed: Optional[KeyedSql], label_sql: Optional[LabelSql] = None) -> None:
        self.conn = conn
        self._keyed = keyed
        #: The statements of labels, for a copy made with ``labelled=True``.
        self.label_sql = label_sql
        self.written = 0
        self._writes = writes
        self._opened = opened

    @property
    def keyed_sql(self) -> KeyedSql:
        """The statements of timed keyed rows (see :class:`~telemetry_orm.sql.KeyedSql`;
        their parameters are those of :data:`TIMED_COLUMNS`), for a copy made
        with ``keyed=True``."""
        if self._keyed is None:
            raise ValueError("keyed_sql needs a copy made with copying(..., keyed=True)")
        return self._keyed

    def stamp(self, when: _dt.datetime) -> Any:
        """An instant as the ``created_at`` column stores it."""
        return _stamp(self._opened, when)

    def rows(self, rows: Sequence[Row]) -> None:
        """Insert timed rows as fast as the engine can (no ids: COPY on
        PostgreSQL, one prepared INSERT on SQLite)."""
        self.copy(TABLE_NAME, TIMED_COLUMNS, rows)
        self.written += len(rows)

    def labelled(self, rows: Sequence[Tuple[Row, Mapping[str, str]]]) -> None:
        """Insert timed rows, each with its labels (a copy made with
        ``labelled=True``): through the engine's INSERT, for their new ids."""
        if self.label_sql is None:
            raise ValueError("labelled() needs a copy made with copying(..., labelled=True)")
        opened = self._opened
        ids = opened.backend.insert_many(self.conn, self._writes.timed_insert(),
                                         [row for row, _ in rows])
        _labels.write(self.conn, self.label_sql,
                      _labels.label_rows(ids, [labels for _, labels in rows]))
        self.written += len(rows)

    def copy(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        """Insert ``rows`` into a table of the caller's (its bookkeeping), in
        this transaction."""
        self._opened.backend.copy_rows(self.conn, table, columns, rows)

    def wrote(self, rows: int) -> None:
        """Count rows the caller wrote itself with :attr:`keyed_sql`."""
        self.written += rows

    def replacing(self, row_id: int) -> Any:
        """Around the UPDATE of a keyed row's values (see :meth:`Writes.replacing`)."""
        return self._writes.replacing(self.conn, row_id)


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

    def write(self, rows: List[Row], keys: Optional[List[Optional[str]]] = None,
              labels: Labelsets = None) -> List[int]:
        """Insert ``rows`` (INSERT parameters of validated records) in one
        transaction, each under its key in ``keys`` when given, with its
        labels in ``labels`` when given (see
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
            return self._writes.keyed(rows, keys, False, labels=labels)
        return self._writes.many(rows, labels=labels)

    def close(self) -> None:
        """The stream is over: the engine undoes what it set up for it."""
        if self._started:
            self._started = False
            upkeep = self.store.opened.upkeep
            if self._pending and not self.store.gate.closed:
                upkeep.between_batches()
            upkeep.stream_ended(self._token)

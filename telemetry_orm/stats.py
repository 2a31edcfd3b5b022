"""What a telemetry database holds: its statistics, the models without a
price, how many rows a purge would take, and every row for an export.

Each function reads only; it takes a peewee database (the store's, or one
opened read-only by :func:`~telemetry_orm.reports.open_readonly`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
from typing import Any, Dict, Generator, Iterator, List, Optional, Tuple

import peewee
from peewee import SQL, fn

from . import labels, rollups
from .checks import check_number
from .errors import DatabaseError
from .report_query import Query, checked_filters, database_name
from .schema import COLUMN_NAMES, LABELS_TABLE, format_timestamp
from .tables import tables_of

__all__ = ["DatabaseStats", "count_older_than", "database_stats", "export_rows",
           "unpriced_models"]


@dataclasses.dataclass(frozen=True)
class DatabaseStats:
    """What is in a telemetry database file, from :func:`database_stats`."""

    path: str
    rows: int
    #: ``created_at`` of the oldest and newest rows, as stored (UTC text).
    oldest: Optional[str]
    newest: Optional[str]
    file_bytes: int
    #: Size of the ``-wal`` file (0 when there is none).
    wal_bytes: int
    schema_version: int
    journal_mode: str
    #: Executions the rollups hold (purged ones among them), and the UTC
    #: hours they span (``None``: no rollups).
    rollup_executions: int = 0
    rollup_first_hour: Optional[str] = None
    rollup_last_hour: Optional[str] = None
    #: Rows before this (UTC, with an id counted) are rolled up.
    rollup_counted_before: Optional[str] = None
    #: The latest cutoff of a purge made by this package: history before it
    #: lives in the rollups only.
    purged_before: Optional[str] = None


def database_stats(database: peewee.Database, path: str) -> DatabaseStats:
    """Row count, time span, file sizes, schema version and journal mode of
    the database ``path`` (a SQLite file, or a PostgreSQL URL safe to show)
    opened as ``database``. Reads only.

    On PostgreSQL ``file_bytes`` is the size of the table with its indexes,
    ``wal_bytes`` is 0 and ``journal_mode`` is ``server``: the server keeps
    its own write-ahead log.
    """
    tables = tables_of(database)
    backend, model = tables.engine, tables.executions
    as_text = backend.dialect.as_text
    try:
        with database.atomic():
            rows, oldest, newest = database.execute(
                model.select(
                    fn.COUNT(SQL("*")),
                    as_text(fn.MIN(model.created_at)),
                    as_text(fn.MAX(model.created_at)),
                )
            ).fetchone()
            storage = backend.storage(database, path)
            rolled = _rollup_stats(database)
    except peewee.DatabaseError as exc:
        raise DatabaseError(f"{path}: {exc}") from exc
    return DatabaseStats(
        path=path,
        rows=int(rows),
        oldest=oldest,
        newest=newest,
        file_bytes=storage.data_bytes,
        wal_bytes=storage.log_bytes,
        schema_version=storage.schema_version,
        journal_mode=storage.journal_mode,
        **rolled,
    )


def _rollup_stats(database: peewee.Database) -> Dict[str, Any]:
    tables = tables_of(database)
    backend = tables.engine
    if not backend.has_table(backend.statements(database), rollups.STATE_TABLE):
        return {}
    models = tables.rollups
    rollup: Any = tables.rollup(rollups.ROLLUPS_TABLE)
    as_text = backend.dialect.as_text
    n, first, last = database.execute(rollup.select(
        backend.dialect.total(rollup.executions), as_text(fn.MIN(rollup.hour)),
        as_text(fn.MAX(rollup.hour)))).fetchone()
    state = rollups.read_state(backend.statements(database), models)
    return {
        "rollup_executions": int(n or 0), "rollup_first_hour": first, "rollup_last_hour": last,
        "rollup_counted_before": (format_timestamp(state.counted_before)
                                  if state.counted_before else None),
        "purged_before": format_timestamp(state.purged_before) if state.purged_before else None,
    }


def unpriced_models(database: peewee.Database, prices: Any) -> List[Tuple[str, int]]:
    """The models of ``database`` that have no price in ``prices`` (a
    :class:`~telemetry_orm.prices.PriceTable`), with how many executions
    each has, most first. Reads only."""
    model = tables_of(database).executions
    try:
        counts = list(database.execute(
            model.select(model.model, fn.COUNT(SQL("*"))).group_by(model.model)))
    except peewee.DatabaseError as exc:
        raise DatabaseError(f"{database_name(database)}: {exc}") from exc
    found = [(str(name), int(n)) for name, n in counts if prices.find(name) is None]
    return sorted(found, key=lambda item: (-item[1], item[0]))


def count_older_than(database: peewee.Database, days: float) -> int:
    """How many executions of ``database`` (opened read-only, say) are more
    than ``days`` days old by the database's clock: what a store's purge
    would delete now. Reads only."""
    value = check_number("days", days, "days")
    tables = tables_of(database)
    backend, model = tables.engine, tables.executions
    try:
        with database.atomic():
            conn = backend.statements(database)
            when = backend.cutoff(conn, value)
            return 0 if when is None else backend.count_before(conn, model, when)
    except peewee.DatabaseError as exc:
        raise DatabaseError(f"{database_name(database)}: {exc}") from exc


def export_rows(
    database: peewee.Database,
    *,
    since: Optional[_dt.datetime] = None,
    until: Optional[_dt.datetime] = None,
) -> Tuple[Tuple[str, ...], ExportedRows]:
    """Every column of every execution in ``[since, until)``, oldest first.

    Returns the column names (:data:`~telemetry_orm.schema.COLUMN_NAMES`,
    then ``labels``) and an iterator over the rows as stored (raw values,
    ``created_at`` as UTC text ``YYYY-MM-DD HH:MM:SS``, also on PostgreSQL;
    the labels as a ``dict``, empty for none). The rows are read from the
    cursor a batch at a time (their labels with one query a batch), so
    memory stays flat however many there are; consume the iterator before
    closing the database. The rows and their labels are read in one read
    transaction, which lasts until the iterator ends or is closed, started
    or not (inside a transaction of the caller's, in that one).
    """
    filters = checked_filters(since=since, until=until)
    query = Query(database=database, filters=filters, group_by=())
    created_at, row_id = query.model.created_at, query.model.id
    # Every column in table order, created_at as SQLite stores it on any engine.
    selected = [
        query.dialect.as_text(created_at).alias("created_at") if name == "created_at"
        else getattr(query.model, name)
        for name in COLUMN_NAMES
    ]
    tables = tables_of(database)
    # A row purged between its batch's read and its labels' would lose them.
    reading = contextlib.ExitStack()
    try:
        if not tables.engine.in_transaction(database):
            reading.enter_context(database.atomic())
            tables.engine.snapshot(database)
        conn = tables.engine.statements(database)
        sql = (labels.label_sql(tables.labels)
               if tables.engine.has_table(conn, LABELS_TABLE) else None)
        cursor = database.execute(query.select(*selected).order_by(created_at, row_id))
    except peewee.DatabaseError as exc:
        reading.close()
        raise DatabaseError(f"{database_name(database)}: {exc}") from exc
    columns = tuple(d[0] for d in cursor.description)
    rows = _fetch(cursor, conn, sql, columns.index("id"), reading)
    return (*columns, "labels"), ExportedRows(rows, cursor, reading)


class ExportedRows(Iterator[Tuple[Any, ...]]):
    """The rows of :func:`export_rows`: an iterator whose :meth:`close`
    ends the read transaction even before the first row is read (a
    generator's ``close`` runs nothing until it has started)."""

    def __init__(self, rows: Generator[Tuple[Any, ...], None, None], cursor: Any,
                 reading: contextlib.ExitStack) -> None:
        self._rows = rows
        self._cursor = cursor
        self._reading = reading

    def __iter__(self) -> ExportedRows:
        return self

    def __next__(self) -> Tuple[Any, ...]:
        return next(self._rows)

    def __del__(self) -> None:
        # Dropped unread: its read must not stay open under later writes.
        self.close()

    def close(self) -> None:
        """Stop reading: the cursor is closed and the read transaction ends."""
        self._rows.close()
        # As the rows' own end does (see ``_fetch``), had they started.
        with contextlib.suppress(Exception):
            self._cursor.close()
        with contextlib.suppress(Exception):
            self._reading.close()


def _fetch(cursor: Any, conn: Any, sql: Optional[labels.LabelSql], id_column: int,
           reading: contextlib.ExitStack, size: int = 1000
           ) -> Generator[Tuple[Any, ...], None, None]:
    try:
        while True:
            batch = cursor.fetchmany(size)
            if not batch:
                return
            found = {} if sql is None else labels.read(conn, sql, [r[id_column] for r in batch])
            yield from ((*row, found.get(row[id_column], {})) for row in batch)
    finally:
        # The database may be closed already (the iterator was dropped
        # after it): the cursor went with it.
        with contextlib.suppress(Exception):
            cursor.close()
        with contextlib.suppress(Exception):
            reading.close()  # the read transaction ends (nothing was written)

"""An execution's labels (``user``, ``team``, ``agent`` …), in the side
table ``telemetry_orm_labels`` beside ``executions``: one row per
execution and label name (see :class:`~telemetry_orm.schema.ExecutionLabel`).

They are written in the transaction of their execution's row, and read by
exports and reports by joining from ``executions``: a label row whose
execution is gone (purged by this store, or by the original TypeScript
store, which knows nothing of labels) is never seen, and a purge sweeps it
away afterwards (:func:`sweep_step`). Nothing here touches ``executions``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from peewee import fn

from .sql import Written, quote, render

#: The columns of a label row, in the order of its parameters.
COLUMNS: Tuple[str, ...] = ("execution_id", "name", "value")

LabelRow = Tuple[int, str, str]


@dataclasses.dataclass(frozen=True)
class LabelSql:
    """The statements of labels on one store's database, built once."""

    #: One label row (execution id, name, value).
    insert: str
    #: Every label of one execution (its id).
    delete: str
    #: The labels of a list of executions: ``{}`` takes the list's marks.
    select: str
    #: The statements' parameter mark (``?`` or ``%s``).
    mark: str

    def select_for(self, count: int) -> str:
        """:attr:`select` for ``count`` ids."""
        return self.select.format(", ".join([self.mark] * count))


def label_sql(model: Any) -> LabelSql:
    """The statements of :class:`LabelSql` for the bound labels model."""
    database = model._meta.database
    q = functools.partial(quote, database)
    mark = database.param
    table = q(model._meta.table_name)
    execution_id, name, value = (q(column) for column in COLUMNS)
    return LabelSql(
        insert=f"INSERT INTO {table} ({execution_id}, {name}, {value}) "
               f"VALUES ({mark}, {mark}, {mark})",
        delete=f"DELETE FROM {table} WHERE {execution_id} = {mark}",
        select=f"SELECT {execution_id}, {name}, {value} FROM {table} "
               f"WHERE {execution_id} IN ({{}}) ORDER BY {execution_id}, {name}",
        mark=mark,
    )


def label_rows(ids: Sequence[int], labelsets: Sequence[Mapping[str, str]]) -> List[LabelRow]:
    """The label rows of executions ``ids``, each with its labels."""
    return [(row_id, name, value)
            for row_id, labels in zip(ids, labelsets, strict=True)
            for name, value in labels.items()]


def write(conn: Any, sql: LabelSql, rows: Sequence[LabelRow]) -> None:
    """Insert label ``rows`` on the driver connection ``conn``, inside the
    caller's transaction."""
    if rows:
        cursor = conn.cursor()
        try:
            cursor.executemany(sql.insert, rows)
        finally:
            cursor.close()


def written(sql: LabelSql, labelsets: Sequence[Mapping[str, str]]) -> Written:
    """What a keyed write runs once rows are written (see
    :class:`~telemetry_orm.sql.Written`): a new row's labels (those at its
    position in ``labelsets``) are inserted, a replaced row's are set to
    the new ones (none: removed)."""
    def row(conn: Any, position: int, row_id: int, new: bool) -> None:
        if not new:
            conn.execute(sql.delete, (row_id,))
        write(conn, sql, [(row_id, name, value) for name, value in labelsets[position].items()])

    def rows(conn: Any, placed: Sequence[Tuple[int, int]]) -> None:
        write(conn, sql, [(row_id, name, value) for position, row_id in placed
                          for name, value in labelsets[position].items()])

    return Written(row, rows)


def read(conn: Any, sql: LabelSql, ids: Sequence[int], *, step: int = 500
         ) -> Dict[int, Dict[str, str]]:
    """The labels of the executions ``ids`` that have any, by id."""
    found: Dict[int, Dict[str, str]] = {}
    for start in range(0, len(ids), step):
        part = list(ids[start:start + step])
        for row_id, name, value in conn.execute(sql.select_for(len(part)), part).fetchall():
            found.setdefault(int(row_id), {})[name] = value
    return found


def deleting(model: Any, executions: Any, fold: Any) -> Any:
    """A purge chunk's ``fold`` (see :data:`~telemetry_orm.backends.base.Fold`),
    then the labels of the rows the chunk is about to delete, in the
    chunk's transaction: they go with their rows."""
    database = model._meta.database

    def run(conn: Any, rows: Any, most: Optional[int]) -> None:
        fold(conn, rows, most)
        doomed = executions.select(executions.id).where(rows)
        conn.execute(*render(database, model.delete().where(model.execution_id.in_(doomed))))

    return run


def orphans_below(conn: Any, model: Any, executions: Any, step: int) -> List[Tuple[int]]:
    """Up to ``step`` execution ids of labels below every execution's id
    (their rows were deleted by another program, such as the original
    TypeScript store's purge, which deletes the oldest first); with no
    execution left, up to the largest id labelled. Candidates only: a row
    may commit meanwhile with one of these ids (ids are given out before
    commit on a server), so they are deleted by :func:`gone_sql`, which
    looks again."""
    database = model._meta.database
    first = conn.execute(*render(database, executions.select(
        fn.MIN(executions.id)))).fetchone()[0]
    if first is None:
        first = conn.execute(*render(database, model.select(
            fn.MAX(model.execution_id)))).fetchone()[0]
        if first is None:
            return []
        first += 1
    query = (model.select(model.execution_id).where(model.execution_id < first)
             .distinct().order_by(model.execution_id).limit(step))
    return [(int(row[0]),) for row in conn.execute(*render(database, query)).fetchall()]


def gone_sql(model: Any, executions: Any) -> str:
    """The DELETE of the labels of one execution id (given twice) if no
    execution has that id when it runs: whatever committed meanwhile keeps
    its labels."""
    database = model._meta.database
    q = functools.partial(quote, database)
    mark = database.param
    return (f"DELETE FROM {q(model._meta.table_name)} WHERE {q('execution_id')} = {mark} "
            f"AND NOT EXISTS (SELECT 1 FROM {q(executions._meta.table_name)} "
            f"WHERE {q('id')} = {mark})")

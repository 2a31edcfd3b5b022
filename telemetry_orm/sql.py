"""SQL every engine runs the same way, built with peewee from a bound model.

``model`` arguments are an ``Execution`` class bound to a database
(:func:`telemetry_orm.schema.bind_model`); this module sits below the
schema, so it names none of its classes.

The backends run these statements on their driver's own connection (the
hot paths skip peewee's per-query work), so each builder returns the SQL
text and its parameters in the database's own placeholder style.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import re
import weakref
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence, Tuple, Type

import peewee
from peewee import SQL, Case, fn

from .record import BOUNDS, FIELD_NAMES

Statement = Tuple[str, List[Any]]


def bounded(column: Any) -> Any:
    """A bounded column of ``executions`` as every sum counts it: within 0
    and its bound (:data:`telemetry_orm.record.BOUNDS`). Records never go
    past it; a row that another program wrote past it counts as the bound
    in the rollups and in reports from rows alike, and no sum of them can
    overflow."""
    # Literals, not parameters: SQLite evaluates them per row much faster.
    bound = BOUNDS[column.name]
    high, zero = SQL(repr(bound)), SQL(repr(type(bound)(0)))
    return Case(None, [(column > high, high), (column < zero, zero)], column)


#: Costs are added up in whole billionths of a dollar (see :func:`cost_units`).
COST_UNITS_PER_USD = 1_000_000_000


def cost_units(column: Any) -> peewee.ColumnBase:
    """``column`` (dollars) rounded to whole billionths of a dollar, as every
    sum of costs takes it. Sums of whole numbers are exact (below 2**53, about
    $9 million), so a report adds up the same figure in any order: from the
    rows, or from hours and months the rollups folded; it then rounds that
    one figure to micro-dollars (:func:`usd`)."""
    rounded: peewee.ColumnBase = fn.ROUND(column * COST_UNITS_PER_USD)
    return rounded


def usd(units: float) -> float:
    """A sum of :func:`cost_units` in dollars, rounded to micro-dollars
    (half to even, on the whole number, so equal sums give equal figures)."""
    return round(units, -3) / COST_UNITS_PER_USD


#: How an engine spells an upsert: (query, key, fields, add); see
#: :func:`upsert_on_conflict`, and ``ReportDialect.upsert`` for an engine's own.
Upsert = Callable[[Any, Sequence[Any], Sequence[Any], bool], Any]


def upsert_on_conflict(query: Any, key: Sequence[Any], fields: Sequence[Any],
                       add: bool = False) -> Any:
    """``query`` (an INSERT) as an upsert: a row whose ``key`` columns are
    taken gets ``fields`` set to the incoming values (``add``: the incoming
    values added to its own), or is left as it is when there are no
    ``fields``. Spelled ``ON CONFLICT (key) DO UPDATE SET`` / ``DO NOTHING``,
    as SQLite (>= 3.24) and PostgreSQL (>= 9.5) have it: the default of
    ``ReportDialect.upsert``; an engine without conflict targets (MySQL's
    ``ON DUPLICATE KEY UPDATE``) gives its dialect its own."""
    if not fields:
        return query.on_conflict(conflict_target=list(key), action="NOTHING")
    new = {field: getattr(peewee.EXCLUDED, field.column_name) for field in fields}
    return query.on_conflict(conflict_target=list(key), update={
        field: field + value if add else value for field, value in new.items()})


class Hole(peewee.ColumnBase):
    """A condition left open in a query built once: :class:`Template` fills
    it each time the query runs."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def __sql__(self, ctx: Any) -> Any:
        return ctx.literal(f"__telemetry_orm_{self.name}__")


_HOLE = re.compile(r"__telemetry_orm_(\w+?)__")


class Template:
    """A query rendered once with :class:`Hole` conditions, filled per run
    by rendering only the conditions: what the hot paths (a rollup step, a
    purge chunk, a replaced row) spend on building the same statements
    again and again. ``model``: the table the holes' conditions are on, as
    the query names it (the first one it aliases)."""

    def __init__(self, database: peewee.Database, model: Any, query: Any) -> None:
        self.database, self.model = database, model
        sql, params = render(database, query)
        param = database.param
        self.parts: List[Tuple[str, List[Any], Optional[str]]] = []
        done = used = 0
        for match in _HOLE.finditer(sql):
            text = sql[done:match.start()]
            n = text.count(param)
            self.parts.append((text, params[used:used + n], match.group(1)))
            done, used = match.end(), used + n
        self.parts.append((sql[done:], params[used:], None))

    def condition(self, condition: Any) -> Statement:
        """``condition`` as the query's ``WHERE`` has it."""
        sql, params = render(self.database, self.model.select(SQL("1")).where(condition))
        return sql[sql.index(" WHERE ") + len(" WHERE "):], params

    def fill(self, **conditions: Any) -> Statement:
        """The query with each hole replaced by the condition of its name."""
        return self.fill_rendered({name: self.condition(c) for name, c in conditions.items()})

    def fill_rendered(self, filled: Dict[str, Statement]) -> Statement:
        """:meth:`fill` with the conditions already rendered (:meth:`condition`)."""
        sql: List[str] = []
        params: List[Any] = []
        for text, values, hole in self.parts:
            sql.append(text)
            params.extend(values)
            if hole is not None:
                sql.append(filled[hole][0])
                params.extend(filled[hole][1])
        return "".join(sql), params


def quote(database: peewee.Database, name: str) -> str:
    """``name`` quoted as an identifier in the database's dialect."""
    sql: str = database.get_sql_context().sql(peewee.Entity(name)).query()[0]
    return sql


#: Statements that take nothing from their caller, rendered once per bound
#: model (see :func:`rendered_once`).
_ONCE: weakref.WeakKeyDictionary[Any, Dict[str, Statement]] = weakref.WeakKeyDictionary()


def rendered_once(model: Any, name: str, build: Callable[[], Any]) -> Statement:
    """The statement ``build()`` makes on ``model`` (one that takes nothing
    from its caller), rendered at its first use as ``name`` and kept while
    the model lives: every fold reads the rollups' state rows, and peewee
    rendering the same SELECT for each cost a purge chunk a tenth of a
    millisecond or more."""
    kept = _ONCE.setdefault(model, {})
    statement = kept.get(name)
    if statement is None:
        statement = kept[name] = render(model._meta.database, build())
    return statement


def render(database: peewee.Database, query: Any) -> Statement:
    """The SQL text and parameters of a peewee query."""
    sql, params = database.get_sql_context().sql(query).query()
    return str(sql), list(params)


def insert_sql(
    database: peewee.Database, table: str, columns: Sequence[str], *, returning: str = ""
) -> str:
    """``INSERT INTO table (columns) VALUES (?, …)``, optionally ``RETURNING`` a column.

    Built once and run with each row's values (peewee would rebuild it per row).
    """
    names = ", ".join(quote(database, name) for name in columns)
    marks = ", ".join(database.param for _ in columns)
    sql = f"INSERT INTO {quote(database, table)} ({names}) VALUES ({marks})"
    return f"{sql} RETURNING {quote(database, returning)}" if returning else sql


def record_insert_sql(model: Type[peewee.Model], *, returning: bool = False) -> str:
    """The INSERT ``record()`` runs: every record field, in column order."""
    database = model._meta.database
    return insert_sql(database, model._meta.table_name, FIELD_NAMES,
                      returning="id" if returning else "")


_STORED_TIME = re.compile(r"-?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def _cutoff(when: Any) -> Any:
    # A NULL or unparseable cutoff compared as text would match every row
    # (any timestamp sorts before 'None'): it never reaches a DELETE.
    if isinstance(when, _dt.datetime) and when.tzinfo is not None:
        return when
    if isinstance(when, str) and _STORED_TIME.fullmatch(when):
        return when
    raise ValueError(f"not a cutoff time: {when!r}")


def count_before(model: Any, when: Any) -> Statement:
    """How many rows have ``created_at`` before ``when`` (an aware datetime
    or UTC text as stored)."""
    when = _cutoff(when)
    query = model.select(fn.COUNT(SQL("*"))).where(model.created_at < when)
    return render(model._meta.database, query)


def delete_chunk_before(model: Any, when: Any, limit: int) -> Statement:
    """Delete up to ``limit`` rows with ``created_at`` before ``when``: the
    first ones in ``created_at`` order.

    By id through a sub-select: ``DELETE … LIMIT`` needs a compile option
    that many SQLite builds lack.
    """
    return render(model._meta.database, model.delete().where(oldest_before(model, when, limit)))


def _oldest(model: Any, when: Any, limit: int) -> Any:
    return model.select(model.id).where(model.created_at < _cutoff(when)).limit(limit)


def oldest_ids(model: Any, when: Any, limit: int) -> Statement:
    """The ids of the rows :func:`delete_chunk_before` deletes."""
    return render(model._meta.database, _oldest(model, when, limit))


def oldest_before(model: Any, when: Any, limit: int) -> Any:
    """The rows :func:`delete_chunk_before` deletes, as a condition."""
    return model.id.in_(_oldest(model, when, limit))


def key_past(keys: Any, after: Optional[str], offset: int) -> Statement:
    """The key ``offset`` places past ``after`` (``None``: from the first)
    in key order: where a stretch of keys ends (read from the key's index
    alone)."""
    query = keys.select(keys.key).order_by(keys.key).limit(1).offset(offset)
    if after is not None:
        query = query.where(keys.key > after)
    return render(keys._meta.database, query)


def _gone_between(keys: Any, model: Any, after: Optional[str], last: Optional[str]) -> Any:
    """The keys past ``after`` up to ``last`` (``None``: from the first, to
    the last) whose row is gone."""
    row = model.alias("e")
    where = ~fn.EXISTS(row.select(SQL("1")).where(row.id == keys.execution_id))
    if after is not None:
        where &= keys.key > after
    if last is not None:
        where &= keys.key <= last
    return where


def move_gone_keys(keys: Any, purged: Any, model: Any, after: Optional[str],
                   last: Optional[str], stamp: str, *,
                   upsert: Optional[Upsert] = None) -> Statement:
    """Copy the keys past ``after`` up to ``last`` whose row is gone into
    the purged keys, stamped ``stamp`` (looked at under the write lock, as
    :func:`delete_gone_keys` does after it); a key already there stays as it
    is (``upsert``: the engine's, as in :func:`keyed_sql`). One statement
    for a whole stretch of keys, not one per key."""
    picked = keys.select(keys.key, keys.execution_id, peewee.Value(stamp)).where(
        _gone_between(keys, model, after, last))
    query = purged.insert_from(picked, [purged.key, purged.execution_id, purged.purged_at])
    return render(model._meta.database, (upsert or upsert_on_conflict)(
        query.returning(), [purged.key], [], False))


def gone_keys(keys: Any, model: Any, after: Optional[str], last: Optional[str]) -> Any:
    """The key and row id of the keys past ``after`` up to ``last`` whose
    row is gone (a query, for an engine that keeps them aside, then moves
    them by key: each row looked up once)."""
    return keys.select(keys.key, keys.execution_id).where(
        _gone_between(keys, model, after, last))


def delete_gone_keys(keys: Any, model: Any, after: Optional[str], last: Optional[str]
                     ) -> Statement:
    """Delete the keys past ``after`` up to ``last`` whose row is gone
    (looked at again under the write lock: a write may have given one a
    row meanwhile)."""
    return render(model._meta.database,
                  keys.delete().where(_gone_between(keys, model, after, last)))


def purged_before(purged: Any, when: str, limit: int) -> Statement:
    """Up to ``limit`` purged keys stamped before ``when``."""
    query = purged.select(purged.key).where(purged.purged_at < when).limit(limit)
    return render(purged._meta.database, query)


def expired_span(model: Any, when: Any) -> Statement:
    """How many rows have ``created_at`` before ``when``, and the smallest
    and largest of their ids."""
    query = (model.select(fn.COUNT(SQL("*")), fn.MIN(model.id), fn.MAX(model.id))
             .where(model.created_at < _cutoff(when)))
    return render(model._meta.database, query)


def any_before(model: Any, when: Any) -> Statement:
    """The id of one row with ``created_at`` before ``when``, if there is one."""
    query = model.select(model.id).where(model.created_at < _cutoff(when)).limit(1)
    return render(model._meta.database, query)


def ids_before(model: Any, when: Any, after: int, upto: int, *,
               no_index: Callable[[Any], Any] = lambda column: column) -> Any:
    """The rows with ``after < id <= upto`` and ``created_at`` before
    ``when``: the rows of a stretch of the table, whatever their order in
    time. ``no_index`` wraps ``created_at`` so that the planner walks the
    id range (see :class:`~telemetry_orm.backends.base.ReportDialect`)."""
    return ((model.id > after) & (model.id <= upto)
            & (no_index(model.created_at) < model.created_at.db_value(_cutoff(when))))


#: What a keyed write with ``replace`` runs the UPDATE of a row inside
#: (the driver connection and the row's id): the store's way of moving the
#: row's figures in the rollups (see ``PeeweeTelemetryStore.replacing``).
Replacing = Callable[[Any, int], ContextManager[None]]


@dataclasses.dataclass(frozen=True)
class KeyedSql:
    """The statements of a keyed ``record()``, built once per store."""

    #: The row recorded under a key (the key twice as parameters): its id
    #: and whether the row is still there (false: a purged key, or a row
    #: deleted otherwise); none if the key is unknown.
    find: str
    #: The record's INSERT (with ``RETURNING id`` where the engine needs it).
    insert: str
    #: Remember the key of a new row.
    remember: str
    #: Set every record column of a row (``replace=True``): its id and
    #: ``created_at`` are kept.
    update: str
    #: Whether ``insert`` answers the new id as a row (else ``lastrowid``).
    returning: bool = False
    #: A write that changes nothing: on SQLite it takes the write lock.
    lock: str = ""
    #: The rows recorded under any of some keys: each key and its row's id,
    #: ``{marks}`` standing for the keys' placeholders (twice the same keys).
    found: str = ""
    #: The engine's placeholder.
    mark: str = "?"


@dataclasses.dataclass(frozen=True)
class Written:
    """What a keyed write runs inside its transaction once rows are
    written: their labels. A row found and kept runs nothing."""

    #: Right after one row (the driver connection, the row's position in
    #: the write, its id, and whether it is new: false for a replaced row,
    #: inside the :data:`Replacing` block).
    row: Callable[[Any, int, int, bool], None]
    #: Once for the new rows of a write made together (the connection, and
    #: each new row's position and id).
    rows: Callable[[Any, Sequence[Tuple[int, int]]], None]


#: An engine's insert of many rows on its driver connection (the
#: connection, the INSERT, the rows): their ids in order.
InsertMany = Callable[[Any, str, Sequence[Sequence[Any]]], List[int]]

# Keys looked up by one statement: far below every engine's limit on
# parameters (SQLite's 32,766, PostgreSQL's and MySQL's 65,535).
_FOUND_STEP = 500


def record_keyed(conn: Any, sql: KeyedSql, params: Sequence[Any], key: Optional[str],
                 replace: Optional[Replacing], written: Optional[Written] = None,
                 position: int = 0) -> int:
    """One row of a keyed write on a driver connection (SQLite's or
    psycopg's: both ``execute`` with their own placeholders), inside the
    caller's transaction; return the row's id. A key whose row is gone
    answers that row's id and writes nothing, ``replace`` or not: the
    rollups count the row as it was. ``position``: the row's in the write,
    for ``written``."""
    if key is not None:
        found = conn.execute(sql.find, (key, key)).fetchone()
        if found is not None:
            row_id = int(found[0])
            if replace is not None and found[1]:
                with replace(conn, row_id):
                    conn.execute(sql.update, (*params, row_id))
                    if written is not None:
                        written.row(conn, position, row_id, False)
            return row_id
    cursor = conn.execute(sql.insert, params)
    row_id = int(cursor.fetchone()[0]) if sql.returning else int(cursor.lastrowid or 0)
    if key is not None:
        conn.execute(sql.remember, (key, row_id))
    if written is not None:
        written.row(conn, position, row_id, True)
    return row_id


def record_all_keyed(
    conn: Any, sql: KeyedSql, rows: Sequence[Sequence[Any]], keys: Sequence[Optional[str]],
    replace: Optional[Replacing], written: Optional[Written] = None,
    insert_many: Optional[InsertMany] = None,
) -> List[int]:
    """:func:`record_keyed` for each row under its key, in the caller's
    transaction; the ids in order. Without ``replace``, given the engine's
    ``insert_many``, the same in bulk: the keys are looked up together,
    the new rows inserted by ``insert_many``, their keys and labels written
    with one statement each (a key twice in ``rows``: its first row)."""
    if replace is not None or insert_many is None or not sql.found:
        return [record_keyed(conn, sql, params, key, replace, written, position)
                for position, (params, key) in enumerate(zip(rows, keys, strict=True))]
    known = _found(conn, sql, keys)
    ids: List[int] = []
    new: List[int] = []  # positions of the rows to insert
    for position, key in enumerate(keys):
        row_id = None if key is None else known.get(key)
        if row_id is None:
            if key is not None:
                # A later row under this key finds this one, as one by one.
                known[key] = -1 - position
            new.append(position)
            row_id = 0
        ids.append(row_id)
    if not new:
        return ids
    for position, row_id in zip(new, insert_many(conn, sql.insert, [rows[p] for p in new]),
                                strict=True):
        ids[position] = row_id
    for position, row_id in enumerate(ids):
        if row_id < 0:
            ids[position] = ids[-1 - row_id]
    cursor = conn.cursor()
    try:
        remembered = [(keys[p], ids[p]) for p in new if keys[p] is not None]
        if remembered:
            cursor.executemany(sql.remember, remembered)
    finally:
        cursor.close()
    if written is not None:
        written.rows(conn, [(p, ids[p]) for p in new])
    return ids


def _found(conn: Any, sql: KeyedSql, keys: Sequence[Optional[str]]) -> Dict[str, int]:
    """The id of the row recorded under each of ``keys`` that has one."""
    wanted = list(dict.fromkeys(key for key in keys if key is not None))
    found: Dict[str, int] = {}
    for start in range(0, len(wanted), _FOUND_STEP):
        part = wanted[start:start + _FOUND_STEP]
        statement = sql.found.replace("{marks}", ", ".join([sql.mark] * len(part)))
        for key, row_id in conn.execute(statement, part + part).fetchall():
            found.setdefault(key, int(row_id))
    return found


def keyed_sql(model: Any, keys: Any, purged: Any, *, returning: bool = False,
              upsert: Optional[Upsert] = None) -> KeyedSql:
    """The statements of :class:`KeyedSql` for a bound ``Execution`` model,
    its bound ``ExecutionKey`` model and the bound ``PurgedKey`` model;
    ``upsert``: the engine's (``ReportDialect.upsert``; default: ``ON
    CONFLICT``)."""
    database = model._meta.database
    q = functools.partial(quote, database)
    mark = database.param
    table, key_table = q(model._meta.table_name), q(keys._meta.table_name)
    sets = ", ".join(f"{q(name)} = {mark}" for name in FIELD_NAMES)
    remember = keys.insert_many([("", 0)], fields=[keys.key, keys.execution_id]).returning()
    return KeyedSql(
        # A key is in one of the two tables: a purge moves it in one transaction.
        find=(f"SELECT k.{q('execution_id')}, EXISTS (SELECT 1 FROM {table} AS e "
              f"WHERE e.{q('id')} = k.{q('execution_id')}) FROM {key_table} AS k "
              f"WHERE k.{q('key')} = {mark} UNION ALL SELECT p.{q('execution_id')}, 1 = 0 "
              f"FROM {q(purged._meta.table_name)} AS p WHERE p.{q('key')} = {mark}"),
        insert=record_insert_sql(model, returning=returning),
        remember=render(database, (upsert or upsert_on_conflict)(
            remember, [keys.key], [keys.execution_id], False))[0],
        update=f"UPDATE {table} SET {sets} WHERE {q('id')} = {mark}",
        returning=returning,
        lock=f"UPDATE {key_table} SET {q('execution_id')} = {q('execution_id')} WHERE 1 = 0",
        found=" UNION ALL ".join(
            f"SELECT {q('key')}, {q('execution_id')} FROM {name} WHERE {q('key')} IN ({{marks}})"
            for name in (key_table, q(purged._meta.table_name))),
        mark=mark,
    )

"""Usage reports: what the agents cost, where, and how they did.

:func:`report` aggregates ``executions`` into plain dataclasses, grouped by
any of :data:`GROUP_KEYS` and filtered by time and by column values::

    >>> import datetime as dt
    >>> from telemetry_orm import create_telemetry_store
    >>> with create_telemetry_store(":memory:") as store:
    ...     result = store.report(since=dt.datetime(2025, 1, 1), group_by=["day", "model"])
    >>> result.totals.executions
    0

Conventions (the same for every group and for the totals):

- ``total_tokens`` is ``input_tokens + output_tokens + cache_read_tokens +
  cache_creation_tokens``. Anthropic's ``input_tokens`` excludes the tokens
  read from or written to the prompt cache, so the four never overlap.
- ``failed`` counts executions whose ``conclusion`` is anything but
  ``'success'``.
- ``p95_duration_ms`` is the nearest-rank 95th percentile: the duration at
  rank ``ceil(0.95 * n)`` among the ``n`` durations sorted ascending, i.e. the
  smallest duration that at least 95 % of the executions do not exceed. It is
  always one of the recorded durations (with fewer than 20 executions, the
  largest). It is computed in the database with a window function, so no
  durations are loaded into Python.
- ``cost_usd`` is rounded to a millionth of a dollar, ``avg_duration_ms`` to a
  tenth of a millisecond.
- Time buckets are UTC: ``day`` ``YYYY-MM-DD``, ``week`` the ISO week
  ``YYYY-Www`` (weeks start on Monday; week 1 holds the year's first
  Thursday), ``month`` ``YYYY-MM``. ``since`` is inclusive, ``until``
  exclusive, both compared to the second.

Reports only read. :func:`open_readonly` opens a database file so that
nothing can be created or changed, and the queries of one report run in one
read transaction (one consistent snapshot; in WAL mode writers carry on).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import urllib.parse
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Type,
    Union,
)

import peewee
from peewee import SQL, Case, Cast, ColumnBase, Entity, NodeList, fn

from .backends.sqlite import describe
from .errors import DatabaseError, TelemetryValidationError
from .schema import COLUMN_NAMES, CORE_COLUMNS, TABLE_NAME, Execution, bind_model, format_timestamp

#: Keys a report can be grouped by, in the order they are documented.
GROUP_KEYS: Tuple[str, ...] = (
    "repo", "model", "provider", "event_type", "conclusion", "day", "week", "month", "pr",
)

#: Group keys that are time buckets (ordered ascending in a report).
TIME_KEYS: Tuple[str, ...] = ("day", "week", "month")

#: The nearest-rank percentile reported as ``p95_duration_ms``, in percent.
PERCENTILE = 95

# A group key becomes one or more columns of a row ("pr" is a repo and a PR).
_KEY_COLUMNS: Dict[str, Tuple[str, ...]] = {
    **{key: (key,) for key in GROUP_KEYS},
    "pr": ("repo", "pr_number"),
}


@dataclasses.dataclass(frozen=True)
class Metrics:
    """The figures of one group of executions (or of all of them)."""

    executions: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    #: The sum of the four token counts above.
    total_tokens: int = 0
    cost_usd: float = 0.0
    #: ``None`` when there are no executions.
    avg_duration_ms: Optional[float] = None
    #: Nearest-rank 95th percentile; ``None`` when there are no executions.
    p95_duration_ms: Optional[int] = None
    #: Executions whose conclusion is not ``'success'``.
    failed: int = 0

    def as_dict(self) -> Dict[str, Any]:
        """The metrics as a ``dict``, in :data:`METRICS` order."""
        return dataclasses.asdict(self)


#: Metric names, in the order reports show them.
METRICS: Tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Metrics))


@dataclasses.dataclass(frozen=True)
class ReportRow:
    """One group: its key values (``keys``, e.g. ``{"repo": "acme/api"}``) and
    its :class:`Metrics`."""

    keys: Mapping[str, Any]
    metrics: Metrics

    def as_dict(self) -> Dict[str, Any]:
        """Keys then metrics, flat: ``{"repo": …, "executions": …, …}``."""
        return {**self.keys, **self.metrics.as_dict()}


@dataclasses.dataclass(frozen=True)
class ReportFilters:
    """What a report was restricted to (``None``: no restriction)."""

    since: Optional[_dt.datetime] = None
    until: Optional[_dt.datetime] = None
    repo: Optional[str] = None
    model: Optional[str] = None
    event_type: Optional[str] = None
    conclusion: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Report:
    """The answer of :func:`report`.

    ``key_names`` are the columns that identify a row (``group_by`` with
    ``pr`` expanded to ``repo`` and ``pr_number``). ``rows`` come with time
    buckets ascending, then by ``cost_usd`` descending.
    """

    generated_at: _dt.datetime
    filters: ReportFilters
    group_by: Tuple[str, ...]
    key_names: Tuple[str, ...]
    rows: Tuple[ReportRow, ...]
    totals: Metrics


# --- What differs between database engines ------------------------------------
#
# One entry per backend name. ``buckets`` turn the created_at column into a
# day/week/month label; ``no_index`` wraps a column so the planner cannot use
# an index on it (SQLite would otherwise walk idx_executions_repo over the
# whole table for GROUP BY repo instead of searching the created_at index).
# ``model`` is the engine's Execution model; ``as_text`` renders created_at as
# SQLite stores it (UTC "YYYY-MM-DD HH:MM:SS"), so exports and statistics read
# the same on every engine; ``storage`` tells sizes, schema version and log.


class _Dialect(NamedTuple):
    buckets: Mapping[str, Callable[[ColumnBase], ColumnBase]]
    no_index: Callable[[ColumnBase], ColumnBase]
    model: Callable[[], Type[Execution]]
    as_text: Callable[[ColumnBase], ColumnBase]
    storage: Callable[[peewee.Database, str], Tuple[int, int, int, str]]


def _sqlite_iso_week(column: ColumnBase) -> ColumnBase:
    # strftime('%W') is not the ISO week. The ISO week of a day is the week of
    # its Thursday (Monday to Sunday), and the ISO year is that Thursday's year.
    thursday = fn.date(column, "-3 days", "weekday 4")
    week = (Cast(fn.strftime("%j", thursday), "INTEGER") + 6) / 7
    return fn.printf("%s-W%02d", fn.strftime("%Y", thursday), week)


def _sqlite_storage(database: peewee.Database, path: str) -> Tuple[int, int, int, str]:
    version = database.execute_sql("PRAGMA user_version").fetchone()[0]
    mode = database.execute_sql("PRAGMA journal_mode").fetchone()[0]
    wal = path + "-wal"
    wal_bytes = os.path.getsize(wal) if os.path.exists(wal) else 0
    return os.path.getsize(path), wal_bytes, int(version), str(mode)


def _utc_text(pattern: str) -> Callable[[ColumnBase], ColumnBase]:
    # AT TIME ZONE 'UTC' makes the label independent of the session's zone.
    return lambda column: fn.to_char(NodeList((column, SQL("AT TIME ZONE 'UTC'"))), pattern)


def _postgres_storage(database: peewee.Database, path: str) -> Tuple[int, int, int, str]:
    from .backends.postgres import schema_version

    (size,) = database.execute_sql(
        "SELECT pg_total_relation_size(quote_ident(current_schema()) || '.' || quote_ident(%s))",
        (TABLE_NAME,),
    ).fetchone()
    # The table with its indexes; the server's write-ahead log is its own.
    return int(size), 0, schema_version(database), "server"


def _postgres_model() -> Type[Execution]:
    from .backends.postgres import PostgresExecution

    return PostgresExecution


_DIALECTS: Dict[str, _Dialect] = {
    "sqlite": _Dialect(
        buckets={
            "day": lambda column: fn.strftime("%Y-%m-%d", column),
            "week": _sqlite_iso_week,
            "month": lambda column: fn.strftime("%Y-%m", column),
        },
        no_index=lambda column: NodeList((SQL("+"), column), glue=""),
        model=lambda: Execution,
        as_text=lambda column: column,
        storage=_sqlite_storage,
    ),
    "postgresql": _Dialect(
        buckets={
            "day": _utc_text("YYYY-MM-DD"),
            "week": _utc_text('IYYY-"W"IW'),  # the ISO year and week, as on SQLite
            "month": _utc_text("YYYY-MM"),
        },
        # PostgreSQL plans GROUP BY with a time range well by itself.
        no_index=lambda column: column,
        model=_postgres_model,
        as_text=_utc_text("YYYY-MM-DD HH24:MI:SS"),
        storage=_postgres_storage,
    ),
}


def _dialect_of(database: peewee.Database) -> _Dialect:
    if isinstance(database, peewee.SqliteDatabase):
        name = "sqlite"
    elif isinstance(database, peewee.PostgresqlDatabase):
        name = "postgresql"
    else:
        name = type(database).__name__
    try:
        return _DIALECTS[name]
    except KeyError:
        raise DatabaseError(f"reports do not support {name} databases yet") from None


# --- Opening a file for reading -----------------------------------------------


def open_readonly(path: Union[str, os.PathLike[str]]) -> peewee.Database:
    """Open the telemetry database at ``path`` for reading only.

    ``path`` is a file path, a ``sqlite:///path`` URL or a
    ``postgresql://`` URL. Nothing is created: a missing file raises
    :class:`~telemetry_orm.DatabaseError` naming the path. A file is opened
    with ``mode=ro``, so it cannot be changed (SQLite may leave empty
    ``-wal``/``-shm`` files beside a WAL database); a PostgreSQL session is
    opened read-only (``default_transaction_read_only``). A database without
    a usable ``executions`` table is refused with a clear error. Close it
    with ``database.close()``.
    """
    from .store import backend_for

    backend = backend_for(os.fspath(path))
    if backend.name == "postgresql":
        from .backends.postgres import PostgresBackend

        assert isinstance(backend, PostgresBackend)
        database = backend.open_readonly()
        try:
            columns = backend.columns(database)
        except backend.driver_errors as exc:
            database.close()
            raise backend.describe(exc) from exc
        _check_columns(backend.path, columns, database)
        return database
    path = backend.path
    if not os.path.isfile(path):
        what = "is not a file" if os.path.exists(path) else "no such database file"
        raise DatabaseError(f"{path}: {what}")
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    database = peewee.SqliteDatabase(uri, uri=True, pragmas=[("busy_timeout", 5000)])
    try:
        columns = [c.name for c in database.get_columns(TABLE_NAME)]
    except (peewee.DatabaseError, peewee.OperationalError) as exc:
        database.close()
        raise describe(path, exc) from exc
    _check_columns(path, columns, database)
    return database


def _check_columns(path: str, columns: Sequence[str], database: peewee.Database) -> None:
    """Refuse (closing ``database``) a table that lacks columns."""
    missing = [c for c in COLUMN_NAMES if c not in columns]
    if missing:
        database.close()
        if not columns:
            raise DatabaseError(f"{path}: has no '{TABLE_NAME}' table; not a telemetry database")
        if any(c in missing for c in CORE_COLUMNS):
            raise DatabaseError(
                f"{path}: has an '{TABLE_NAME}' table that is not a telemetry table "
                f"(missing columns: {', '.join(missing)})"
            )
        raise DatabaseError(
            f"{path}: the '{TABLE_NAME}' table predates columns {', '.join(missing)}; "
            "open it once with create_telemetry_store() to upgrade it"
        )


# --- Reports --------------------------------------------------------------------


def report(
    source: Any,
    *,
    since: Optional[_dt.datetime] = None,
    until: Optional[_dt.datetime] = None,
    repo: Optional[str] = None,
    model: Optional[str] = None,
    event_type: Optional[str] = None,
    conclusion: Optional[str] = None,
    group_by: Union[str, Sequence[str]] = ("repo",),
) -> Report:
    """Aggregate the executions of ``source`` (a store or a peewee database).

    ``since``/``until`` are datetimes (naive ones are UTC; ``until`` is
    exclusive); ``repo``, ``model``, ``event_type`` and ``conclusion`` keep
    only rows with that exact value. ``group_by`` is one key or a sequence
    of :data:`GROUP_KEYS`; an empty sequence gives totals only. Invalid
    arguments raise :class:`~telemetry_orm.TelemetryValidationError` naming
    the argument.
    """
    from .store import PeeweeTelemetryStore

    if isinstance(source, PeeweeTelemetryStore):
        return source.report(
            since=since, until=until, repo=repo, model=model, event_type=event_type,
            conclusion=conclusion, group_by=group_by,
        )
    if not isinstance(source, peewee.Database):
        raise TelemetryValidationError(
            "source", f"must be a telemetry store or a peewee database, got {type(source).__name__}"
        )
    filters = _filters(
        since=since, until=until, repo=repo, model=model, event_type=event_type,
        conclusion=conclusion,
    )
    keys = _check_group_by(group_by)
    generated_at = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    query = _Query(database=source, filters=filters, group_by=keys)
    try:
        # One read transaction: every query sees the same snapshot, so the
        # rows, their percentiles and the totals agree while others write.
        with source.atomic():
            groups = query.aggregate()
            percentiles = query.group_percentiles() if query.key_names else {}
            executions = sum(g.executions for g in groups.values())
            total_p95 = query.total_percentile(executions)
    except peewee.DatabaseError as exc:
        raise DatabaseError(f"{_name(source)}: {exc}") from exc
    rows = [
        ReportRow(dict(zip(query.key_names, key, strict=True)), g.metrics(percentiles.get(key)))
        for key, g in groups.items()
    ]
    return Report(
        generated_at=generated_at,
        filters=filters,
        group_by=keys,
        key_names=query.key_names,
        rows=tuple(_ordered(rows, keys)) if query.key_names else (),
        totals=_Sums.combine(groups.values()).metrics(total_p95),
    )


def _filters(**values: Any) -> ReportFilters:
    filters = ReportFilters(
        since=_check_time("since", values.pop("since", None)),
        until=_check_time("until", values.pop("until", None)),
        **{name: _check_text(name, value) for name, value in values.items()},
    )
    if filters.since and filters.until and filters.until <= filters.since:
        raise TelemetryValidationError(
            "until", f"must be later than since ({filters.since.isoformat()}), "
            f"got {filters.until.isoformat()}"
        )
    return filters


def _name(database: peewee.Database) -> str:
    """The file a database object reads, for error messages."""
    name = str(database.database)
    if name.startswith("file:"):
        name = urllib.parse.unquote(name[len("file:"):].partition("?")[0])
    return name


def _check_time(name: str, value: Any) -> Optional[_dt.datetime]:
    if value is None:
        return None
    if not isinstance(value, _dt.datetime):
        raise TelemetryValidationError(
            name, f"must be a datetime (naive means UTC) or None, got {type(value).__name__}"
        )
    if value.tzinfo is None:
        return value.replace(tzinfo=_dt.timezone.utc)
    return value.astimezone(_dt.timezone.utc)


def _check_text(name: str, value: Any) -> Optional[str]:
    if value is not None and (type(value) is not str or not value):
        raise TelemetryValidationError(name, f"must be a non-empty string or None, got {value!r}")
    return value


def _check_group_by(group_by: Any) -> Tuple[str, ...]:
    keys = (group_by,) if isinstance(group_by, str) else group_by
    if not isinstance(keys, Iterable):
        raise TelemetryValidationError(
            "group_by", f"must be a key or a sequence of keys, got {type(group_by).__name__}"
        )
    result: List[str] = []
    for key in keys:
        if key not in GROUP_KEYS:
            raise TelemetryValidationError(
                "group_by", f"unknown key {key!r}; expected some of {', '.join(GROUP_KEYS)}"
            )
        if key not in result:
            result.append(key)
    return tuple(result)


def _key_names(group_by: Sequence[str]) -> Tuple[str, ...]:
    names: List[str] = []
    for key in group_by:
        names.extend(c for c in _KEY_COLUMNS[key] if c not in names)
    return tuple(names)


@dataclasses.dataclass
class _Sums:
    """Additive figures of a group, as the database summed them."""

    executions: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    cost_usd: float
    duration_ms: int
    failed: int

    @classmethod
    def from_row(cls, values: Sequence[Any]) -> _Sums:
        # Engines differ in the types of sums (PostgreSQL answers Decimal).
        n, tokens_in, tokens_out, read, write, cost, duration, failed = (v or 0 for v in values)
        return cls(
            int(n), int(tokens_in), int(tokens_out), int(read), int(write),
            float(cost), int(duration), int(failed),
        )

    @classmethod
    def combine(cls, parts: Iterable[_Sums]) -> _Sums:
        total = cls(0, 0, 0, 0, 0, 0.0, 0, 0)
        for part in parts:
            for field in dataclasses.fields(cls):
                name = field.name
                setattr(total, name, getattr(total, name) + getattr(part, name))
        return total

    def metrics(self, p95: Optional[int]) -> Metrics:
        n = self.executions
        return Metrics(
            executions=n,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_read_tokens=self.cache_read_tokens,
            cache_creation_tokens=self.cache_creation_tokens,
            total_tokens=self.input_tokens + self.output_tokens
            + self.cache_read_tokens + self.cache_creation_tokens,
            cost_usd=round(self.cost_usd, 6),
            avg_duration_ms=round(self.duration_ms / n, 1) if n else None,
            p95_duration_ms=int(p95) if p95 is not None and n else None,
            failed=self.failed,
        )


class _Query:
    """The SQL of one report, built with peewee from the filters and keys."""

    def __init__(
        self, *, database: peewee.Database, filters: ReportFilters, group_by: Tuple[str, ...]
    ) -> None:
        self.database = database
        self.dialect = _dialect_of(database)
        self.model: Type[Execution] = bind_model(database, self.dialect.model())
        self.filters = filters
        self.key_names = _key_names(group_by)
        # With a time range, keep the planner on the created_at index:
        # hide every other column from the indexes.
        timed = filters.since is not None or filters.until is not None
        self._hide: Callable[[ColumnBase], ColumnBase] = (
            self.dialect.no_index if timed else (lambda column: column)
        )

    def _column(self, name: str) -> ColumnBase:
        node: ColumnBase = getattr(self.model, name)
        return node

    def _keys(self) -> List[ColumnBase]:
        created_at = self._column("created_at")
        keys = []
        for name in self.key_names:
            if name in self.dialect.buckets:
                keys.append(self.dialect.buckets[name](created_at))
            else:
                # Never group through an index: walking idx_executions_repo
                # reads every row of the table in key order, slower on 1M rows
                # than scanning (or searching by time) and sorting.
                keys.append(self.dialect.no_index(self._column(name)))
        return keys

    def _where(self) -> List[ColumnBase]:
        f = self.filters
        created_at = self._column("created_at")
        conditions: List[ColumnBase] = []
        if f.since is not None:
            conditions.append(created_at >= format_timestamp(f.since))
        if f.until is not None:
            conditions.append(created_at < format_timestamp(f.until))
        for name in ("repo", "model", "event_type", "conclusion"):
            value = getattr(f, name)
            if value is not None:
                conditions.append(self._hide(self._column(name)) == value)
        return conditions

    def select(self, *columns: ColumnBase) -> Any:
        """``SELECT columns`` of the matching executions."""
        query = self.model.select(*columns)
        where = self._where()
        return query.where(*where) if where else query

    def aggregate_query(self) -> Any:
        """The per-group sums (one row when there are no keys)."""
        m = self.model
        aliases = [f"k{i}" for i in range(len(self.key_names))]
        keys = [node.alias(alias) for node, alias in zip(self._keys(), aliases, strict=True)]
        failed = Case(None, [(m.conclusion != "success", 1)], 0)
        query = self.select(
            *keys,
            fn.COUNT(SQL("*")),
            fn.SUM(m.input_tokens),
            fn.SUM(m.output_tokens),
            fn.SUM(m.cache_read_tokens),
            fn.SUM(m.cache_creation_tokens),
            fn.SUM(m.cost_usd),
            fn.SUM(m.duration_ms),
            fn.SUM(failed),
        )
        if aliases:
            query = query.group_by(*(Entity(a) for a in aliases))
        return query

    def aggregate(self) -> Dict[Tuple[Any, ...], _Sums]:
        width = len(self.key_names)
        groups: Dict[Tuple[Any, ...], _Sums] = {}
        for row in self.database.execute(self.aggregate_query()):
            sums = _Sums.from_row(row[width:])
            if sums.executions:
                groups[tuple(row[:width])] = sums
        return groups

    def percentile_query(self) -> Any:
        """Per group, the smallest duration whose cumulative share reaches
        :data:`PERCENTILE` (the nearest-rank percentile)."""
        keys = self._keys()
        aliases = [f"k{i}" for i in range(len(keys))]
        duration = self._column("duration_ms")
        share = fn.CUME_DIST().over(partition_by=keys, order_by=[duration])
        inner = self.select(
            *(node.alias(alias) for node, alias in zip(keys, aliases, strict=True)),
            duration.alias("duration_ms"),
            share.alias("share"),
        )
        outer_keys = [getattr(inner.c, alias) for alias in aliases]
        return (
            inner.select_from(*outer_keys, fn.MIN(inner.c.duration_ms))
            .where(inner.c.share >= PERCENTILE / 100)
            .group_by(*outer_keys)
        )

    def group_percentiles(self) -> Dict[Tuple[Any, ...], int]:
        width = len(self.key_names)
        return {
            tuple(row[:width]): int(row[width])
            for row in self.database.execute(self.percentile_query())
        }

    def total_percentile(self, executions: int) -> Optional[int]:
        """The nearest-rank percentile of all matching durations.

        Counted from the top (``OFFSET n - rank`` descending), so the engine
        only keeps the largest 5 % while sorting.
        """
        if not executions:
            return None
        rank = _rank(executions)
        duration = self._column("duration_ms")
        query = (
            self.select(duration)
            .order_by(duration.desc())
            .limit(1)
            .offset(executions - rank)
        )
        row = self.database.execute(query).fetchone()
        return None if row is None else int(row[0])


# --- Statistics and export ----------------------------------------------------


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


def database_stats(database: peewee.Database, path: str) -> DatabaseStats:
    """Row count, time span, file sizes, schema version and journal mode of
    the database ``path`` (a SQLite file, or a PostgreSQL URL safe to show)
    opened as ``database``. Reads only.

    On PostgreSQL ``file_bytes`` is the size of the table with its indexes,
    ``wal_bytes`` is 0 and ``journal_mode`` is ``server``: the server keeps
    its own write-ahead log.
    """
    dialect = _dialect_of(database)
    model = bind_model(database, dialect.model())
    try:
        with database.atomic():
            rows, oldest, newest = database.execute(
                model.select(
                    fn.COUNT(SQL("*")),
                    dialect.as_text(fn.MIN(model.created_at)),
                    dialect.as_text(fn.MAX(model.created_at)),
                )
            ).fetchone()
            file_bytes, wal_bytes, version, mode = dialect.storage(database, path)
    except peewee.DatabaseError as exc:
        raise DatabaseError(f"{path}: {exc}") from exc
    return DatabaseStats(
        path=path,
        rows=int(rows),
        oldest=oldest,
        newest=newest,
        file_bytes=file_bytes,
        wal_bytes=wal_bytes,
        schema_version=version,
        journal_mode=mode,
    )


def export_rows(
    database: peewee.Database,
    *,
    since: Optional[_dt.datetime] = None,
    until: Optional[_dt.datetime] = None,
) -> Tuple[Tuple[str, ...], Iterator[Tuple[Any, ...]]]:
    """Every column of every execution in ``[since, until)``, oldest first.

    Returns the column names (:data:`~telemetry_orm.schema.COLUMN_NAMES`)
    and an iterator over the rows as stored (raw values, ``created_at`` as
    UTC text ``YYYY-MM-DD HH:MM:SS``, also on PostgreSQL). The rows are read
    from the cursor a batch at a time, so memory stays flat however many
    there are; consume the iterator before closing the database.
    """
    filters = _filters(since=since, until=until)
    query = _Query(database=database, filters=filters, group_by=())
    created_at, row_id = query.model.created_at, query.model.id
    # Every column in table order, created_at as SQLite stores it on any engine.
    selected = [
        query.dialect.as_text(created_at).alias("created_at") if name == "created_at"
        else getattr(query.model, name)
        for name in COLUMN_NAMES
    ]
    try:
        cursor = database.execute(query.select(*selected).order_by(created_at, row_id))
    except peewee.DatabaseError as exc:
        raise DatabaseError(f"{_name(database)}: {exc}") from exc
    columns = tuple(d[0] for d in cursor.description)
    return columns, _fetch(cursor)


def _fetch(cursor: Any, size: int = 1000) -> Iterator[Tuple[Any, ...]]:
    try:
        while True:
            batch = cursor.fetchmany(size)
            if not batch:
                return
            yield from (tuple(row) for row in batch)
    finally:
        cursor.close()


def _rank(n: int) -> int:
    """The nearest rank of :data:`PERCENTILE` among ``n`` values: ``ceil(n * p / 100)``."""
    return -(-n * PERCENTILE // 100)


def _ordered(rows: List[ReportRow], group_by: Sequence[str]) -> List[ReportRow]:
    times = [k for k in group_by if k in TIME_KEYS]
    others = [k for k in (rows[0].keys if rows else ()) if k not in TIME_KEYS]

    def order(row: ReportRow) -> Tuple[Any, ...]:
        # Time ascending, then the most expensive first; the remaining keys
        # (None last) only make ties deterministic.
        return (
            tuple(row.keys[k] for k in times),
            -row.metrics.cost_usd,
            tuple((row.keys[k] is None, row.keys[k]) for k in others),
        )

    return sorted(rows, key=order)

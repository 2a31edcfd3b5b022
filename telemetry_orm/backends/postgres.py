"""What is particular to PostgreSQL: a pooled connection per operation,
``TIMESTAMPTZ`` at UTC, the server's clock for retention, schema versions in a
one-row table, and schema set-up under an advisory lock.

Needs the ``postgres`` extra (the psycopg 3 driver):
``pip install 'telemetry_orm[postgres]'``, or ``postgres2`` for psycopg2
(``postgresql+psycopg2://`` URLs, and applications' databases driven by it);
what differs between the two lives in :mod:`.postgres_drivers`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import re
import time
import zlib
from typing import (
    Any,
    Callable,
    ContextManager,
    Dict,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Type,
)
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import peewee
from peewee import SQL, Case, Cast, ColumnBase, NodeList, fn
from playhouse import db_url
from playhouse.pool import MaxConnectionsExceeded

from .. import clock, rollups, zone_days
from .. import sql as _sql
from ..checks import EARLIEST, to_utc
from ..errors import DatabaseError, StoreBusyError, TelemetryError, TelemetryValidationError
from ..labels import LabelSql
from ..record import TEXT_FIELDS
from ..schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    TABLE_NAME,
    Execution,
    ExecutionKey,
    format_timestamp,
    is_current,
)
from ..zones import Offset
from .base import (
    BUSY_TIMEOUT_MS,
    LOG_SIZE_LIMIT,
    Backend,
    Fold,
    PurgeChunk,
    ReportDialect,
    Storage,
    in_transaction_error,
    operation_error,
)
from .postgres_drivers import Driver, driver_for_url, driver_of, run
from .postgres_schema import (
    FIELD_TYPES,
    PostgresExecution,
    PostgresLabelRollup,
    PostgresLabelRollupDuration,
    PostgresRollup,
    PostgresRollupDay,
    PostgresRollupDuration,
    PostgresRollupMonth,
    PostgresRollupMonthDuration,
    PostgresZoneCut,
    PostgresZoneCutDuration,
    PostgresZoneDay,
    PostgresZoneDayDuration,
    _check,
    _write_version,
    schema_version,
    table_columns,
)

#: How long a statement waits for a lock before giving up (milliseconds),
#: unless the URL sets ``lock_timeout`` itself.
LOCK_TIMEOUT_MS = 5000

#: Defaults for connection settings the URL does not give.
CONNECT_DEFAULTS: Dict[str, Any] = {
    "connect_timeout": 10,  # seconds, libpq; without it a dead host hangs
    "max_connections": 20,  # the pool's size per store
    "timeout": 10,  # seconds to wait for a free pooled connection
}

#: URL parameters that must be numbers (playhouse.db_url turns digits into numbers).
_NUMBER_PARAMS = ("max_connections", "timeout", "stale_timeout", "connect_timeout")

#: How long ``rollup()`` waits to learn which ids are safe to count.
NEWEST_ID_WAIT_MS = 50

#: SQLSTATEs meaning "another transaction is in the way; retry later".
BUSY_SQLSTATES = frozenset(
    {
        "55P03",  # lock_not_available (lock_timeout)
        "40P01",  # deadlock_detected
        "40001",  # serialization_failure
        "53300",  # too_many_connections
    }
)

def session_options(url_options: str, lock_timeout_ms: int = LOCK_TIMEOUT_MS) -> str:
    """The libpq ``options`` every connection of a store starts with.

    Set when a connection is made, so they cost no round trip: a
    ``lock_timeout`` (like SQLite's busy timeout, a lock wait past it becomes
    :class:`~telemetry_orm.StoreBusyError`; one given in the URL wins), then
    the URL's own options, then ``TimeZone=UTC`` last, so that it always wins
    and dates group by UTC day, as in SQLite.
    """
    parts = [f"-c lock_timeout={int(lock_timeout_ms)}", url_options.strip(), "-c TimeZone=UTC"]
    return " ".join(part for part in parts if part)


def advisory_key(name: str) -> int:
    """The advisory lock key of a named piece of work (a stable 32-bit hash)."""
    return zlib.crc32(f"telemetry_orm:{name}".encode())


def safe_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if "password" in k.lower() else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def sqlstate(exc: BaseException) -> Optional[str]:
    """The SQLSTATE of a driver error, also when peewee has wrapped it."""
    seen: List[BaseException] = []
    pending: List[Optional[BaseException]] = [exc]
    while pending:
        current = pending.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        # psycopg 3 calls it sqlstate, psycopg2 pgcode.
        state = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(state, str):
            return state
        inner = current.args[0] if current.args else None
        wrapped = inner if isinstance(inner, BaseException) else None
        pending.extend([current.__cause__, current.__context__, wrapped])
    return None


#: Transactions the server ends because of another one: retry, do not wait.
_CONFLICTS = {
    "40001": "serialization failure: a concurrent transaction changed rows this one read or "
             "writes (the connection runs at repeatable read or serializable isolation)",
    "40P01": "deadlock detected: this transaction and another waited for each other, and the "
             "server ended this one",
}


def is_busy(exc: BaseException) -> bool:
    """True when ``exc`` says another transaction is in the way, or every
    pooled connection stayed in use for the pool's whole ``timeout``."""
    if isinstance(exc, MaxConnectionsExceeded):
        return True
    return sqlstate(exc) in BUSY_SQLSTATES


def _utc_text(pattern: str) -> Callable[[ColumnBase], ColumnBase]:
    # AT TIME ZONE 'UTC' makes the label independent of the session's zone.
    return lambda column: fn.to_char(NodeList((column, SQL("AT TIME ZONE 'UTC'"))), pattern)


def _utc_trunc(unit: str) -> Callable[[ColumnBase], ColumnBase]:
    # date_trunc() of a TIMESTAMPTZ cuts in the session's time zone; this
    # cuts in UTC whatever it is (an application's sessions keep their own).
    return lambda column: NodeList((
        fn.date_trunc(unit, NodeList((column, SQL("AT TIME ZONE 'UTC'")))),
        SQL("AT TIME ZONE 'UTC'")))


def _local(column: ColumnBase, offsets: Sequence[Offset]) -> ColumnBase:
    # created_at + the offset in force at that instant, read as UTC by the
    # buckets: the zone's wall time, from the same offsets as on SQLite
    # (Python's zone database, not the server's).
    seconds: Any = offsets[0].seconds if len(offsets) == 1 else Case(None, [
        (column < format_timestamp(until), seconds)
        for until, seconds in offsets[:-1] if until is not None], offsets[-1].seconds)
    shift = NodeList((seconds, SQL("* INTERVAL '1 second'")), parens=True)
    return NodeList((column, SQL("+"), shift), parens=True)


def _bucket(column: ColumnBase) -> ColumnBase:
    # rollups.bucket() in SQL: ceil(ln(d) / ln(γ)) + 1, and 0 for 0 ms.
    return NodeList((SQL("CASE WHEN"), column, SQL("<= 0 THEN 0 ELSE CAST(CEIL(LN("), column,
                     SQL(f") / {rollups.LOG_GAMMA!r} - 1e-9) AS INTEGER) + 1 END")))


#: PostgreSQL's report SQL; it plans GROUP BY with a time range well by
#: itself, so no column is hidden from its indexes.
DIALECT = ReportDialect(
    buckets={
        "day": _utc_text("YYYY-MM-DD"),
        "week": _utc_text('IYYY-"W"IW'),  # the ISO year and week, as on SQLite
        "month": _utc_text("YYYY-MM"),
    },
    local=_local,
    hour=_utc_trunc("hour"),
    month=_utc_trunc("month"),
    day=_utc_trunc("day"),
    bucket=_bucket,
    as_text=_utc_text("YYYY-MM-DD HH24:MI:SS"),
    # In numeric, which does not overflow (SUM of a double precision does).
    total=lambda column: fn.SUM(Cast(column, "NUMERIC")),
)


#: The record's text columns, with their positions in a row.
_TEXT_FIELDS = TEXT_FIELDS


def check_row(row: Sequence[Any]) -> None:
    """Refuse text PostgreSQL cannot store: a NUL character (its text type
    ends at one; SQLite stores it)."""
    for index, name in _TEXT_FIELDS:
        value = row[index]
        if value is not None and "\x00" in value:
            raise TelemetryValidationError(
                name, f"contains a NUL character at position {value.index(chr(0))}, "
                "which PostgreSQL cannot store in text"
            )


class PostgresBackend(Backend):
    """The PostgreSQL part of a store (see :class:`~telemetry_orm.backends.base.Backend`)."""

    name = "postgresql"
    model_base: Type[Execution] = PostgresExecution
    key_model: Type[peewee.Model] = ExecutionKey
    rollup_models: Tuple[Type[peewee.Model], ...] = (
        PostgresRollup, PostgresRollupDuration, rollups.RollupState, PostgresRollupMonth,
        PostgresRollupMonthDuration, PostgresRollupDay, rollups.RollupTiers, PostgresZoneDay,
        PostgresZoneDayDuration, zone_days.RollupZone, PostgresZoneCut, PostgresZoneCutDuration,
        PostgresLabelRollup, PostgresLabelRollupDuration)
    driver_errors: Tuple[Type[BaseException], ...] = (
        peewee.PeeweeException,
        MaxConnectionsExceeded,
    )
    dialect = DIALECT
    one_connection = False
    memory = False
    returning = True
    check_row = staticmethod(check_row)

    @classmethod
    def from_location(
        cls, location: str, *, busy_timeout: int = BUSY_TIMEOUT_MS,
        log_size_limit: int = LOG_SIZE_LIMIT,
    ) -> PostgresBackend:
        """A ``postgresql://`` URL. ``busy_timeout`` becomes the sessions'
        ``lock_timeout``; the server keeps its own log, so
        ``log_size_limit`` has no meaning here."""
        return cls(location, busy_timeout=busy_timeout)

    def __init__(self, url: str, *, busy_timeout: int = LOCK_TIMEOUT_MS,
                 driver: Optional[Driver] = None) -> None:
        self.url = url
        #: The sessions' ``lock_timeout`` in milliseconds (unless the URL sets one).
        self.busy_timeout = busy_timeout
        self.path = safe_url(url)
        #: psycopg 3 unless the URL (``postgresql+psycopg2://``) or the
        #: application's database says psycopg2.
        self.driver = driver or driver_for_url(url)
        why = self.driver.missing()
        if why is not None:
            raise DatabaseError(f"{self.path}: {why}")
        self.driver_errors = (*self.driver.errors, *type(self).driver_errors)
        self.borrowed = False
        self._database: Optional[peewee.Database] = None
        self.no_background: Optional[str] = None

    @classmethod
    def from_database(
        cls, database: peewee.Database, *, configure: bool = False,
        busy_timeout: int = BUSY_TIMEOUT_MS, log_size_limit: int = LOG_SIZE_LIMIT,
    ) -> PostgresBackend:
        """A store on an application's ``PostgresqlDatabase`` (plain or
        pooled), driven by psycopg 3 or psycopg2. Its sessions keep the
        application's settings (``lock_timeout``, ``TimeZone``: the store's
        SQL does not depend on the session's zone); ``configure`` has
        nothing to apply here."""
        backend = cls("postgresql://", busy_timeout=busy_timeout, driver=driver_of(database))
        backend.borrowed, backend._database = True, database
        backend.path = database_label(database)
        return backend

    def _settings(self, extra_options: str = "") -> Tuple[str, Dict[str, Any]]:
        params = db_url.parse(self.url, unquote_password=True)
        name = params.pop("database", "")
        if not name:
            raise DatabaseError(f"{self.path}: the URL names no database (…/dbname)")
        for key in _NUMBER_PARAMS:
            value = params.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or value < (1 if key == "max_connections" else 0)):
                raise TelemetryValidationError(
                    key, f"in the URL must be a number >= "
                    f"{1 if key == 'max_connections' else 0}, got {value!r}"
                )
        url_options = f"{params.pop('options', '') or ''} {extra_options}"
        options = session_options(url_options, self.busy_timeout)
        return str(name), {**CONNECT_DEFAULTS, **params, **self.driver.options, "options": options}

    def open(self) -> peewee.Database:
        """A pooled database for the URL (nothing is connected yet), or an
        application's own database as it is."""
        if self._database is not None:
            return self._database
        name, settings = self._settings()
        database: peewee.Database = self.driver.pooled(name, field_types=FIELD_TYPES, **settings)
        return database

    def open_readonly(self, *, purpose: str = "read") -> peewee.Database:
        """A plain (unpooled) database whose sessions can only read
        (``default_transaction_read_only``), connected once to fail early,
        its telemetry table checked for ``purpose``. For reports, exports
        and copies; ``database.close()`` ends the session."""
        name, settings = self._settings("-c default_transaction_read_only=on")
        for pool_only in ("max_connections", "timeout", "stale_timeout"):
            settings.pop(pool_only, None)
        database: peewee.Database = self.driver.plain(name, field_types=FIELD_TYPES, **settings)
        try:
            database.connect()
            _check(self.path, database, purpose)
        except self.driver_errors as exc:
            database.close()
            raise self.describe(exc) from exc
        except TelemetryError:
            database.close()
            raise
        return database

    @classmethod
    def in_transaction(cls, database: peewee.Database) -> bool:
        if database.is_closed():
            return False
        return not driver_of(database).idle(database.connection())

    @contextlib.contextmanager
    def connection(self, database: peewee.Database) -> Iterator[Any]:
        """A pooled connection for one operation, handed back to the pool after
        (so threads that come and go never hold connections). Re-entrant:
        inside another operation of the same thread, that one's connection."""
        opened = database.connect(reuse_if_open=True)
        try:
            yield self.driver.connection(database.connection())
        finally:
            if opened:
                database.close()

    @classmethod
    def statements(cls, database: peewee.Database) -> Any:
        """The thread's connection, with ``execute()`` on psycopg2 too."""
        return driver_of(database).connection(database.connection())

    def prepare(self, database: peewee.Database, model: Type[Execution]) -> None:
        """Check the schema and create or upgrade it.

        Reads first; only when something is missing does it take the advisory
        lock, read again and change what is still missing, in one transaction
        (PostgreSQL's DDL is transactional). Several processes starting on a
        new database therefore queue on the lock instead of failing.
        """
        try:
            with self.connection(database):
                version, columns = _check(self.path, database, "write")
                if is_current(version, columns):
                    return
                if self.borrowed and self.in_transaction(database):
                    raise in_transaction_error(self.path, "create or upgrade its tables")
                with self.exclusive_transaction(database, "schema"):
                    version, columns = _check(self.path, database, "write")
                    if not is_current(version, columns):
                        for step in MIGRATIONS[version:] if columns else MIGRATIONS:
                            step(database, model, columns)
                            columns = table_columns(database)
                        _write_version(database, SCHEMA_VERSION)
        except self.driver_errors as exc:
            raise self.describe(exc) from exc

    @contextlib.contextmanager
    def exclusive_transaction(self, database: peewee.Database, name: str) -> Iterator[None]:
        """A transaction holding the advisory lock ``name``: other processes
        doing the same kind of work (schema set-up, a migration batch) wait
        for it to commit, then see what it wrote. Advisory locks are per
        database, so every schema of the database shares them."""
        with database.atomic():
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (advisory_key(name),))
            yield

    def describe(self, exc: BaseException) -> TelemetryError:
        """Turn a driver error met while opening into a :class:`TelemetryError`."""
        if is_busy(exc):
            return StoreBusyError(f"{self.path}: database is busy ({exc})")
        return DatabaseError(f"{self.path}: {exc}")

    def translate(self, exc: BaseException) -> TelemetryError:
        conflict = _CONFLICTS.get(sqlstate(exc) or "")
        if conflict:
            # Not a lock held too long: the server ended this transaction,
            # and only running it again can succeed.
            return StoreBusyError(
                f"{self.path}: {conflict}; nothing was written: roll back and retry the "
                f"whole transaction ({' '.join(str(exc).split())})")
        return operation_error(self.path, exc, busy=is_busy(exc))

    def insert_one(self, database: peewee.Database, sql: str, params: Sequence[Any]) -> int:
        if not database.is_closed():
            # The thread's own connection, as connection() would give it and
            # leave it: the short way, on the path every record() takes.
            return int(run(database.connection(), sql, params).fetchone()[0])
        with self.connection(database) as conn:
            return int(run(conn, sql, params).fetchone()[0])

    def insert_one_labelled(self, database: peewee.Database, sql: str, params: Sequence[Any],
                            label_sql: LabelSql, labels: Sequence[Tuple[str, str]]) -> int:
        """One statement, atomic on its own: the row's INSERT (``sql``, which
        answers its id) in a data-modifying ``WITH``, its labels' INSERT
        from it. A transaction of BEGIN, two INSERTs and COMMIT measured
        1.9x a lone INSERT, against the server's round trips."""
        head = label_sql.insert.partition(" VALUES ")[0]
        pairs = ", ".join(["(%s::text, %s::text)"] * len(labels))
        statement = (f"WITH e AS ({sql}), l AS ({head} SELECT e.id, v.n, v.v FROM e, "
                     f"(VALUES {pairs}) AS v (n, v)) SELECT id FROM e")
        flat = [text for label in labels for text in label]
        if not database.is_closed():
            return int(run(database.connection(), statement, [*params, *flat]).fetchone()[0])
        with self.connection(database) as conn:
            return int(run(conn, statement, [*params, *flat]).fetchone()[0])

    def insert_keyed(
        self, database: peewee.Database, sql: _sql.KeyedSql, rows: Sequence[Sequence[Any]],
        keys: Sequence[Optional[str]], replace: Optional[_sql.Replacing],
        written: Optional[_sql.Written] = None,
    ) -> List[int]:
        """One transaction (a savepoint inside one already open) holding an
        advisory lock on each key, so two processes recording one key at once
        give one row. The locks are taken in one order (sorted), so two
        batches with keys in common never wait for each other in a circle."""
        with self.connection(database) as conn, self.driver.transaction(conn):
            for lock in sorted({advisory_key(f"key:{k}") for k in keys if k is not None}):
                run(conn, "SELECT pg_advisory_xact_lock(%s)", (lock,))
            return _sql.record_all_keyed(conn, sql, rows, keys, replace, written,
                                          self.insert_many)

    def write_transaction(self, conn: Any, name: str) -> ContextManager[None]:
        """A transaction, or a savepoint inside one already open."""
        return self.driver.transaction(conn)

    def insert_many(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> List[int]:
        """Insert ``rows`` in one transaction (a savepoint inside one already
        open); return their ids in order, as ``RETURNING`` gives them."""
        return self.driver.insert_many(conn, sql, rows)

    def copy_rows(
        self, conn: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """``COPY table (columns) FROM STDIN``, in the caller's transaction:
        several times faster than one INSERT per row."""
        names = ", ".join(_sql.quote(_DIALECT_DATABASE, c) for c in columns)
        statement = f"COPY {_sql.quote(_DIALECT_DATABASE, table)} ({names}) FROM STDIN"
        self.driver.copy_rows(conn, statement, rows)

    @classmethod
    def cutoff(cls, conn: Any, days: float) -> Optional[_dt.datetime]:
        """``now() - days`` by the server's clock (or from the instant
        :func:`telemetry_orm.clock.pinned` sets); ``None`` before
        :data:`~telemetry_orm.checks.EARLIEST`, where the instants rows are
        written at begin (no such row is older)."""
        now = clock.pinned_now() or run(conn, "SELECT now()").fetchone()[0]
        try:
            when = to_utc(now) - _dt.timedelta(days=days)
        except OverflowError:  # before year 1
            return None
        return None if when < EARLIEST else when

    @classmethod
    def count_before(cls, conn: Any, model: Type[Execution], when: _dt.datetime) -> int:
        return int(run(conn, *_sql.count_before(model, when)).fetchone()[0])

    def delete_chunk_before(
        self, conn: Any, model: Type[Execution], when: _dt.datetime, limit: int,
        position: Any = None, fold: Optional[Fold] = None,
    ) -> PurgeChunk:
        """Delete up to ``limit`` rows older than ``when`` in one short
        transaction (one statement when there is nothing else to do), after
        ``fold``. Says how many and the seconds it took; fewer than
        ``limit`` ends the purge.

        With ``fold``, the chunk's ids are read once and every statement
        names them: under READ COMMITTED each statement sees rows committed
        since the one before, so a sub-select run twice could pick rows the
        fold did not count."""
        started = time.perf_counter()
        if fold is None:
            cursor = run(conn, *_sql.delete_chunk_before(model, when, limit))
            deleted = int(cursor.rowcount)
            return PurgeChunk(deleted, time.perf_counter() - started, None, deleted < limit)
        with self.driver.transaction(conn):
            run(conn, "SELECT pg_advisory_xact_lock(%s)", (advisory_key("rollup"),))
            picked = run(conn, *_sql.oldest_ids(model, when, limit)).fetchall()
            ids = [row[0] for row in picked]
            if ids:
                rows = model.id.in_(ids)
                fold(conn, rows, max(ids))
                run(conn, *_sql.render(model._meta.database, model.delete().where(rows)))
        return PurgeChunk(len(ids), time.perf_counter() - started, None, len(ids) < limit)

    @classmethod
    def snapshot(cls, database: peewee.Database) -> None:
        """``REPEATABLE READ``: under READ COMMITTED each query of a report
        would see what other sessions committed since the one before (a
        rollup moving rows from one side of the report to the other)."""
        database.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")

    @contextlib.contextmanager
    def fold_transaction(self, conn: Any) -> Iterator[None]:
        """A transaction holding the advisory lock ``rollup``."""
        with self.driver.transaction(conn):
            run(conn, "SELECT pg_advisory_xact_lock(%s)", (advisory_key("rollup"),))
            yield

    def newest_id(self, conn: Any, model: Type[Execution]) -> Optional[int]:
        """Under a ``SHARE`` lock for a moment: it waits for the transactions
        inserting rows to end (an id is given out at insert, so a smaller one
        may otherwise commit after a larger) and keeps new ones out while it
        reads. Waits at most :data:`NEWEST_ID_WAIT_MS` (writers queue behind
        a waiting lock), else ``None``: the rollup leaves the rows it cannot
        be sure of to a later one."""
        try:
            with self.driver.transaction(conn):
                run(conn, f"SET LOCAL lock_timeout = '{NEWEST_ID_WAIT_MS}ms'")
                table = _sql.quote(model._meta.database, model._meta.table_name)
                run(conn, f"LOCK TABLE {table} IN SHARE MODE")
                row = run(conn, *_sql.render(model._meta.database,
                                                model.select(fn.MAX(model.id)))).fetchone()
        except Exception as exc:
            if is_busy(exc):  # the lock_timeout
                return None
            raise
        return int(row[0] or 0)

    @classmethod
    def has_table(cls, conn: Any, name: str) -> bool:
        row = run(conn, "SELECT to_regclass(quote_ident(current_schema()) || '.' || "
                           "quote_ident(%s)) IS NOT NULL", (name,)).fetchone()
        return bool(row[0])

    @classmethod
    def storage(cls, database: peewee.Database, path: str) -> Storage:
        """The table with its indexes; the server's write-ahead log is its own."""
        (size,) = database.execute_sql(
            "SELECT pg_total_relation_size("
            "quote_ident(current_schema()) || '.' || quote_ident(%s))",
            (TABLE_NAME,),
        ).fetchone()
        return Storage(int(size), 0, schema_version(database), "server")


def database_label(database: peewee.Database) -> str:
    """Where an application's database is, for messages: a URL with no
    password, also when the database name is itself a URI or a libpq
    ``key=value`` string (both of which peewee passes to the driver)."""
    name = str(database.database)
    if "://" in name:
        return safe_url(name)
    if "=" in name:
        # libpq's key = value, a value quoted with '…' (\' and \\ escaped) or bare.
        return "postgresql: " + re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)",
                                       r"\1***", name, flags=re.IGNORECASE)
    params = getattr(database, "connect_params", None) or {}
    user = params.get("user")
    where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
    return f"postgresql://{user + '@' if user else ''}{where}/{name}"


# Only for building SQL text in PostgreSQL's dialect (never connected).
_DIALECT_DATABASE = peewee.PostgresqlDatabase(None)



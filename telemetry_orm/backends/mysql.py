"""What is particular to MySQL and MariaDB: InnoDB tables in ``utf8mb4``,
``DATETIME(6)`` kept in UTC, indexed text as ``VARCHAR(n)`` (longer values
refused, never cut; see :mod:`.mysql_schema`), set-up, keyed writes and
folds serialised with ``GET_LOCK``, and PyMySQL's connections given
``execute()``.

Needs the ``mysql`` extra (the PyMySQL driver):
``pip install 'telemetry_orm[mysql]'``. See docs/mysql.md.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import math
from typing import Any, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple, Type
from urllib.parse import unquote, urlsplit

import peewee
from peewee import SQL, Case, Cast, ColumnBase, NodeList, fn
from playhouse.pool import MaxConnectionsExceeded, PooledDatabase

from .. import clock, rollups
from .. import sql as _sql
from ..checks import EARLIEST, to_utc
from ..errors import DatabaseError, StoreBusyError, TelemetryError, TelemetryValidationError
from ..schema import MIGRATIONS, SCHEMA_VERSION, TABLE_NAME, Execution, format_timestamp, is_current
from ..zones import Offset
from . import mysql_schema as _schema
from .base import (
    BUSY_TIMEOUT_MS,
    LOG_SIZE_LIMIT,
    Backend,
    ReportDialect,
    Storage,
    in_transaction_error,
    operation_error,
)
from .mysql_schema import TABLE_SETTINGS, TEXT_LENGTHS, check_row

__all__ = ["TEXT_LENGTHS", "MySQLBackend", "lock_name", "safe_url"]

try:
    import pymysql  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - depends on the environment
    pymysql = None

#: The session settings of every connection a store opens itself: strict
#: (a value that does not fit fails instead of being cut).
SQL_MODE = ("STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,ERROR_FOR_DIVISION_BY_ZERO,"
            "NO_ZERO_DATE,NO_ZERO_IN_DATE")

#: Server error numbers meaning "another transaction is in the way; retry".
BUSY_ERRORS = frozenset({
    1205,  # ER_LOCK_WAIT_TIMEOUT
    1213,  # ER_LOCK_DEADLOCK
    1040,  # ER_CON_COUNT_ERROR: too many connections
    3572,  # ER_LOCK_NOWAIT (MySQL 8)
    1969,  # lock wait with NOWAIT (MariaDB)
})

#: Client error numbers meaning the server went away.
GONE_ERRORS = frozenset({2003, 2006, 2013, 2055, 4031})

#: Defaults for connection settings the URL does not give.
CONNECT_DEFAULTS: Dict[str, Any] = {
    "connect_timeout": 10, "max_connections": 20, "timeout": 10, "charset": "utf8mb4"}

#: Rows per multi-row INSERT of a batch (well under ``max_allowed_packet``).
BATCH_ROWS = 1000

_IN_TRANS = 1  # SERVER_STATUS_IN_TRANS


def errno(exc: BaseException) -> Optional[int]:
    """The server's or client's error number of a driver error, also when
    peewee has wrapped it."""
    seen: List[BaseException] = []
    pending: List[Optional[BaseException]] = [exc]
    while pending:
        current = pending.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        if pymysql is not None and isinstance(current, pymysql.err.MySQLError) \
                and current.args and isinstance(current.args[0], int):
            return int(current.args[0])
        inner = current.args[0] if current.args else None
        wrapped = inner if isinstance(inner, BaseException) else None
        pending.extend([current.__cause__, current.__context__, wrapped])
    return None


def is_busy(exc: BaseException) -> bool:
    """Another transaction is in the way, or every pooled connection stayed busy."""
    return isinstance(exc, MaxConnectionsExceeded) or errno(exc) in BUSY_ERRORS


def lock_name(database: str, name: str) -> str:
    """A ``GET_LOCK`` name for work ``name`` on one database: the server's
    locks are server-wide, and names are at most 64 characters."""
    digest = hashlib.sha1(f"{database}\x00{name}".encode()).hexdigest()[:40]
    return f"telemetry_orm:{digest}"


class _Statements:
    """``execute()`` as sqlite3's and psycopg's connections have it (what
    the engine-neutral SQL of :mod:`telemetry_orm.sql` runs on), and
    whether a transaction is open."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cursor = self.cursor()  # type: ignore[attr-defined]
        # No parameters: no %-formatting either (a literal % stays as it is).
        cursor.execute(sql, tuple(params) if params else None)
        return cursor

    @property
    def in_transaction(self) -> bool:
        return bool(self.server_status & _IN_TRANS)  # type: ignore[attr-defined]


if pymysql is not None:
    class Connection(_Statements, pymysql.connections.Connection):
        """The connections of a store's own database."""
else:  # pragma: no cover - depends on the environment
    Connection = None  # type: ignore[assignment,misc]


class Borrowed(_Statements):
    """An application's PyMySQL connection, with :class:`_Statements`."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def _utc_format(pattern: str) -> Any:
    # DATETIME has no zone: it holds UTC, so the label is UTC's.
    return lambda column: fn.DATE_FORMAT(column, pattern)


def _as_datetime(pattern: str) -> Any:
    return lambda column: Cast(fn.DATE_FORMAT(column, pattern), "DATETIME")


def _local(column: ColumnBase, offsets: Sequence[Offset]) -> ColumnBase:
    # created_at + the offset in force at that instant: the zone's wall time,
    # from Python's zone database (never CONVERT_TZ and the server's tables).
    seconds: Any = offsets[0].seconds if len(offsets) == 1 else Case(None, [
        (column < format_timestamp(until), seconds)
        for until, seconds in offsets[:-1] if until is not None], offsets[-1].seconds)
    return NodeList((SQL("("), column, SQL("+ INTERVAL"), seconds, SQL("SECOND)")))


def _bucket(column: ColumnBase) -> ColumnBase:
    # rollups.bucket() in SQL: ceil(ln(d) / ln(γ)) + 1, and 0 for 0 ms.
    return NodeList((SQL("CASE WHEN"), column, SQL("<= 0 THEN 0 ELSE CAST(CEIL(LN("), column,
                     SQL(f") / {rollups.LOG_GAMMA!r} - 1e-9) AS SIGNED) + 1 END")))


def _upsert(query: Any, key: Sequence[Any], fields: Sequence[Any], add: bool = False) -> Any:
    # ON DUPLICATE KEY UPDATE: the key is whichever unique index conflicts;
    # VALUES(column) is the value the INSERT brought. Nothing to update:
    # INSERT IGNORE (the store's values are checked before, so it only
    # ever ignores the duplicate).
    if not fields:
        return query.on_conflict_ignore()
    return query.on_conflict(update={
        field: field + fn.VALUES(field) if add else fn.VALUES(field) for field in fields})


#: MySQL's report SQL.
DIALECT = ReportDialect(
    buckets={
        "day": _utc_format("%Y-%m-%d"),
        "week": _utc_format("%x-W%v"),  # the ISO year and week, as on SQLite
        "month": _utc_format("%Y-%m"),
    },
    local=_local,
    hour=_as_datetime("%Y-%m-%d %H:00:00"),
    month=_as_datetime("%Y-%m-01"),
    day=_as_datetime("%Y-%m-%d"),
    bucket=_bucket,
    as_text=_utc_format("%Y-%m-%d %H:%i:%s"),
    # In DECIMAL, which does not overflow (a SUM of doubles may).
    total=lambda column: fn.SUM(Cast(column, "DECIMAL(65, 9)")),
    upsert=_upsert,
)


class _Direct(peewee.MySQLDatabase):
    """Connects with :class:`Connection` and sets the store's session."""

    def __init__(self, *args: Any, session: Sequence[str] = (), **kwargs: Any) -> None:
        self._session = tuple(session)
        super().__init__(*args, **kwargs)

    def _connect(self) -> Any:
        return Connection(database=self.database, autocommit=True, **self.connect_params)

    def _initialize_connection(self, conn: Any) -> None:
        # peewee calls this at every connect(), a pooled one's too: once is enough.
        if getattr(conn, "session_set", False):
            return
        with conn.cursor() as cursor:
            for statement in self._session:
                cursor.execute(statement)
        conn.session_set = True


class _Database(PooledDatabase, _Direct):
    """A store's own pool. A connection handed out again is not pinged
    first (a round trip per record): one the server dropped fails its next
    statement, as a gone server, and is not handed out again."""

    def _is_closed(self, conn: Any) -> bool:
        return not conn.open

    def _can_reuse(self, conn: Any) -> bool:
        try:
            if conn.in_transaction:  # left open by a failure: not for the next user
                conn.rollback()
        except Exception:
            return False
        return True


def safe_url(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{host}").geturl()


def _parse(url: str) -> Tuple[str, Dict[str, Any]]:
    parts = urlsplit(url)
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise DatabaseError(f"{safe_url(url)}: the URL names no database (…/dbname)")
    params: Dict[str, Any] = dict(CONNECT_DEFAULTS)
    params.update({"host": parts.hostname or "localhost", "port": parts.port or 3306})
    if parts.username:
        params["user"] = unquote(parts.username)
    if parts.password is not None:
        params["password"] = unquote(parts.password)
    for pair in filter(None, parts.query.split("&")):
        key, _, value = pair.partition("=")
        value = unquote(value)
        if key in ("max_connections", "timeout", "stale_timeout", "connect_timeout", "port"):
            if not value.isdigit() or (key == "max_connections" and int(value) < 1):
                raise TelemetryValidationError(
                    key, f"in the URL must be a whole number >= "
                    f"{1 if key == 'max_connections' else 0}, got {value!r}")
            params[key] = int(value)
        else:
            params[key] = value
    return name, params


def _plain(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        return to_utc(value).replace(tzinfo=None)
    return value


class MySQLBackend(Backend):
    """The MySQL/MariaDB part of a store (see :class:`~telemetry_orm.backends.base.Backend`)."""

    name = "mysql"
    dialect = DIALECT
    sql_database = peewee.MySQLDatabase(None)
    driver_errors: Tuple[Type[BaseException], ...] = (peewee.PeeweeException,
                                                      MaxConnectionsExceeded)
    check_row = staticmethod(check_row)
    #: InnoDB's INSERT … SELECT of a fold locks the rows it reads, and a
    #: writer recording meanwhile waited up to 42 ms at the servers' 20x
    #: (16 ms at 1x, 24 ms at 5x; 200,000 rows, one run each): shorter
    #: steps here, for about the same time (7.96 s at 20x, 9.42 s at 5x).
    fold_scale = 5
    current_schema = "DATABASE()"
    column = staticmethod(_schema.column)

    @classmethod
    def from_location(cls, location: str, *, busy_timeout: int = BUSY_TIMEOUT_MS,
                      log_size_limit: int = LOG_SIZE_LIMIT) -> MySQLBackend:
        """A ``mysql://`` or ``mariadb://`` URL; ``busy_timeout`` becomes the
        sessions' ``innodb_lock_wait_timeout`` (whole seconds, at least 1)."""
        return cls(location, busy_timeout=busy_timeout)

    def __init__(self, url: str, *, busy_timeout: int = BUSY_TIMEOUT_MS) -> None:
        self.url = url
        self.busy_timeout = busy_timeout
        self.path = safe_url(url)
        if pymysql is None:
            raise DatabaseError(f"{self.path}: MySQL needs the PyMySQL driver: "
                                "pip install 'telemetry_orm[mysql]'")
        self.driver_errors = (pymysql.err.MySQLError, *type(self).driver_errors)
        self._database: Optional[peewee.Database] = None
        self._schema: Optional[str] = None
        #: How a batch learns its ids (see :meth:`insert_many`), once known.
        self._returning: Optional[bool] = None
        self._consecutive = False

    @classmethod
    def from_database(cls, database: peewee.Database, *, configure: bool = False,
                      busy_timeout: int = BUSY_TIMEOUT_MS,
                      log_size_limit: int = LOG_SIZE_LIMIT) -> MySQLBackend:
        """A store on an application's ``MySQLDatabase`` (plain or pooled)
        driven by PyMySQL. Its sessions keep the application's settings:
        the store's SQL depends on neither their time zone nor ``sql_mode``
        (it refuses long text itself)."""
        driver = getattr(peewee, "mysql", None)
        if driver is None or getattr(driver, "__name__", "") != "pymysql":
            raise TelemetryValidationError(
                "database", f"{type(database).__name__} is driven by "
                f"{getattr(driver, '__name__', 'no driver')}; the store needs PyMySQL: "
                "pip install 'telemetry_orm[mysql]'")
        backend = cls("mysql://", busy_timeout=busy_timeout)
        backend.borrowed, backend._database = True, database
        params = getattr(database, "connect_params", {}) or {}
        user = params.get("user")
        where = f"{params.get('host') or 'localhost'}:{params.get('port') or 3306}"
        backend.path = f"mysql://{user + '@' if user else ''}{where}/{database.database}"
        return backend

    def _session(self, *, readonly: bool = False) -> List[str]:
        # UTC (nothing reads the server's zone tables), strict, and READ
        # COMMITTED (as on PostgreSQL: a fold's INSERT … SELECT takes no gap
        # locks on the rows writers append next to).
        seconds = max(1, math.ceil(self.busy_timeout / 1000))
        statements = [f"SET time_zone = '+00:00', sql_mode = '{SQL_MODE}', "
                      f"innodb_lock_wait_timeout = {seconds}",
                      "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"]
        if readonly:
            statements.append("SET SESSION TRANSACTION READ ONLY")
        return statements

    def open(self) -> peewee.Database:
        """A pooled database for the URL (nothing connected yet), or an
        application's own database as it is."""
        if self._database is not None:
            return self._database
        name, params = _parse(self.url)
        database: peewee.Database = _Database(name, session=self._session(), **params)
        return database

    def open_readonly(self, *, purpose: str = "read") -> peewee.Database:
        """A database whose session can only read, connected once to fail
        early, its telemetry table checked for ``purpose``."""
        name, params = _parse(self.url)
        for pool_only in ("max_connections", "timeout", "stale_timeout"):
            params.pop(pool_only, None)
        database: Any = _Database(name, session=self._session(readonly=True),
                                  max_connections=1, **params)
        try:
            database.connect()
            _schema.check(self.path, database, purpose)
        except self.driver_errors as exc:
            database.close_all()
            raise self.describe(exc) from exc
        except TelemetryError:
            database.close_all()
            raise
        return database  # type: ignore[no-any-return]

    @classmethod
    def in_transaction(cls, database: peewee.Database) -> bool:
        if database.is_closed():
            return False
        return bool(database.connection().server_status & _IN_TRANS)

    @classmethod
    def statements(cls, database: peewee.Database) -> Any:
        """The thread's connection; an application's wrapped for ``execute()``."""
        conn = database.connection()
        return conn if isinstance(conn, _Statements) else Borrowed(conn)

    def prepare(self, database: peewee.Database, model: Type[Execution]) -> None:
        """Check the server and the schema, and create or upgrade it under
        the lock ``schema`` (DDL commits at once on MySQL, so each step is
        written to be run again)."""
        try:
            with self.connection(database):
                _schema.check_server(self.path, database)
                version, columns = _schema.check(self.path, database, "write")
                if not is_current(version, columns):
                    if self.borrowed and self.in_transaction(database):
                        raise in_transaction_error(self.path, "create or upgrade its tables")
                    with self.exclusive_transaction(database, "schema"):
                        version, columns = _schema.check(self.path, database, "write")
                        if not is_current(version, columns):
                            for step in MIGRATIONS[version:] if columns else MIGRATIONS:
                                step(database, model, columns)
                                columns = _schema.table_columns(database)
                            _schema.write_version(database, SCHEMA_VERSION)
                _schema.check_engine(self.path, database)
        except self.driver_errors as exc:
            raise self.describe(exc) from exc

    @contextlib.contextmanager
    def exclusive_transaction(self, database: peewee.Database, name: str) -> Iterator[None]:
        """A transaction inside the named lock ``name`` of this database:
        taken before the transaction begins and released after it ends, so
        the next holder's reads see what this one committed."""
        with self.connection(database) as conn, self._locked(conn, [name]), \
                database.atomic():
            yield

    @contextlib.contextmanager
    def _locked(self, conn: Any, names: Sequence[str]) -> Iterator[None]:
        if self._schema is None:
            self._schema = str(conn.execute("SELECT DATABASE()").fetchone()[0])
        held: List[str] = []
        try:
            for name in sorted(set(names)):
                lock = lock_name(self._schema, name)
                (got,) = conn.execute("SELECT GET_LOCK(%s, %s)",
                                      (lock, self.busy_timeout / 1000)).fetchone()
                if got != 1:
                    raise StoreBusyError(
                        f"{self.path}: database is busy (another connection held the lock "
                        f"{name!r} longer than the busy timeout); nothing was written")
                held.append(lock)
            yield
        finally:
            for lock in held:
                with contextlib.suppress(Exception):
                    conn.execute("SELECT RELEASE_LOCK(%s)", (lock,))

    @contextlib.contextmanager
    def _transaction(self, conn: Any, name: str) -> Iterator[None]:
        # A transaction, or a savepoint inside one already open.
        nested = conn.in_transaction
        conn.query(f"SAVEPOINT {name}" if nested else "BEGIN")
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                conn.query(f"ROLLBACK TO SAVEPOINT {name}" if nested else "ROLLBACK")
            raise
        conn.query(f"RELEASE SAVEPOINT {name}" if nested else "COMMIT")

    def write_transaction(self, conn: Any, name: str) -> ContextManager[None]:
        """A transaction, or the savepoint ``name`` inside one open."""
        return self._transaction(conn, name)

    @contextlib.contextmanager
    def fold_transaction(self, conn: Any) -> Iterator[None]:
        """A transaction inside the lock ``rollup`` (a savepoint in one open)."""
        with self._locked(conn, ["rollup"]), self._transaction(conn, "telemetry_fold"):
            yield

    def describe(self, exc: BaseException) -> TelemetryError:
        """A driver error met while opening, explained."""
        if errno(exc) in GONE_ERRORS:
            return DatabaseError(f"{self.path}: cannot reach the MySQL server ({exc})")
        return super().describe(exc)

    def is_busy(self, exc: BaseException) -> bool:
        return is_busy(exc)

    def translate(self, exc: BaseException) -> TelemetryError:
        number = errno(exc)
        if number == 1213:
            return StoreBusyError(
                f"{self.path}: deadlock: this transaction and another waited for each other and "
                f"the server rolled this one back; nothing was written: retry it ({exc})")
        if number in GONE_ERRORS:
            return DatabaseError(f"{self.path}: the MySQL server has gone away or cannot be "
                                 f"reached ({exc}); nothing was written")
        return operation_error(self.path, exc, busy=is_busy(exc))

    def insert_one(self, database: peewee.Database, sql: str, params: Sequence[Any]) -> int:
        # The hot path: a cursor of the driver's own, no wrapper.
        opened = database.connect(reuse_if_open=True)
        try:
            with database.connection().cursor() as cursor:
                cursor.execute(sql, params)
                return int(cursor.lastrowid)
        finally:
            if opened:
                database.close()

    def insert_keyed(
        self, database: peewee.Database, sql: _sql.KeyedSql, rows: Sequence[Sequence[Any]],
        keys: Sequence[Optional[str]], replace: Optional[_sql.Replacing],
        written: Optional[_sql.Written] = None,
    ) -> List[int]:
        """One transaction inside a lock per key (sorted: two batches never
        wait for each other in a circle), so racing writers give one row."""
        names = [f"key:{k}" for k in keys if k is not None]
        with self.connection(database) as conn, self._locked(conn, names), \
                database.atomic():
            return _sql.record_all_keyed(conn, sql, rows, keys, replace, written,
                                          self.insert_many)

    def _uses_returning(self, conn: Any) -> bool:
        """MariaDB 10.5 answers ``INSERT … RETURNING``: every id, in order.
        Else the ids of one multi-row INSERT are consecutive only when
        ``innodb_autoinc_lock_mode`` is 0 or 1 (not 2, MySQL 8's default)
        and the increment is 1."""
        if self._returning is None:
            version, mode, step = conn.execute(
                "SELECT VERSION(), @@innodb_autoinc_lock_mode, @@auto_increment_increment"
            ).fetchone()
            numbers = tuple(int(p) for p in str(version).split("-")[0].split(".")[:2])
            self._returning = "mariadb" in str(version).lower() and numbers >= (10, 5)
            self._consecutive = int(mode) < 2 and int(step) == 1
        return self._returning

    def insert_many(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> List[int]:
        """Insert ``rows`` in one transaction (a savepoint inside one
        already open); return their ids in order."""
        ids: List[int] = []
        returning = self._uses_returning(conn)
        head, _, marks = sql.partition(" VALUES ")
        with self._transaction(conn, "telemetry_batch"), conn.cursor() as cursor:
            for start in range(0, len(rows), BATCH_ROWS):
                part = rows[start:start + BATCH_ROWS]
                if not (returning or self._consecutive):
                    for row in part:
                        cursor.execute(sql, row)
                        ids.append(int(cursor.lastrowid))
                    continue
                statement = f"{head} VALUES {', '.join([marks] * len(part))}"
                flat = [value for row in part for value in row]
                if returning:
                    cursor.execute(f"{statement} RETURNING id", flat)
                    ids.extend(int(r[0]) for r in cursor.fetchall())
                else:
                    cursor.execute(statement, flat)
                    first = int(cursor.lastrowid)
                    ids.extend(range(first, first + len(part)))
        return ids

    def copy_rows(self, conn: Any, table: str, columns: Sequence[str],
                  rows: Sequence[Sequence[Any]]) -> None:
        """Multi-row INSERTs, within the caller's transaction."""
        names = ", ".join(_sql.quote(self.sql_database, c) for c in columns)
        marks = "(" + ", ".join(["%s"] * len(columns)) + ")"
        with conn.cursor() as cursor:
            for start in range(0, len(rows), BATCH_ROWS):
                part = rows[start:start + BATCH_ROWS]
                cursor.execute(
                    f"INSERT INTO {_sql.quote(self.sql_database, table)} ({names}) VALUES "
                    f"{', '.join([marks] * len(part))}",
                    [_plain(value) for row in part for value in row])

    @classmethod
    def cutoff(cls, conn: Any, days: float) -> Optional[_dt.datetime]:
        """``UTC_TIMESTAMP(6) - days`` by the server's clock (or the pinned
        instant); ``None`` before :data:`~telemetry_orm.checks.EARLIEST`."""
        now = clock.pinned_now()
        if now is None:
            now = conn.execute("SELECT UTC_TIMESTAMP(6)").fetchone()[0].replace(
                tzinfo=_dt.timezone.utc)
        try:
            when = to_utc(now) - _dt.timedelta(days=days)
        except OverflowError:
            return None
        return None if when < EARLIEST else when

    @contextlib.contextmanager
    def locking_transaction(self, database: peewee.Database) -> Iterator[None]:
        """A ``READ COMMITTED`` transaction: InnoDB's default (``REPEATABLE
        READ``) would read, after a row lock, the snapshot of the first read,
        which can predate the lock's previous holder's commit."""
        if not self.in_transaction(database):  # chosen before a transaction only
            database.execute_sql("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        # peewee's: a write through the database inside (a record's) must
        # know it is in a transaction, or peewee commits after it.
        with database.atomic():
            yield

    @classmethod
    def snapshot(cls, database: peewee.Database) -> None:
        """One snapshot for the transaction just begun: ``REPEATABLE READ``
        can only be chosen before a transaction starts, so the empty one is
        ended and a consistent-snapshot one begun in its place."""
        database.execute_sql("COMMIT")
        database.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        database.execute_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT")

    def newest_id(self, conn: Any, model: Type[Execution]) -> Optional[int]:
        """The largest id such that no smaller one can still be committed.

        An id is given out at insert, so a smaller one may commit after a
        larger. The ids past those the rollups counted are read with a
        locking read that does not wait: a row still being written (its
        insert's lock held) makes it fail at once, and the rollup leaves the
        rows it cannot be sure of to a later one (``None``)."""
        table = _sql.quote(self.sql_database, model._meta.table_name)
        after = 0
        if self.has_table(conn, rollups.STATE_TABLE):
            row = conn.execute(f"SELECT counted_ids FROM "
                               f"{_sql.quote(self.sql_database, rollups.STATE_TABLE)} "
                               "WHERE id = 1").fetchone()
            after = int(row[0]) if row else 0
        # MariaDB's spelling, and MySQL 8's.
        share = ("LOCK IN SHARE MODE NOWAIT" if "mariadb" in str(conn.server_version).lower()
                 else "FOR SHARE NOWAIT")
        try:
            with self._transaction(conn, "telemetry_newest"):
                # COUNT(*) makes it read (and lock) every row of the range,
                # not only the last one, which MAX alone would.
                row = conn.execute(f"SELECT MAX(id), COUNT(*) FROM {table} WHERE id > %s "
                                   f"{share}", (after,)).fetchone()
        except Exception as exc:
            if is_busy(exc):
                return None
            raise
        if row[0] is not None:
            return int(row[0])
        return int(conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0])

    @classmethod
    def storage(cls, database: peewee.Database, path: str) -> Storage:
        """The table with its indexes; the server's redo log is its own."""
        row = database.execute_sql(
            "SELECT COALESCE(data_length, 0) + COALESCE(index_length, 0) "
            "FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = %s",
            (TABLE_NAME,)).fetchone()
        return Storage(int(row[0]) if row else 0, 0, _schema.schema_version(database), "server")


# Every table the engine's column() rebuilt (all of them) is InnoDB in utf8mb4.
for _mine, _base in zip(
        (MySQLBackend.model_base, MySQLBackend.key_model, MySQLBackend.label_model,
         *MySQLBackend.side_models, *MySQLBackend.rollup_models),
        (Backend.model_base, Backend.key_model, Backend.label_model, *Backend.side_models,
         *Backend.rollup_models),
        strict=True):
    assert _mine is not _base, _base
    _mine._meta.table_settings = TABLE_SETTINGS

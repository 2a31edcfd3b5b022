"""The two drivers a PostgreSQL store speaks: psycopg 3 and psycopg2.

Everything else in :mod:`telemetry_orm.backends.postgres` is the same SQL on
either; what differs is here, on one small :class:`Driver` per driver: the
peewee database classes that use it, how a transaction, a batch insert and
``COPY`` are spelled, and how to read a connection's transaction status.
A driver that is not installed is still described (its ``missing`` says
which extra brings it), so that choosing it fails with that sentence.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import itertools
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Type

import peewee

try:
    import psycopg
except ImportError:  # pragma: no cover - depends on the environment
    psycopg = None  # type: ignore[assignment]

try:
    import psycopg2
    import psycopg2.extensions
except ImportError:  # pragma: no cover - depends on the environment
    psycopg2 = None

#: Names of savepoints, unique within a process.
_SAVEPOINTS = itertools.count(1)


def run(conn: Any, sql: str, params: Optional[Sequence[Any]] = None) -> Any:
    """Run ``sql`` on a connection of either driver; return its cursor
    (psycopg2's ``execute`` returns nothing, psycopg 3's the cursor)."""
    cursor = conn.cursor()
    cursor.execute(sql, params)
    return cursor


class Driver:
    """What one driver spells its own way (see the module's docstring)."""

    #: Its name, as in a URL's ``postgresql+<name>://``.
    name = ""
    #: The ``pip`` extra that installs it.
    extra = ""
    #: Its base error class, when installed.
    errors: Tuple[Type[BaseException], ...] = ()
    #: Database classes for the store's own URLs (``None``: not available).
    plain: Any = None
    pooled: Any = None
    #: Keyword arguments those classes need to use this driver.
    options: Dict[str, Any] = {}

    def missing(self) -> Optional[str]:
        """Why this driver cannot be used here (with what to install), or ``None``."""
        raise NotImplementedError

    def drives(self, database: peewee.Database) -> bool:
        """Whether an application's ``database`` connects with this driver."""
        raise NotImplementedError

    def idle(self, conn: Any) -> bool:
        """Whether ``conn`` is outside any transaction."""
        raise NotImplementedError

    def connection(self, conn: Any) -> Any:
        """``conn`` as the store's SQL uses it: with ``execute(sql, params)``
        returning a cursor (as sqlite3's and psycopg 3's connections have)."""
        return conn

    def transaction(self, conn: Any) -> contextlib.AbstractContextManager[Any]:
        """A transaction on ``conn``, or a savepoint inside one already open."""
        raise NotImplementedError

    def insert_many(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> List[int]:
        """Run the ``INSERT … RETURNING id`` ``sql`` for each row, in one
        transaction (a savepoint inside one already open); the ids in order."""
        raise NotImplementedError

    def copy_rows(self, conn: Any, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        """Feed ``rows`` to ``COPY … FROM STDIN`` (``statement``)."""
        raise NotImplementedError


class Psycopg3(Driver):
    """psycopg 3: ``conn.transaction()``, ``executemany(returning=True)``, ``cursor.copy``."""

    name = "psycopg"
    extra = "postgres"

    def __init__(self) -> None:
        if psycopg is not None:
            self.errors = (psycopg.Error,)
        if hasattr(peewee, "Psycopg3Adapter"):
            # peewee 4 speaks psycopg 2 and 3; ask for 3 even when both are installed.
            from playhouse.pool import PooledPostgresqlDatabase

            self.plain, self.pooled = peewee.PostgresqlDatabase, PooledPostgresqlDatabase
            self.options = {"prefer_psycopg3": True}
        elif psycopg is not None:
            # peewee 3.19 drives psycopg 3 through database classes of its own;
            # 3.17 and 3.18 have none (the extra asks for 3.19).
            from playhouse import pool

            with contextlib.suppress(ImportError):
                from playhouse.psycopg3_ext import Psycopg3Database

                self.plain = Psycopg3Database
            self.pooled = getattr(pool, "PooledPsycopg3Database", None)

    def missing(self) -> Optional[str]:
        if psycopg is None:
            other = ("; psycopg2 is installed: a postgresql+psycopg2:// URL uses it"
                     if psycopg2 is not None else "")
            return ("PostgreSQL needs the psycopg driver: pip install "
                    f"'telemetry_orm[postgres]'{other}")
        if self.pooled is None:  # pragma: no cover - peewee 3.17 / 3.18
            return ("PostgreSQL with psycopg 3 needs peewee >= 3.19: "
                    "pip install 'telemetry_orm[postgres]'")
        return None

    def drives(self, database: peewee.Database) -> bool:
        adapter_class = getattr(peewee, "Psycopg3Adapter", None)
        if adapter_class is not None:
            return isinstance(getattr(database, "_adapter", None), adapter_class)
        return self.plain is not None and isinstance(database, self.plain)

    def idle(self, conn: Any) -> bool:
        return bool(conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE)

    def transaction(self, conn: Any) -> contextlib.AbstractContextManager[Any]:
        return conn.transaction()  # type: ignore[no-any-return]

    def insert_many(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> List[int]:
        ids: List[int] = []
        with conn.transaction(), conn.cursor() as cursor:
            cursor.executemany(sql, rows, returning=True)
            while True:
                ids.append(int(cursor.fetchone()[0]))
                if not cursor.nextset():
                    break
        return ids

    def copy_rows(self, conn: Any, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        with conn.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)


if psycopg2 is not None:

    class _Psycopg2Connection(psycopg2.extensions.connection):
        """A psycopg2 connection with psycopg 3's ``execute()``: the store's
        own connections are made of this class, so that code handed
        ``database.connection()`` runs on either driver."""

        def execute(self, sql: str, params: Optional[Sequence[Any]] = None) -> Any:
            return run(self, sql, params)


class _Executing:
    """An application's psycopg2 connection (of its own class) with
    ``execute()`` added, for the length of one operation of the store."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Optional[Sequence[Any]] = None) -> Any:
        return run(self.raw, sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class Psycopg2(Driver):
    """psycopg2: transactions and savepoints as SQL, ``copy_expert``, and
    the transaction status from ``get_transaction_status()``."""

    name = "psycopg2"
    extra = "postgres2"

    def __init__(self) -> None:
        if psycopg2 is None:
            return
        self.errors = (psycopg2.Error,)
        # Both peewee 3 and 4 use psycopg2 for these when it is installed
        # (peewee 4 unless prefer_psycopg3); missing() refuses when it is not.
        from playhouse.pool import PooledPostgresqlDatabase

        self.plain, self.pooled = peewee.PostgresqlDatabase, PooledPostgresqlDatabase
        self.options = {"connection_factory": _Psycopg2Connection}

    def missing(self) -> Optional[str]:
        if psycopg2 is None:
            return ("PostgreSQL through psycopg2 needs the psycopg2 driver: "
                    "pip install 'telemetry_orm[postgres2]'")
        return None

    def drives(self, database: peewee.Database) -> bool:
        adapter_class = getattr(peewee, "Psycopg2Adapter", None)
        if adapter_class is not None:
            return isinstance(getattr(database, "_adapter", None), adapter_class)
        # peewee 3: every PostgresqlDatabase but psycopg3_ext's is psycopg2's.
        return not PSYCOPG3.drives(database)

    def idle(self, conn: Any) -> bool:
        status = conn.get_transaction_status()
        return bool(status == psycopg2.extensions.TRANSACTION_STATUS_IDLE)

    def connection(self, conn: Any) -> Any:
        return conn if hasattr(conn, "execute") else _Executing(conn)

    @contextlib.contextmanager
    def transaction(self, conn: Any) -> Iterator[None]:
        # peewee runs psycopg2 in autocommit mode: BEGIN starts a transaction.
        if self.idle(conn):
            begin, end, undo = "BEGIN", ["COMMIT"], ["ROLLBACK"]
        else:
            name = f"telemetry_orm_{next(_SAVEPOINTS)}"
            begin, end = f"SAVEPOINT {name}", [f"RELEASE SAVEPOINT {name}"]
            undo = [f"ROLLBACK TO SAVEPOINT {name}", *end]
        cursor = conn.cursor()
        cursor.execute(begin)
        try:
            yield
        except BaseException:
            if not conn.closed:
                for statement in undo:
                    cursor.execute(statement)
            raise
        for statement in end:
            cursor.execute(statement)

    def insert_many(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> List[int]:
        ids: List[int] = []
        with self.transaction(conn):
            cursor = conn.cursor()
            for row in rows:
                cursor.execute(sql, row)
                ids.append(int(cursor.fetchone()[0]))
        return ids

    def copy_rows(self, conn: Any, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        text = "".join("\t".join(_copy_value(value) for value in row) + "\n" for row in rows)
        conn.cursor().copy_expert(statement, io.StringIO(text))


#: What COPY's text format escapes in a value.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_value(value: Any) -> str:
    """``value`` in COPY's text format (``\\N`` for NULL)."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, _dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, float):
        return repr(value)  # every digit, and inf / nan as the server reads them
    return str(value).translate(_COPY_ESCAPES)


PSYCOPG3 = Psycopg3()
PSYCOPG2 = Psycopg2()

#: By the name a URL gives (``postgresql+psycopg2://``); psycopg 3 when none.
DRIVERS: Dict[str, Driver] = {driver.name: driver for driver in (PSYCOPG3, PSYCOPG2)}


def driver_for_url(url: str) -> Driver:
    """The driver a URL's scheme names (``postgresql+psycopg2://``), else psycopg 3."""
    scheme = url.partition("://")[0].lower()
    named = [DRIVERS[part] for part in scheme.split("+")[1:] if part in DRIVERS]
    return named[0] if named else PSYCOPG3


def driver_of(database: peewee.Database) -> Driver:
    """The driver an application's PostgreSQL ``database`` connects with."""
    return PSYCOPG3 if PSYCOPG3.drives(database) else PSYCOPG2

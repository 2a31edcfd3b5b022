"""Which engine a location or a peewee database means: the scheme registry.

Like ``playhouse.db_url``'s ``schemes``: each engine is registered once,
below, with the URL schemes and peewee database classes that mean it, and
its backend class named as ``"module:Class"`` so that it is imported only
when used (SQLite users need no PostgreSQL driver). A location without a
scheme is a SQLite file path. Adding an engine is one module under
``backends/`` and one :func:`register_engine` line (docs/contributing.md).
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from typing import Any, Dict, Optional, Tuple, Type

import peewee

from .backends.base import BUSY_TIMEOUT_MS, LOG_SIZE_LIMIT, Backend
from .errors import DatabaseError, TelemetryValidationError


@dataclasses.dataclass(frozen=True)
class Engine:
    """One registered engine."""

    name: str
    #: ``"package.module:Class"`` of its :class:`~telemetry_orm.backends.base.Backend`.
    backend: str
    #: URL schemes that mean it (lower case).
    schemes: Tuple[str, ...]
    #: Names of the peewee database classes (and their subclasses) that mean it.
    databases: Tuple[str, ...]
    #: The ``pip`` extra its driver comes with ("" when none is needed).
    extra: str = ""

    def backend_class(self) -> Type[Backend]:
        """The backend class, imported now."""
        module, _, name = self.backend.partition(":")
        try:
            cls: Type[Backend] = getattr(importlib.import_module(module), name)
        except ImportError as exc:
            hint = f": pip install 'telemetry_orm[{self.extra}]'" if self.extra else ""
            raise DatabaseError(f"the {self.name} engine cannot be loaded ({exc}){hint}") from exc
        return cls


#: Every engine, by name, in the order registered.
ENGINES: Dict[str, Engine] = {}

#: The engine of a location without a URL scheme (a file path).
DEFAULT_ENGINE = "sqlite"

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def register_engine(
    name: str, backend: str, *, schemes: Tuple[str, ...], databases: Tuple[str, ...],
    extra: str = "",
) -> Engine:
    """Register (or replace) an engine; return it."""
    engine = Engine(name, backend, tuple(s.lower() for s in schemes), databases, extra)
    ENGINES[name] = engine
    return engine


register_engine("sqlite", "telemetry_orm.backends.sqlite:SqliteBackend",
                schemes=("sqlite",), databases=("SqliteDatabase",))
#: Subclasses of a registered class that a store cannot use, and why.
UNSUPPORTED_DATABASES: Dict[str, str] = {
    "SqliteQueueDatabase": "its writes go through a queue thread of its own, which a store's "
                           "transactions cannot join; give the store a SqliteDatabase on the "
                           "same file",
    "CockroachDatabase": "CockroachDB has no advisory locks, which the store's schema set-up "
                         "and keys need",
    # playhouse.mysql_ext's, and their pooled subclasses.
    "MySQLConnectorDatabase": "it connects through mysql-connector, and the store speaks "
                              "PyMySQL; give the store a MySQLDatabase on the same server",
    "MariaDBConnectorDatabase": "it connects through the mariadb connector, and the store "
                                "speaks PyMySQL; give the store a MySQLDatabase on the same "
                                "server",
}
# "+pool" as peewee spells it; a PostgreSQL store always pools its connections.
# "+psycopg2" picks that driver (psycopg 3 otherwise; extra postgres2).
register_engine("postgresql", "telemetry_orm.backends.postgres:PostgresBackend",
                schemes=tuple(f"{name}{driver}{pool}" for name in ("postgresql", "postgres")
                              for driver in ("", "+psycopg2") for pool in ("", "+pool")),
                databases=("PostgresqlDatabase",), extra="postgres")
register_engine("mysql", "telemetry_orm.backends.mysql:MySQLBackend",
                schemes=("mysql", "mariadb"), databases=("MySQLDatabase",), extra="mysql")


def engine_for(location: str) -> Engine:
    """The engine of a path or URL; an unknown URL scheme raises
    :class:`~telemetry_orm.TelemetryValidationError`."""
    match = _URL.match(location)
    if match is None:
        return ENGINES[DEFAULT_ENGINE]
    scheme = match.group(1).lower()
    for engine in ENGINES.values():
        if scheme in engine.schemes:
            return engine
    known = ", ".join(f"{s}://" for e in ENGINES.values() for s in e.schemes[:1])
    raise TelemetryValidationError(
        "db_path", f"unsupported URL scheme {scheme!r}; expected a file path or one of {known} "
        "(postgresql://user:password@host/db, sqlite:///path)",
    )


def backend_for(
    location: str, *, busy_timeout: int = BUSY_TIMEOUT_MS, log_size_limit: int = LOG_SIZE_LIMIT
) -> Backend:
    """The backend for a path, ``':memory:'`` or a database URL (nothing is opened)."""
    if "\x00" in location:
        raise TelemetryValidationError("db_path", "must not contain a NUL character")
    cls = engine_for(location).backend_class()
    return cls.from_location(location, busy_timeout=busy_timeout, log_size_limit=log_size_limit)


def backend_class_of(database: Any) -> Type[Backend]:
    """The backend class of a peewee database (or of what an initialized
    ``DatabaseProxy`` stands for), from its class or a base class; any other
    class raises :class:`~telemetry_orm.TelemetryValidationError` naming it."""
    database = resolve(database)
    names = [cls.__name__ for cls in type(database).__mro__]
    for name in names:
        why = UNSUPPORTED_DATABASES.get(name)
        if why is not None:
            own = type(database).__name__
            what = own if own == name else f"{own} (a {name})"
            raise TelemetryValidationError("database", f"{what} is not supported: {why}")
    for engine in ENGINES.values():
        if set(names).intersection(engine.databases):
            return engine.backend_class()
    known = ", ".join(name for e in ENGINES.values() for name in e.databases)
    raise TelemetryValidationError(
        "database", f"{type(database).__name__} databases are not supported (expected a "
        f"peewee {known}, a subclass such as a pooled one, or a DatabaseProxy of one)")


def resolve(database: Any) -> Any:
    """What a ``DatabaseProxy`` stands for (a database as it is); an
    uninitialized proxy raises :class:`~telemetry_orm.DatabaseError`."""
    seen = 0
    while isinstance(database, peewee.DatabaseProxy):
        if database.obj is None:
            raise DatabaseError(
                "the DatabaseProxy is not initialized yet: call proxy.initialize(database) "
                "before the store is first used")
        database, seen = database.obj, seen + 1
        if seen > 16:
            raise DatabaseError("the DatabaseProxy stands for itself")
    return database


def pending(database: Any) -> Optional[str]:
    """Why a peewee database cannot be used yet (an uninitialized
    ``DatabaseProxy``, a database created with ``None`` and not yet
    ``init()``-ed), or ``None`` when it can."""
    try:
        database = resolve(database)
    except DatabaseError as exc:
        return str(exc)
    if getattr(database, "deferred", False):
        return (f"the {type(database).__name__} was created without a name and is not "
                "initialized yet: call database.init(...) before the store is first used")
    return None


def is_database(value: Any) -> bool:
    """Whether ``value`` is a peewee database or ``DatabaseProxy`` (not a location)."""
    return isinstance(value, (peewee.Database, peewee.DatabaseProxy))


def backend_of_database(
    database: Any, *, configure: bool, busy_timeout: int = BUSY_TIMEOUT_MS,
    log_size_limit: int = LOG_SIZE_LIMIT,
) -> Backend:
    """The backend of a store on a peewee database an application owns
    (resolved from its proxy now: see :func:`pending`)."""
    database = resolve(database)
    cls = backend_class_of(database)
    return cls.from_database(database, configure=configure, busy_timeout=busy_timeout,
                             log_size_limit=log_size_limit)

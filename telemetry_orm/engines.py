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
from typing import Dict, Tuple, Type

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
# "+pool" as peewee spells it; a PostgreSQL store always pools its connections.
register_engine("postgresql", "telemetry_orm.backends.postgres:PostgresBackend",
                schemes=("postgresql", "postgres", "postgresql+pool", "postgres+pool"),
                databases=("PostgresqlDatabase",), extra="postgres")


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


def backend_class_of(database: peewee.Database) -> Type[Backend]:
    """The backend class of a peewee database, from its class (or a base class)."""
    names = {cls.__name__ for cls in type(database).__mro__}
    for engine in ENGINES.values():
        if names.intersection(engine.databases):
            return engine.backend_class()
    raise DatabaseError(f"{type(database).__name__} databases are not supported")

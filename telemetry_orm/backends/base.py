"""What a store asks of its database engine: the :class:`Backend` protocol.

:class:`~telemetry_orm.store.PeeweeTelemetryStore` validates, counts and
serialises; everything that differs between engines (opening, schema set-up,
the INSERT, date arithmetic, chunked deletes, checkpoints, what "busy" means)
is one method of a backend. ``backends/sqlite.py`` and ``backends/postgres.py``
are the two implementations.
"""

from __future__ import annotations

from typing import Any, ContextManager, List, Protocol, Sequence, Tuple, Type

import peewee

from ..schema import Execution


class PurgePacer(Protocol):
    """How one purge sizes its chunks and paces them for other writers."""

    #: Rows the next chunk may delete.
    rows: int

    def start(self, conn: Any) -> None:
        """Before the first chunk, on the purging connection."""
        ...

    def after_chunk(self, conn: Any, held: float) -> float:
        """After a chunk that held its locks ``held`` seconds (with the
        connection still reserved): update :attr:`rows` and return the
        seconds to leave other writers before the next chunk."""
        ...

    def finish(self, conn: Any) -> None:
        """After the last chunk (or a failed one)."""
        ...


class Backend(Protocol):
    """The engine-specific part of a store.

    Methods that take ``conn`` get the driver's own connection, as yielded by
    :meth:`connection`; they run one statement or one short transaction.
    """

    #: Short engine name (``"sqlite"``, ``"postgresql"``), for reports and logs.
    name: str
    #: Where the data lives, safe to print (no password).
    path: str
    #: The model class a store binds to its database (columns suited to the engine).
    model_base: Type[Execution]
    #: Driver errors a store turns into :class:`~telemetry_orm.TelemetryError`.
    driver_errors: Tuple[Type[BaseException], ...]

    def open(self) -> peewee.Database:
        """A peewee database for this location (checked, not yet connected)."""
        ...

    def prepare(self, database: peewee.Database, model: Type[Execution]) -> None:
        """Check the database and create or upgrade its schema."""
        ...

    def connection(self, database: peewee.Database) -> ContextManager[Any]:
        """The driver connection to use for one operation of this thread."""
        ...

    def exclusive_transaction(self, database: peewee.Database, name: str) -> ContextManager[None]:
        """A write transaction on ``database``'s connection of this thread that
        no other connection runs work ``name`` in at the same time."""
        ...

    def insert_sql(self, database: peewee.Database) -> str:
        """The INSERT every ``record()`` runs, built once per store."""
        ...

    def insert(self, conn: Any, sql: str, params: Sequence[Any]) -> int:
        """Run ``sql`` with one record's values; return the new row id."""
        ...

    def insert_one(self, database: peewee.Database, sql: str, params: Sequence[Any]) -> int:
        """:meth:`insert` on a connection of its own choosing (the hot path)."""
        ...

    def insert_many(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> List[int]:
        """Run ``sql`` for every row in one transaction (a savepoint inside a
        transaction already open); return the new ids in order."""
        ...

    def copy_rows(
        self, conn: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Insert ``rows`` into ``table`` as fast as the engine allows, within
        the caller's transaction; no ids are returned (bulk loads, migrate)."""
        ...

    def checkpoint(self, conn: Any, mode: str, *, blocking: bool = True) -> Tuple[int, int, int]:
        """Checkpoint the log: (busy, log pages, pages checkpointed).
        ``blocking=False``: wait for readers only briefly."""
        ...

    def cutoff(self, conn: Any, days: float) -> Any:
        """The database clock's "now" minus ``days`` days, as ``created_at`` compares."""
        ...

    def count_before(self, conn: Any, when: Any) -> int:
        """How many rows have ``created_at`` before ``when``."""
        ...

    def delete_chunk_before(self, conn: Any, when: Any, limit: int) -> Tuple[int, float]:
        """Delete up to ``limit`` rows older than ``when`` in one short
        transaction; return how many, and the seconds it held its locks."""
        ...

    def set_autocheckpoint(self, conn: Any, pages: int) -> int:
        """Set the engine's automatic checkpoint on ``conn`` (log pages;
        0 = off); return the previous value."""
        ...

    def purge_pacer(self) -> PurgePacer:
        """A new pacer for one purge."""
        ...

    def is_busy(self, exc: BaseException) -> bool:
        """True when ``exc`` means "another connection holds a lock; retry later"."""
        ...

    def close_all(self, database: peewee.Database) -> None:
        """Close every connection the store opened, in any thread."""
        ...

    def forget_inherited(self, database: peewee.Database) -> None:
        """In a forked child: stop using the parent's connections."""
        ...

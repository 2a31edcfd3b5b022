"""Opening a store's database: its own (from a path or URL), an
application's, or one behind a ``DatabaseProxy`` opened at the first use.

:class:`Opening` makes an :class:`Opened` (the backend, the database, the
bound tables, the engine's upkeep and the hot INSERT) once, under the
store's lock; every part of the store asks it for that state.
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager, Optional, Protocol, Sequence, Type

import peewee

from .. import forking
from ..backends.base import Backend, CheckpointResult, Logger, Upkeep
from ..labels import LabelSql, label_sql
from ..schema import Execution
from ..sql import KeyedSql
from ..tables import Tables, tables_of
from .gate import Gate


class Opened:
    """What exists once a store is open."""

    def __init__(self, backend: Backend, database: peewee.Database, tables: Tables,
                 upkeep: Upkeep, *, side_tables: bool) -> None:
        self.backend = backend
        self.database = database
        self.tables = tables
        self.model: Type[Execution] = tables.executions
        self.upkeep = upkeep
        self.insert_sql = backend.insert_sql(self.model)
        self.insert_one = backend.insert_one
        self.check_row: Optional[Callable[[Sequence[Any]], None]] = backend.check_row
        #: The rollup tables exist (made at open on an application's
        #: database, or at the first rollup or purge).
        self.rolled_up = side_tables
        #: The statements of keyed writes (made at open on an application's
        #: database: looking the tables up at the first keyed record would
        #: read inside the caller's transaction before its write, and on
        #: SQLite a transaction that has read cannot take the write lock
        #: once another connection wrote).
        self.keyed_sql: Optional[KeyedSql] = None
        #: The statements of labels, made as :attr:`keyed_sql` is.
        self.label_sql: Optional[LabelSql] = None
        if side_tables:
            self.keyed_sql = backend.keyed_sql(self.model, *tables.keys[:2])
            self.label_sql = label_sql(tables.labels)

    def in_transaction(self) -> bool:
        """Whether this thread's connection is inside a transaction (asked
        while ``fork()`` waits: an error answers no)."""
        try:
            return self.backend.in_transaction(self.database)
        except Exception:  # noqa: BLE001 - a question asked while fork() waits
            return False


class Host(Protocol):
    """What the parts of a store (writes, purge) use of it."""

    log: Logger
    checkpoint_every: int

    @property
    def path(self) -> str: ...

    @property
    def gate(self) -> Gate: ...

    @property
    def opened(self) -> Opened: ...

    def connection(self, *, locked: bool = True) -> ContextManager[Any]: ...

    def outside_transaction(self, what: str) -> None: ...

    def checkpoint(self, *, truncate: bool = False, wait: bool = True) -> CheckpointResult: ...


class Opening:
    """Opens the store once: at once (:meth:`open`), or at the first use
    with an ``opener`` (a ``DatabaseProxy`` initialized later)."""

    def __init__(self, gate: Gate, host: Any, *,
                 opener: Optional[Callable[[], Backend]] = None) -> None:
        self._gate = gate
        self._host = host  # what the engine's upkeep gets: the store
        self._opener = opener
        self.opened: Optional[Opened] = None

    def open(self, backend: Backend) -> None:
        """Open the store on ``backend`` now."""
        self._open(backend)

    @property
    def lazy(self) -> bool:
        """Whether the store waits for its first use to open."""
        return self._opener is not None

    def get(self) -> Opened:
        """The open state, opening the store now if it is not yet."""
        opened = self.opened
        if opened is not None:
            return opened
        return self.prepare()

    def prepare(self) -> Opened:
        """Open now if not yet (refused once closed)."""
        if self._opener is None and self.opened is not None:
            self._gate.check_open()
            return self.opened
        with self._gate.lock:
            self._gate.check_open()
            opener = self._opener
            if opener is not None:
                self._open(opener())
                self._opener = None
        assert self.opened is not None
        return self.opened

    def _open(self, backend: Backend) -> None:
        """Open the database, set up its schema and the store's state. On
        failure nothing of it is left set (a store on a proxy can try again
        at its next use)."""
        database: peewee.Database = backend.open()
        # A connection opened here for the set-up, on an application's
        # database, is closed after it: the calling thread had none (a
        # pre-fork server's master, a thread that connects per request).
        # Not an in-memory one: closing it would drop the data.
        opened_here = backend.borrowed and database.is_closed() and not backend.memory
        tables = tables_of(database, type(backend))
        upkeep = backend.upkeep(database, self._host)
        # Known to fork() before the first connection opens, and set up
        # under the lock, so a fork never lands in the middle of a schema
        # upgrade.
        forking.track(upkeep, forking.ENGINE)
        forking.track(self._gate, forking.STORE)
        try:
            with self._gate.lock:
                backend.prepare(database, tables.executions)
                if backend.borrowed:
                    # The keys and rollup tables with the schema, not at
                    # their first use: that use may be inside one of the
                    # application's transactions, which might roll them back.
                    tables.create_missing(
                        backend, (*tables.rollups, *tables.keys, tables.labels),
                        outside_transaction="create its keys, labels and rollup tables")
        except BaseException:
            forking.untrack(self._gate)
            forking.untrack(upkeep)
            upkeep.close()
            if opened_here and not database.is_closed() and not database.in_transaction():
                database.close()
            raise
        self._gate.path = backend.path
        opened = Opened(backend, database, tables, upkeep, side_tables=backend.borrowed)
        #: Writes hold the store's lock: not on an application's database
        #: (unless its threads share one connection).
        self._gate.serial = not backend.borrowed or backend.one_connection
        if not self._gate.serial:
            self._gate.let_through = opened.in_transaction
        # Last: a thread that finds it set finds the store open.
        self.opened = opened
        # The original store checkpoints once at start-up (TELEM-08); not
        # inside an application's transaction (it would only be busy).
        if not backend.in_transaction(database):
            self._host.checkpoint()
        if opened_here and not database.is_closed():
            database.close()

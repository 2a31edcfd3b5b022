"""The telemetry tables of one database, bound once: the executions model,
the key tables and the rollup models by name.

Binding in peewee is class-wide, so every database gets model classes of
its own (:func:`~telemetry_orm.schema.bind_model`); making them costs about
a millisecond. :func:`tables_of` makes them once per database and keeps
them, so that the store, reports, rollups, keys and transfer ask one
object instead of each resolving the engine and binding again.

The classes come from the engine's backend class (``model_base``,
``rollup_models``, ``key_model``), so an engine gives its own column types
by subclassing.

>>> import peewee
>>> tables = tables_of(peewee.SqliteDatabase(":memory:"))
>>> tables.executions._meta.table_name, tables.rollup("telemetry_orm_rollups").__name__
('executions', 'Rollup')
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Sequence, Tuple, Type

import peewee

from .backends.base import Backend, ReportDialect, in_transaction_error
from .engines import backend_class_of
from .rollups import RollupModels
from .schema import Execution, M, bind_model, with_columns

#: The bound keys, purged keys and key state models (see :mod:`telemetry_orm.keys`).
KeyTables = Tuple[Any, Any, Any]


class Tables:
    """The telemetry models of ``database``, each bound to it alone.

    ``executions`` is bound at once; the rollup and key models at their
    first use (a report that reads only rows never makes them)."""

    def __init__(self, database: Any,
                 engine: Optional[Type[Backend]] = None) -> None:
        #: The peewee database (or the proxy) the models are bound to.
        self.database: peewee.Database = database
        #: The backend class of the database's engine.
        self.engine: Type[Backend] = engine or backend_class_of(database)
        self.executions: Type[Execution] = bind_model(database, self.engine.model_base)
        self._rollups: Optional[RollupModels] = None
        self._keys: Optional[KeyTables] = None
        self._labels: Optional[Type[peewee.Model]] = None
        self._side: Dict[Type[peewee.Model], Type[peewee.Model]] = {}
        self._lock = threading.Lock()

    @property
    def dialect(self) -> ReportDialect:
        """How reports spell buckets and the rest on this engine."""
        return self.engine.dialect

    @property
    def rollups(self) -> RollupModels:
        """The rollup models, in the order of the engine's ``rollup_models``
        (that of :class:`~telemetry_orm.rollups.RollupModels`)."""
        if self._rollups is None:
            with self._lock:
                if self._rollups is None:
                    self._rollups = RollupModels(*(bind_model(self.database, base)
                                                   for base in self.engine.rollup_models))
        return self._rollups

    def rollup(self, table: str) -> Type[peewee.Model]:
        """The rollup model of ``table`` (``telemetry_orm_rollups`` …)."""
        for model in self.rollups:
            if model._meta.table_name == table:
                found: Type[peewee.Model] = model
                return found
        raise KeyError(table)

    @property
    def keys(self) -> KeyTables:
        """The keys, purged keys and key state models."""
        if self._keys is None:
            with self._lock:
                if self._keys is None:
                    purged, state = self.engine.side_models
                    self._keys = (bind_model(self.database, self.engine.key_model),
                                  bind_model(self.database, purged),
                                  bind_model(self.database, state))
        return self._keys

    @property
    def labels(self) -> Type[peewee.Model]:
        """The labels model (see :class:`~telemetry_orm.schema.ExecutionLabel`)."""
        if self._labels is None:
            with self._lock:
                if self._labels is None:
                    self._labels = bind_model(self.database, self.engine.label_model)
        return self._labels

    def side(self, base: Type[M]) -> Type[M]:
        """``base``, another table of the package beside these (the
        migration's record of copied rows), with the engine's column types
        (its backend's ``column``, as every telemetry table has them),
        bound to this database once."""
        with self._lock:
            found = self._side.get(base)
            if found is None:
                found = bind_model(self.database, with_columns(base, self.engine.column))
                self._side[base] = found
        made: Type[M] = found  # type: ignore[assignment]
        return made

    def create_missing(
        self, backend: Backend, models: Sequence[Type[peewee.Model]], *,
        outside_transaction: str = "",
    ) -> None:
        """Create the tables of ``models`` (bound ones of this database) that
        are missing (temporary ones are each connection's own) under the
        schema lock, so that processes doing it at once do not race. With
        ``outside_transaction``, that work is refused inside a transaction
        of the caller's (a rollback would undo the tables). Driver errors
        become :class:`~telemetry_orm.TelemetryError`."""
        errors: Tuple[Type[BaseException], ...] = (peewee.PeeweeException,
                                                    *backend.driver_errors)
        try:
            with backend.connection(self.database) as conn:
                missing = [m for m in models if not m._meta.temporary
                           and not backend.has_table(conn, m._meta.table_name)]
                if missing:
                    if outside_transaction and backend.in_transaction(self.database):
                        raise in_transaction_error(backend.path, outside_transaction)
                    with backend.exclusive_transaction(self.database, "schema"):
                        for model in missing:
                            model.create_table(safe=True)
        except errors as exc:
            raise backend.translate(exc) from exc


#: Where a database keeps its Tables: on the database object itself, so
#: that they live and go with it (a cache keyed by the database would keep
#: it alive: the bound models refer to it).
_ATTRIBUTE = "_telemetry_orm_tables"
_made = threading.Lock()


def tables_of(database: Any, engine: Optional[Type[Backend]] = None) -> Tables:
    """The :class:`Tables` of a peewee database (or ``DatabaseProxy``),
    made at the first call and kept as long as the database lives; any
    other class raises :class:`~telemetry_orm.TelemetryValidationError`.
    ``engine``: its backend class, when the caller knows it."""
    engine = engine or backend_class_of(database)
    if isinstance(database, peewee.DatabaseProxy):
        # Not kept: a proxy may stand for another database later.
        return Tables(database, engine)
    found: Optional[Tables] = getattr(database, _ATTRIBUTE, None)
    if found is None or found.engine is not engine:
        with _made:
            found = getattr(database, _ATTRIBUTE, None)
            if found is None or found.engine is not engine:
                found = Tables(database, engine)
                setattr(database, _ATTRIBUTE, found)
    return found

"""pytest fixtures for applications that record telemetry (``testing`` extra).

Installed as a pytest plugin, so the fixtures are available in any test:

- ``telemetry_store``: a fresh store on a temporary file, closed afterwards.
- ``telemetry_store_for``: makes stores on databases of the application's
  own (its test database, a ``DatabaseProxy``):
  ``store = telemetry_store_for(db)``; each is closed after the test (the
  database is left open: it is the application's).
- ``telemetry_record_factory``: :class:`~telemetry_orm.factories.TelemetryRecordFactory`,
  which builds valid, realistic :class:`~telemetry_orm.TelemetryRecord` values.
- ``execution_factory``: writes rows into ``telemetry_store``:
  ``execution_factory(repo="acme/api", created_at=...)`` returns the saved
  row; ``execution_factory.create_batch(10)`` saves ten.

Only pytest and telemetry_orm are imported when pytest loads the plugin;
factory-boy is imported by the fixtures that need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Optional

import pytest

from ..store import PeeweeTelemetryStore, create_telemetry_store

if TYPE_CHECKING:  # pragma: no cover
    from .factories import ExecutionFactory, TelemetryRecordFactory


class StoreExecutionFactory:
    """:class:`~telemetry_orm.factories.ExecutionFactory` bound to one store."""

    def __init__(self, store: PeeweeTelemetryStore, factory: type[ExecutionFactory]) -> None:
        self.store = store
        self.factory = factory

    def __call__(self, **overrides: Any) -> Any:
        """Save one execution (fields and ``created_at`` may be given); return
        the saved row."""
        return self.factory.create(store=self.store, **overrides)

    def create_batch(self, size: int, **overrides: Any) -> List[Any]:
        """Save ``size`` executions; return the saved rows."""
        return [self(**overrides) for _ in range(size)]


@pytest.fixture
def telemetry_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeeweeTelemetryStore]:
    """A fresh telemetry store on a temporary file, closed after the test."""
    folder: Path = tmp_path_factory.mktemp("telemetry")
    store = create_telemetry_store(folder / "telemetry.db")
    yield store
    store.close()


@pytest.fixture
def telemetry_store_for() -> Iterator[Callable[..., PeeweeTelemetryStore]]:
    """``telemetry_store_for(database, **options)``: a store on the
    application's peewee database (see :func:`~telemetry_orm.create_telemetry_store`),
    opened now and closed after the test; the database stays open."""
    stores: List[PeeweeTelemetryStore] = []

    def make(database: Any, **options: Any) -> PeeweeTelemetryStore:
        store = create_telemetry_store(database, **options)
        stores.append(store)
        return store.prepare()

    yield make
    failure: Optional[BaseException] = None
    for store in reversed(stores):
        try:
            store.close()
        except Exception as exc:  # noqa: BLE001 - every store gets its close
            failure = failure or exc
    if failure is not None:
        raise failure


@pytest.fixture
def telemetry_record_factory() -> type[TelemetryRecordFactory]:
    """The factory of valid, realistic :class:`~telemetry_orm.TelemetryRecord` values."""
    from .factories import TelemetryRecordFactory

    return TelemetryRecordFactory


@pytest.fixture
def execution_factory(telemetry_store: PeeweeTelemetryStore) -> StoreExecutionFactory:
    """Saves executions into ``telemetry_store``."""
    from .factories import ExecutionFactory

    return StoreExecutionFactory(telemetry_store, ExecutionFactory)

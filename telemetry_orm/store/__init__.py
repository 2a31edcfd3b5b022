"""The store: open a database, record executions, purge, roll up, checkpoint, close.

:class:`PeeweeTelemetryStore` (in :mod:`~telemetry_orm.store.facade`)
validates and delegates: opening to :mod:`~telemetry_orm.store.opening`,
"who may use the database now" to :mod:`~telemetry_orm.store.gate`, writes
to :mod:`~telemetry_orm.store.writes`, the paced purge to
:mod:`~telemetry_orm.store.purging`; everything an engine does differently
is its backend's (``store.backend``, see :mod:`telemetry_orm.backends.base`),
picked from the location by :mod:`telemetry_orm.engines`.
"""

from ..folding import FOLD_ROWS
from .facade import (
    CHECKPOINT_EVERY,
    JOURNAL_SIZE_LIMIT,
    LOGGER_NAME,
    Entry,
    PathLike,
    PeeweeTelemetryStore,
    Row,
    TelemetryStore,
    create_telemetry_store,
)
from .gate import FORK_WAIT
from .purging import KEY_DAYS, PurgeProgress, PurgeResult
from .writes import BatchWriter

__all__ = [
    "BatchWriter", "CHECKPOINT_EVERY", "Entry", "FOLD_ROWS", "FORK_WAIT", "JOURNAL_SIZE_LIMIT",
    "KEY_DAYS", "LOGGER_NAME", "PathLike", "PeeweeTelemetryStore", "PurgeProgress",
    "PurgeResult", "Row", "TelemetryStore", "create_telemetry_store",
]

"""telemetry_orm: store and report the telemetry of LLM agent runs with peewee."""

from .backends.base import CheckpointResult
from .background import BackgroundRecorder, write_queues_on_sigterm
from .budgets import Budget, BudgetStatus
from .errors import (
    BackgroundWriteError,
    BudgetExceededError,
    DatabaseError,
    StoreBusyError,
    StoreClosedError,
    TelemetryError,
    TelemetryValidationError,
    TransactionOpenError,
    UnknownBudgetError,
)
from .record import FIELD_NAMES, TelemetryRecord
from .reports import Metrics, Report, ReportRow, open_readonly, report
from .schema import SCHEMA_VERSION, Execution
from .store import (
    PeeweeTelemetryStore,
    PurgeProgress,
    PurgeResult,
    TelemetryStore,
    create_telemetry_store,
)

__version__ = "0.1.0"

__all__ = [
    "BackgroundRecorder",
    "BackgroundWriteError",
    "Budget",
    "BudgetExceededError",
    "BudgetStatus",
    "CheckpointResult",
    "FIELD_NAMES",
    "Metrics",
    "SCHEMA_VERSION",
    "DatabaseError",
    "Execution",
    "PeeweeTelemetryStore",
    "PurgeProgress",
    "PurgeResult",
    "Report",
    "ReportRow",
    "StoreBusyError",
    "StoreClosedError",
    "TelemetryError",
    "TelemetryRecord",
    "TelemetryStore",
    "TelemetryValidationError",
    "TransactionOpenError",
    "UnknownBudgetError",
    "create_telemetry_store",
    "open_readonly",
    "report",
    "write_queues_on_sigterm",
]

"""Kept for older imports: the factories live in :mod:`telemetry_orm.testing.factories`."""

from .prices import PRICES, cost_of
from .testing.factories import EVENT_TYPES, STOP_REASONS, ExecutionFactory, TelemetryRecordFactory

__all__ = ["EVENT_TYPES", "PRICES", "STOP_REASONS", "ExecutionFactory",
           "TelemetryRecordFactory", "cost_of"]

"""Kept for older imports: the factories live in :mod:`telemetry_orm.testing.factories`."""

from .prices import cost_of
from .testing.factories import (
    DEMO_MODELS,
    EVENT_TYPES,
    STOP_REASONS,
    ExecutionFactory,
    TelemetryRecordFactory,
)

__all__ = ["DEMO_MODELS", "EVENT_TYPES", "STOP_REASONS", "ExecutionFactory",
           "TelemetryRecordFactory", "cost_of"]

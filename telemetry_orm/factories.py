"""Kept for older imports: the factories live in :mod:`telemetry_orm.testing.factories`."""

from .prices import cost_of, shipped_prices
from .testing.factories import (
    DEMO_MODELS,
    EVENT_TYPES,
    STOP_REASONS,
    ExecutionFactory,
    TelemetryRecordFactory,
)

#: The shipped price table (a mapping of model to price), for older imports.
PRICES = shipped_prices()

__all__ = ["DEMO_MODELS", "PRICES", "EVENT_TYPES", "STOP_REASONS", "ExecutionFactory",
           "TelemetryRecordFactory", "cost_of"]

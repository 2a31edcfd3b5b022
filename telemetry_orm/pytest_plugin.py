"""Kept for older imports: the plugin lives in :mod:`telemetry_orm.testing.plugin`."""

from .testing.plugin import (
    StoreExecutionFactory,
    execution_factory,
    telemetry_record_factory,
    telemetry_store,
    telemetry_store_for,
)

__all__ = ["StoreExecutionFactory", "execution_factory", "telemetry_record_factory",
           "telemetry_store", "telemetry_store_for"]

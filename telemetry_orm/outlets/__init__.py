"""What the server lets others read: ``GET /metrics`` for Prometheus
(:mod:`~telemetry_orm.outlets.metrics`), ``GET /usage`` and ``GET
/api/report`` for people and scripts (:mod:`~telemetry_orm.outlets.usage`);
docs/metrics.md. ``telemetry-orm serve`` serves them beside the OTLP
intake; an application can mount :func:`metrics_app` or :func:`usage_app`."""

from .app import PATHS, OutletsApp, metrics_app, usage_app
from .metrics import CONTENT_TYPE, Counters, metrics_text
from .usage import BadQuery, api_report, usage_page

__all__ = ["CONTENT_TYPE", "PATHS", "BadQuery", "Counters", "OutletsApp", "api_report",
           "metrics_app", "metrics_text", "usage_app", "usage_page"]

"""Intake over OpenTelemetry (OTLP): request bodies decoded, and Claude
Code's events and GenAI spans mapped to executions, each with its key and
instant (see :mod:`.claude_code`, :mod:`.genai` and :mod:`.placing` for the
mapping tables). :mod:`telemetry_orm.server` serves it over HTTP."""

from .batch import Intake, Rejection
from .claude_code import map_logs
from .genai import map_spans
from .placing import label_attributes
from .wire import decode, require, response, signals, status

__all__ = [
    "Intake",
    "Rejection",
    "decode",
    "label_attributes",
    "map_logs",
    "map_spans",
    "require",
    "response",
    "signals",
    "status",
]

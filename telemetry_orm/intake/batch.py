"""What one OTLP request maps to: the executions to record, each with its
key and instant, and the records refused, each with its position and why
(for the response's ``partial_success``)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import Any, Dict, List, Mapping, Optional

from .. import prices
from ..checks import MAX_LABEL_VALUE, check_key, check_length
from ..errors import TelemetryValidationError
from ..record import TelemetryRecord, record_of

#: How many reasons a ``partial_success`` message names at most.
REASONS_SHOWN = 3

_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")

#: The most characters of each text an execution takes from a request. A
#: record stores any text (as the original store's TEXT columns do); what
#: comes over the network is bounded well past what real senders send, so
#: that no request stores a megabyte in a column. ``model``, ``repo`` and
#: ``provider`` as MySQL's columns hold them (the longest real model names,
#: Bedrock ARNs and Vertex paths, stay under 130); ``session_id`` as a label
#: value (ids of 36 to 60); finish reasons are words (the longest, 23).
TEXT_BOUNDS: Mapping[str, int] = {
    "model": 160, "repo": 255, "provider": 64, "session_id": MAX_LABEL_VALUE,
    "stop_reason": 64}


@dataclasses.dataclass(frozen=True)
class Rejection:
    """A record (or span) refused: its position among the request's
    records (or spans), from 0, and why."""

    index: int
    reason: str


@dataclasses.dataclass
class Intake:
    """The executions of one request, in the request's order, for
    ``store.record_many(intake.records, keys=intake.keys, at=intake.at)``.

    ``read`` counts the request's log records (or spans), those that are no
    execution (other events, agent and tool spans) included; ``positions``
    holds each execution's position among them. ``unpriced`` counts the
    executions recorded at a cost of 0 because their model has no price.
    """

    #: What the request holds: ``log record`` or ``span``.
    kind: str
    records: List[TelemetryRecord] = dataclasses.field(default_factory=list)
    keys: List[str] = dataclasses.field(default_factory=list)
    at: List[_dt.datetime] = dataclasses.field(default_factory=list)
    positions: List[int] = dataclasses.field(default_factory=list)
    rejected: List[Rejection] = dataclasses.field(default_factory=list)
    unpriced: Dict[str, int] = dataclasses.field(default_factory=dict)
    read: int = 0

    def add(self, index: int, fields: Mapping[str, Any], key: str,
            when: _dt.datetime) -> None:
        """Record ``fields`` (a record's fields, ``labels`` included; without
        ``cost_usd``, the list price of the tokens) under ``key`` at
        ``when``, or reject record ``index`` when they are not a valid
        execution."""
        try:
            check_key("key", key)
            for name, bound in TEXT_BOUNDS.items():
                value = fields.get(name)
                if type(value) is str and (len(value) > bound or "\x00" in value):
                    _refuse_sent_text(name, value, bound)
            # The fields are named as the record's, labels included: the
            # constructor's checks apply (from_mapping would first map
            # each name through its camelCase aliases).
            record = record_of(self._priced(fields))
        except TelemetryValidationError as exc:
            self.reject(index, str(exc))
            return
        self.records.append(record)
        self.keys.append(key)
        self.at.append(when)
        self.positions.append(index)

    def reject(self, index: int, reason: str) -> None:
        """Refuse record ``index`` for ``reason``."""
        self.rejected.append(Rejection(index, reason))

    def withdraw(self, refused: Mapping[int, str]) -> None:
        """Take back the executions at these positions (the store refused
        them: a key it forgot, text longer than its column holds) as
        rejections, each with its reason."""
        for position in sorted(refused, reverse=True):
            self.reject(self.positions[position], refused[position])
            for column in (self.records, self.keys, self.at, self.positions):
                del column[position]
        self.rejected.sort(key=lambda r: r.index)

    def message(self) -> str:
        """The ``partial_success`` message: how many were rejected and the
        first reasons; empty when none was."""
        if not self.rejected:
            return ""
        shown = "; ".join(f"{self.kind} {r.index}: {r.reason}"
                          for r in self.rejected[:REASONS_SHOWN])
        more = len(self.rejected) - REASONS_SHOWN
        tail = f"; and {more} more" if more > 0 else ""
        return (f"{len(self.rejected)} of {self.read} {self.kind}s rejected: "
                f"{shown}{tail}")

    def _priced(self, fields: Mapping[str, Any]) -> Mapping[str, Any]:
        if fields.get("cost_usd") is not None:
            return fields
        model: Optional[str] = fields.get("model")
        cost = prices.cost_of(model, **{name: fields.get(name, 0) for name in _TOKENS})
        if cost is None:
            # Stored at 0 as the other inputs do; reports show such
            # executions as unpriced (--cost auto), never as $0.
            self.unpriced[str(model)] = self.unpriced.get(str(model), 0) + 1
            cost = 0.0
        return {**fields, "cost_usd": cost}


def _refuse_sent_text(name: str, value: str, bound: int) -> None:
    # NUL: PostgreSQL's text cannot hold it, and no sender means one; SQLite
    # would store it (the store keeps a record's text verbatim).
    if "\x00" in value:
        raise TelemetryValidationError(
            name, f"must not contain NUL characters, got one at position "
                  f"{value.index(chr(0))}")
    check_length(name, value, bound, "what the OTLP intake takes")

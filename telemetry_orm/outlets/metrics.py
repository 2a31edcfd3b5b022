"""``GET /metrics``: the store's all-time totals in the Prometheus text
exposition format (version 0.0.4).

The counters are read from the database, rows and rollups together, the
way :func:`~telemetry_orm.reports.report` combines them: every server
process answers the same figures, a restart loses nothing, and a purge
lowers none of them (what it deletes stays counted in the rollups).

- ``telemetry_orm_executions_total{repo,model,provider,conclusion}``
- ``telemetry_orm_tokens_total{repo,model,provider,type}``, ``type`` one of
  ``input``, ``output``, ``cache_read``, ``cache_creation`` (they never overlap)
- ``telemetry_orm_cost_usd_total{repo,model,provider}`` (the recorded cost)
- ``telemetry_orm_budget_spent_usd{budget}`` and
  ``telemetry_orm_budget_limit_usd{budget}``: gauges, each budget's current period

What could still lower a counter, and what is done about it, is in
docs/metrics.md: :class:`Counters` holds each series at the highest value
it has served (a keyed write that replaced a row with a lower cost, rows
deleted by another program), for as long as the process runs.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Dict, List, Optional, Tuple

from ..budgets import BUDGETS_TABLE
from ..reports import report
from ..tables import tables_of

__all__ = ["CONTENT_TYPE", "Counters", "Sample", "collect", "escape", "metrics_text",
           "render"]

#: The Content-Type of the text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The columns the counters are broken down by (all-time cardinality: see docs/metrics.md).
KEYS = ("repo", "model", "provider", "conclusion")
#: Token counters' ``type`` and the report's figure it counts.
TOKEN_TYPES = (("input", "input_tokens"), ("output", "output_tokens"),
               ("cache_read", "cache_read_tokens"), ("cache_creation", "cache_creation_tokens"))

Labels = Tuple[Tuple[str, str], ...]
Series = Tuple[str, Labels]

#: Name, type and help of each metric, in the order they are written.
FAMILIES: Tuple[Tuple[str, str, str], ...] = (
    ("telemetry_orm_executions_total", "counter",
     "Executions recorded, all time (rows and rollups: a purge does not lower it)."),
    ("telemetry_orm_tokens_total", "counter",
     "Tokens recorded, all time, by type (input excludes the cache: the four never overlap)."),
    ("telemetry_orm_cost_usd_total", "counter",
     "Cost recorded in US dollars, all time (as recorded: unpriced executions count 0)."),
    ("telemetry_orm_budget_spent_usd", "gauge",
     "What a budget's current period has spent, in US dollars (recorded, else list price)."),
    ("telemetry_orm_budget_limit_usd", "gauge", "A budget's limit per period, in US dollars."),
    ("telemetry_orm_held_series", "gauge",
     "Counter series served above the database's figure, which went down (docs/metrics.md)."),
)
_COUNTERS = {name for name, kind, _ in FAMILIES if kind == "counter"}


@dataclasses.dataclass(frozen=True)
class Sample:
    """The values of every series at one moment: ``{(name, labels): value}``."""

    values: Dict[Series, float]


def collect(store: Any) -> Sample:
    """Read the counters and the budget gauges of ``store`` (one report in
    one read transaction, then the budgets)."""
    values: Dict[Series, float] = {}
    with store.reading() as database:
        result = report(database, group_by=KEYS, since=None, p95=False)
        engine = tables_of(database).engine
        budgeted = engine.has_table(engine.statements(database), BUDGETS_TABLE)
    for row in result.rows:
        keys = {k: "" if row.keys[k] is None else str(row.keys[k]) for k in KEYS}
        m = row.metrics
        _add(values, "telemetry_orm_executions_total", keys, m.executions)
        scope = {k: keys[k] for k in KEYS[:3]}
        for kind, figure in TOKEN_TYPES:
            _add(values, "telemetry_orm_tokens_total", {**scope, "type": kind},
                 getattr(m, figure))
        _add(values, "telemetry_orm_cost_usd_total", scope, m.cost_usd or 0.0)
    if budgeted:  # read only: a scrape never creates the budget tables
        for status in store.budget_statuses():
            name = {"budget": status.budget.name}
            _add(values, "telemetry_orm_budget_spent_usd", name, status.spent_usd)
            _add(values, "telemetry_orm_budget_limit_usd", name, status.limit_usd)
    return Sample(values)


def _add(values: Dict[Series, float], name: str, labels: Dict[str, str], value: float) -> None:
    series = (name, tuple(labels.items()))
    values[series] = values.get(series, 0) + value


class Counters:
    """Holds every counter series at the highest value it has served, so
    that a value the database lowered (a replaced row's lower cost, rows
    deleted by another program) never reads as a counter reset. A series
    that disappears keeps its last value. Memory: one entry per series."""

    def __init__(self) -> None:
        self._marks: Dict[Series, float] = {}
        self._lock = threading.Lock()

    def hold(self, sample: Sample) -> Sample:
        """``sample`` with each counter at least its mark; the marks moved up."""
        values = dict(sample.values)
        held = 0
        with self._lock:
            for series, mark in self._marks.items():
                if values.get(series, -1.0) < mark:
                    values[series] = mark
                    held += 1
            for series, value in values.items():
                if series[0] in _COUNTERS:
                    self._marks[series] = value
        values[("telemetry_orm_held_series", ())] = held
        return Sample(values)


def escape(value: str) -> str:
    """A label value as the text format writes it: backslash, double quote
    and line feed escaped; text that is not UTF-8 replaced."""
    text = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return text.encode("utf-8", "replace").decode("utf-8")


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def render(sample: Sample) -> str:
    """``sample`` in the text format, each family with ``# HELP`` and
    ``# TYPE``, series sorted by their labels."""
    by_name: Dict[str, List[Tuple[Labels, float]]] = {}
    for (name, labels), value in sample.values.items():
        by_name.setdefault(name, []).append((labels, value))
    lines: List[str] = []
    for name, kind, text in FAMILIES:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for labels, value in sorted(by_name.get(name, ())):
            inner = ",".join(f'{key}="{escape(v)}"' for key, v in labels)
            lines.append(f"{name}{{{inner}}} {_number(value)}" if inner
                         else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def metrics_text(store: Any, counters: Optional[Counters] = None) -> str:
    """The exposition text of ``store`` now; with ``counters``, each
    counter held at the highest value those counters have served.

    >>> from telemetry_orm import create_telemetry_store
    >>> with create_telemetry_store(":memory:") as store:
    ...     "telemetry_orm_executions_total" in metrics_text(store)
    True
    """
    sample = collect(store)
    return render(counters.hold(sample) if counters is not None else Counters().hold(sample))


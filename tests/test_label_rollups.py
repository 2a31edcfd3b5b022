"""Labels in the rollups: reports by label give the same figures before and
after a rollup and a purge, on every engine."""

from __future__ import annotations

import datetime as _dt
import random
from typing import Any, Dict, List, Tuple

import pytest
from support import Witness, minimal

from telemetry_orm import PeeweeTelemetryStore
from telemetry_orm.schema import LABELS_TABLE


def _fill(store: PeeweeTelemetryStore, now: _dt.datetime, count: int = 600) -> None:
    rng = random.Random(11)
    entries, instants = [], []
    for _ in range(count):
        labels = {}
        if rng.random() < 0.7:
            labels["user"] = rng.choice(["alice", "bob", "carol"])
        if rng.random() < 0.5:
            labels["team"] = rng.choice(["platform", "web"])
        entries.append({**minimal(model=rng.choice(["claude-sonnet-4-5", "unpriced-x"]),
                                  repo=rng.choice(["a/x", "a/y"]),
                                  cost_usd=rng.choice([0.0, round(rng.uniform(0, 2), 4)]),
                                  duration_ms=rng.randrange(10, 90_000),
                                  input_tokens=rng.randrange(10_000)),
                        "labels": labels})
        instants.append(now - _dt.timedelta(hours=rng.uniform(1, 24 * 120)))
    store.record_many(entries, at=instants)


def _figures(store: PeeweeTelemetryStore, **options: Any) -> List[Tuple[Any, ...]]:
    result = store.report(**options)
    rows = [(tuple(str(v) for v in row.keys.values()), row.metrics) for row in result.rows]
    return sorted((keys, m.executions, round(m.cost_usd or 0.0, 6), m.input_tokens, m.failed,
                   m.p95_duration_ms) for keys, m in [*rows, (("TOTAL",), result.totals)])


_REPORTS: List[Dict[str, Any]] = [
    {"group_by": ["label:user", "model"]},
    {"group_by": ["label:user"], "cost": "auto"},
    {"group_by": ["month", "label:team"]},
    {"group_by": ["model"], "labels": {"team": "platform"}},
    {"group_by": ["label:user"], "labels": {"user": "bob"}, "cost": "calculated"},
    {"group_by": [], "labels": {"team": "web"}},
    {"group_by": ["week", "label:user"], "tz": "America/New_York"},
]


def test_reports_by_label_are_the_same_after_a_rollup_and_a_purge(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    now = _dt.datetime.now(_dt.timezone.utc)
    _fill(any_store, now)
    before = [_figures(any_store, **options) for options in _REPORTS]
    any_store.rollup()
    _same(before, [_figures(any_store, **options) for options in _REPORTS])
    deleted = any_store.purge_older_than(30)
    assert deleted > 300
    _same(before, [_figures(any_store, **options) for options in _REPORTS])
    # The purge took the labels of its rows with them.
    assert int(any_witness.scalar(
        f"SELECT COUNT(*) FROM {LABELS_TABLE} AS l LEFT JOIN executions AS e "
        "ON e.id = l.execution_id WHERE e.id IS NULL")) == 0
    # A report the label hours cannot answer says where its history ends.
    partial = any_store.report(group_by=["label:user", "repo"])
    assert partial.incomplete_before is not None


def _same(exact: List[List[Tuple[Any, ...]]], rolled: List[List[Tuple[Any, ...]]]) -> None:
    """The same groups and sums; p95 from the rollups within 1 % of the rows'."""
    assert [[row[:5] for row in rows] for rows in rolled] == [
        [row[:5] for row in rows] for rows in exact]
    for rows, others in zip(exact, rolled, strict=True):
        for row, other in zip(rows, others, strict=True):
            assert abs(other[5] - row[5]) <= 0.01 * row[5], (row, other)


@pytest.mark.parametrize("change", [{"team": "web"}, {}])
def test_a_replaced_row_moves_its_labels_in_the_rollups(
        any_store: PeeweeTelemetryStore, change: Dict[str, str]) -> None:
    past = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(days=3)
    any_store.record({**minimal(cost_usd=2.0), "labels": {"team": "platform"}}, key="run",
                     at=past)
    any_store.record(minimal(cost_usd=1.0), at=past)
    any_store.rollup()
    any_store.record({**minimal(cost_usd=5.0), "labels": change}, key="run", replace=True)
    any_store.purge_older_than(1)
    got = {row.keys["label:team"]: (row.metrics.executions, row.metrics.cost_usd)
           for row in any_store.report(group_by=["label:team"]).rows}
    assert got == ({"web": (1, 5.0), None: (1, 1.0)} if change else {None: (2, 6.0)})

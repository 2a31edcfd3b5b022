"""The factory-boy factories build valid, varied, realistic records."""

from __future__ import annotations

import datetime as dt
import sqlite3

from telemetry_orm import PeeweeTelemetryStore, TelemetryRecord
from telemetry_orm.factories import DEMO_MODELS, ExecutionFactory, TelemetryRecordFactory, cost_of


def test_record_factory_builds_valid_varied_records() -> None:
    records = TelemetryRecordFactory.build_batch(200)
    assert all(isinstance(r, TelemetryRecord) for r in records)
    assert len({r.repo for r in records}) > 50
    assert {r.model for r in records} <= set(DEMO_MODELS) and len({r.model for r in records}) > 1
    assert all("/" in r.repo for r in records)
    assert len({r.conclusion for r in records}) > 1


def test_record_factory_cost_matches_the_tokens() -> None:
    for r in TelemetryRecordFactory.build_batch(50):
        cost = cost_of(r.model, input_tokens=r.input_tokens, output_tokens=r.output_tokens,
                       cache_read_tokens=r.cache_read_tokens,
                       cache_creation_tokens=r.cache_creation_tokens)
        assert cost is not None and r.cost_usd == round(cost, 6)
        assert r.cost_usd > 0


def test_cost_of_uses_list_prices() -> None:
    # One million of each kind on Sonnet: 3 + 15 + 0.30 + 3.75 dollars.
    assert cost_of("claude-sonnet-4-5", input_tokens=10**6, output_tokens=10**6,
                   cache_read_tokens=10**6, cache_creation_tokens=10**6) == 22.05


def test_execution_factory_persists_into_a_store(store: PeeweeTelemetryStore,
                                                 witness: sqlite3.Connection) -> None:
    row = ExecutionFactory.create(store=store, repo="acme/api")
    stored = witness.execute("SELECT repo, model, cost_usd FROM executions WHERE id = ?",
                             (row.id,)).fetchone()
    assert tuple(stored) == ("acme/api", row.model, row.cost_usd)


def test_execution_factory_backdates_created_at(store: PeeweeTelemetryStore,
                                                witness: sqlite3.Connection) -> None:
    when = dt.datetime(2024, 2, 29, 23, 59, 58, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    row = ExecutionFactory.create(store=store, created_at=when)
    stored = witness.execute("SELECT created_at FROM executions WHERE id = ?",
                             (row.id,)).fetchone()[0]
    assert stored == "2024-03-01 04:59:58"
    assert store.count_older_than(30) == 1


def test_execution_factory_build_returns_an_unsaved_record(store: PeeweeTelemetryStore) -> None:
    record = ExecutionFactory.build(store=store)
    assert isinstance(record, TelemetryRecord)
    assert store.model.select().count() == 0

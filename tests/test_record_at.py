"""Recording a past instant: ``record(…, at=…)`` and ``record_many(…, at=[…])``.

The stored ``created_at`` is read back through an independent connection;
late rows count in reports at once and in the rollups once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict

import pytest
from support import Witness

from telemetry_orm import PeeweeTelemetryStore, TelemetryValidationError

UTC = dt.timezone.utc
RUN: Dict[str, Any] = {"repo": "acme/api", "event_type": "push", "model": "m",
                       "conclusion": "success", "cost_usd": 0.5, "input_tokens": 10}


def hours_ago(witness: Witness, hours: float) -> dt.datetime:
    """An instant ``hours`` before the store's "now", to the second."""
    return (witness.now() - dt.timedelta(hours=hours)).replace(microsecond=0)


def has_table(witness: Witness, name: str) -> bool:
    if witness.kind == "sqlite":
        return bool(witness.scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = ?", name))
    if witness.kind == "mysql":
        return bool(witness.scalar("SELECT COUNT(*) FROM information_schema.tables "
                                   "WHERE table_schema = DATABASE() AND table_name = ?", name))
    return witness.scalar("SELECT to_regclass(?)", name) is not None


def test_record_stores_the_instant_given(any_store: PeeweeTelemetryStore,
                                         any_witness: Witness) -> None:
    aware = dt.datetime(2024, 3, 10, 12, 30, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    naive = dt.datetime(2023, 1, 2, 3, 4, 5)
    first = any_store.record(RUN, at=aware)
    second = any_store.record(RUN, at=naive)
    assert any_witness.created_at(first) == dt.datetime(2024, 3, 10, 17, 30, 5, tzinfo=UTC)
    assert any_witness.created_at(second) == naive.replace(tzinfo=UTC)
    # As without ``at``, the keys table waits for the first keyed record.
    assert not has_table(any_witness, "telemetry_orm_keys")


def test_record_many_takes_one_instant_per_entry(any_store: PeeweeTelemetryStore,
                                                 any_witness: Witness) -> None:
    old = dt.datetime(2022, 6, 1, 8, 0, tzinfo=UTC)
    ids = any_store.record_many([RUN, RUN, RUN], at=[old, None, old + dt.timedelta(days=1)])
    assert any_witness.created_at(ids[0]) == old
    assert any_witness.created_at(ids[2]) == old + dt.timedelta(days=1)
    # None: the database clock's time, as without ``at``.
    assert abs(any_witness.created_at(ids[1]) - any_witness.now()) < dt.timedelta(minutes=5)


@pytest.mark.parametrize("bad", [
    dt.datetime(999, 12, 31, 23, 59),
    dt.datetime(9999, 1, 1, tzinfo=UTC),
    # Instants with no UTC datetime at all (Python cannot convert them).
    dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5))),
    dt.datetime.max.replace(tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    "2024-01-01 00:00:00",
    dt.date(2024, 1, 1),
    1_700_000_000,
])
def test_a_bad_instant_is_refused_naming_at_and_nothing_is_written(
        any_store: PeeweeTelemetryStore, any_witness: Witness, bad: Any) -> None:
    with pytest.raises(TelemetryValidationError, match=r"^at: "):
        any_store.record(RUN, at=bad)
    with pytest.raises(TelemetryValidationError, match=r"^entry 1: at: "):
        any_store.record_many([RUN, RUN], at=[None, bad])
    with pytest.raises(TelemetryValidationError, match=r"^at: "):
        any_store.record(RUN, key="k", at=bad)
    assert any_witness.count() == 0


def test_record_many_refuses_an_instant_list_of_another_length(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    with pytest.raises(TelemetryValidationError, match="at: must be a sequence of one instant"):
        any_store.record_many([RUN, RUN], at=[None])
    with pytest.raises(TelemetryValidationError, match="at: must be a sequence"):
        any_store.record_many([RUN], at=dt.datetime(2024, 1, 1))  # type: ignore[arg-type]
    assert any_witness.count() == 0


def test_a_late_row_counts_in_reports_at_once_and_once_after_rollup(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    any_store.record_many([RUN] * 3, at=[hours_ago(any_witness, h) for h in (5, 4, 3)])
    assert any_store.rollup().rows == 3
    # A row for an hour the rollups already count: in the report at once …
    any_store.record({**RUN, "cost_usd": 2.0}, at=hours_ago(any_witness, 4))
    report = any_store.report(group_by=[])
    assert report.totals.executions == 4
    assert report.totals.cost_usd == pytest.approx(3.5)
    # … and folded in once by the next rollup, counted once after it.
    assert any_store.rollup().rows == 1
    assert any_store.rollup().rows == 0
    assert any_store.report(group_by=[]).totals.executions == 4
    assert int(any_witness.scalar("SELECT SUM(executions) FROM telemetry_orm_rollups")) == 4
    assert float(any_witness.scalar(
        "SELECT SUM(cost_usd) FROM telemetry_orm_rollups")) == pytest.approx(3.5)


def test_a_keyed_record_with_an_instant(any_store: PeeweeTelemetryStore,
                                        any_witness: Witness) -> None:
    first_at, later_at = hours_ago(any_witness, 30), hours_ago(any_witness, 6)
    row_id = any_store.record(RUN, key="run-1", at=first_at)
    assert any_witness.created_at(row_id) == first_at
    # Once per key: the same key writes nothing, whatever its instant.
    assert any_store.record(RUN, key="run-1", at=later_at) == row_id
    assert any_witness.count() == 1
    assert any_witness.created_at(row_id) == first_at
    any_store.rollup()
    # Replacing moves the row to its new instant, and the rollups with it.
    assert any_store.record({**RUN, "input_tokens": 99}, key="run-1", replace=True,
                            at=later_at) == row_id
    assert any_witness.created_at(row_id) == later_at
    assert any_store.rollup().rows == 0  # the new instant is counted already
    assert int(any_witness.scalar("SELECT SUM(executions) FROM telemetry_orm_rollups")) == 1
    assert int(any_witness.scalar("SELECT SUM(input_tokens) FROM telemetry_orm_rollups")) == 99
    assert any_store.report(group_by=[]).totals.input_tokens == 99


def test_keyed_record_many_with_instants(any_store: PeeweeTelemetryStore,
                                         any_witness: Witness) -> None:
    when = dt.datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC)
    ids = any_store.record_many([RUN, RUN], keys=["a", None], at=[when, when])
    assert [any_witness.created_at(i) for i in ids] == [when, when]
    assert any_store.record_many([RUN], keys=["a"], at=[None]) == ids[:1]
    assert any_witness.count() == 2


def test_a_keyed_record_before_the_keys_were_forgotten_is_refused_as_an_import_is(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    long_ago = hours_ago(any_witness, 24 * 30)
    known = any_store.record(RUN, key="known", at=long_ago)
    any_store.record(RUN, key="gone", at=long_ago)
    assert any_store.purge_older_than(1) == 2
    any_witness.execute("UPDATE telemetry_orm_purged_keys SET purged_at = "
                        "'2000-01-02 03:04:05' WHERE key = 'gone'")
    any_store.purge(1, key_days=400)  # forgets "gone"
    ancient = dt.datetime(2001, 2, 3, 4, 5, 6)
    with pytest.raises(TelemetryValidationError,
                       match=r"^at: key 'other': created_at 2001-02-03 04:05:06 .*forgotten"):
        any_store.record(RUN, key="other", at=ancient)
    with pytest.raises(TelemetryValidationError, match=r"^entry 1: at: key 'gone'"):
        any_store.record_many([RUN, RUN], keys=["known", "gone"], at=[ancient, ancient])
    assert any_witness.count() == 0
    # A known key answers its row; an unkeyed or recent row goes in.
    assert any_store.record(RUN, key="known", at=ancient) == known
    any_store.record(RUN, at=ancient)
    any_store.record(RUN, key="recent", at=hours_ago(any_witness, 2))
    assert any_witness.count() == 2

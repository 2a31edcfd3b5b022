"""The days of kept zones (``rollup(zones=...)``): reports by day and week
in a kept zone read its days and give the rows' sums (p95 within 1 %), in
zones on the whole hour with clocks that change and off it by a half and a
quarter hour; the days stay exact when late rows fold in, when a keyed row
is replaced and after a purge; the stored days are checked against the rows
through an independent connection, on every engine."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import Counter
from typing import Any, Dict, Tuple

import pytest
from support import FIXED_NOW, Witness, minimal
from test_rollups import assert_same, figures, history

from telemetry_orm import PeeweeTelemetryStore, TelemetryValidationError
from telemetry_orm.zone_days import ZONE_DAYS_TABLE, ZONES_TABLE

NOW = FIXED_NOW
pytestmark = pytest.mark.usefixtures("pinned_clock")

ZONES = ("America/Los_Angeles", "Asia/Kolkata", "Asia/Kathmandu", "UTC")
BY = [("day",), ("week",), ("month", "day")]
SINCE = [None, NOW - dt.timedelta(days=150, minutes=17)]


def reports(store: PeeweeTelemetryStore, **options: Any
            ) -> Dict[Tuple[Any, ...], Dict[Tuple[Any, ...], Dict[str, Any]]]:
    return {(zone, by, since, p95): figures(store, by, since=since, tz=zone, p95=p95,
                                            **options)
            for zone in ZONES for by in BY for since in SINCE for p95 in (True, False)}


def assert_all_same(a: Dict[Any, Any], b: Dict[Any, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert_same(a[key], b[key])


def stored_days(witness: Witness, zone: str) -> Counter[str]:
    """Executions per stored day of ``zone``, read by another connection."""
    day = witness.utc_text("day", "%Y-%m-%d")
    return Counter({str(r["d"]): int(r["n"]) for r in witness.rows(
        f"SELECT {day} AS d, SUM(executions) AS n FROM {ZONE_DAYS_TABLE} "
        "WHERE zone = ? GROUP BY d", zone)})


def row_days(witness: Witness, zone: str) -> Counter[str]:
    """Executions per local day of the rows no day's edge cuts the hour of,
    in the days built."""
    where = zoneinfo.ZoneInfo(zone)
    built = [dt.datetime.fromisoformat(str(witness.scalar(
        f"SELECT {end} FROM {ZONES_TABLE} WHERE zone = ?", zone))).replace(
            tzinfo=dt.timezone.utc) for end in ("built_from", "built_before")]
    counts: Counter[str] = Counter()
    for r in witness.rows("SELECT created_at FROM executions"):
        at = r["created_at"]
        at = (dt.datetime.fromisoformat(at) if isinstance(at, str) else at).replace(
            tzinfo=dt.timezone.utc)
        if not built[0] <= at < built[1]:
            continue  # a day not built yet
        hour = at.replace(minute=0, second=0, microsecond=0)
        first = hour.astimezone(where).date()
        if (hour + dt.timedelta(hours=1, microseconds=-1)).astimezone(where).date() == first:
            counts[at.astimezone(where).strftime("%Y-%m-%d")] += 1
    return counts


def test_reports_by_day_and_week_in_kept_zones_read_their_days_with_the_rows_sums(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    history(any_store, any_witness, days=400, per_day=12)
    from_rows = reports(any_store, use_rollups=False)
    result = any_store.rollup(zones=ZONES[:3])
    assert result.zones == tuple(sorted(ZONES[:3]))
    assert any_store.rollup(zones=["UTC"]).zones == tuple(sorted(ZONES))
    assert_all_same(from_rows, reports(any_store))
    for zone in ZONES:
        # Every day of the rows is stored, exactly (the hours cut by a day's
        # edge are no day's: reports read them from their rows).
        assert stored_days(any_witness, zone) == row_days(any_witness, zone), zone
    assert any_witness.scalar(f"SELECT COUNT(*) FROM {ZONES_TABLE}") == 4
    # The reports read those days: what they hold is what the report says.
    total = figures(any_store, ("day",), since=None, tz="Asia/Kolkata")[("totals",)]
    stored = any_witness.execute(f"UPDATE {ZONE_DAYS_TABLE} SET executions = executions + 1 "
                                 "WHERE zone = ?", "Asia/Kolkata")
    bumped = figures(any_store, ("day",), since=None, tz="Asia/Kolkata")[("totals",)]
    assert stored > 400 and bumped["executions"] == total["executions"] + stored


def test_late_rows_a_replaced_row_and_a_purge_keep_the_days_exact(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    history(any_store, any_witness, days=300, per_day=10)
    any_store.rollup(zones=ZONES)
    # Rows that arrive later for days already built, and a keyed run that
    # moves to another day when it is sent again.
    history(any_store, any_witness, days=300, per_day=2, seed=11)
    key_id = any_store.record(_run(1_000), key="run-a")
    _move(any_witness, key_id, NOW - dt.timedelta(days=40, hours=3))
    any_store.rollup()
    assert any_store.record(_run(90_000), key="run-a", replace=True) == key_id
    for zone in ZONES:
        assert stored_days(any_witness, zone) == row_days(any_witness, zone), zone
    assert_all_same(reports(any_store, use_rollups=False), reports(any_store))
    # A purge folds what it deletes; the days built stay the same.
    kept = {zone: stored_days(any_witness, zone) for zone in ZONES}
    # On the whole hour no hour is cut: the reports stay those of the rows.
    whole = {zone: [figures(any_store, by, since=None, tz=zone) for by in BY]
             for zone in ("America/Los_Angeles", "UTC")}
    any_store.purge_older_than(200)
    any_store.rollup()
    for zone in ZONES:
        assert stored_days(any_witness, zone) == kept[zone], zone
    for zone, before in whole.items():
        after = [figures(any_store, by, since=None, tz=zone) for by in BY]
        for old, new in zip(before, after, strict=True):
            assert_same(old, new)
        assert after[0][("totals",)]["executions"] == 300 * 10 + 300 * 2 + 1


def test_forgetting_a_zone_drops_its_days_and_bad_names_are_refused(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    history(any_store, any_witness, days=30, per_day=5)
    any_store.rollup(zones="Asia/Kolkata")
    assert stored_days(any_witness, "Asia/Kolkata")
    exact = figures(any_store, ("day",), since=None, tz="Asia/Kolkata", use_rollups=False)
    assert any_store.rollup(forget_zones=["Asia/Kolkata"]).zones == ()
    assert not stored_days(any_witness, "Asia/Kolkata")
    assert_same(exact, figures(any_store, ("day",), since=None, tz="Asia/Kolkata"))
    for bad in ("Mars/Olympus", 3, [""]):
        with pytest.raises(TelemetryValidationError) as info:
            any_store.rollup(zones=bad)
        assert info.value.field == "zones"
    with pytest.raises(TelemetryValidationError) as info:
        any_store.rollup(forget_zones=["Nowhere/City"])
    assert info.value.field == "forget_zones"
    assert any_witness.scalar(f"SELECT COUNT(*) FROM {ZONES_TABLE}") == 0


def _run(duration_ms: int) -> Any:
    return minimal(repo="acme/api", duration_ms=duration_ms, cost_usd=0.5, input_tokens=40)


def _move(witness: Witness, row_id: int, at: dt.datetime) -> None:
    value = at.strftime("%Y-%m-%d %H:%M:%S") if witness.kind == "sqlite" else at
    witness.executemany("UPDATE executions SET created_at = ? WHERE id = ?", [(value, row_id)])

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
from telemetry_orm.zone_days import ZONE_CUTS_TABLE, ZONE_DAYS_TABLE, ZONES_TABLE

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


def stored_cuts(witness: Witness, zone: str) -> Counter[str]:
    """Executions per day of the stored parts of cut hours of ``zone``."""
    day = witness.utc_text("day", "%Y-%m-%d")
    return Counter({str(r["d"]): int(r["n"]) for r in witness.rows(
        f"SELECT {day} AS d, SUM(executions) AS n FROM {ZONE_CUTS_TABLE} "
        "WHERE zone = ? GROUP BY d", zone)})


def row_days(witness: Witness, zone: str, *, cut: bool = False) -> Counter[str]:
    """Executions per local day of the rows no day's edge cuts the hour of,
    in the days built (``cut``: of the rows in the hours cut, split)."""
    where = zoneinfo.ZoneInfo(zone)
    built = [dt.datetime.fromisoformat(str(witness.scalar(
        f"SELECT {end} FROM {ZONES_TABLE} WHERE zone = ?", zone))).replace(
            tzinfo=dt.timezone.utc) for end in ("built_from", "built_before")]
    counts: Counter[str] = Counter()
    for r in witness.rows("SELECT created_at FROM executions"):
        at = r["created_at"]
        at = (dt.datetime.fromisoformat(at) if isinstance(at, str) else at).replace(
            tzinfo=dt.timezone.utc)
        hour = at.replace(minute=0, second=0, microsecond=0)
        first = hour.astimezone(where).date()
        whole = (hour + dt.timedelta(hours=1, microseconds=-1)).astimezone(where).date() == first
        # The days built, and the hours cut by their edges, both ends included.
        if (not cut and whole and built[0] <= at < built[1]) or (
                cut and not whole and built[0] <= hour + dt.timedelta(hours=1)
                and hour <= built[1]):
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
        assert stored_cuts(any_witness, zone) == row_days(any_witness, zone, cut=True), zone
    assert not stored_cuts(any_witness, "America/Los_Angeles")
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
    any_store.rollup()  # the cut hours the late rows changed are split again
    for zone in ZONES:
        assert stored_days(any_witness, zone) == row_days(any_witness, zone), zone
        assert stored_cuts(any_witness, zone) == row_days(any_witness, zone, cut=True), zone
    assert_all_same(reports(any_store, use_rollups=False), reports(any_store))
    # A purge folds what it deletes; the days built stay the same.
    kept = {zone: stored_days(any_witness, zone) for zone in ZONES}
    cuts = {zone: stored_cuts(any_witness, zone) for zone in ZONES}
    # On the whole hour no hour is cut: the reports stay those of the rows.
    whole = {zone: [figures(any_store, by, since=None, tz=zone) for by in BY]
             for zone in ("America/Los_Angeles", "UTC")}
    any_store.purge_older_than(200)
    any_store.rollup()
    for zone in ZONES:
        assert stored_days(any_witness, zone) == kept[zone], zone
        assert stored_cuts(any_witness, zone) == cuts[zone], zone
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
    assert stored_cuts(any_witness, "Asia/Kolkata")
    assert any_store.rollup(forget_zones=["Asia/Kolkata"]).zones == ()
    assert not stored_days(any_witness, "Asia/Kolkata")
    assert not stored_cuts(any_witness, "Asia/Kolkata")
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


def test_a_cut_hour_split_again_after_its_rows_are_purged_gives_them_to_the_day_before(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    zone = zoneinfo.ZoneInfo("Asia/Kolkata")
    edge = (NOW - dt.timedelta(days=20)).replace(hour=18, minute=30, second=0, microsecond=0)
    before, after = (edge - dt.timedelta(days=1)).astimezone(zone).strftime("%Y-%m-%d"), \
        edge.astimezone(zone).strftime("%Y-%m-%d")
    ids = any_store.record_many([minimal(duration_ms=1000 * (n + 1)) for n in range(5)])
    for n, row_id in enumerate(ids):  # two rows before the midnight, three after
        _move(any_witness, row_id, edge + dt.timedelta(minutes=(-20, -5, 0, 10, 25)[n]))
    any_store.rollup(zones=["Asia/Kolkata"])
    assert stored_cuts(any_witness, "Asia/Kolkata") == Counter({before: 2, after: 3})
    exact = figures(any_store, ("day",), since=None, tz="Asia/Kolkata", use_rollups=False)
    assert_same(exact, figures(any_store, ("day",), since=None, tz="Asia/Kolkata"))
    # Purged, its rows stay split; a late row in that hour splits it again
    # from the rows there: the purged ones go to the day before the edge.
    any_store.purge_older_than(10)
    assert any_witness.count() == 0
    assert stored_cuts(any_witness, "Asia/Kolkata") == Counter({before: 2, after: 3})
    late = any_store.record(minimal(duration_ms=500))
    _move(any_witness, late, edge + dt.timedelta(minutes=20))
    any_store.rollup()
    assert stored_cuts(any_witness, "Asia/Kolkata") == Counter({before: 5, after: 1})
    days = figures(any_store, ("day",), since=None, tz="Asia/Kolkata")
    assert days[(before,)]["executions"] == 5 and days[(after,)]["executions"] == 1
    assert days[("totals",)]["executions"] == 6


def test_days_far_apart_are_built_across_the_gap_and_ancient_hours_left_to_the_hour_tier(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    from support import place
    edge = (NOW - dt.timedelta(days=3)).replace(hour=18, minute=30, second=0, microsecond=0)
    place(any_store, any_witness, [
        dt.datetime(1200, 6, 1, 12, 0, tzinfo=dt.timezone.utc),  # another program's row
        NOW - dt.timedelta(days=400), NOW - dt.timedelta(days=399, hours=5),
        edge - dt.timedelta(seconds=1), edge, edge + dt.timedelta(hours=30)])
    result = any_store.rollup(zones=["Asia/Kolkata", "America/Los_Angeles"])
    assert result.steps < 40  # the empty year between is one step
    for zone in ("Asia/Kolkata", "America/Los_Angeles"):
        built = str(any_witness.scalar(f"SELECT built_from FROM {ZONES_TABLE} WHERE zone = ?",
                                       zone))
        assert built.startswith(str((NOW - dt.timedelta(days=401)).year)[:2])  # not year 1200
        assert stored_days(any_witness, zone) == row_days(any_witness, zone), zone
        assert stored_cuts(any_witness, zone) == row_days(any_witness, zone, cut=True), zone
        for by in BY:
            exact = figures(any_store, by, since=None, tz=zone, use_rollups=False)
            assert_same(exact, figures(any_store, by, since=None, tz=zone))
    assert sum(stored_days(any_witness, "America/Los_Angeles").values()) == 5

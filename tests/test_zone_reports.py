"""Reports in any zone from the rollups: by day, week and month, in zones on
the whole hour with clocks that change (America/Los_Angeles), off it
(Asia/Kolkata +05:30, Asia/Kathmandu +05:45) and both (Australia/Lord_Howe:
+10:30, +11 in summer), the same sums as the report from the rows and p95
within 1 %, after a rollup and after a purge, on every engine. Expected
figures come from the rows themselves, read by an independent connection."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import Counter
from typing import Any, Dict, List, Tuple

import pytest
from support import FIXED_NOW, Witness, place
from test_rollups import assert_same, figures, history

from telemetry_orm import PeeweeTelemetryStore
from telemetry_orm.formats import render_report

UTC = dt.timezone.utc
NOW = FIXED_NOW
pytestmark = pytest.mark.usefixtures("pinned_clock")

ZONES = ("America/Los_Angeles", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe")
BY = [("day",), ("week",), ("month",), ("month", "repo"), ("week", "model")]


def every_report(store: PeeweeTelemetryStore, **options: Any
                 ) -> Dict[Tuple[Any, ...], Dict[Tuple[Any, ...], Dict[str, Any]]]:
    return {(zone, by, p95): figures(store, by, since=None, tz=zone, p95=p95, **options)
            for zone in ZONES for by in BY for p95 in (True, False)}


def test_reports_in_any_zone_come_from_the_rollups_with_the_rows_sums(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    history(any_store, any_witness, days=400, per_day=20)
    from_rows = every_report(any_store)
    any_store.rollup()
    for zone in ZONES:
        for by in (("day",), ("month",)):
            assert any_store.report(group_by=by, since=None, tz=zone).from_rollups, (zone, by)
    for key, rolled in every_report(any_store).items():
        assert_same(from_rows[key], rolled)
    assert every_report(any_store, use_rollups=False) == from_rows
    calculated = figures(any_store, ("month",), since=None, tz="Asia/Kathmandu",
                         cost="calculated")
    assert_same(figures(any_store, ("month",), since=None, tz="Asia/Kathmandu",
                        cost="calculated", use_rollups=False), calculated)
    # A range whose ends are inside hours, and rows the rollups do not count yet.
    since, until = NOW - dt.timedelta(days=300, minutes=41), NOW - dt.timedelta(days=3, minutes=7)
    history(any_store, any_witness, days=30, per_day=5, seed=3)
    for zone in ZONES:
        for by in (("day",), ("month", "repo")):
            exact = figures(any_store, by, since=since, until=until, tz=zone, use_rollups=False)
            assert_same(exact, figures(any_store, by, since=since, until=until, tz=zone))


def _local_counts(instants: List[dt.datetime], zone: str, whole_before: dt.datetime,
                  cut: set[dt.datetime]) -> Counter[str]:
    """Executions per local day, a cut hour before ``whole_before`` counted
    in the day where it starts."""
    where = zoneinfo.ZoneInfo(zone)
    counts: Counter[str] = Counter()
    for t in instants:
        hour = t.replace(minute=0, second=0, microsecond=0)
        at = hour if hour < whole_before and hour in cut else t
        counts[at.astimezone(where).strftime("%Y-%m-%d")] += 1
    return counts


@pytest.mark.parametrize("zone", ZONES)
def test_after_a_purge_a_cut_hour_of_purged_days_counts_whole_and_the_report_says_so(
        any_store: PeeweeTelemetryStore, any_witness: Witness, zone: str) -> None:
    instants = history(any_store, any_witness, days=200, per_day=24)
    by = ("day",)
    before = figures(any_store, by, since=None, tz=zone)
    any_store.purge_older_than(90)
    cutoff = NOW - dt.timedelta(days=90)
    result = any_store.report(group_by=by, since=None, tz=zone)
    after = figures(any_store, by, since=None, tz=zone)
    assert after[("totals",)]["executions"] == len(instants)
    where = zoneinfo.ZoneInfo(zone)
    # The hours that hold a local midnight inside them.
    cut = {t.replace(minute=0, second=0, microsecond=0) for t in instants
           if (t.replace(minute=0, second=0) + dt.timedelta(hours=1) - dt.timedelta(seconds=1)
               ).astimezone(where).date()
           != t.replace(minute=0, second=0).astimezone(where).date()}
    if zone == "America/Los_Angeles":  # on the whole hour: nothing changes
        assert result.whole_hours_before is None
        assert_same(before, after)
        return
    assert result.whole_hours_before is not None
    assert f"midnight in {zone} cuts counts whole" in render_report(result, "table")
    assert cutoff - dt.timedelta(days=1) < result.whole_hours_before <= cutoff + dt.timedelta(
        hours=1)
    expected = _local_counts(instants, zone, result.whole_hours_before, cut)
    assert {k[0]: v["executions"] for k, v in after.items() if k != ("totals",)} == dict(
        expected)
    # Past the purge, each day is exactly its rows' (and the same as before).
    midnight = dt.datetime.combine((cutoff + dt.timedelta(days=2)).astimezone(where).date(),
                                   dt.time())  # naive: a wall time in the zone
    recent = figures(any_store, by, since=midnight, tz=zone)
    for key, metrics in recent.items():
        if key != ("totals",):
            assert_same({key: before[key]}, {key: metrics})


def test_a_zone_report_without_time_keys_is_the_utc_report_from_the_month_tier(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    history(any_store, any_witness, days=100, per_day=10)
    any_store.rollup()
    in_utc = figures(any_store, ("repo",), since=None)
    for zone in ZONES:
        assert figures(any_store, ("repo",), since=None, tz=zone) == in_utc


def test_rollups_centuries_apart_are_read_whole_where_purged_and_from_rows_elsewhere(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    old = dt.datetime(1200, 6, 1, 12, 0, tzinfo=UTC)
    edge = (NOW - dt.timedelta(days=3)).replace(hour=18, minute=30, second=0)  # Kolkata midnight
    place(any_store, any_witness, [old, edge - dt.timedelta(seconds=1), edge])
    any_store.rollup()
    exact = figures(any_store, ("day",), since=None, tz="Asia/Kolkata", use_rollups=False)
    assert_same(exact, figures(any_store, ("day",), since=None, tz="Asia/Kolkata"))
    any_store.purge_older_than(90)
    assert any_witness.count() == 2
    result = any_store.report(group_by=["day"], since=None, tz="Asia/Kolkata")
    assert result.whole_hours_before is not None
    assert_same(exact, figures(any_store, ("day",), since=None, tz="Asia/Kolkata"))

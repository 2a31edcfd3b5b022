"""Reports in a time zone: day, week and month buckets and the dates of
``since``/``until`` in any IANA zone, across daylight-saving changes and
for offsets that are not whole hours, on both engines. Expected buckets are
worked out here with :mod:`zoneinfo` on each row's instant, independently
of the SQL."""

from __future__ import annotations

import collections
import datetime as dt
import json
import zoneinfo
from pathlib import Path
from typing import Dict, List, Sequence

import pytest
from support import Witness, place, program

from telemetry_orm import PeeweeTelemetryStore, TelemetryValidationError, create_telemetry_store
from telemetry_orm.zones import offsets

UTC = dt.timezone.utc
LOS_ANGELES = zoneinfo.ZoneInfo("America/Los_Angeles")
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def hourly(start: dt.datetime, hours: int) -> List[dt.datetime]:
    return [start + dt.timedelta(hours=n) for n in range(hours)]


def local_days(instants: Sequence[dt.datetime], zone: zoneinfo.ZoneInfo) -> Dict[str, int]:
    return dict(collections.Counter(t.astimezone(zone).strftime("%Y-%m-%d") for t in instants))


def by_day(store: PeeweeTelemetryStore, zone: str, **filters: object) -> Dict[str, int]:
    result = store.report(group_by=["day"], tz=zone, **filters)  # type: ignore[arg-type]
    return {row.keys["day"]: row.metrics.executions for row in result.rows}


# -- the offsets of a span ------------------------------------------------------------


@pytest.mark.parametrize("zone", ["America/Los_Angeles", "Europe/Berlin", "Australia/Lord_Howe",
                                  "Asia/Kathmandu", "UTC"])
def test_offsets_agree_with_zoneinfo_at_every_minute_around_each_change(zone: str) -> None:
    tz = zoneinfo.ZoneInfo(zone)
    start, end = dt.datetime(2024, 1, 1), dt.datetime(2026, 12, 31)
    found = offsets(tz, start, end)

    def ours(at: dt.datetime) -> int:
        return next(o.seconds for o in found if o.until is None or at < o.until)

    def theirs(at: dt.datetime) -> int:
        offset = at.replace(tzinfo=UTC).astimezone(tz).utcoffset()
        assert offset is not None
        return int(offset.total_seconds())

    changes = [o.until for o in found if o.until is not None]
    assert len(changes) == (0 if zone in ("UTC", "Asia/Kathmandu") else 6)
    for change in changes:
        for minute in range(-90, 90):
            at = change + dt.timedelta(minutes=minute, seconds=minute % 60)
            assert ours(at) == theirs(at), at
    # And every 7 hours over the whole span.
    at = start
    while at < end:
        assert ours(at) == theirs(at), at
        at += dt.timedelta(hours=7)


# -- buckets ----------------------------------------------------------------------------


@pytest.mark.parametrize("zone, spring, autumn", [
    (LOS_ANGELES, "2026-03-08", "2026-11-01"),
    (BERLIN, "2026-03-29", "2026-10-25"),
])
def test_day_buckets_around_both_changes_have_23_and_25_hours(
        any_store: PeeweeTelemetryStore, any_witness: Witness,
        zone: zoneinfo.ZoneInfo, spring: str, autumn: str) -> None:
    # A row every hour for three days around each change.
    instants = []
    for day in (spring, autumn):
        middle = dt.datetime.fromisoformat(day).replace(tzinfo=UTC)
        instants += hourly(middle - dt.timedelta(days=1), 72)
    place(any_store, any_witness, instants)
    days = by_day(any_store, zone.key)
    assert days == local_days(instants, zone)
    assert days[spring] == 23 and days[autumn] == 25
    # The whole local day, asked for with naive dates in the zone.
    start = dt.datetime.fromisoformat(spring)
    assert by_day(any_store, zone.key, since=start, until=start + dt.timedelta(days=1)) == {
        spring: 23}
    start = dt.datetime.fromisoformat(autumn)
    assert by_day(any_store, zone.key, since=start, until=start + dt.timedelta(days=1)) == {
        autumn: 25}
    # In UTC every day of the rows has its 24 hours.
    assert set(by_day(any_store, "UTC").values()) == {24}


@pytest.mark.parametrize("zone, edge", [
    ("Asia/Kolkata", dt.datetime(2026, 6, 1, 18, 30, tzinfo=UTC)),     # +05:30
    ("Asia/Kathmandu", dt.datetime(2026, 6, 1, 18, 15, tzinfo=UTC)),   # +05:45
])
def test_zones_off_the_hour_put_rows_on_the_right_side_of_midnight(
        any_store: PeeweeTelemetryStore, any_witness: Witness, zone: str,
        edge: dt.datetime) -> None:
    instants = [edge - dt.timedelta(seconds=1), edge, edge + dt.timedelta(minutes=29)]
    place(any_store, any_witness, instants)
    assert by_day(any_store, zone) == {"2026-06-01": 1, "2026-06-02": 2}
    assert by_day(any_store, zone) == local_days(instants, zoneinfo.ZoneInfo(zone))


def test_week_and_month_buckets_follow_the_local_calendar(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    # New Year's Eve in Los Angeles is already 2026 in UTC; Sunday night in
    # Los Angeles is Monday (the next ISO week) in UTC.
    instants = [dt.datetime(2026, 1, 1, 3, 0, tzinfo=UTC),
                dt.datetime(2026, 1, 5, 6, 0, tzinfo=UTC),
                dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC)]
    place(any_store, any_witness, instants)
    result = any_store.report(group_by=["month", "week"], tz="America/Los_Angeles")
    got = {(r.keys["month"], r.keys["week"]): r.metrics.executions for r in result.rows}
    expected = collections.Counter(
        (t.astimezone(LOS_ANGELES).strftime("%Y-%m"),
         "{}-W{:02d}".format(*t.astimezone(LOS_ANGELES).isocalendar()[:2]))
        for t in instants)
    assert got == dict(expected) == {("2025-12", "2026-W01"): 1, ("2026-01", "2026-W01"): 1,
                                     ("2026-01", "2026-W02"): 1}


def test_a_report_over_many_years_of_changes_buckets_every_row_as_zoneinfo_does(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    # A row every 5 hours and 7 minutes over three years: every change is crossed.
    start = dt.datetime(2023, 1, 1, tzinfo=UTC)
    instants = [start + dt.timedelta(minutes=307 * n) for n in range(5200)]
    place(any_store, any_witness, instants)
    assert by_day(any_store, "Europe/Berlin") == local_days(instants, BERLIN)


def test_a_bad_zone_is_an_error_naming_it(any_store: PeeweeTelemetryStore) -> None:
    for zone in ("Mars/Olympus_Mons", "", 5, "../../etc/passwd"):
        with pytest.raises(TelemetryValidationError) as info:
            any_store.report(tz=zone)
        assert info.value.field == "tz"


# -- the command line -------------------------------------------------------------------


def test_cli_reads_dates_in_the_zone_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    witness = Witness(str(db))
    with create_telemetry_store(db) as store:
        instants = hourly(dt.datetime(2026, 3, 7, tzinfo=UTC), 72)
        place(store, witness, instants)
    witness.close()
    done = program("report", "--db", str(db), "--by", "day", "--tz", "America/Los_Angeles",
                   "--since", "2026-03-08", "--until", "2026-03-09", "--format", "json",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert [(r["day"], r["executions"]) for r in document["rows"]] == [("2026-03-08", 23)]
    assert document["filters"]["tz"] == "America/Los_Angeles"
    assert document["filters"]["since"] == "2026-03-08T08:00:00Z"
    table = program("report", "--db", str(db), "--tz", "Europe/Berlin", "--since", "2026-03-07",
                    cwd=tmp_path)
    assert table.returncode == 0 and "CET" in table.stdout and "Europe/Berlin" in table.stdout
    bad = program("report", "--db", str(db), "--tz", "Mars/Olympus_Mons", cwd=tmp_path)
    assert bad.returncode == 2 and "Mars/Olympus_Mons" in bad.stderr

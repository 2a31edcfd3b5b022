"""Days in a time zone: the totals of each local day of the zones a user
keeps, built from the hour tier, for reports by day and week in that zone.

The hour tier serves a report in any zone, but a report by day over two
years reads every hour of them, and an hour holds one row per combination:
at a team's pace nearly one row per execution. A zone kept
(``store.rollup(zones=[...])``, ``telemetry-orm rollup --zone``) gets:

- ``telemetry_orm_zone_days``: per zone × local day × model × whether a
  cost was recorded, the sums of :data:`~telemetry_orm.rollups.SUMS`
  (the model stays: a report prices its tokens per model);
- ``telemetry_orm_zone_day_durations``: per zone × local day, the duration
  sketch of all its executions;
- ``telemetry_orm_rollup_zones``: the zones kept, and the instants
  ``[built_from, built_before)`` their days are built for (both the
  instant a local day begins);
- ``telemetry_orm_zone_cuts`` and ``telemetry_orm_zone_cut_durations``:
  the two parts of each hour a day's edge cuts (below), by day.

So they answer reports grouped by day, week or month alone, with no filter
but the time range; others read the hours.

A local day is the whole UTC hours inside it. A zone whose offset is not
whole hours (Asia/Kolkata, +05:30) begins its days inside an hour
(18:00-19:00 UTC): that hour belongs to two days, so no day holds it. Its
two parts are kept apart, split from its rows (:func:`split`): exact while
its rows are there; what was purged before a split goes to the day its
start falls in, as a report from the hour tier counts it. A day on which the
clocks change has the 23 or 25 hours its wall clock shows: each hour goes
to the day its start falls in, with the offset in force then.

Building from the hours keeps the days exact: a step adds whole days from
hours already folded, and moves ``built_before`` past them in the same
transaction; a fold that changes hours of built days (late rows, a
replaced row, a purge) builds those days again from the hours, in its own
transaction (:func:`rebuild`), and drops the parts of a cut hour it
changes, which the next rollup splits again (:func:`stale_cuts`).
"""

from __future__ import annotations

import datetime as _dt
import zoneinfo
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

from peewee import (
    SQL,
    BigIntegerField,
    Case,
    CompositeKey,
    DoubleField,
    IntegerField,
    Model,
    Value,
    fn,
)

from . import zones
from .errors import TelemetryValidationError
from .rollups import SUMS, ceil_hour, floor_hour, row_sums, summed_again
from .schema import KeyTextField, TimeTextField, format_timestamp, parse_timestamp
from .sql import Statement, Upsert, render, rendered_once

__all__ = [
    "MODELS", "ZONES_TABLE", "ZONE_CUTS_TABLE", "ZONE_CUT_DURATIONS_TABLE", "ZONE_DAYS_TABLE",
    "ZONE_DAY_DURATIONS_TABLE", "Kept", "RollupZone", "ZoneCut", "ZoneCutDuration", "ZoneDay",
    "ZoneDayDuration", "build", "day_edges", "rebuild", "split",
]

ZONE_DAYS_TABLE = "telemetry_orm_zone_days"
ZONE_DAY_DURATIONS_TABLE = "telemetry_orm_zone_day_durations"
ZONES_TABLE = "telemetry_orm_rollup_zones"
ZONE_CUTS_TABLE = "telemetry_orm_zone_cuts"
ZONE_CUT_DURATIONS_TABLE = "telemetry_orm_zone_cut_durations"

_HOUR = _dt.timedelta(hours=1)
_DAY = _dt.timedelta(days=1)


def _sums_table(name: str, table: str, key: Dict[str, Any], doc: str) -> Any:
    """A model of :data:`~telemetry_orm.rollups.SUMS` per ``key`` (its
    columns, in order); one b-tree by its key (SQLite)."""
    fields = {**key, **{column: DoubleField() if column == "cost_usd" else BigIntegerField()
                        for column in SUMS}}
    meta = type("Meta", (), {"table_name": table, "without_rowid": True,
                             "primary_key": CompositeKey(*key)})
    return type(name, (Model,), {**fields, "Meta": meta, "__module__": __name__,
                                 "__doc__": doc})


ZoneDay = _sums_table(
    "ZoneDay", ZONE_DAYS_TABLE, {"zone": KeyTextField(), "day": TimeTextField(),
                                 "model": KeyTextField(), "paid": IntegerField()},
    "One local day of one kept zone, for one model and ``paid``: the sums of the hours "
    "inside it (``day``: its wall-clock midnight, kept as the hours' UTC times are).")


class ZoneDayDuration(Model):
    """How many executions of one local day of one kept zone fell in one
    duration bucket (the sketch of :mod:`telemetry_orm.rollups`)."""

    zone = KeyTextField()
    day = TimeTextField()
    bucket = IntegerField()
    executions = BigIntegerField()

    class Meta:
        table_name = ZONE_DAY_DURATIONS_TABLE
        primary_key = CompositeKey("zone", "day", "bucket")
        without_rowid = True


class RollupZone(Model):
    """A zone kept, and the instants (UTC text) between which its days are
    built (``None``: none yet)."""

    zone = KeyTextField(primary_key=True)
    built_from = TimeTextField(null=True)
    built_before = TimeTextField(null=True)

    class Meta:
        table_name = ZONES_TABLE


ZoneCut = _sums_table(
    "ZoneCut", ZONE_CUTS_TABLE, {"zone": KeyTextField(), "hour": TimeTextField(),
                                 "day": TimeTextField(), "model": KeyTextField(),
                                 "paid": IntegerField()},
    "The part of one hour a kept zone's day edge cuts that falls in one of its two days, for "
    "one model and ``paid``: its sums.")


class ZoneCutDuration(Model):
    """How many executions of the part of a cut hour in one day fell in one
    duration bucket."""

    zone = KeyTextField()
    hour = TimeTextField()
    day = TimeTextField()
    bucket = IntegerField()
    executions = BigIntegerField()

    class Meta:
        table_name = ZONE_CUT_DURATIONS_TABLE
        primary_key = CompositeKey("zone", "hour", "day", "bucket")
        without_rowid = True


#: The models of the zones' days, after :data:`telemetry_orm.rollups.MODELS`
#: in an engine's ``rollup_models`` (the order of ``RollupModels``).
MODELS: Tuple[Any, ...] = (ZoneDay, ZoneDayDuration, RollupZone, ZoneCut, ZoneCutDuration)


class Kept(NamedTuple):
    """A kept zone and its built instants (naive UTC; ``None``: none yet)."""

    zone: str
    built_from: Optional[_dt.datetime]
    built_before: Optional[_dt.datetime]


def _time(value: Any) -> Optional[_dt.datetime]:
    if value is None:
        return None
    if isinstance(value, str):
        value = parse_timestamp(value)
    if value.tzinfo is not None:
        value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return value  # type: ignore[no-any-return]


def read_kept(conn: Any, models: Any) -> List[Kept]:
    """The kept zones, by name."""
    z = models.zones
    # Rendered once: every fold reads it (a purge chunk, a rollup step), and
    # rendering it each time cost a folding purge about a tenth of its time.
    rows = conn.execute(*rendered_once(z, "read_kept", lambda: z.select(
        z.zone, z.built_from, z.built_before).order_by(z.zone))).fetchall()
    return [Kept(str(r[0]), _time(r[1]), _time(r[2])) for r in rows]


def write_kept(conn: Any, models: Any, kept: Kept, *, upsert: Upsert) -> None:
    """Record ``kept`` (a new zone, or how far its days are built)."""
    z = models.zones
    values = [kept.zone, kept.built_from and format_timestamp(kept.built_from),
              kept.built_before and format_timestamp(kept.built_before)]
    conn.execute(*render(z._meta.database, upsert(
        z.insert(dict(zip((z.zone, z.built_from, z.built_before), values, strict=True))),
        [z.zone], [z.built_from, z.built_before], False)))


def zone_names(values: Any, name: str) -> List[str]:
    """The names of the zones ``values`` gives, one (a name or a
    :class:`zoneinfo.ZoneInfo`) or many, each checked; errors name ``name``."""
    if isinstance(values, (str, zoneinfo.ZoneInfo)):
        values = [values]
    try:
        given = list(values)
    except TypeError:
        raise TelemetryValidationError(
            name, f"must be IANA time zone names, got {values!r}") from None
    return [zones.zone_name(zones.check_zone(name, value)) for value in given]


def forget(models: Any, zone: str) -> List[Statement]:
    """The statements that stop keeping ``zone``: its days and its row."""
    database = models.zones._meta.database
    return [render(database, table.delete().where(table.zone == zone))
            for table in (models.zone_days, models.zone_day_durations, models.zone_cuts,
                          models.zone_cut_durations, models.zones)]


# --- A zone's days, in UTC instants ---------------------------------------------------


def day_edges(zone: Any, start: _dt.datetime, end: _dt.datetime
              ) -> Optional[List[_dt.datetime]]:
    """The instants in ``[start, end]`` (naive UTC) at which the zone's day
    changes (:func:`telemetry_orm.zones.bucket_edges`), ``None`` past the
    years it lists."""
    second = _dt.timedelta(seconds=1)
    found = zones.bucket_edges(zone, ("day",), start - second, end + second)
    return None if found is None else [e for e in found if start <= e <= end]


def day_of(zone: Any, instant: _dt.datetime) -> _dt.datetime:
    """The wall-clock midnight of the zone's day holding ``instant`` (naive
    UTC), as the report SQL computes it (the offset in force then)."""
    wall = instant + _dt.timedelta(seconds=zones.offset_at(zone, instant))
    return _dt.datetime.combine(wall.date(), _dt.time())


def day_around(zone: Any, instant: _dt.datetime) -> Optional[Tuple[_dt.datetime, _dt.datetime]]:
    """The instants the zone's day holding ``instant`` begins and ends."""
    edges = day_edges(zone, instant - 2 * _DAY, instant + 2 * _DAY)
    if not edges:
        return None
    before = [e for e in edges if e <= instant]
    after = [e for e in edges if e > instant]
    return (before[-1], after[0]) if before and after else None


def _cut(edges: Iterable[_dt.datetime]) -> List[_dt.datetime]:
    return zones.cut_hours(list(edges))


def build(models: Any, dialect: Any, zone: Any, start: _dt.datetime, end: _dt.datetime
          ) -> List[Statement]:
    """Add the days of ``zone`` between the instants ``start`` and ``end``
    (two of its :func:`day_edges`) from the hour tier: the whole hours
    inside them that no edge cuts, each to the day of its start."""
    r, d = models.hours, models.hour_durations
    database = r._meta.database
    lower, upper = ceil_hour(start), floor_hour(end)
    if upper <= lower:
        return []
    name = zones.zone_name(zone)
    offsets = zones.offsets(zone, lower, upper)
    skip = [format_timestamp(h) for h in _cut(day_edges(zone, start, end) or ())]
    statements = []
    sums = summed_again(r)
    for source, target, columns, values in (
            (r, models.zone_days, ("model", "paid", *SUMS), [r.model, r.paid, *sums]),
            (d, models.zone_day_durations, ("bucket", "executions"),
             [d.bucket, fn.SUM(d.executions)])):
        where = (source.hour >= format_timestamp(lower)) & (source.hour < format_timestamp(upper))
        if skip:
            where &= source.hour.not_in(skip)
        width = 1 + len(columns) - (len(SUMS) if source is r else 1)
        query = source.select(Value(name), dialect.day(dialect.local(source.hour, offsets)),
                              *values).where(where).group_by(
            *(SQL(str(i)) for i in range(2, 2 + width)))
        fields = [target.zone, target.day, *(getattr(target, c) for c in columns)]
        statements.append(render(database, target.insert_from(query, fields)))
    return statements


def rebuild(models: Any, dialect: Any, kept: Sequence[Kept], hours: Sequence[_dt.datetime]
            ) -> List[Statement]:
    """Build again, from the hour tier, the built days of the kept zones
    that hold any of ``hours`` (UTC hours whose sums just changed)."""
    statements: List[Statement] = []
    database = models.zones._meta.database
    for entry in kept:
        if entry.built_from is None or entry.built_before is None:
            continue
        zone = zones.check_zone("zone", entry.zone)
        spans: Set[Tuple[_dt.datetime, _dt.datetime]] = set()
        stale: Set[_dt.datetime] = set()
        for hour in hours:
            if not floor_hour(entry.built_from) <= hour < ceil_hour(entry.built_before):
                continue
            span = day_around(zone, hour)
            if span is None:
                continue
            if span[1] < hour + _HOUR:
                # An hour a day's edge cuts belongs to no day: its parts are
                # split again by the next build (:func:`stale_cuts`).
                stale.add(hour)
            elif ceil_hour(entry.built_from) <= hour < floor_hour(entry.built_before):
                spans.add(span)
        for hour in sorted(stale):
            statements.extend(render(database, t.delete().where(
                (t.zone == entry.zone) & (t.hour == format_timestamp(hour))))
                for t in (models.zone_cuts, models.zone_cut_durations))
        for start, end in sorted(spans):
            day = day_of(zone, start)
            for table in (models.zone_days, models.zone_day_durations):
                statements.append(render(database, table.delete().where(
                    (table.zone == entry.zone) & (table.day == format_timestamp(day)))))
            statements.extend(build(models, dialect, zone, start, end))
    return statements


# --- The hours a day's edge cuts ------------------------------------------------------




def cuts_between(zone: Any, start: _dt.datetime, stop: _dt.datetime, *, first: bool
                 ) -> List[Tuple[_dt.datetime, _dt.datetime]]:
    """The hours cut by the zone's day edges in ``(start, stop]`` (``first``:
    ``[start, stop]``), each with its edge."""
    edges = day_edges(zone, start, stop) or []
    return [(floor_hour(e), e) for e in edges
            if floor_hour(e) != e and (first or e != start)]


def split(models: Any, model: Any, dialect: Any, zone: Any,
          cuts: Sequence[Tuple[_dt.datetime, _dt.datetime]], counted: Any) -> List[Statement]:
    """The parts of the cut hours ``cuts`` (each with the edge inside it) in
    their two days, made afresh: to the day after the edge the rows still
    there from it on (those ``counted``), and to the day before the rest of
    what the hour tier holds of the hour: its rows before the edge, and any
    purged. Both parts add up to the hour; they are exact while its rows
    are there."""
    r, d, m = models.hours, models.hour_durations, model
    database = r._meta.database
    name = zones.zone_name(zone)
    hours = [format_timestamp(h) for h, _ in cuts]
    offsets = zones.offsets(zone, min(h for h, _ in cuts), max(h for h, _ in cuts) + _HOUR)

    def day(column: Any) -> Any:
        return dialect.day(dialect.local(column, offsets))

    # ``counted`` inside each range: SQLite then reads each range from the
    # index (outside, it walked every counted row: seconds a batch).
    ranges = [(m.created_at >= format_timestamp(e)) & (m.created_at < format_timestamp(h + _HOUR))
              & counted for h, e in cuts]
    while len(ranges) > 1:  # a balanced tree: no deep nesting to render
        ranges = [a | b for a, b in zip(ranges[::2], ranges[1::2], strict=False)] + (
            [ranges[-1]] if len(ranges) % 2 else [])
    gone = ranges[0]
    statements = [render(database, t.delete().where((t.zone == name) & t.hour.in_(hours)))
                  for t in (models.zone_cuts, models.zone_cut_durations)]
    tier_sums = summed_again(r)
    paid: Any = Case(None, [(m.cost_usd > 0, 1)], 0)
    hour = dialect.hour(m.created_at)
    for target, source, whole, keys, sums in (
            (models.zone_cuts, r, [r.model, r.paid, *tier_sums], [m.model, paid],
             row_sums(m)),
            (models.zone_cut_durations, d, [d.bucket, fn.SUM(d.executions)],
             [dialect.bucket(m.duration_ms)], [fn.COUNT(SQL("*"))])):
        names = ["model", "paid", *SUMS] if target is models.zone_cuts else [
            "bucket", "executions"]
        fields = [target.zone, target.hour, target.day, *(getattr(target, n) for n in names)]
        width = 3 + len(keys)
        by = [SQL(str(i)) for i in range(2, 1 + width)]
        # The whole hour to the day before the edge, less what its rows
        # still there from the edge on give the day after.
        statements.append(render(database, target.insert_from(source.select(
            Value(name), source.hour, day(source.hour), *whole).where(
            source.hour.in_(hours)).group_by(*by), fields)))
        taken = m.select(Value(name), hour, day(hour), *keys, *(v * SQL("-1") for v in sums))
        statements.append(render(database, dialect.upsert(
            target.insert_from(taken.where(gone).group_by(*by), fields), fields[:width],
            fields[width:], True)))
        given = m.select(Value(name), hour, day(m.created_at), *keys, *sums)
        statements.append(render(database, target.insert_from(
            given.where(gone).group_by(*by), fields)))
        statements.append(render(database, target.delete().where(
            (target.zone == name) & target.hour.in_(hours) & (target.executions == 0))))
    return statements


def split_hours(conn: Any, models: Any, zone: str, start: _dt.datetime, end: _dt.datetime
                ) -> Set[_dt.datetime]:
    """The cut hours in ``[start, end)`` whose parts are split (:func:`split`)."""
    c = models.zone_cuts
    rows = conn.execute(*render(c._meta.database, c.select(c.hour).where(
        (c.zone == zone) & (c.hour >= format_timestamp(start))
        & (c.hour < format_timestamp(end))).distinct())).fetchall()
    return {_time(row[0]) for row in rows}  # type: ignore[misc]


def stale_cuts(conn: Any, models: Any, zone: Any, kept: Kept
               ) -> List[Tuple[_dt.datetime, _dt.datetime]]:
    """The cut hours of the built days whose parts are not split, though
    the hour tier holds the hour (a fold changed it since), with their edges."""
    if kept.built_from is None or kept.built_before is None:
        return []
    cuts = cuts_between(zone, kept.built_from, kept.built_before, first=True)
    done = split_hours(conn, models, kept.zone, floor_hour(kept.built_from),
                       ceil_hour(kept.built_before))
    missing = [(h, e) for h, e in cuts if h not in done]
    if not missing:
        return []
    r = models.hours
    held = set()
    for at in range(0, len(missing), 500):
        chunk = [format_timestamp(h) for h, _ in missing[at:at + 500]]
        held |= {_time(row[0]) for row in conn.execute(*render(r._meta.database, r.select(
            r.hour).where(r.hour.in_(chunk)).distinct())).fetchall()}
    return [(h, e) for h, e in missing if h in held]

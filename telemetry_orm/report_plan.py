"""How a report is split between the rollups and the rows: which hours,
days or months each rollup tier stands for, and which rows are read
(see docs/reports.md)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import Any, Callable, List, Optional, Tuple

import peewee
from peewee import fn

from . import label_plan, rollups, zone_days, zones
from .checks import to_utc
from .label_rollups import LABEL_ROLLUPS_TABLE
from .report_labels import uses_labels
from .report_query import (
    TIME_KEYS,
    ReportFilters,
    RollupQuery,
    in_hours,
    month_dimension,
    zone_offsets,
)
from .schema import format_timestamp, parse_timestamp
from .tables import tables_of

__all__ = ["Plan", "plan_report"]


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which rows a report reads, and which rollups."""

    #: What raw rows must meet besides the filters, as a condition on the
    #: bound ``Execution`` model given (``None``: every row).
    raw_rows: Optional[Callable[[Any], Any]] = None
    #: The parts the rollups answer (:class:`RollupQuery` and the like).
    rollups: Tuple[Any, ...] = ()
    offsets: Optional[List[zones.Offset]] = None
    #: History before this was purged and could not be reported (``pr``).
    incomplete_before: Optional[_dt.datetime] = None
    #: Purged hours before this that a bucket edge cuts count whole.
    whole_hours_before: Optional[_dt.datetime] = None


def plan_report(database: peewee.Database, filters: ReportFilters, keys: Tuple[str, ...],
          use_rollups: bool, p95: bool = True) -> Plan:
    """Split a report between rollups and raw rows (see docs/reports.md).

    The rollups count the rows with an id up to ``counted_ids`` and a
    ``created_at`` before ``counted_before``; a purge of this package folds
    in what it deletes, so hours before ``purged_before`` exist only there.
    An hour the report takes from the rollups comes with the rows of that
    hour the rollups do not count yet; every other hour from its rows alone.
    In a zone, so does an hour that one of its bucket edges cuts, while its
    rows are there.
    """
    tables = tables_of(database)
    conn = tables.engine.statements(database)
    zone = zones.check_zone("tz", filters.tz)
    if not tables.engine.has_table(conn, rollups.STATE_TABLE):
        return Plan()
    models = tables.rollups
    state = rollups.read_state(conn, models)
    if state.counted_before is None and state.purged_before is None:
        return Plan()
    # Without time keys the zone changes nothing but the bounds (already UTC).
    zoned = zone != zones.UTC and bool(set(TIME_KEYS) & set(keys))
    offsets = None
    if zoned:
        offsets = _history_offsets(database, tables.rollup(rollups.ROLLUPS_TABLE), filters,
                                   zone)
    purged = rollups.ceil_hour(state.purged_before) if state.purged_before else None
    since = _naive_utc(filters.since) if filters.since else None
    until = _naive_utc(filters.until) if filters.until else None
    labelled = label_plan.answerable(filters, keys) if uses_labels(keys, filters.labels) \
        else None
    if labelled is not None and not tables.engine.has_table(conn, LABEL_ROLLUPS_TABLE):
        labelled = None  # rolled up before labels: the label hours come at the next fold
    if "pr" in keys or not use_rollups or (labelled is None
                                           and uses_labels(keys, filters.labels)):
        gone = state.purged_before
        reaches = gone is not None and (since is None or since < gone)
        return Plan(offsets=offsets, incomplete_before=(
            gone.replace(tzinfo=_dt.timezone.utc) if gone is not None and reaches else None))
    # Hours before `upper` come from the rollups where they can.
    candidates = [t for t in (purged, state.counted_before) if t]
    upper = max(candidates)
    if until is not None:
        upper = min(upper, rollups.floor_hour(until))
    lower = None
    if since is not None:
        # Inside purged history the hour holding `since` is taken whole.
        gone = state.purged_before
        lower = (rollups.floor_hour(since) if gone is not None and since < gone
                 else rollups.ceil_hour(since))
        if upper <= lower:
            return Plan(offsets=offsets)
    cut: List[_dt.datetime] = []
    whole_before = None
    if zoned:
        edges = _zone_edges(database, zone, keys, lower, upper)
        gone = state.purged_before
        if edges is None:
            # Centuries of hours (another program's rows of year 1 or 9999):
            # the rows where they are, the purged hours whole.
            if gone is None or (lower is not None and purged is not None
                                and purged <= lower):
                return Plan(offsets=offsets)
            upper, edges = min(upper, purged or upper), []
            whole_before = gone.replace(tzinfo=_dt.timezone.utc)
        cut = zones.cut_hours(edges)
        # A cut hour's rows may be gone in purged history: it counts whole there.
        whole = [h for h in cut if gone is not None and h < gone]
        cut = cut[len(whole):]  # both in time order
        if whole:
            whole_before = (whole[-1] + _HOUR).replace(tzinfo=_dt.timezone.utc)
        elif whole_before is not None and not any(
                o.seconds % 3600 for o in offsets or ()):
            whole_before = None  # on the whole hour: no hour is cut

    def raw(m: Any) -> Any:
        rows = (m.created_at >= format_timestamp(upper)) | rollups.uncounted(m, state)
        if lower is not None:
            rows = rows | (m.created_at < format_timestamp(lower))
        split = in_hours(m.created_at, cut)
        return rows if split is None else rows | split

    def hours(start: Optional[_dt.datetime], end: Optional[_dt.datetime]) -> RollupQuery:
        return RollupQuery(database=database, filters=filters, group_by=keys, lower=start,
                           upper=end, offsets=offsets, skip=cut)

    def plan(*parts: Any) -> Plan:
        return Plan(raw, parts, offsets, whole_hours_before=whole_before)

    if labelled is not None:  # the label hours (and the hours, for those without it)
        def made(cls: Any, f: ReportFilters, k: Tuple[str, ...], sign: int) -> Any:
            return cls(database=database, filters=f, group_by=k, lower=lower, upper=upper,
                       offsets=offsets, skip=cut, sign=sign)
        return plan(*label_plan.parts(labelled, made, keys, filters))

    # By day or week alone, in a zone whose days are kept: those days, and
    # the hours around them and inside them that no day holds.
    span = _kept_days(conn, tables, zone, filters, keys, lower, upper)
    if span is not None:
        start, end = span
        name = zones.zone_name(zone)
        low, high = rollups.ceil_hour(start), rollups.floor_hour(end)
        inside = [h for h in zones.cut_hours(zone_days.day_edges(zone, start, end) or [])
                  if low <= h < high]
        # The cut hours inside whose parts are split come from those parts;
        # the others from their rows (`cut`, which raw() reads) or whole.
        split = zone_days.split_hours(conn, models, name, low, high) if inside else set()
        cut = [h for h in cut if h not in split]
        read = set(cut)
        taken = [h for h in inside if h not in read and h not in split]
        parts = [RollupQuery(database=database, filters=filters, group_by=keys, tier="zone",
                             zone=name, lower=zone_days.day_of(zone, start),
                             upper=zone_days.day_of(zone, end)),
                 hours(lower, low), hours(high, upper)]
        if split:
            parts.append(RollupQuery(database=database, filters=filters, group_by=keys,
                                     tier="cut", zone=name, lower=low, upper=high))
        if taken:
            parts.append(RollupQuery(database=database, filters=filters, group_by=keys,
                                     lower=None, upper=None, offsets=offsets, hours=taken))
        return plan(*parts)
    # Whole UTC months (or days) inside the range from the month (or day)
    # tier, when it can answer; the hours around them from the hour tier.
    # In a zone, by month: the UTC months, then the hours that move.
    if month_dimension(dataclasses.replace(filters, tz="UTC"), keys) is not None or (
            not p95 and not zoned and not {"day", "week"} & set(keys)):
        tier, floor, ceil = "month", rollups.floor_month, rollups.ceil_month
    elif not p95 and not zoned:  # sums only, by UTC day, week or month
        tier, floor, ceil = "day", rollups.floor_day, rollups.ceil_day
    else:
        return plan(hours(lower, upper))
    # The tiers hold the hours before `built` (see telemetry_orm.rollups).
    built = (rollups.read_tiers(conn, models)
             if tables.engine.has_table(conn, rollups.TIERS_TABLE) else None)
    if built is None:
        return plan(hours(lower, upper))
    first = None if lower is None else ceil(lower)
    last = floor(min(upper, built))
    if first is not None and last <= first:
        return plan(hours(lower, upper))
    parts = [RollupQuery(database=database, filters=filters, group_by=keys, lower=first,
                         upper=last, tier=tier), hours(last, upper)]
    if lower is not None:
        parts.append(hours(lower, first))
    if zoned:
        parts.extend(_months_in_zone(database, filters, keys, zone, offsets, cut, first, last))
    return plan(*parts)


_HOUR = _dt.timedelta(hours=1)


def _kept_days(conn: Any, tables: Any, zone: Any, filters: ReportFilters,
               keys: Tuple[str, ...], lower: Optional[_dt.datetime], upper: _dt.datetime
               ) -> Optional[Tuple[_dt.datetime, _dt.datetime]]:
    """The instants the first and last whole days of ``zone`` a report by
    day or week alone (no filter but the time) can take from the zone's
    kept days begin (see :mod:`telemetry_orm.zone_days`); ``None``: none."""
    if not {"day", "week"} & set(keys) or not set(keys) <= set(TIME_KEYS) or any(
            getattr(filters, name) is not None
            for name in ("repo", "model", "event_type", "conclusion")):
        return None
    if not tables.engine.has_table(conn, zone_days.ZONES_TABLE):
        return None
    name = zones.zone_name(zone)
    kept = next((k for k in zone_days.read_kept(conn, tables.rollups) if k.zone == name), None)
    if kept is None or kept.built_from is None or kept.built_before is None:
        return None
    start = kept.built_from if lower is None else max(lower, kept.built_from)
    end = min(upper, kept.built_before)
    edges = zone_days.day_edges(zone, start, end) if start < end else None
    return (edges[0], edges[-1]) if edges and len(edges) > 1 else None


def _zone_edges(database: peewee.Database, zone: Any, keys: Tuple[str, ...],
                lower: Optional[_dt.datetime], upper: _dt.datetime
                ) -> Optional[List[_dt.datetime]]:
    """The zone's bucket edges over the rolled-up hours in ``[lower,
    upper)`` (:func:`telemetry_orm.zones.bucket_edges`)."""
    rollup: Any = tables_of(database).rollup(rollups.ROLLUPS_TABLE)
    found = []
    for pick in (fn.MIN, fn.MAX):
        query = rollup.select(pick(rollup.hour)).where(rollup.hour < format_timestamp(upper))
        if lower is not None:
            query = query.where(rollup.hour >= format_timestamp(lower))
        row = database.execute(query).fetchone()
        if row is None or row[0] is None:
            return []
        found.append(_naive_utc(_as_time(row[0])))
    return zones.bucket_edges(zone, keys, found[0], found[1] + _HOUR)


def _as_time(value: Any) -> _dt.datetime:
    return value if isinstance(value, _dt.datetime) else parse_timestamp(str(value))


def _months_in_zone(database: peewee.Database, filters: ReportFilters, keys: Tuple[str, ...],
                    zone: Any, offsets: Optional[List[zones.Offset]], cut: List[_dt.datetime],
                    first: Optional[_dt.datetime], last: _dt.datetime) -> List[RollupQuery]:
    """What turns the UTC months ``[first, last)`` of the month tier into
    the zone's: the hours a UTC month gives to the zone's month before or
    after move there from the hour tier, and the hours a month's edge cuts
    (read from their rows) are taken out."""
    if first is None:
        months: Any = tables_of(database).rollup(rollups.MONTHS_TABLE)
        row = database.execute(months.select(fn.MIN(months.month)).where(
            months.month < format_timestamp(last))).fetchone()
        if row is None or row[0] is None:
            return []
        first = _naive_utc(_as_time(row[0]))
    inside = [h for h in cut if first <= h < last]
    split = set(inside)
    moved = [h for h in zones.moved_hours(zone, first, last) if h not in split]

    def part(hours: List[_dt.datetime], local: bool, sign: int) -> RollupQuery:
        return RollupQuery(database=database, filters=filters, group_by=keys, lower=first,
                           upper=last, offsets=offsets if local else None, hours=hours,
                           sign=sign)

    parts = []
    if moved:
        parts += [part(moved, True, 1), part(moved, False, -1)]
    if inside:
        parts.append(part(inside, False, -1))
    return parts


def _history_offsets(database: peewee.Database, rollup: Any, filters: ReportFilters,
                     zone: Any) -> List[zones.Offset]:
    """The zone's offsets over the report's range, rows and rollups."""
    m = tables_of(database).executions
    return zone_offsets(database, zone, [m.created_at, rollup.hour], filters.since,
                        filters.until)


def _naive_utc(value: _dt.datetime) -> _dt.datetime:
    return to_utc(value).replace(tzinfo=None)

"""Time zones of reports: any IANA zone through :mod:`zoneinfo`.

Rows keep ``created_at`` in UTC. A report in a zone turns each one into the
zone's wall time with the offset in force at that instant: the offsets of a
span of time are found once (:func:`offsets`), and the database adds the
right one to each row, so day, week and month buckets follow the zone's
calendar, with its 23- and 25-hour days, on any engine.
"""

from __future__ import annotations

import datetime as _dt
import zoneinfo
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

from .errors import TelemetryValidationError

__all__ = [
    "UTC", "Offset", "bucket_edges", "check_zone", "moved_hours", "offset_at", "offsets",
    "wall_to_utc", "zone_name",
]

UTC = zoneinfo.ZoneInfo("UTC")

# Offsets are looked at this far apart, then a change is narrowed down to the
# second. Zones change offset at most a few times a year, months apart.
_STEP = _dt.timedelta(hours=12)


class Offset(NamedTuple):
    """The zone's offset from UTC, in seconds, for instants before ``until``
    (a naive UTC datetime; ``None``: from then on)."""

    until: Optional[_dt.datetime]
    seconds: int


def check_zone(name: str, value: Any) -> zoneinfo.ZoneInfo:
    """``value`` (an IANA zone name such as ``America/Los_Angeles``, or a
    :class:`zoneinfo.ZoneInfo`) as a zone; anything else raises
    :class:`~telemetry_orm.TelemetryValidationError` naming ``name``."""
    if isinstance(value, zoneinfo.ZoneInfo):
        return value
    if not isinstance(value, str) or not value.strip():
        raise TelemetryValidationError(
            name, f"must be an IANA time zone name such as 'America/Los_Angeles', got {value!r}")
    try:
        return zoneinfo.ZoneInfo(value.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise TelemetryValidationError(
            name, f"unknown time zone {value!r}: use an IANA name such as "
            "'America/Los_Angeles' or 'UTC' (without the system's time zone database, "
            "install the 'tzdata' package)") from None


def zone_name(zone: zoneinfo.ZoneInfo) -> str:
    return str(zone.key)


def _offset(zone: zoneinfo.ZoneInfo, instant: _dt.datetime) -> int:
    try:
        local = instant.replace(tzinfo=_dt.timezone.utc).astimezone(zone)
    except OverflowError:
        # The wall time is past year 9999 (or before year 1): take the
        # offset of two days nearer, which no zone changes in between there.
        nearer = instant + _dt.timedelta(days=-2 if instant.year > 1 else 2)
        local = nearer.replace(tzinfo=_dt.timezone.utc).astimezone(zone)
    delta = local.utcoffset()
    return int(delta.total_seconds()) if delta is not None else 0


def offset_at(zone: zoneinfo.ZoneInfo, instant: _dt.datetime) -> int:
    """The zone's offset from UTC, in seconds, at ``instant`` (naive UTC)."""
    return _offset(zone, instant)


def offsets(zone: zoneinfo.ZoneInfo, start: _dt.datetime, end: _dt.datetime) -> List[Offset]:
    """The zone's offsets over ``[start, end]`` (naive UTC datetimes), in
    order: each one applies before its ``until``, the last one from then on.
    One entry for a zone whose offset does not change in that span."""
    found: List[Offset] = []
    at, current = start, _offset(zone, start)
    while at < end:
        step = end if end - at <= _STEP else at + _STEP  # no step past year 9999
        seconds = _offset(zone, step)
        if seconds != current:
            low, high = at, step  # the change is in (low, high]
            while high - low > _dt.timedelta(seconds=1):
                middle = low + (high - low) / 2
                middle = middle.replace(microsecond=0)
                if _offset(zone, middle) == current:
                    low = middle
                else:
                    high = middle
            found.append(Offset(high, current))
            current = seconds
        at = step
    found.append(Offset(None, current))
    return found


def wall_to_utc(value: _dt.datetime, zone: zoneinfo.ZoneInfo) -> _dt.datetime:
    """A datetime as an aware UTC one: a naive one is a wall time in
    ``zone`` (the earlier of two when clocks go back, as :mod:`zoneinfo`
    reads ``fold=0``), an aware one is converted."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(_dt.timezone.utc)


# --- Where a zone's buckets cut UTC hours ------------------------------------------

_HOUR = _dt.timedelta(hours=1)
_DAY = _dt.timedelta(days=1)
#: Spans longer than this are not listed day by day (another program's rows
#: of year 1 or 9999): :func:`bucket_edges` answers ``None``.
_LONGEST = _dt.timedelta(days=200 * 366)


def _bucket(wall: _dt.datetime, keys: Sequence[str]) -> Tuple[Any, ...]:
    """The day, ISO week and month (those among ``keys``) of a wall time."""
    date = wall.date()
    return tuple(date if key == "day" else date.isocalendar()[:2] if key == "week"
                 else (date.year, date.month) for key in keys if key in ("day", "week", "month"))


def _starts_bucket(date: _dt.date, keys: Sequence[str]) -> bool:
    return ("day" in keys or ("week" in keys and date.weekday() == 0)
            or ("month" in keys and date.day == 1))


def bucket_edges(zone: zoneinfo.ZoneInfo, keys: Sequence[str], start: _dt.datetime,
                 end: _dt.datetime) -> Optional[List[_dt.datetime]]:
    """The instants in ``(start, end)`` (naive UTC) at which the zone's
    ``day``/``week``/``month`` bucket (those among ``keys``) changes, in
    order: its local midnights that start one, and offset changes that
    move the wall time into another. ``None`` when the span is too long to
    list (centuries) or reaches the ends of the calendar."""
    if end - start > _LONGEST or start.year < 2 or end.year > _dt.MAXYEAR - 1:
        return None
    found: List[_dt.datetime] = []
    spans = offsets(zone, start, end)
    begin = start
    for i, span in enumerate(spans):
        stop = end if span.until is None else min(span.until, end)
        shift = _dt.timedelta(seconds=span.seconds)
        date = (begin + shift).date()
        while True:
            edge = _dt.datetime.combine(date, _dt.time()) - shift
            if edge >= stop:
                break
            if edge > start and edge >= begin and _starts_bucket(date, keys):
                found.append(edge)
            date += _DAY
        if span.until is not None and span.until < end and i + 1 < len(spans):
            after = _dt.timedelta(seconds=spans[i + 1].seconds)
            last = span.until - _dt.timedelta(seconds=1)
            if _bucket(last + shift, keys) != _bucket(span.until + after, keys):
                found.append(span.until)
        begin = stop
        if stop >= end:
            break
    return sorted(set(found))


def cut_hours(edges: Sequence[_dt.datetime]) -> List[_dt.datetime]:
    """The UTC hours (their starts) that an edge of :func:`bucket_edges`
    falls inside: parts of them belong to two buckets."""
    return sorted({e.replace(minute=0, second=0, microsecond=0) for e in edges
                   if e.minute or e.second or e.microsecond})


def moved_hours(zone: zoneinfo.ZoneInfo, start: _dt.datetime, end: _dt.datetime
                ) -> List[_dt.datetime]:
    """The UTC hours in ``[start, end)`` (whole UTC months, naive) whose
    start lies in another month in the zone than in UTC: what a UTC month
    gives to the zone's month before or after. No zone is 15 hours or more
    away from UTC, so they lie within 15 hours of a UTC month's start."""
    found: List[_dt.datetime] = []
    month = start
    while month <= end:
        for n in range(-15, 16):
            hour = month + n * _HOUR
            if start <= hour < end:
                wall = hour + _dt.timedelta(seconds=_offset(zone, hour))
                if (wall.year, wall.month) != (hour.year, hour.month):
                    found.append(hour)
        if month.year >= _dt.MAXYEAR and month.month == 12:
            break
        month = (month + 32 * _DAY).replace(day=1)
    return sorted(set(found))

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
from typing import Any, List, NamedTuple, Optional

from .errors import TelemetryValidationError

__all__ = ["UTC", "Offset", "check_zone", "offsets", "wall_to_utc", "zone_name"]

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

"""Checks of the arguments the package's functions take, and UTC conversion.

Each check returns the value it accepted (converted where that helps) or
raises :class:`~telemetry_orm.TelemetryValidationError` naming the argument.
"""

from __future__ import annotations

import datetime as _dt
import math
import numbers
import os
from typing import Any, Optional

from .errors import TelemetryValidationError

UTC = _dt.timezone.utc

#: The instants a row may be written at: years 1000 to 9998, UTC. Four-digit
#: years keep the stored text in time order (tools format earlier years
#: unpadded, or with a sign), and a year of margin on each side keeps every
#: zone's wall time and every hour, day, week and month end of such an
#: instant inside the years 1 to 9999 that Python and SQLite represent.
EARLIEST = _dt.datetime(1000, 1, 1, tzinfo=UTC)
#: The first instant past that range (exclusive).
AFTER_LATEST = _dt.datetime(9999, 1, 1, tzinfo=UTC)


def check_count(name: str, value: Any, minimum: int = 0) -> int:
    """An ``int`` (not a ``bool``) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TelemetryValidationError(name, f"must be an integer >= {minimum}, got {value!r}")
    return value


def check_number(name: str, value: Any, unit: str = "") -> float:
    """A finite real number >= 0 (``unit`` names it in the message: "seconds")."""
    what = f"number of {unit}" if unit else "number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TelemetryValidationError(
            name, f"must be a finite {what} >= 0, got {type(value).__name__}"
        )
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float (10**400)
        raise TelemetryValidationError(
            name, f"must be a finite {what} >= 0 that fits in a float, got a larger one"
        ) from None
    if not math.isfinite(number) or number < 0:
        raise TelemetryValidationError(name, f"must be a finite {what} >= 0, got {value!r}")
    return number


def check_text(name: str, value: Any) -> Optional[str]:
    """A non-empty ``str``, or ``None``."""
    if value is not None and (type(value) is not str or not value):
        raise TelemetryValidationError(name, f"must be a non-empty string or None, got {value!r}")
    return value


#: The longest record key, in characters. Keys are indexed, and every engine
#: must index them whole: 512 characters are at most 2,048 bytes of UTF-8,
#: under PostgreSQL's b-tree limit (about 2,700 bytes a row), and fit a
#: VARCHAR(768) utf8mb4 column, the longest InnoDB indexes (3,072 bytes).
MAX_KEY_LENGTH = 512


def check_unicode(name: str, value: str) -> str:
    """``value`` when it can be stored as UTF-8 (no lone surrogate such as
    ``"\\ud800"``, which would fail only when written)."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise TelemetryValidationError(
                name, f"must be valid Unicode text, got a lone surrogate at position {exc.start}"
            ) from None
    return value


def check_key(name: str, value: Any) -> str:
    """A record key: a non-empty string of at most :data:`MAX_KEY_LENGTH`
    characters, valid Unicode, without NUL characters."""
    if not isinstance(value, str) or not value:
        got = repr(value) if isinstance(value, str) or value is None else type(value).__name__
        raise TelemetryValidationError(name, f"must be a non-empty string, got {got}")
    if "\x00" in value:
        raise TelemetryValidationError(
            name, f"must not contain NUL characters, got one at position {value.index(chr(0))}")
    if len(value) > MAX_KEY_LENGTH:
        raise TelemetryValidationError(
            name, f"must be at most {MAX_KEY_LENGTH} characters (what every engine indexes), "
                  f"got {len(value):,}")
    return check_unicode(name, value)


def same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one file: the same device and inode
    when both exist (symlinks followed, hard links too), else the same
    resolved path (a file that one would create as the other)."""
    try:
        first, second = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return os.path.realpath(a) == os.path.realpath(b)
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def to_utc(value: _dt.datetime) -> _dt.datetime:
    """``value`` as an aware UTC datetime; a naive one is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def check_instant(name: str, value: _dt.datetime) -> _dt.datetime:
    """``value`` (naive means UTC) as aware UTC when it lies in the years
    a row may be written at (:data:`EARLIEST` up to, not including,
    :data:`AFTER_LATEST`), else :class:`~telemetry_orm.TelemetryValidationError`."""
    utc = to_utc(value)
    if not EARLIEST <= utc < AFTER_LATEST:
        raise TelemetryValidationError(
            name, f"must be from 1000-01-01 00:00:00 to 9998-12-31 23:59:59 UTC, "
            f"got {utc.isoformat(' ')}")
    return utc


def check_time(name: str, value: Any) -> Optional[_dt.datetime]:
    """A datetime (naive means UTC) as aware UTC, or ``None``."""
    if value is None:
        return None
    if not isinstance(value, _dt.datetime):
        raise TelemetryValidationError(
            name, f"must be a datetime (naive means UTC) or None, got {type(value).__name__}"
        )
    return to_utc(value)

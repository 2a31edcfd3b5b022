"""The package's value rules, in one place: counts, money (USD), text,
record keys and instants, with the checks of arguments built on them.

Each ``check_*`` returns the value it accepted (converted where that helps)
or raises :class:`~telemetry_orm.TelemetryValidationError` naming the field
or argument. The ``is_*`` predicates answer the same rules without raising,
for readers that skip a bad line rather than stop (the importers). Records
(:mod:`telemetry_orm.record`), the readers of agent results
(:mod:`telemetry_orm.inputs`), the importers, the price files and the
command line all call these, so a rule changes in one place. An engine
whose text columns hold fewer characters calls :func:`check_length` (for a
whole row: :func:`telemetry_orm.record.length_check`).
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import numbers
import os
import re
from typing import Any, Dict, Mapping, Optional, TypeGuard

from .errors import TelemetryValidationError

UTC = _dt.timezone.utc

# --- bounds --------------------------------------------------------------------

#: The most tokens of each kind, milliseconds and turns one execution may
#: record: far past any real run (a million-token context a turn for ten
#: thousand turns is 10**10), and small enough that the rollups' sums stay
#: exact 64-bit integers: over nine million executions at the bound would
#: have to fall in one hour, day or month of one combination to reach 2**63.
MAX_COUNT = 10**12

#: The most dollars one execution may record: no run costs this, and sums
#: of such costs stay far from the largest double.
MAX_COST_USD = 1e9

#: Largest integer a REAL column (an IEEE double) holds exactly.
MAX_EXACT_REAL = 2**53

#: Largest INTEGER of SQLite (and BIGINT elsewhere).
MAX_INT = 2**63 - 1

#: The longest record key, in characters. Keys are indexed, and every engine
#: must index them whole: 512 characters are at most 2,048 bytes of UTF-8,
#: under PostgreSQL's b-tree limit (about 2,700 bytes a row), and fit a
#: VARCHAR(768) utf8mb4 column, the longest InnoDB indexes (3,072 bytes).
MAX_KEY_LENGTH = 512

#: The instants a row may be written at: years 1000 to 9998, UTC. Four-digit
#: years keep the stored text in time order (tools format earlier years
#: unpadded, or with a sign), and a year of margin on each side keeps every
#: zone's wall time and every hour, day, week and month end of such an
#: instant inside the years 1 to 9999 that Python and SQLite represent.
EARLIEST = _dt.datetime(1000, 1, 1, tzinfo=UTC)
#: The first instant past that range (exclusive).
AFTER_LATEST = _dt.datetime(9999, 1, 1, tzinfo=UTC)

# How a bound reads in a message.
_BOUND_NAMES = {MAX_COUNT: "10**12 (the bound of one execution)",
                MAX_INT: "2**63 - 1 (SQLite's largest)"}


def show_int(value: int) -> str:
    """``value`` for a message: its digits, or its size when it is huge
    (``str()`` of a huge int is slow, and refused past 4,300 digits)."""
    if value.bit_length() <= 128:
        return str(value)
    sign = "a negative" if value < 0 else "an"
    return f"{sign} integer of {value.bit_length()} bits"


# --- counts --------------------------------------------------------------------


def is_int(value: Any) -> TypeGuard[int]:
    """Whether ``value`` is an ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_count(value: Any, maximum: int = MAX_COUNT) -> bool:
    """Whether ``value`` is a whole count from 0 to ``maximum``."""
    return is_int(value) and 0 <= value <= maximum


def check_count(name: str, value: Any, minimum: int = 0) -> int:
    """An ``int`` (not a ``bool``) of at least ``minimum``: an argument."""
    if not is_int(value) or value < minimum:
        raise TelemetryValidationError(name, f"must be an integer >= {minimum}, got {value!r}")
    return value


def check_whole(name: str, value: Any, minimum: int = 0, maximum: int = MAX_COUNT, *,
                or_none: bool = False) -> Optional[int]:
    """A record's whole number from ``minimum`` to ``maximum`` (``None`` too
    when ``or_none``): a token count, milliseconds, turns, a PR number."""
    if or_none and value is None:
        return None
    least = "> 0" if minimum == 1 else f">= {minimum}"
    wanted = f"must be an integer {least}{' or None' if or_none else ''}"
    if not is_int(value):
        raise TelemetryValidationError(name, f"{wanted}, got {type(value).__name__}")
    if value < minimum:
        raise TelemetryValidationError(name, f"{wanted}, got {show_int(value)}")
    if value > maximum:
        bound = _BOUND_NAMES.get(maximum, f"{maximum:,}")
        raise TelemetryValidationError(
            name, f"must be an integer <= {bound}, got {show_int(value)}")
    return value


def check_token_count(name: str, value: Any) -> int:
    """A token count as an API or agent reports it: an int >= 0; ``None``
    (absent) counts 0. The record's own bound is checked by the record."""
    if value is None:
        return 0
    if not is_int(value) or value < 0:
        raise TelemetryValidationError(name, f"must be a token count (an integer >= 0), "
                                             f"got {value!r}")
    return value


def parse_count(text: str, minimum: int = 0, maximum: Optional[int] = None) -> Optional[int]:
    """The whole number ``text`` spells (digits only: no sign, no spaces)
    when it lies from ``minimum`` to ``maximum`` (no limit when ``None``);
    else ``None``."""
    if not (text.isascii() and text.isdigit()):  # int() reads "١٢" too
        return None
    value = int(text)
    if value < minimum or (maximum is not None and value > maximum):
        return None
    return value


# --- numbers and money -----------------------------------------------------------


def is_amount(value: Any) -> bool:
    """Whether ``value`` is an ``int`` or ``float`` (not a ``bool``), finite
    and >= 0: an amount of money or a price."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value) and value >= 0
    except OverflowError:  # an int too large for a float (10**400)
        return False


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


def check_usd(name: str, value: Any) -> Optional[float]:
    """An amount of US dollars as an agent reports it (:func:`is_amount`) as
    a ``float``, or ``None`` (absent)."""
    if value is None:
        return None
    if not is_amount(value):
        raise TelemetryValidationError(name, f"must be a finite number of USD >= 0, "
                                             f"got {value!r}")
    return float(value)


def check_cost(name: str, value: Any) -> float:
    """A record's cost in USD: a finite number from 0 to :data:`MAX_COST_USD`;
    an integer at most 2**53, the largest a REAL column holds exactly."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TelemetryValidationError(
            name, f"must be a finite number >= 0, got {type(value).__name__}"
        )
    # Stored as REAL, a larger integer would come back rounded (and past
    # ~1e308 could not be converted at all).
    if isinstance(value, int) and abs(value) > MAX_EXACT_REAL:
        raise TelemetryValidationError(
            name, f"must be a finite number >= 0 (an integer at most 2**53), got {show_int(value)}"
        )
    if not math.isfinite(value) or value < 0:
        raise TelemetryValidationError(name, f"must be a finite number >= 0, got {value!r}")
    if value > MAX_COST_USD:
        raise TelemetryValidationError(
            name, f"must be at most 1e9 (the bound of one execution), got {value!r}"
        )
    return value


def parse_amount(text: str) -> Optional[float]:
    """The finite number >= 0 that ``text`` spells (``1.5``, ``30``), or ``None``."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if is_amount(value) else None


# --- text ------------------------------------------------------------------------


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


def is_text(value: Any) -> TypeGuard[str]:
    """Whether ``value`` is a non-empty string."""
    return isinstance(value, str) and value != ""


def check_text(name: str, value: Any) -> Optional[str]:
    """A non-empty ``str``, or ``None``: an argument."""
    if value is not None and (type(value) is not str or not value):
        raise TelemetryValidationError(name, f"must be a non-empty string or None, got {value!r}")
    return value


def check_required_text(name: str, value: Any) -> str:
    """A record's required text: a non-empty ``str`` of valid Unicode."""
    if type(value) is not str:
        raise TelemetryValidationError(
            name, f"must be a non-empty string, got {type(value).__name__}"
        )
    if not value:
        raise TelemetryValidationError(name, "must be a non-empty string, got ''")
    return check_unicode(name, value)


def check_optional_text(name: str, value: Any) -> Optional[str]:
    """A record's optional text: a ``str`` of valid Unicode, or ``None``."""
    if value is None:
        return None
    if type(value) is not str:
        raise TelemetryValidationError(
            name, f"must be a string or None, got {type(value).__name__}"
        )
    return check_unicode(name, value)


def check_length(name: str, value: Optional[str], maximum: int, holder: str) -> Optional[str]:
    """``value`` when it has at most ``maximum`` characters (``None`` passes):
    for an engine whose column holds that many, never truncating silently.
    ``holder`` says what holds that many, for the message::

        check_length("repo", row[1], 255, "a VARCHAR(255) column on MySQL")
    """
    if value is not None and len(value) > maximum:
        raise TelemetryValidationError(
            name, f"must be at most {maximum:,} characters ({holder}), got {len(value):,}")
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


# --- labels ------------------------------------------------------------------------

#: Labels an execution may carry at most.
MAX_LABELS = 16
#: The most characters of a label's value.
MAX_LABEL_VALUE = 256
_LABEL_NAME = re.compile(r"[a-z][a-z0-9_.]{0,63}")



class Labels(Dict[str, str]):
    """An execution's labels, checked (:func:`check_labels`): a ``dict``
    (``json``, ``dataclasses.asdict`` and ``==`` take it as one) that
    refuses changes and is hashable, so that a record stays a frozen value."""

    __slots__ = ()

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> Any:  # pickled and copied as its items
        return (type(self), (dict(self),))

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("an execution's labels are read-only: make a new record")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only


#: No labels (a record's default).
NO_LABELS = Labels({})


@functools.lru_cache(maxsize=1024)
def _is_label_name(key: str) -> bool:
    # A store sees a few names again and again.
    return _LABEL_NAME.fullmatch(key) is not None


def check_labels(name: str, value: Any) -> Mapping[str, str]:
    """An execution's labels: a mapping of at most :data:`MAX_LABELS` names
    (``[a-z][a-z0-9_.]{0,63}``) to non-empty strings of at most
    :data:`MAX_LABEL_VALUE` characters of valid Unicode, without NUL
    characters; returned read-only, by name. An error names the label
    (``labels.team``)."""
    if type(value) is dict and len(value) <= MAX_LABELS:
        for key, text in value.items():
            if not (type(key) is str and _is_label_name(key) and type(text) is str
                    and 0 < len(text) <= MAX_LABEL_VALUE and text.isascii()
                    and "\x00" not in text):
                break
        else:
            # The usual labels, ASCII and plainly valid: what the checks
            # below return, without the calls that name what is wrong.
            return Labels(sorted(value.items())) if value else NO_LABELS
    if not isinstance(value, Mapping):
        raise TelemetryValidationError(
            name, f"must be a mapping of label names to strings, got {type(value).__name__}")
    if len(value) > MAX_LABELS:
        raise TelemetryValidationError(
            name, f"must hold at most {MAX_LABELS} labels, got {len(value)}")
    checked: Dict[str, str] = {}
    for key in sorted(value, key=str):
        text = value[key]
        if not isinstance(key, str) or _LABEL_NAME.fullmatch(key) is None:
            raise TelemetryValidationError(
                name, f"label name {key!r} must match [a-z][a-z0-9_.]{{0,63}} (lower case, "
                      "a letter first, then letters, digits, '_' or '.')")
        where = f"{name}.{key}"
        if type(text) is not str or not text:
            got = repr(text) if isinstance(text, str) else type(text).__name__
            raise TelemetryValidationError(where, f"must be a non-empty string, got {got}")
        if len(text) > MAX_LABEL_VALUE:
            raise TelemetryValidationError(
                where, f"must be at most {MAX_LABEL_VALUE} characters, got {len(text):,}")
        if "\x00" in text:
            raise TelemetryValidationError(where, "must not contain NUL characters")
        checked[key] = check_unicode(where, text)
    return Labels(checked) if checked else NO_LABELS


# --- time ------------------------------------------------------------------------


def to_utc(value: _dt.datetime) -> _dt.datetime:
    """``value`` as an aware UTC datetime; a naive one is taken to be UTC already."""
    if value.tzinfo is UTC:  # the usual case: as it is
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_iso(text: str) -> _dt.datetime:
    """The datetime of ISO 8601 ``text``, a trailing ``Z`` read as UTC (as
    logs and JSON write it); naive when ``text`` names no zone. Raises
    ``ValueError`` when it is not one."""
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def check_instant(name: str, value: _dt.datetime) -> _dt.datetime:
    """``value`` (naive means UTC) as aware UTC when it lies in the years
    a row may be written at (:data:`EARLIEST` up to, not including,
    :data:`AFTER_LATEST`), else :class:`~telemetry_orm.TelemetryValidationError`."""
    utc = _in_utc(name, value)
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
    return _in_utc(name, value)


def _in_utc(name: str, value: _dt.datetime) -> _dt.datetime:
    # An aware instant at the ends of datetime's range has no UTC datetime.
    try:
        return to_utc(value)
    except OverflowError:
        raise TelemetryValidationError(
            name, f"must be an instant that exists in UTC (years 1 to 9999), "
            f"got {value.isoformat(' ')}") from None


# --- paths -----------------------------------------------------------------------


def same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one file: the same device and inode
    when both exist (symlinks followed, hard links too), else the same
    resolved path (a file that one would create as the other)."""
    try:
        first, second = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return os.path.realpath(a) == os.path.realpath(b)
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)

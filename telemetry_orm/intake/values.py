"""OTLP attribute values read as record fields.

An OTLP attribute is a key and an ``AnyValue``: a string, a bool, a 64-bit
int, a double, bytes, an array or a key-value list. Senders disagree on
types: Claude Code sends its numbers as strings (``"120"``, ``"0.0875"``),
others as ints or doubles. Each reader here takes any of them and answers
the field's value, or raises :class:`~telemetry_orm.TelemetryValidationError`
naming the attribute when the value is impossible (a negative count, a NaN
cost, a time that is not one), so that record alone is rejected.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Dict, Iterable, Optional

from ..checks import check_instant, parse_iso, to_utc
from ..errors import TelemetryValidationError

_SCALARS = frozenset({"bool_value", "int_value", "double_value", "bytes_value"})
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def plain(value: Any) -> Any:
    """The Python value of an ``AnyValue``: ``str``, ``bool``, ``int``,
    ``float``, ``bytes``, a ``list`` (array) or a ``dict`` (key-value list);
    ``None`` when it is empty."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [plain(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {pair.key: plain(pair.value) for pair in value.kvlist_value.values}
    return getattr(value, kind)


def attributes(pairs: Iterable[Any]) -> Dict[str, Any]:
    """The ``KeyValue`` list of a record, span or resource as a ``dict``
    (a key given twice: the last one wins)."""
    found: Dict[str, Any] = {}
    for pair in pairs:
        value = pair.value
        # Most values are strings (Claude Code sends its numbers so). A
        # string that is not empty is what the value holds: read it without
        # asking which field is set (each call on a value costs as much).
        string = value.string_value
        if string:
            found[pair.key] = string
            continue
        kind = value.WhichOneof("value")
        if kind == "string_value":
            found[pair.key] = string
        elif kind in _SCALARS:
            found[pair.key] = getattr(value, kind)
        else:
            found[pair.key] = plain(value)
    return found


def _number(name: str, value: Any) -> float | int:
    """An int as it is, or a finite float, from an int, a double or a
    string spelling one; anything else raises."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TelemetryValidationError(name, f"must be a number, got {type(value).__name__}")
    if isinstance(value, str):
        text = value.strip()
        # int() and float() also read "1_000" and the digits of other
        # scripts ("١٢"): no sender writes those, so they are refused.
        if "_" in text or not text.isascii():
            raise TelemetryValidationError(name, f"must be a number, got {value[:40]!r}")
        try:
            return int(text) if text.isdigit() else float(text)
        except ValueError:
            raise TelemetryValidationError(
                name, f"must be a number, got {value[:40]!r}") from None
    return value


def _is_digits(value: Any) -> bool:
    """Whether ``value`` is the usual whole number: a string of at most 18
    ASCII digits (Claude Code's ``"120"``), read at once by ``int()``."""
    return type(value) is str and len(value) <= 18 and value.isdigit() and value.isascii()


def count(name: str, value: Any) -> int:
    """A token count: a whole number >= 0 (``"120"``, ``120``, ``120.0``);
    absent (``None``) counts 0."""
    if value is None:
        return 0
    if _is_digits(value):
        return int(value)
    number = _number(name, value)
    if isinstance(number, float):
        if not math.isfinite(number) or not number.is_integer():
            raise TelemetryValidationError(name, f"must be a whole number >= 0, got {value!r}")
        number = int(number)
    if number < 0:
        raise TelemetryValidationError(name, f"must be a whole number >= 0, got {value!r}")
    return number


def millis(name: str, value: Any) -> int:
    """A duration in milliseconds >= 0; a fraction is rounded (some senders
    measure it in floating point); absent counts 0."""
    if value is None:
        return 0
    if _is_digits(value):
        return int(value)
    number = _number(name, value)
    if isinstance(number, float):
        if not math.isfinite(number):
            raise TelemetryValidationError(name, f"must be a finite number >= 0, got {value!r}")
        number = round(number)
    if number < 0:
        raise TelemetryValidationError(name, f"must be a number >= 0, got {value!r}")
    return number


def usd(name: str, value: Any) -> Optional[float]:
    """An amount of US dollars: a finite number >= 0, or ``None`` when
    absent (then the caller prices the tokens)."""
    if value is None:
        return None
    number = float(_number(name, value))
    if not math.isfinite(number) or number < 0:
        raise TelemetryValidationError(name, f"must be a finite number of USD >= 0, got {value!r}")
    return number


def text(value: Any) -> Optional[str]:
    """A label's or a column's text from a scalar attribute (a number
    reads as its digits); ``None`` for an empty or structured value."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, (bool, int, float)):
        return str(value)
    return None


def from_nanos(nanos: int) -> _dt.datetime:
    """The UTC instant ``nanos`` nanoseconds after the Unix epoch, to the
    microsecond (what the columns hold)."""
    return _EPOCH + _dt.timedelta(microseconds=nanos // 1000)


def iso_instant(name: str, value: Any) -> _dt.datetime:
    """An ISO 8601 instant (``2026-05-01T10:00:00.123Z``; no zone means
    UTC) in the years a row may be written at."""
    if not isinstance(value, str):
        raise TelemetryValidationError(
            name, f"must be an ISO 8601 time, got {type(value).__name__}")
    try:
        when = parse_iso(value.strip())
    except ValueError:
        raise TelemetryValidationError(
            name, f"must be an ISO 8601 time, got {value[:40]!r}") from None
    return check_instant(name, to_utc(when))

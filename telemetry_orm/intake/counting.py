"""The records of a request counted before it is decoded, so that a body of
millions of empty records (two bytes each, a few kilobytes gzipped) is
refused without building them.

A protobuf body is walked field by field down its first three levels
(``resource_logs`` → ``scope_logs`` → ``log_records``, and the same for
spans and metrics), each record skipped by its length; a JSON body counts
its objects while :func:`json.loads` builds them.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional, Tuple

from ..errors import TelemetryValidationError

#: What one record of each signal is called.
RECORDS = {"logs": "log record", "traces": "span", "metrics": "metric"}

#: The most JSON objects a body may hold per record of the bound: a record,
#: its body, its attributes and their values (Claude Code's events have
#: about 40).
JSON_OBJECTS_PER_RECORD = 64

# The fields other than records a walk may pass at the three levels, per
# record of the bound: resources and scopes take a few fields each.
_OTHERS_PER_RECORD = 2


class TooManyRecordsError(TelemetryValidationError):
    """The request holds more records than the bound."""

    def __init__(self, bound: int, what: str) -> None:
        super().__init__("body", f"holds more than {bound:,} {what} (the most this server "
                                 "takes in one request)")


def check_protobuf(signal: str, body: bytes, bound: int) -> None:
    """Raise :class:`TooManyRecordsError` when the protobuf ``body`` of
    ``signal`` holds more than ``bound`` records, having read at most about
    three times that many fields. A body that is no protobuf ends the count
    there: decoding it refuses it."""
    records = others = 0

    def passed() -> None:
        # Unknown fields by the million would each be kept too.
        nonlocal others
        others += 1
        if others > _OTHERS_PER_RECORD * bound:
            raise TooManyRecordsError(_OTHERS_PER_RECORD * bound, "fields beside its records")

    for number, start, end in _fields(body, 0, len(body)):
        passed()
        if number != 1 or start < 0:
            continue
        for number, scope_start, scope_end in _fields(body, start, end):
            passed()
            if number != 2 or scope_start < 0:
                continue
            for number, record_start, _ in _fields(body, scope_start, scope_end):
                if number != 2 or record_start < 0:
                    passed()
                    continue
                records += 1
                if records > bound:
                    raise TooManyRecordsError(bound, RECORDS[signal] + "s")


def _fields(data: bytes, start: int, end: int) -> Iterator[Tuple[int, int, int]]:
    """The number of each field of the message in ``data[start:end]``, and
    where its value starts and ends when it is length-delimited (-1, -1
    otherwise); it stops at the first byte that is no field."""
    pos = start
    while pos < end:
        tag, pos = _varint(data, pos, end)
        if tag is None:
            return
        if tag & 7 == 2:
            size, pos = _varint(data, pos, end)
            if size is None or pos + size > end:
                return
            yield tag >> 3, pos, pos + size
            pos += size
        else:
            after = _skip(data, pos, end, tag)
            if after is None:
                return
            yield tag >> 3, -1, -1
            pos = after


def _skip(data: bytes, pos: int, end: int, tag: int) -> Optional[int]:
    """Where the value of a field that is not length-delimited ends."""
    kind = tag & 7
    if kind == 0:
        value, pos = _varint(data, pos, end)
        return None if value is None else pos
    if kind in (1, 5):
        pos += 8 if kind == 1 else 4
        return pos if pos <= end else None
    if kind in (3, 4):
        # A group: no OTLP message has one, and skipping it means reading
        # every field inside (millions may be).
        raise TelemetryValidationError(
            "body", f"holds a group (protobuf's deprecated wire type {kind}) as field "
                    f"{tag >> 3}: no OTLP message has one")
    return None


def _varint(data: bytes, pos: int, end: int) -> Tuple[Optional[int], int]:
    value = shift = 0
    while pos < end and shift < 70:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    return None, pos


class JsonObjects:
    """An ``object_hook`` for :func:`json.loads` that counts the objects built
    and stops past ``bound`` records' worth (see
    :data:`JSON_OBJECTS_PER_RECORD`)."""

    def __init__(self, signal: str, bound: int) -> None:
        self.most = bound * JSON_OBJECTS_PER_RECORD
        self.what = f"JSON objects ({JSON_OBJECTS_PER_RECORD} per {RECORDS[signal]} of " \
                    f"the {bound:,} allowed)"
        self.count = 0

    def __call__(self, found: Dict[str, Any]) -> Dict[str, Any]:
        self.count += 1
        if self.count > self.most:
            raise TooManyRecordsError(self.most, self.what)
        return found

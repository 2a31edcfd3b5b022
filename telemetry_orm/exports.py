"""Reader of the files ``telemetry-orm export`` writes (JSON Lines, CSV),
for ``telemetry-orm import``: every column of a row comes back, its
``created_at``, its source ``id`` and (from version 3) its labels included,
and the row is recorded under a key made of them (:func:`export_key`), so
that importing an export again adds nothing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

from .checks import check_instant, is_int, parse_iso, to_utc
from .errors import TelemetryValidationError
from .formats import EXPORT_VERSION, EXPORT_VERSION_COLUMN, csv_text
from .imports import (
    ENCODING,
    Counter,
    Item,
    Read,
    Skipped,
    Unreadable,
    files_under,
    json_value,
    lines_of,
    undecoded,
)
from .record import FIELD_NAMES, TelemetryRecord
from .schema import format_timestamp

_INTEGER_FIELDS = frozenset({
    "pr_number", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_creation_tokens", "duration_ms", "num_turns",
})
_NULLABLE_FIELDS = frozenset({"delivery_id", "pr_number", "session_id", "num_turns",
                              "stop_reason"})
#: What an export row may hold: the table's columns, the labels (version 3)
#: and the format version.
_EXPORT_COLUMNS = frozenset({"id", "created_at", *FIELD_NAMES, "labels",
                             EXPORT_VERSION_COLUMN})


def export_key(row: Dict[str, Any]) -> str:
    """The key an exported row is imported under: a digest of every column
    (its source ``id`` and ``created_at`` included), so that importing the
    same rows again, from this file or another export, adds nothing. Not
    of its labels: the same execution with its labels edited is still the
    same execution (its cost is not counted twice), and rows exported
    before labels keep their keys."""
    # CSV cannot tell an empty text from no value: neither can the key, so
    # that the CSV and JSON Lines exports of one store give the same keys.
    values = [None if name in _NULLABLE_FIELDS and row.get(name) == "" else row.get(name)
              for name in ("id", "created_at", *FIELD_NAMES)]
    canonical = json.dumps(values,
                           separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return "export:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_export(paths: Sequence[Union[str, os.PathLike[str]]], fmt: str,
                counter: Optional[Counter] = None) -> Iterator[Read]:
    """The rows of files ``telemetry-orm export`` wrote as ``fmt``
    (``jsonl`` or ``csv``); every column is kept, ``created_at`` included."""
    counter = counter or Counter()
    suffixes = (".jsonl",) if fmt == "jsonl" else (".csv",)
    for path in files_under(paths, suffixes):
        if isinstance(path, Skipped):
            yield path
            continue
        try:
            if fmt == "jsonl":
                yield from _jsonl_rows(path, counter)
            else:
                yield from _csv_rows(path, counter)
        except Unreadable as exc:
            yield Skipped(str(path), f"{exc}; the rest of the file is left out")
        except OSError as exc:
            yield Skipped(str(path), f"cannot be read ({exc.strerror or exc})")


def _jsonl_rows(path: Path, counter: Counter) -> Iterator[Read]:
    for number, line in lines_of(path, counter):
        where = f"{path}:{number}"
        if isinstance(line, Skipped):
            yield Skipped(where, line.reason)
            continue
        if not line.strip():
            continue
        value = json_value(line)
        if isinstance(value, Skipped):
            yield Skipped(where, value.reason)
            continue
        if not isinstance(value, dict):
            yield Skipped(where, f"not a JSON object ({type(value).__name__})")
            continue
        yield _exported(value, where)


def _csv_rows(path: Path, counter: Counter) -> Iterator[Read]:
    counter.files += 1
    # Bytes that are not UTF-8 are kept as stand-in characters and refused
    # by the row they are in, so that they cost that row only.
    with open(path, encoding=ENCODING, errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle)
        header: Optional[List[str]] = None
        counted = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                counter.lines += reader.line_num - counted
                counted = reader.line_num
                if header is None:
                    raise Unreadable(f"line {reader.line_num}: not CSV ({exc})") from None
                yield Skipped(f"{path}:{reader.line_num}", f"not CSV ({exc})")
                continue
            counter.lines += reader.line_num - counted
            counted = reader.line_num
            where = f"{path}:{reader.line_num}"
            if header is None:
                header = cells
                wrong = undecoded(cells)
                missing = [n for n in ("created_at", *FIELD_NAMES) if n not in header]
                if wrong is None and missing:
                    wrong = f"not an export: no column {', '.join(missing)}"
                unknown = _unknown_columns(header)
                if wrong is None and unknown is not None:
                    wrong = unknown
                if wrong is not None:
                    yield Skipped(where, f"{wrong}; the file is left out")
                    return
                continue
            if not any(cells):
                continue
            if len(cells) != len(header):
                yield Skipped(where, f"{len(cells)} values for {len(header)} columns")
                continue
            wrong = undecoded(cells)
            if wrong is not None:
                yield Skipped(where, wrong)
                continue
            yield _exported(_typed(dict(zip(header, cells, strict=True))), where)


def _typed(cells: Dict[str, str]) -> Dict[str, Any]:
    """CSV text as the column types: numbers for number columns, ``None``
    for an empty cell of a column that may be null (CSV cannot tell an
    empty string from no value; exports write no value as empty); the
    ``'`` an export put before text a spreadsheet would run is removed
    (exports with an ``export_version`` column have it; earlier ones were
    written verbatim, so their cells are read as they are)."""
    values: Dict[str, Any] = {}
    guarded = EXPORT_VERSION_COLUMN in cells
    for name, cell in cells.items():
        text = csv_text(cell) if guarded else cell
        if cell == "" and (name in _NULLABLE_FIELDS or name == "id"):
            values[name] = None
        elif name in _INTEGER_FIELDS or name in ("id", EXPORT_VERSION_COLUMN):
            values[name] = _number(text, int)
        elif name == "cost_usd":
            values[name] = _number(text, float)
        else:
            values[name] = text
    return values


def _number(text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        return text  # the record's validation names the field and the value


def _unknown_columns(names: Iterable[str]) -> Optional[str]:
    """Why an export with the columns ``names`` is refused (columns this
    version does not know, whose values it would drop), or ``None``."""
    unknown = [name for name in names if name not in _EXPORT_COLUMNS]
    if not unknown:
        return None
    shown = ", ".join(repr(name) for name in unknown[:10])
    more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
    return (f"columns this version of telemetry_orm does not know ({shown}{more}): "
            "an export of a newer version, or columns added by hand; importing it would "
            "drop them")


def _version(values: Dict[str, Any]) -> Optional[str]:
    """Why a row's ``export_version`` is refused, or ``None``; a row
    without one is version 1 (exports written before it existed)."""
    version = values.get(EXPORT_VERSION_COLUMN, 1)
    if not is_int(version) or version < 1:
        return f"{EXPORT_VERSION_COLUMN}: not a whole number >= 1 ({version!r})"
    if version > EXPORT_VERSION:
        return (f"{EXPORT_VERSION_COLUMN} {version}: written by a newer telemetry_orm "
                f"(this one reads versions up to {EXPORT_VERSION}); upgrade to import it")
    return None


def _exported(values: Dict[str, Any], where: str) -> Read:
    wrong = _version(values) or _unknown_columns(values)
    if wrong is not None:
        return Skipped(where, wrong)
    created = values.get("created_at")
    try:
        when = (check_instant("created_at", parse_iso(created))
                if isinstance(created, str) else None)
    except (ValueError, OverflowError):
        when = None
    if when is None:
        return Skipped(where, f"created_at: not a timestamp in range ({created!r})")
    fields = {name: values[name] for name in FIELD_NAMES if name in values}
    labels = _labels(values.get("labels"))
    if isinstance(labels, str):
        return Skipped(where, labels)
    if labels:
        fields["labels"] = labels
    try:
        record = TelemetryRecord.from_mapping(fields)
    except TelemetryValidationError as exc:
        return Skipped(where, str(exc))
    row = {**fields, "id": values.get("id"), "created_at": format_timestamp(when),
           "labels": record.labels}
    return Item(export_key(row), to_utc(when), record, where)


def _labels(value: Any) -> Union[Dict[str, Any], str]:
    """An exported row's labels (a JSON object, or its text in CSV; empty or
    missing: none), or why they are refused."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        value = json_value(value)
        if isinstance(value, Skipped):
            return f"labels: {value.reason}"
    if not isinstance(value, dict):
        return f"labels: not a JSON object ({type(value).__name__})"
    return value

"""Output formats: reports, statistics and exported rows as text.

Every format is an option of one code path: a report becomes columns and
records once (:func:`report_columns`, :func:`report_records`), then JSON and
CSV write the raw values and the table and Markdown the human ones (costs
with ``$``, thousands separators).

Text from the data never acts on its reader: CSV puts a ``'`` before a text
cell a spreadsheet would run as a formula (:func:`csv_cell`, undone by
:func:`csv_text`), and text for people shows control characters escaped
(:func:`printable`). A table fits a width (:func:`render_report`).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import io
import json
import math
import textwrap
import unicodedata
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, TextIO, Tuple

from . import zones
from .checks import to_utc
from .reports import METRICS, DatabaseStats, Report

REPORT_FORMATS: Tuple[str, ...] = ("table", "json", "csv", "markdown")
STATS_FORMATS: Tuple[str, ...] = ("table", "json")
EXPORT_FORMATS: Tuple[str, ...] = ("csv", "jsonl")

#: The version of the format ``telemetry-orm export`` writes, in the last
#: column of every row (a plain column: spreadsheets, CSV and JSON readers
#: take it as any other); an export without it is version 1.
EXPORT_VERSION = 3
EXPORT_VERSION_COLUMN = "export_version"

_LABELS: Dict[str, str] = {
    "event_type": "event",
    "pr_number": "PR",
    "executions": "executions",
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_tokens": "cache read",
    "cache_creation_tokens": "cache write",
    "total_tokens": "total tokens",
    "cost_usd": "cost",
    "avg_duration_ms": "avg ms",
    "p95_duration_ms": "p95 ms",
    "failed": "failed",
}

#: Shorter headers, used when a table is too wide for its width.
_SHORT_LABELS: Dict[str, str] = {
    "executions": "execs",
    "cache_read_tokens": "cache rd",
    "cache_creation_tokens": "cache wr",
    "total_tokens": "tokens",
    "failed": "fail",
}

#: The metric columns a table too wide for its width leaves out, in this
#: order. Group keys, executions and cost are always shown.
DROP_ORDER: Tuple[str, ...] = (
    "cache_creation_tokens", "cache_read_tokens", "p95_duration_ms", "avg_duration_ms",
    "output_tokens", "input_tokens", "failed", "total_tokens",
)

#: A group value longer than this is cut when the table is too wide; and
#: while it still is, down to :data:`_KEY_LEAST`.
_KEY_MOST = 32
_KEY_LEAST = 8

_TOTAL = "TOTAL"

# --- text that must not act on its reader ----------------------------------------

#: A CSV text cell starting with one of these gets a ``'`` in front:
#: spreadsheets run a cell starting with ``= + - @`` as a formula, some also
#: after a tab or a carriage return (OWASP's list; ASVS 1.2.10 adds NUL, and
#: a line feed is treated as the carriage return). ``'`` is on the list so
#: that the rule can be undone exactly: a cell starting with ``'`` always
#: got one.
CSV_GUARDED: Tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r", "\n", "\x00", "'")


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell: text starting with one of :data:`CSV_GUARDED`
    gets a ``'`` in front (OWASP's advice against formula injection);
    numbers, ``None`` and other text stay as they are."""
    if isinstance(value, str) and value.startswith(CSV_GUARDED):
        return "'" + value
    if isinstance(value, Mapping):  # an execution's labels: JSON text, "{...}"
        return to_json(dict(value), sort_keys=True, ensure_ascii=False)
    return value


def csv_text(cell: str) -> str:
    """The text a CSV cell written through :func:`csv_cell` stands for: one
    leading ``'`` removed. ``csv_text(str(csv_cell(v))) == v`` for every
    text ``v``, and for every number and ``None`` written as CSV writes them
    (none starts with ``'``)."""
    return cell[1:] if cell.startswith("'") else cell


#: Shown escaped by :func:`printable`: C0 controls, DEL and C1 controls; the
#: line and paragraph separators; Unicode's bidirectional controls (they
#: reorder what follows them); and the backslash itself, so that an escape
#: cannot be told apart from the same characters typed.
_ESCAPED: Dict[int, str] = {
    **{c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))},
    **{ord(c): f"\\u{ord(c):04x}" for c in
       "\u2028\u2029\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
       "\u2066\u2067\u2068\u2069"},
    **{ord(c): e for c, e in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"),
                              ("\r", "\\r"))},
}


def printable(text: str) -> str:
    """``text`` safe to show on a terminal or in a Markdown table: control
    characters (C0, DEL, C1), U+2028/U+2029 and the bidirectional controls
    escaped as Python writes them (``\\x1b``, ``\\n``, ``\\u202e``), a
    backslash doubled; everything else as it is."""
    return text.translate(_ESCAPED)


def _cells(text: str) -> int:
    """The columns a terminal gives ``text``: two for an East Asian wide or
    fullwidth character, none for a combining mark or a format character."""
    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.category(c) in ("Mn", "Me", "Cf")
               else 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def _cut(text: str, width: int, ellipsis: str) -> str:
    """``text`` in at most ``width`` columns, ending in ``ellipsis`` when cut."""
    if _cells(text) <= width:
        return text
    room, kept = width - _cells(ellipsis), []
    for char in text:
        room -= _cells(char)
        if room < 0:
            break
        kept.append(char)
    return "".join(kept) + ellipsis


def _pad(text: str, width: int, right: bool) -> str:
    space = " " * max(width - _cells(text), 0)
    return space + text if right else text + space


def iso(value: Optional[_dt.datetime]) -> Optional[str]:
    """A UTC datetime as ISO 8601 with ``Z`` (``None`` stays ``None``)."""
    if value is None:
        return None
    return to_utc(value).isoformat().replace("+00:00", "Z")


def to_json(value: Any, **options: Any) -> str:
    """Strict JSON: a float that is not finite (a sum past the largest
    double, an infinite cost written by another program) becomes ``null``,
    since JSON has no such numbers."""
    return json.dumps(_finite(value), allow_nan=False, **options)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def report_columns(report: Report) -> Tuple[str, ...]:
    """The columns of a report's rows: its keys, then the metrics."""
    return report.key_names + METRICS


def report_records(report: Report) -> List[Dict[str, Any]]:
    """The rows as flat dicts (keys, then metrics), raw values."""
    return [row.as_dict() for row in report.rows]


def report_document(report: Report) -> Dict[str, Any]:
    """The JSON document of a report: ``generated_at``, ``filters``,
    ``group_by``, ``cost`` (where costs come from), ``totals``,
    ``unpriced`` (model: executions without a price, whose cost counts
    nowhere), ``from_rollups`` (some figures come from the rollups: p95 is
    then an estimate within 1 %), ``incomplete_before`` (executions before
    it were purged and are not counted: a ``pr`` report) and ``rows``."""
    filters = dataclasses.asdict(report.filters)
    filters["since"] = iso(report.filters.since)
    filters["until"] = iso(report.filters.until)
    filters["labels"] = dict(report.filters.labels)
    return {
        "generated_at": iso(report.generated_at),
        "filters": filters,
        "group_by": list(report.group_by),
        "cost": report.cost,
        "totals": report.totals.as_dict(),
        "unpriced": dict(report.unpriced),
        "from_rollups": report.from_rollups,
        "incomplete_before": iso(report.incomplete_before),
        "rows": report_records(report),
    }


def render_report(report: Report, fmt: str, *, width: Optional[int] = None,
                  encoding: Optional[str] = "utf-8") -> str:
    """``report`` as text in one of :data:`REPORT_FORMATS`.

    ``table`` only: ``width`` is the columns the table may take (``None``:
    as many as it needs). A wider table is narrowed in this order until it
    fits: shorter headers (``execs``, ``cache rd``, ``cache wr``, ``tokens``,
    ``fail``); group values cut to 32 columns; the metrics of
    :data:`DROP_ORDER` left out one by one (named under the table); group
    values cut further, down to 8 columns. Group keys, executions and cost
    always stay. A cut value ends in ``…``, or ``...`` where ``encoding``
    cannot show it.
    """
    if fmt == "json":
        return to_json(report_document(report), indent=2) + "\n"
    columns = report_columns(report)
    if fmt == "csv":
        return _csv(columns, ([record[c] for c in columns] for record in report_records(report)))
    if fmt not in ("table", "markdown"):
        raise ValueError(f"unknown report format {fmt!r}; expected one of {REPORT_FORMATS}")
    keys = report.key_names or ("",)
    header = [_LABELS.get(c, c) for c in keys + METRICS]
    # Text from the data shows its control characters escaped: an escape
    # sequence or a line break in a name must not act on the terminal or
    # fake a line of the table.
    body = [
        [printable(_human(k, row.keys.get(k))) for k in keys]
        + [_human(m, getattr(row.metrics, m)) for m in METRICS]
        for row in report.rows
    ]
    totals = [_TOTAL] + [""] * (len(keys) - 1)
    totals += [_human(m, getattr(report.totals, m)) for m in METRICS]
    right = [False] * len(keys) + [True] * len(METRICS)
    notes = [_unpriced_note(report), _history_note(report)]
    if fmt == "markdown":
        return _markdown(header, body, totals, right) + "".join(notes)
    ellipsis = "…" if _can_show("…", encoding) else "..."
    table, left_out = _table(header, body, totals, right, keys + METRICS, width, ellipsis)
    if left_out:
        notes.insert(0, f"\nNot shown in {width} columns: {', '.join(left_out)} (a wider "
                        "terminal or $COLUMNS shows them; csv and json have every column).\n")
    caption = printable(_caption(report))
    if width is not None:
        caption = _wrap(caption, width)
        notes = ["\n" + _wrap(n.strip("\n"), width) + "\n" if n else "" for n in notes]
    return caption + "\n\n" + table + "".join(notes)


def _can_show(text: str, encoding: Optional[str]) -> bool:
    try:
        text.encode(encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _wrap(text: str, width: int) -> str:
    # Names are never broken: a long one runs past the width instead.
    return textwrap.fill(text, max(width, 20), break_long_words=False, break_on_hyphens=False)


def _history_note(report: Report) -> str:
    """The footnote of a report that read rollups, or could not."""
    if report.incomplete_before is not None:
        return (f"\nExecutions before {_when(report.incomplete_before)} were purged; PR-level "
                "detail went with them, so this table does not count them.\n")
    if report.from_rollups:
        note = "\np95 ms: estimated within 1 % where rolled-up hours are counted.\n"
        if report.whole_hours_before is not None:
            note += (f"Before {_when(report.whole_hours_before)} (purged), an hour that a "
                     f"midnight in {report.filters.tz} cuts counts whole where it starts.\n")
        return note
    return ""


def _unpriced_note(report: Report) -> str:
    """The footnote of a report with unpriced executions."""
    if not report.unpriced:
        return ""
    left = sum(report.unpriced.values())
    models = ", ".join(f"{printable(name)} ({n:,})" for name, n in report.unpriced.items())
    return (f"\nn/a: no price. {left:,} executions left unpriced (not counted in any cost), "
            f"by model: {models}. Give prices with --prices FILE or $TELEMETRY_PRICES.\n")


def render_stats(stats: DatabaseStats, fmt: str) -> str:
    """Database statistics as text in one of :data:`STATS_FORMATS`."""
    values = dataclasses.asdict(stats)
    if fmt == "json":
        return to_json(values, indent=2) + "\n"
    if fmt != "table":
        raise ValueError(f"unknown stats format {fmt!r}; expected one of {STATS_FORMATS}")
    width = max(len(name) for name in values)
    lines = []
    for name, value in values.items():
        if isinstance(value, int) and name.endswith("_bytes"):
            text = f"{value:,} bytes"
        elif isinstance(value, int) and name != "schema_version":
            text = f"{value:,}"
        else:  # a path, or a time another program may have written as any text
            text = "-" if value is None else printable(str(value))
        lines.append(f"{name.ljust(width)}  {text}")
    return "\n".join(lines) + "\n"


def write_rows(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], fmt: str, out: TextIO
) -> int:
    """Write ``rows`` to ``out`` one at a time as CSV (a header, then the rows)
    or JSON Lines (one object per row); return how many rows were written.
    CSV text cells go through :func:`csv_cell`; JSON Lines keeps every value
    as it is."""
    count = 0
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([csv_cell(value) for value in row])
            count += 1
    elif fmt == "jsonl":
        for row in rows:
            out.write(to_json(dict(zip(columns, row, strict=True))) + "\n")
            count += 1
    else:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {EXPORT_FORMATS}")
    return count


def write_export(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], fmt: str, out: TextIO
) -> int:
    """Write exported rows as :func:`write_rows` does, each with the format's
    version (:data:`EXPORT_VERSION`) in a last column ``export_version``."""
    return write_rows((*columns, EXPORT_VERSION_COLUMN),
                      ((*row, EXPORT_VERSION) for row in rows), fmt, out)


def _csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    write_rows(columns, rows, "csv", buffer)
    return buffer.getvalue()


def set_filters(filters: Any) -> Dict[str, Any]:
    """A report's filters that are set, but its time range and zone, by name
    (a label filter as ``label:NAME``)."""
    found = {name: value for name, value in dataclasses.asdict(filters).items()
             if name not in ("since", "until", "tz", "labels") and value is not None}
    found.update((f"label:{name}", value) for name, value in filters.labels)
    return found


def _human(name: str, value: Any) -> str:
    if name.startswith("label:"):
        if value is None:
            return "(none)"  # executions without that label
        text = str(value)
        if text == "(none)" or text.startswith('"'):
            # A value that could pass for those without the label: quoted
            # (a shown value that starts with a quote always is).
            return '"' + text.replace('"', '""') + '"'
        return text
    if value is None and name == "cost_usd":
        return "n/a"
    if value is None:
        return "-" if name in METRICS else ""
    if isinstance(value, float) and not math.isfinite(value):
        return "overflow"
    if name == "cost_usd":
        return f"${value:,.2f}"
    if name in ("avg_duration_ms", "p95_duration_ms"):
        return f"{value:,.0f}"
    if name in METRICS:
        return f"{value:,}"
    return str(value)


def _caption(report: Report) -> str:
    f = report.filters
    zone = zones.check_zone("tz", f.tz)
    parts = [f"since {_when(f.since, zone)}" if f.since else "all time"]
    if f.until:
        parts.append(f"until {_when(f.until, zone)}")
    parts += [f"{name}={value}" for name, value in set_filters(f).items()]
    if f.tz != "UTC":
        parts.append(f"days in {f.tz}")
    if report.group_by:
        parts.append("by " + ", ".join(report.group_by))
    if report.cost != "recorded":
        parts.append({"calculated": "cost from list prices",
                      "auto": "cost as recorded, else from list prices"}[report.cost])
    return "Executions " + ", ".join(parts)


def _when(value: _dt.datetime, zone: Any = zones.UTC) -> str:
    return to_utc(value).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def _table(header: List[str], body: List[List[str]], totals: List[str], right: List[bool],
           names: Sequence[str], width: Optional[int], ellipsis: str
           ) -> Tuple[str, List[str]]:
    """The aligned table, narrowed to ``width`` as :func:`render_report`
    says, and the labels of the columns it left out."""
    columns = [[label, *(row[i] for row in body), totals[i]] for i, label in enumerate(header)]
    keys = [i for i, name in enumerate(names) if name not in METRICS]
    shown = list(range(len(header)))
    left_out: List[str] = []

    def wide(i: int) -> int:
        return max(_cells(c) for c in columns[i])

    def total() -> int:
        return sum(wide(i) for i in shown) + 2 * (len(shown) - 1)

    def cut(i: int, most: int) -> None:
        columns[i][1:] = [_cut(c, most, ellipsis) for c in columns[i][1:]]

    if width is not None and total() > width:
        for i in shown:
            columns[i][0] = _SHORT_LABELS.get(names[i], columns[i][0])
    if width is not None and total() > width:
        for i in keys:
            cut(i, _KEY_MOST)
    for name in DROP_ORDER:
        if width is None or total() <= width:
            break
        i = names.index(name)
        shown.remove(i)
        left_out.append(header[i])
    while width is not None and total() > width:
        i = max(keys, key=lambda k: (wide(k), -k))
        least = max(_KEY_LEAST, _cells(columns[i][0]), _cells(totals[i]))
        if wide(i) <= least:
            break  # as narrow as it goes: the table runs past the width
        cut(i, max(wide(i) - (total() - width), least))

    widths = {i: wide(i) for i in shown}

    def line(row: int) -> str:
        return "  ".join(_pad(columns[i][row], widths[i], right[i]) for i in shown).rstrip()

    rule = "  ".join("-" * widths[i] for i in shown)
    last = len(body) + 1
    lines = [line(0), rule, *(line(r) for r in range(1, last)), rule, line(last)]
    return "\n".join(lines) + "\n", left_out


def _markdown(
    header: List[str], body: List[List[str]], totals: List[str], right: List[bool]
) -> str:
    def line(cells: Sequence[str]) -> str:
        # Cells are printable() already: "|" alone would end the cell.
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---:" if r else ":---" for r in right]
    bold = [f"**{c}**" if c else "" for c in totals]
    return "\n".join([line(header), "|" + "|".join(align) + "|",
                      *(line(r) for r in body), line(bold)]) + "\n"


def render_prices(table: Mapping[str, Any], unpriced: Optional[Sequence[Tuple[str, int]]],
                  fmt: str) -> str:
    """The price table (per million tokens, as providers publish them) as
    ``table`` or ``json``; with ``unpriced`` (model, executions), also a
    database's models that have no price."""
    entries = []
    for name in table:
        price = table[name]
        per = price.per_million()
        entries.append({"model": name, "provider": price.provider, "input": per[0],
                        "output": per[1], "cache_read": per[2], "cache_write": per[3],
                        "source": price.source, "as_of": price.as_of})
    if fmt == "json":
        value: Dict[str, Any] = {"unit": "USD per million tokens", "prices": entries}
        if unpriced is not None:
            value["unpriced"] = dict(unpriced)
        return to_json(value, indent=2) + "\n"
    if fmt != "table":
        raise ValueError(f"unknown prices format {fmt!r}; expected one of {STATS_FORMATS}")

    def money(value: Optional[float]) -> str:
        if value is None:
            return "-"
        whole, _, cents = f"{value:,.6f}".partition(".")
        return f"${whole}.{cents.rstrip('0').ljust(2, '0')}"

    header = ["model", "provider", "input", "output", "cache read", "cache write", "as of"]
    body = [[printable(e["model"]), printable(e["provider"] or ""), money(e["input"]),
             money(e["output"]), money(e["cache_read"]), money(e["cache_write"]),
             printable(e["as_of"] or "")] for e in entries]
    widths = [max(_cells(row[i]) for row in [header, *body]) for i in range(len(header))]
    right = [False, False, True, True, True, True, False]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(_pad(c, w, r)
                         for c, w, r in zip(cells, widths, right, strict=True)).rstrip()

    sources = sorted({printable(e["source"]) for e in entries if e["source"]})
    lines = ["Prices in USD per million tokens (cache write: the 5-minute write)", "",
             line(header), "  ".join("-" * w for w in widths), *(line(r) for r in body), ""]
    lines += [f"source: {source}" for source in sources]
    if unpriced is not None:
        lines.append("")
        if unpriced:
            lines.append("models in the database without a price (executions):")
            lines += [f"  {printable(name)}  {count:,}" for name, count in unpriced]
        else:
            lines.append("every model in the database has a price")
    return "\n".join(lines) + "\n"

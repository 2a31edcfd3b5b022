"""Output formats: reports, statistics and exported rows as text.

Every format is an option of one code path: a report becomes columns and
records once (:func:`report_columns`, :func:`report_records`), then JSON and
CSV write the raw values and the table and Markdown the human ones (costs
with ``$``, thousands separators).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import io
import json
import math
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
EXPORT_VERSION = 2
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

_TOTAL = "TOTAL"


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


def render_report(report: Report, fmt: str) -> str:
    """``report`` as text in one of :data:`REPORT_FORMATS`."""
    if fmt == "json":
        return to_json(report_document(report), indent=2) + "\n"
    columns = report_columns(report)
    if fmt == "csv":
        return _csv(columns, ([record[c] for c in columns] for record in report_records(report)))
    if fmt not in ("table", "markdown"):
        raise ValueError(f"unknown report format {fmt!r}; expected one of {REPORT_FORMATS}")
    keys = report.key_names or ("",)
    header = [_LABELS.get(c, c) for c in keys + METRICS]
    body = [
        [_human(k, row.keys.get(k)) for k in keys]
        + [_human(m, getattr(row.metrics, m)) for m in METRICS]
        for row in report.rows
    ]
    totals = [_TOTAL] + [""] * (len(keys) - 1)
    totals += [_human(m, getattr(report.totals, m)) for m in METRICS]
    right = [False] * len(keys) + [True] * len(METRICS)
    note = _unpriced_note(report) + _history_note(report)
    if fmt == "markdown":
        return _markdown(header, body, totals, right) + note
    return _caption(report) + "\n\n" + _table(header, body, totals, right) + note


def _history_note(report: Report) -> str:
    """The footnote of a report that read rollups, or could not."""
    if report.incomplete_before is not None:
        return (f"\nExecutions before {_when(report.incomplete_before)} were purged; PR-level "
                "detail went with them, so this table does not count them.\n")
    if report.from_rollups:
        return "\np95 ms: estimated within 1 % where rolled-up hours are counted.\n"
    return ""


def _unpriced_note(report: Report) -> str:
    """The footnote of a report with unpriced executions."""
    if not report.unpriced:
        return ""
    left = sum(report.unpriced.values())
    models = ", ".join(f"{name} ({n:,})" for name, n in report.unpriced.items())
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
        else:
            text = "-" if value is None else str(value)
        lines.append(f"{name.ljust(width)}  {text}")
    return "\n".join(lines) + "\n"


def write_rows(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], fmt: str, out: TextIO
) -> int:
    """Write ``rows`` to ``out`` one at a time as CSV (a header, then the rows)
    or JSON Lines (one object per row); return how many rows were written."""
    count = 0
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(row)
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


def _human(name: str, value: Any) -> str:
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
    parts += [
        f"{name}={value}"
        for name, value in dataclasses.asdict(f).items()
        if name not in ("since", "until", "tz") and value is not None
    ]
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


def _table(
    header: List[str], body: List[List[str]], totals: List[str], right: List[bool]
) -> str:
    widths = [max(len(r[i]) for r in [header, totals, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        )
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in body), rule, line(totals)]) + "\n"


def _markdown(
    header: List[str], body: List[List[str]], totals: List[str], right: List[bool]
) -> str:
    def line(cells: Sequence[str]) -> str:
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
    body = [[e["model"], e["provider"] or "", money(e["input"]), money(e["output"]),
             money(e["cache_read"]), money(e["cache_write"]), e["as_of"]] for e in entries]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    right = [False, False, True, True, True, True, False]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w)
                         for c, w, r in zip(cells, widths, right, strict=True)).rstrip()

    sources = sorted({e["source"] for e in entries if e["source"]})
    lines = ["Prices in USD per million tokens (cache write: the 5-minute write)", "",
             line(header), "  ".join("-" * w for w in widths), *(line(r) for r in body), ""]
    lines += [f"source: {source}" for source in sources]
    if unpriced is not None:
        lines.append("")
        if unpriced:
            lines.append("models in the database without a price (executions):")
            lines += [f"  {name}  {count:,}" for name, count in unpriced]
        else:
            lines.append("every model in the database has a price")
    return "\n".join(lines) + "\n"

"""Output formats, on reports built by hand: every format carries the same data."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from typing import Any, List

import pytest

from telemetry_orm.formats import (
    EXPORT_FORMATS,
    REPORT_FORMATS,
    render_report,
    render_stats,
    write_rows,
)
from telemetry_orm.reports import (
    METRICS,
    DatabaseStats,
    Metrics,
    Report,
    ReportFilters,
    ReportRow,
)

UTC = dt.timezone.utc


def metrics(executions: int, cost: float, **extra: Any) -> Metrics:
    values = dict(
        executions=executions, input_tokens=1_234_567 * executions, output_tokens=89_000,
        cache_read_tokens=12_000_000, cache_creation_tokens=3, cost_usd=cost,
        avg_duration_ms=61_234.5, p95_duration_ms=150_003, failed=1,
    )
    values.update(extra)
    values["total_tokens"] = sum(
        values[k] for k in ("input_tokens", "output_tokens", "cache_read_tokens",
                            "cache_creation_tokens")
    )
    return Metrics(**values)


@pytest.fixture
def sample() -> Report:
    rows = (
        ReportRow({"repo": "acme/api", "pr_number": 12}, metrics(3, 1234.5)),
        ReportRow({"repo": "pipe|name/x", "pr_number": None}, metrics(1, 0.004)),
    )
    return Report(
        generated_at=dt.datetime(2025, 6, 1, 8, 30, tzinfo=UTC),
        filters=ReportFilters(since=dt.datetime(2025, 5, 2, tzinfo=UTC), model="m"),
        group_by=("pr",),
        key_names=("repo", "pr_number"),
        rows=rows,
        totals=metrics(4, 1234.504, avg_duration_ms=None, p95_duration_ms=None),
    )


def test_json_has_the_documented_shape_and_raw_values(sample: Report) -> None:
    document = json.loads(render_report(sample, "json"))
    assert list(document) == ["generated_at", "filters", "group_by", "cost", "totals",
                              "unpriced", "from_rollups", "incomplete_before", "rows"]
    assert document["cost"] == "recorded" and document["unpriced"] == {}
    assert document["generated_at"] == "2025-06-01T08:30:00Z"
    assert document["filters"] == {
        "since": "2025-05-02T00:00:00Z", "until": None, "repo": None, "model": "m",
        "event_type": None, "conclusion": None, "tz": "UTC",
    }
    assert document["group_by"] == ["pr"]
    assert document["totals"] == sample.totals.as_dict()
    assert list(document["totals"]) == list(METRICS)
    assert document["rows"] == [row.as_dict() for row in sample.rows]
    assert list(document["rows"][0]) == ["repo", "pr_number", *METRICS]


def test_csv_is_one_header_then_the_rows_and_nothing_else(sample: Report) -> None:
    text = render_report(sample, "csv")
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == ["repo", "pr_number", *METRICS]
    assert len(table) == 1 + len(sample.rows)
    first = dict(zip(table[0], table[1], strict=True))
    assert first["repo"] == "acme/api"
    assert int(first["executions"]) == 3
    assert float(first["cost_usd"]) == 1234.5
    assert table[2][1] == ""  # None


def test_table_has_aligned_columns_a_totals_line_dollars_and_separators(sample: Report) -> None:
    text = render_report(sample, "table")
    caption, blank, header, rule, *body, rule2, totals = text.rstrip("\n").split("\n")
    assert caption == "Executions since 2025-05-02 00:00:00 UTC, model=m, by pr"
    assert blank == ""
    assert rule == rule2 and set(rule) == {"-", " "}
    # Every column ends where its rule ends (numbers are right-aligned).
    ends = [m.end() for m in re.finditer(r"-+", rule)]
    for line in (header, *body, totals):
        for end in ends[2:]:
            assert line[end - 1] != " ", (line, end)
    assert totals.startswith("TOTAL ")
    assert "$1,234.50" in body[0] and "$0.00" in body[1]
    assert "3,703,701" in body[0]  # input tokens of the first row
    assert "$1,234.50" in totals
    assert totals.split()[-3:-1] == ["-", "-"]  # no average, no percentile


def test_markdown_is_a_table_ready_for_a_pull_request(sample: Report) -> None:
    lines = render_report(sample, "markdown").rstrip("\n").split("\n")
    assert all(line.startswith("| ") or line.startswith("|:") for line in lines)
    assert lines[0].startswith("| repo | PR | executions |")
    assert lines[1] == "|:---|:---|" + "|".join(["---:"] * len(METRICS)) + "|"
    assert "pipe\\|name/x" in lines[3]
    assert lines[-1].startswith("| **TOTAL** |  | **4** |")
    assert lines[0].count(" | ") == lines[2].count(" | ")


@pytest.mark.parametrize("fmt", REPORT_FORMATS)
def test_every_format_handles_an_empty_report(fmt: str) -> None:
    empty = Report(
        generated_at=dt.datetime(2025, 1, 1, tzinfo=UTC), filters=ReportFilters(),
        group_by=("repo",), key_names=("repo",), rows=(), totals=Metrics(),
    )
    text = render_report(empty, fmt)
    if fmt == "json":
        assert json.loads(text)["rows"] == []
    elif fmt == "csv":
        assert list(csv.reader(io.StringIO(text))) == [["repo", *METRICS]]
    else:
        assert "TOTAL" in text


def test_unknown_formats_are_refused(sample: Report) -> None:
    with pytest.raises(ValueError, match="xml"):
        render_report(sample, "xml")
    with pytest.raises(ValueError, match="xml"):
        write_rows(["a"], [], "xml", io.StringIO())


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_exported_rows_round_trip(fmt: str) -> None:
    columns = ["id", "repo", "pr_number", "cost_usd"]
    rows: List[Any] = [(1, "a/b", None, 0.5), (2, 'quo"te,comma', 7, 0.0)]
    out = io.StringIO()
    assert write_rows(columns, iter(rows), fmt, out) == 2
    if fmt == "csv":
        table = list(csv.reader(io.StringIO(out.getvalue())))
        assert table == [columns, ["1", "a/b", "", "0.5"], ["2", 'quo"te,comma', "7", "0.0"]]
    else:
        decoded = [json.loads(line) for line in out.getvalue().splitlines()]
        assert decoded == [dict(zip(columns, row, strict=True)) for row in rows]


def test_stats_as_json_and_table() -> None:
    stats = DatabaseStats(
        path="t.db", rows=1_234_567, oldest="2025-01-01 00:00:00", newest=None,
        file_bytes=4096, wal_bytes=0, schema_version=1, journal_mode="wal",
    )
    assert json.loads(render_stats(stats, "json"))["rows"] == 1_234_567
    table = render_stats(stats, "table")
    assert re.search(r"^rows +1,234,567$", table, re.M)
    assert re.search(r"^newest +-$", table, re.M)
    assert re.search(r"^file_bytes +4,096 bytes$", table, re.M)
    assert re.search(r"^rollup_executions +0$", table, re.M)

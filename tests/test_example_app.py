"""The example webhook app (examples/webhook/app.py), run as a newcomer runs
it: its own process on 127.0.0.1, deliveries posted over HTTP, the files
checked with plain sqlite3."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "webhook" / "app.py"

PR = {"action": "opened", "repository": {"full_name": "acme/api"},
      "pull_request": {"number": 7, "title": "Fix the login page"}}
ISSUE = {"action": "opened", "repository": {"full_name": "acme/web"}}


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Tuple[str, Path]]:
    database = tmp_path / "app.db"
    # SIGINT as a terminal sends it: a test run started in the background
    # (a CI script's `&`) ignores it, and its children would inherit that.
    proc = subprocess.Popen([sys.executable, str(APP), "--db", str(database), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, preexec_fn=_interruptible)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening on http://127.0.0.1:"), (line, proc.stderr.read())
    base = line.split()[2]
    try:
        yield base, database
    finally:
        proc.send_signal(signal.SIGINT)
        _, errors = proc.communicate(timeout=30)
        assert proc.returncode == 0, errors
        assert "Traceback" not in errors, errors


def post(base: str, body: Any, *, delivery: Optional[str], event: Optional[str] = "pull_request",
         raw: Optional[bytes] = None) -> Tuple[int, Dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if delivery is not None:
        headers["X-GitHub-Delivery"] = delivery
    if event is not None:
        headers["X-GitHub-Event"] = event
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(f"{base}/webhook", data=data, headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(url: str) -> Tuple[str, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.headers["Content-Type"], response.read().decode()


def counts(database: Path) -> Dict[str, int]:
    conn = sqlite3.connect(database)
    try:
        return {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("executions", "deliveries", "telemetry_orm_keys")}
    finally:
        conn.close()


class Cells(HTMLParser):
    """The text of every table cell of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: List[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("td", "th"):
            self._in_cell = True
            self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells[-1] += data


def test_the_example_app_records_each_delivery_once_and_reports_it(
        server: Tuple[str, Path]) -> None:
    base, database = server
    status, first = post(base, PR, delivery="d-1")
    assert status == 200 and first["redelivery"] is False
    status, issue = post(base, ISSUE, delivery="d-2", event="issues")
    assert status == 200 and issue["execution_id"] != first["execution_id"]
    assert counts(database) == {"executions": 2, "deliveries": 2, "telemetry_orm_keys": 2}

    # GitHub redelivers: the same id, nothing new.
    status, again = post(base, PR, delivery="d-1")
    assert (status, again) == (200, {"execution_id": first["execution_id"], "redelivery": True})
    assert counts(database)["executions"] == 2

    # Bad deliveries: a 400 that says what is wrong, and nothing written.
    bad = [
        (dict(body=None, raw=b"{not json", delivery="d-3"), "the body is not JSON"),
        (dict(body={"action": "opened"}, delivery="d-4"), "repository.full_name"),
        (dict(body=PR, delivery=None), "X-GitHub-Delivery"),
        (dict(body=PR, delivery="d-5", event=None), "X-GitHub-Event"),
        (dict(body={**PR, "pull_request": {"number": "seven"}}, delivery="d-6"), "pr_number"),
    ]
    for options, message in bad:
        status, answer = post(base, **options)
        assert status == 400 and message in answer["error"], (options, answer)
    assert counts(database) == {"executions": 2, "deliveries": 2, "telemetry_orm_keys": 2}

    # Two copies of a new delivery at once: one row, one id, whichever wins.
    answers: List[Tuple[int, Dict[str, Any]]] = []
    threads = [threading.Thread(target=lambda: answers.append(post(base, PR, delivery="d-7")))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [status for status, _ in answers] == [200, 200], answers
    assert len({a["execution_id"] for _, a in answers}) == 1
    assert counts(database) == {"executions": 3, "deliveries": 3, "telemetry_orm_keys": 3}

    # The report, against the rows read with plain sqlite3.
    conn = sqlite3.connect(database)
    expected = {repo: (n, cost) for repo, n, cost in conn.execute(
        "SELECT repo, COUNT(*), SUM(cost_usd) FROM executions GROUP BY repo")}
    tied = conn.execute("SELECT COUNT(*) FROM executions e JOIN deliveries d "
                        "ON d.execution_id = e.id AND d.delivery_id = e.delivery_id").fetchone()
    conn.close()
    assert tied == (3,)
    kind, text = get(f"{base}/usage?format=json")
    assert kind == "application/json"
    document = json.loads(text)
    got = {row["repo"]: (row["executions"], row["cost_usd"]) for row in document["rows"]}
    assert got.keys() == expected.keys()
    for repo, (n, cost) in expected.items():
        assert got[repo][0] == n and got[repo][1] == pytest.approx(cost)
    assert expected["acme/api"][0] == 2

    kind, page = get(f"{base}/usage")
    assert kind.startswith("text/html")
    cells = Cells()
    cells.feed(page)
    assert "acme/api" in cells.cells and "acme/web" in cells.cells

"""Budget alerts: ``budget check --notify URL`` POSTs each alert once per
budget, threshold and period, and a failed POST is retried at the next check."""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from support import Witness, minimal, run_cli

from telemetry_orm import PeeweeTelemetryStore, create_telemetry_store


class Receiver:
    """A webhook receiver on 127.0.0.1 in a thread, keeping every body."""

    def __init__(self) -> None:
        self.bodies: List[Dict[str, Any]] = []
        self.status = 200
        self.delay = 0.0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                time.sleep(receiver.delay)
                if receiver.status == 200:
                    receiver.bodies.append(body)
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


def check(db: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    return run_cli("budget", "check", "--db", str(db), *argv, capsys=capsys)


def test_each_alert_is_sent_once_per_budget_and_threshold(
        db_path: Path, store: PeeweeTelemetryStore, receiver: Receiver,
        capsys: pytest.CaptureFixture[str]) -> None:
    store.set_budget("api", usd=1.0, repo="acme/api")
    store.set_budget("web", usd=10.0, repo="acme/web")
    store.set_budget("quiet", usd=100.0)
    store.record(minimal(repo="acme/api", cost_usd=0.85))
    store.record(minimal(repo="acme/web", cost_usd=9.0))
    for _ in range(3):
        assert check(db_path, capsys, "--notify", receiver.url)[0] == 3
    assert sorted((b["budget"], b["status"]) for b in receiver.bodies) == [
        ("api", "warning"), ("web", "warning")]
    body = next(b for b in receiver.bodies if b["budget"] == "api")
    status = store.budget_status("api")
    assert body["spent_usd"] == 0.85 and body["limit_usd"] == 1.0
    assert body["period_start"] == status.period_start.isoformat()
    assert body["period_end"] == status.period_end.isoformat()
    assert body["projected_usd"] == pytest.approx(status.projected_usd, rel=1e-3)
    assert body["text"].startswith("Budget api reached its warning threshold: $0.85 of $1.00")
    # Past the limit: the exceeded alert, once, though the warning was sent.
    store.record(minimal(repo="acme/api", cost_usd=0.15))
    for _ in range(3):
        assert check(db_path, capsys, "--notify", receiver.url)[0] == 4
    assert sorted((b["budget"], b["status"]) for b in receiver.bodies) == [
        ("api", "exceeded"), ("api", "warning"), ("web", "warning")]
    witness = Witness(str(db_path))
    try:
        assert witness.rows("SELECT budget, threshold, state FROM telemetry_orm_budget_alerts "
                            "ORDER BY budget, threshold") == [
            {"budget": "api", "threshold": "exceeded", "state": "sent"},
            {"budget": "api", "threshold": "warning", "state": "sent"},
            {"budget": "web", "threshold": "warning", "state": "sent"}]
    finally:
        witness.close()


def test_a_failed_post_exits_5_and_is_retried_at_the_next_check(
        db_path: Path, store: PeeweeTelemetryStore, receiver: Receiver,
        capsys: pytest.CaptureFixture[str]) -> None:
    store.set_budget("api", usd=1.0)
    store.record(minimal(cost_usd=2.0))
    receiver.status = 500
    status, _, err = check(db_path, capsys, "--notify", receiver.url)
    assert status == 5
    assert "alert for api (exceeded) not delivered" in err and "HTTP 500" in err
    assert receiver.bodies == []
    receiver.status = 200
    assert check(db_path, capsys, "--notify", receiver.url)[0] == 4
    assert check(db_path, capsys, "--notify", receiver.url)[0] == 4
    assert [(b["budget"], b["status"]) for b in receiver.bodies] == [("api", "exceeded")]


def test_a_receiver_that_never_answers_is_given_up_on_in_time(
        db_path: Path, store: PeeweeTelemetryStore, receiver: Receiver,
        capsys: pytest.CaptureFixture[str]) -> None:
    store.set_budget("api", usd=1.0)
    store.record(minimal(cost_usd=2.0))
    receiver.delay = 5.0
    started = time.monotonic()
    status, _, err = check(db_path, capsys, "--notify", receiver.url, "--timeout", "0.5")
    assert time.monotonic() - started < 4.0
    assert status == 5 and "not delivered" in err


def test_an_unreachable_url_exits_5(db_path: Path, store: PeeweeTelemetryStore,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    store.set_budget("api", usd=1.0)
    store.record(minimal(cost_usd=2.0))
    status, _, err = check(db_path, capsys, "--notify", "http://127.0.0.1:9/hook")
    assert status == 5 and "not delivered" in err


def test_checks_at_the_same_moment_send_each_alert_once(any_location: str,
                                                        any_store: PeeweeTelemetryStore,
                                                        receiver: Receiver) -> None:
    any_store.set_budget("api", usd=1.0)
    any_store.record(minimal(cost_usd=2.0))
    receiver.delay = 0.3  # each POST lasts long enough for the others to meet it
    stores = [create_telemetry_store(any_location) for _ in range(4)]
    start = threading.Barrier(len(stores))
    tried: List[Any] = []

    def check_now(store: PeeweeTelemetryStore) -> None:
        statuses = store.budget_statuses()
        start.wait()
        tried.extend(store.notify_budgets(receiver.url, statuses))

    threads = [threading.Thread(target=check_now, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for store in stores:
        store.close()
    assert [(b["budget"], b["status"]) for b in receiver.bodies] == [("api", "exceeded")]
    assert [(t.budget, t.error) for t in tried] == [("api", None)]

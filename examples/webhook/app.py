"""A GitHub webhook receiver that runs an agent per delivery and records
what it cost, on the application's own peewee database.

    python examples/webhook/app.py --demo     # then open the /usage address it prints

- ``POST /webhook``: a GitHub delivery (``X-GitHub-Event``,
  ``X-GitHub-Delivery`` and a JSON body). The agent runs, then one
  transaction writes the app's own ``Delivery`` row and the telemetry row,
  keyed by the delivery id, so a redelivery adds nothing.
- ``GET /usage``: the HTML report; ``GET /usage?format=json``: the JSON one.

Standard library and telemetry_orm only (``pip install -e .`` at the top of
the repository). See README.md beside this file.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import urllib.parse
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional, Tuple

import peewee

from telemetry_orm import TelemetryRecord, TelemetryValidationError, create_telemetry_store
from telemetry_orm.dashboard import dashboard, render_html
from telemetry_orm.formats import report_document, to_json

# The application's database, initialized in main() (or by its tests).
db = peewee.DatabaseProxy()
# Made at import time, opened at its first use (or by telemetry.prepare()).
telemetry = create_telemetry_store(db)


class Delivery(peewee.Model):
    """The application's own record of each delivery it handled."""

    delivery_id = peewee.TextField(unique=True)
    event = peewee.TextField()
    repo = peewee.TextField()
    execution_id = peewee.IntegerField()

    class Meta:
        database = db
        table_name = "deliveries"


class BadDelivery(ValueError):
    """A delivery the app cannot handle: answered with 400 and this message."""


def run_agent(repo: str, event: str, title: str) -> Dict[str, Any]:
    """A stand-in for an agent run: it returns what the Claude Agent SDK's
    final result message holds (here as the TypeScript SDK's JSON; in a
    Python app it is a ``claude_agent_sdk.ResultMessage``)."""
    words = len(title.split())
    return {
        "type": "result", "subtype": "success", "is_error": False,
        "duration_ms": 1500 + 100 * words, "num_turns": 1 + words % 4,
        "session_id": f"session-{zlib.crc32(f'{repo} {title}'.encode()):08x}",
        "total_cost_usd": round(0.002 * words + 0.01, 6), "stop_reason": "end_turn",
        "usage": {"input_tokens": 1000 + 50 * words, "output_tokens": 200 + 10 * words,
                  "cache_read_input_tokens": 400, "cache_creation_input_tokens": 0},
        "modelUsage": {"claude-sonnet-4-5": {
            "inputTokens": 1000 + 50 * words, "outputTokens": 200 + 10 * words,
            "cacheReadInputTokens": 400, "cacheCreationInputTokens": 0,
            "costUSD": round(0.002 * words + 0.01, 6)}},
    }


def parse_delivery(headers: Any, body: bytes) -> Tuple[str, str, Dict[str, Any]]:
    """(delivery id, event, payload), or :class:`BadDelivery` saying what is wrong."""
    delivery = headers.get("X-GitHub-Delivery")
    event = headers.get("X-GitHub-Event")
    if not delivery:
        raise BadDelivery("missing the X-GitHub-Delivery header")
    if not event:
        raise BadDelivery("missing the X-GitHub-Event header")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadDelivery(f"the body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadDelivery("the body must be a JSON object")
    repo = (payload.get("repository") or {}).get("full_name") if isinstance(
        payload.get("repository"), dict) else None
    if not isinstance(repo, str) or not repo:
        raise BadDelivery("repository.full_name: missing or not a string")
    return delivery, event, payload


def handle_delivery(delivery: str, event: str, payload: Dict[str, Any]) -> Dict[str, Any]:
    """Run the agent for a delivery seen for the first time and record it."""
    seen = Delivery.get_or_none(Delivery.delivery_id == delivery)
    if seen is not None:  # a redelivery: the agent ran already
        return {"execution_id": seen.execution_id, "redelivery": True}
    repo = payload["repository"]["full_name"]
    pr = payload.get("pull_request") if isinstance(payload.get("pull_request"), dict) else {}
    action = payload.get("action")
    event_type = f"{event}.{action}" if isinstance(action, str) else event
    # The agent runs outside any transaction: it takes minutes in real life.
    result = run_agent(repo, event_type, str(pr.get("title") or ""))
    record = TelemetryRecord.from_agent_result(
        result, repo=repo, event_type=event_type, pr_number=pr.get("number"),
        delivery_id=delivery, provider="anthropic")
    # One transaction: the app's row and the telemetry row are both kept, or
    # neither. The key makes two deliveries racing each other give one row.
    with db.atomic():
        execution_id = telemetry.record(record, key=delivery)
        Delivery.insert(delivery_id=delivery, event=event_type, repo=repo,
                        execution_id=execution_id).on_conflict_ignore().execute()
    return {"execution_id": execution_id, "redelivery": False}


class Handler(BaseHTTPRequestHandler):
    server_version = "telemetry-example/1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        if self.path != "/webhook":
            return self._send(404, {"error": f"no such endpoint: {self.path}"})
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            with db.connection_context():
                answer = handle_delivery(*parse_delivery(self.headers, body))
        except (BadDelivery, TelemetryValidationError) as exc:
            return self._send(400, {"error": str(exc)})
        self._send(200, answer)

    def do_GET(self) -> None:  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/usage":
            return self._send(404, {"error": f"no such page: {url.path}"})
        query = urllib.parse.parse_qs(url.query)
        with db.connection_context():
            if query.get("format") == ["json"]:
                text = to_json(report_document(telemetry.report()), indent=2)
                return self._send_text(200, text, "application/json")
            page = render_html(dashboard(telemetry.database, group_by=["repo"]))
        self._send_text(200, page, "text/html; charset=utf-8")

    def _send(self, status: int, document: Dict[str, Any]) -> None:
        self._send_text(status, json.dumps(document), "application/json")

    def _send_text(self, status: int, text: str, kind: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        sys.stderr.write(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}\n")


def post_sample_deliveries(base: str) -> None:
    """What --demo sends: three deliveries and one redelivery."""
    samples = [("d-1", "pull_request", {"action": "opened", "repository": {
                    "full_name": "acme/api"}, "pull_request": {"number": 7, "title": "Fix login"}}),
               ("d-2", "pull_request", {"action": "synchronize", "repository": {
                    "full_name": "acme/api"}, "pull_request": {"number": 7, "title": "Fix login"}}),
               ("d-3", "issues", {"action": "opened", "repository": {"full_name": "acme/web"}}),
               ("d-1", "pull_request", {"action": "opened", "repository": {
                    "full_name": "acme/api"}, "pull_request": {"number": 7, "title": "Fix login"}})]
    for delivery, event, payload in samples:
        request = urllib.request.Request(
            f"{base}/webhook", data=json.dumps(payload).encode(), method="POST",
            headers={"X-GitHub-Delivery": delivery, "X-GitHub-Event": event,
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            print(f"delivery {delivery}: {response.read().decode()}")


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="webhook-app.db", help="the app's SQLite file")
    parser.add_argument("--port", type=int, default=8080, help="0: any free port")
    parser.add_argument("--demo", action="store_true", help="post sample deliveries first")
    args = parser.parse_args(argv)
    db.initialize(peewee.SqliteDatabase(args.db, pragmas={"journal_mode": "wal"}))
    with db.connection_context():
        db.create_tables([Delivery])
    telemetry.prepare()  # the telemetry tables, before the first request
    try:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    except OSError as exc:
        parser.exit(2, f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror}); "
                       "pass --port with another port, or --port 0 for any free one\n")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"listening on {base} (usage report: {base}/usage)", flush=True)
    if args.demo:
        threading.Thread(target=post_sample_deliveries, args=(base,), daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        telemetry.close()


if __name__ == "__main__":
    main()

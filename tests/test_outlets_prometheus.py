"""A real Prometheus server (Debian's ``prometheus``) scrapes ``/metrics``
behind a token, and a PromQL query over its HTTP API gives the store's own
totals; the queries docs/metrics.md shows run there too.

Skipped when the binary is missing, unless ``TELEMETRY_TEST_REQUIRE_PROMETHEUS=1``
(set by .ci/run once it has installed it)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest
from support import served_at

from telemetry_orm import PeeweeTelemetryStore

#: The three queries of docs/metrics.md.
QUERIES = (
    "sum by (repo) (increase(telemetry_orm_cost_usd_total[1d]))",
    'sum(rate(telemetry_orm_executions_total{conclusion!="success"}[1h]))'
    " / sum(rate(telemetry_orm_executions_total[1h]))",
    "telemetry_orm_budget_spent_usd / telemetry_orm_budget_limit_usd",
)
DEADLINE = 90.0


def binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        reason = ("Prometheus is not installed (apt-get install prometheus): the scrape test "
                  "needs its server")
        if os.environ.get("TELEMETRY_TEST_REQUIRE_PROMETHEUS") == "1":  # set by .ci/run
            pytest.fail(f"{reason} (TELEMETRY_TEST_REQUIRE_PROMETHEUS=1)")
        pytest.skip(reason)
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def until(what: str, check: Callable[[], Any], process: subprocess.Popen[bytes],
          log: Path) -> Any:
    """``check()`` once it is truthy, asked again until :data:`DEADLINE`."""
    deadline = time.monotonic() + DEADLINE
    while True:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited ({process.returncode}): "
                        f"{log.read_text(errors='replace')[-2000:]}")
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {DEADLINE:.0f} s; prometheus log: "
                        f"{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)


@pytest.fixture
def served(store: PeeweeTelemetryStore) -> Iterator[int]:
    pytest.importorskip("waitress", reason="the serve extra is not installed")
    from telemetry_orm.server import make_app

    with served_at(make_app(store, token="scrape-token")) as port:
        yield port


def test_prometheus_scrapes_the_stores_totals(store: PeeweeTelemetryStore, served: int,
                                              tmp_path: Path) -> None:
    program = binary()
    for n in range(30):
        store.record({"repo": f"acme/r{n % 3}", "event_type": "push",
                      "model": ("claude-sonnet-4-5", "claude-haiku-4-5")[n % 2],
                      "conclusion": "success" if n % 4 else "failure",
                      "input_tokens": 1000 + n, "output_tokens": 100, "cost_usd": 0.125 * n})
    store.set_budget("acme", usd=200)
    (tmp_path / "token").write_text("scrape-token\n", encoding="utf-8")
    (tmp_path / "prometheus.yml").write_text(json.dumps({  # YAML reads JSON
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{
            "job_name": "telemetry", "metrics_path": "/metrics",
            "authorization": {"type": "Bearer",
                              "credentials_file": str(tmp_path / "token")},
            "static_configs": [{"targets": [f"127.0.0.1:{served}"]}]}]}), encoding="utf-8")
    port = free_port()
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [program, f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}"

    def query(promql: str) -> Optional[Any]:
        url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as answer:
            document = json.load(answer)
        assert document["status"] == "success", document
        return document["data"]["result"]

    try:
        until("prometheus ready", lambda: urllib.request.urlopen(
            f"{api}/-/ready", timeout=2).status == 200, process, log)
        up = until("the target scraped", lambda: query('up{job="telemetry"}'), process, log)
        assert up[0]["value"][1] == "1", up
        expected = store.report(since=None, group_by=[])
        cost = until("the cost scraped", lambda: query(
            "sum(telemetry_orm_cost_usd_total)"), process, log)
        runs = query("sum(telemetry_orm_executions_total)")
        assert runs is not None
        assert float(cost[0]["value"][1]) == expected.totals.cost_usd == 54.375
        assert float(runs[0]["value"][1]) == expected.totals.executions == 30
        print(f"\nPromQL sum(telemetry_orm_cost_usd_total) = {cost[0]['value'][1]}, the "
              f"store's report: {expected.totals.cost_usd}; executions "
              f"{runs[0]['value'][1]} and {expected.totals.executions}")
        # New rows show at the next scrape.
        store.record({"repo": "acme/r0", "event_type": "push", "model": "claude-sonnet-4-5",
                      "conclusion": "success", "cost_usd": 0.625})
        until("the new cost scraped", lambda: float(query(
            "sum(telemetry_orm_cost_usd_total)")[0]["value"][1]) == 55.0,  # type: ignore[index]
            process, log)
        for promql in QUERIES:
            query(promql)  # each is valid PromQL over these series
        burn = query(QUERIES[2])
        spent = store.budget_status("acme").spent_usd  # recorded cost, else list price
        assert burn is not None and float(burn[0]["value"][1]) == pytest.approx(spent / 200)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)

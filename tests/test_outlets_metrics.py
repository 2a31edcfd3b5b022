"""GET /metrics: the Prometheus text format, read back with prometheus_client's
own parser; counters equal to the rows (read through an independent
connection) and never lower after a purge; label values escaped; budget
gauges; a token when one is configured."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any, Dict, Tuple

import pytest
from support import RAW, Witness, scrape

from telemetry_orm import PeeweeTelemetryStore
from telemetry_orm.outlets import CONTENT_TYPE, OutletsApp, metrics_app, metrics_text

parser = pytest.importorskip("prometheus_client.parser",
                             reason="prometheus_client is a test dependency (tox installs it)")

UTC = dt.timezone.utc
#: Label values that would break a naive exposition (or its reader).
HOSTILE = 'evil/"} 1\nfake_total{x="y"} 9 \\ <b>é</b>'

Series = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def parsed(text: str) -> Series:
    """Every sample, by name and labels, as prometheus_client reads the text."""
    found: Series = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def families(text: str) -> Dict[str, str]:
    return {f.name: f.type for f in parser.text_string_to_metric_families(text)}


def fill(store: PeeweeTelemetryStore, now: dt.datetime, days: int = 200) -> None:
    """Rows over ``days`` days before ``now``: two repos (one hostile), two
    models, successes and failures, every token type and a cost."""
    for n in range(days):
        for repo, model, conclusion in (("acme/api", "claude-sonnet-4-5", "success"),
                                        (HOSTILE, "claude-haiku-4-5", "failure")):
            store.record({"repo": repo, "event_type": "push", "model": model,
                          "conclusion": conclusion, "input_tokens": 100 + n,
                          "output_tokens": 10 + n, "cache_read_tokens": 1000 + n,
                          "cache_creation_tokens": n, "cost_usd": 0.015625 * (1 + n % 3)},
                         at=now - dt.timedelta(days=n, hours=1))


def database_now(witness: Witness) -> dt.datetime:
    value = witness.scalar("SELECT CURRENT_TIMESTAMP")
    value = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def from_rows(witness: Witness) -> Series:
    """The counters computed from the rows alone, by an independent connection."""
    found: Series = {}
    for r in witness.rows(
            "SELECT repo, model, provider, conclusion, COUNT(*) AS n, SUM(input_tokens) AS i, "
            "SUM(output_tokens) AS o, SUM(cache_read_tokens) AS cr, "
            "SUM(cache_creation_tokens) AS cc, SUM(cost_usd) AS c FROM executions "
            "GROUP BY repo, model, provider, conclusion"):
        keys = {"repo": r["repo"], "model": r["model"], "provider": r["provider"]}

        def add(name: str, labels: Dict[str, str], value: float) -> None:
            series = (name, tuple(sorted(labels.items())))
            found[series] = found.get(series, 0) + float(value)

        add("telemetry_orm_executions_total", {**keys, "conclusion": r["conclusion"]}, r["n"])
        for kind, column in (("input", "i"), ("output", "o"), ("cache_read", "cr"),
                             ("cache_creation", "cc")):
            add("telemetry_orm_tokens_total", {**keys, "type": kind}, r[column])
        add("telemetry_orm_cost_usd_total", keys, r["c"])
    return found


def counters(series: Series) -> Series:
    return {k: v for k, v in series.items() if k[0].endswith("_total")}


def test_the_exposition_is_the_text_format_and_equals_the_rows(
        any_store: PeeweeTelemetryStore, any_witness: Witness) -> None:
    fill(any_store, database_now(any_witness), days=30)
    status, headers, body = scrape(metrics_app(any_store))
    assert status == "200 OK" and headers["Content-Type"] == CONTENT_TYPE == (
        "text/plain; version=0.0.4; charset=utf-8")
    text = body.decode("utf-8")
    assert families(text) == {
        "telemetry_orm_executions": "counter", "telemetry_orm_tokens": "counter",
        "telemetry_orm_cost_usd": "counter", "telemetry_orm_budget_spent_usd": "gauge",
        "telemetry_orm_budget_limit_usd": "gauge", "telemetry_orm_held_series": "gauge"}
    assert text.count("# HELP ") == text.count("# TYPE ") == 6
    got = parsed(text)
    expected = from_rows(any_witness)
    assert counters(got).keys() == expected.keys()
    for series, value in expected.items():
        assert got[series] == pytest.approx(value, rel=1e-9), series
    # The hostile repo is one label value, whole, after the parser unescapes it.
    assert {dict(k[1]).get("repo") for k in got} >= {HOSTILE, "acme/api"}
    assert got[("telemetry_orm_held_series", ())] == 0


def test_label_values_are_escaped_per_the_format(store: PeeweeTelemetryStore) -> None:
    store.record({"repo": HOSTILE, "event_type": "push", "model": 'm"\\\n', "conclusion": "x"})
    text = metrics_text(store)
    line = next(t for t in text.splitlines() if t.startswith("telemetry_orm_executions_total"))
    assert line == ('telemetry_orm_executions_total{repo="evil/\\"} 1\\nfake_total{x=\\"y\\"} 9 '
                    '\\\\ <b>é</b>",model="m\\"\\\\\\n",provider="anthropic",conclusion="x"} 1')
    assert not any(t.startswith("fake_total") for t in text.splitlines())
    assert parsed(text)[("telemetry_orm_executions_total", tuple(sorted({
        "repo": HOSTILE, "model": 'm"\\\n', "provider": "anthropic",
        "conclusion": "x"}.items())))] == 1


def test_a_purge_lowers_no_counter(any_store: PeeweeTelemetryStore,
                                   any_witness: Witness) -> None:
    fill(any_store, database_now(any_witness), days=200)
    app = metrics_app(any_store)
    before = parsed(scrape(app)[2].decode())
    rows_before = any_witness.count()
    assert counters(before) == pytest.approx(from_rows(any_witness), rel=1e-9)
    deleted = any_store.purge_older_than(90)
    assert deleted > 0 and any_witness.count() == rows_before - deleted
    after = parsed(scrape(app)[2].decode())
    # Not lower, and not held up either: the rollups count what was purged.
    assert counters(after) == pytest.approx(counters(before), rel=1e-12)
    assert after[("telemetry_orm_held_series", ())] == 0
    # A fresh process (no marks) reads the same.
    assert counters(parsed(metrics_text(any_store))) == pytest.approx(counters(before))
    executions = sum(v for k, v in after.items() if k[0] == "telemetry_orm_executions_total")
    assert executions == rows_before == 400
    print(f"\npurge of {deleted} of {rows_before} rows: executions_total {executions:.0f} "
          f"before and after; rows left {any_witness.count()}")


def test_a_replaced_row_with_a_lower_cost_holds_its_counter(
        store: PeeweeTelemetryStore) -> None:
    entry = {"repo": "acme/api", "event_type": "push", "model": "claude-sonnet-4-5",
             "conclusion": "success", "cost_usd": 2.0}
    store.record(entry, key="run-1")
    app = metrics_app(store)
    cost = ("telemetry_orm_cost_usd_total", (("model", "claude-sonnet-4-5"),
                                             ("provider", "anthropic"), ("repo", "acme/api")))
    assert parsed(scrape(app)[2].decode())[cost] == 2.0
    store.record({**entry, "cost_usd": 0.5}, key="run-1", replace=True)
    held = parsed(scrape(app)[2].decode())
    assert held[cost] == 2.0 and held[("telemetry_orm_held_series", ())] == 1
    assert parsed(metrics_text(store))[cost] == 0.5  # what the database holds now
    store.record({**entry, "cost_usd": 3.0})
    moved = parsed(scrape(app)[2].decode())
    assert moved[cost] == 3.5 and moved[("telemetry_orm_held_series", ())] == 0


def test_budget_gauges_and_no_tables_made_by_a_scrape(store: PeeweeTelemetryStore,
                                                     witness: Any) -> None:
    store.record({"repo": "acme/api", "event_type": "push", "model": "claude-sonnet-4-5",
                  "conclusion": "success", "cost_usd": 1.25})
    metrics_text(store)
    tables = {r[0] for r in witness.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "telemetry_orm_budgets" not in tables
    store.set_budget("api", usd=10, repo="acme/api")
    store.set_budget("team:ml@x", usd=2.5)
    got = parsed(metrics_text(store))
    assert got[("telemetry_orm_budget_spent_usd", (("budget", "api"),))] == 1.25
    assert got[("telemetry_orm_budget_limit_usd", (("budget", "api"),))] == 10
    assert got[("telemetry_orm_budget_limit_usd", (("budget", "team:ml@x"),))] == 2.5


def test_a_token_is_needed_when_one_is_set(store: PeeweeTelemetryStore) -> None:
    app = OutletsApp(store, token="s3cret")
    status, headers, body = scrape(app)
    assert status.startswith("401") and b"Bearer" in body
    assert sorted(v.split(" ")[0] for k, v in RAW[-1] if k == "WWW-Authenticate") == [
        "Basic", "Bearer"]
    assert scrape(app, headers={"Authorization": "Bearer s3cret"})[0] == "200 OK"
    basic = base64.b64encode(b"anyone:s3cret").decode()
    assert scrape(app, headers={"Authorization": f"Basic {basic}"})[0] == "200 OK"
    for wrong in ("Bearer s3cre", "Bearer ", "Basic " + base64.b64encode(b"s3cret:x").decode(),
                  "Basic !!!", "Token s3cret", "s3cret"):
        assert scrape(app, headers={"Authorization": wrong})[0].startswith("401"), wrong
    assert scrape(app, method="POST", headers={"Authorization": "Bearer s3cret"})[0] \
        .startswith("405")
    status, headers, body = scrape(app, method="HEAD", headers={"Authorization": "Bearer s3cret"})
    assert status == "200 OK" and body == b"" and int(headers["Content-Length"]) > 100
    assert scrape(metrics_app(store), "/usage")[0].startswith("404")  # /metrics only


def test_metrics_app_mounted_at_its_path_by_a_router(store: PeeweeTelemetryStore) -> None:
    # A router that mounts it at /metrics passes the rest of the path: none.
    for rest in ("", "/"):
        status, headers, body = scrape(metrics_app(store), rest)
        assert status == "200 OK", body[:100]
        assert headers["Content-Type"] == CONTENT_TYPE

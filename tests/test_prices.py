"""The price table: published prices, name matching, override files, bad
files, and the one table every pricing path uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pytest

from telemetry_orm import TelemetryRecord, TelemetryValidationError, cli
from telemetry_orm.prices import (
    ENV_PRICES,
    Price,
    PriceTable,
    cost_of,
    default_prices,
    load_prices,
    model_key,
    shipped_prices,
)

MILLION = 1_000_000

#: Anthropic's published list prices, USD per million tokens: input, output,
#: 5-minute cache write, cache read, from the "Model pricing" table of
#: platform.claude.com/docs/en/about-claude/pricing as published on
#: 2026-12-01.
PUBLISHED = {
    "claude-fable-5": (10.0, 50.0, 12.50, 1.0),
    "claude-opus-4-8": (5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-7": (5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-6": (5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-5": (5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-1": (15.0, 75.0, 18.75, 1.50),
    "claude-opus-4": (15.0, 75.0, 18.75, 1.50),
    "claude-sonnet-5": (2.0, 10.0, 2.50, 0.20),
    "claude-sonnet-4-6": (3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-4-5": (3.0, 15.0, 3.75, 0.30),
    "claude-sonnet-4": (3.0, 15.0, 3.75, 0.30),
    "claude-3-7-sonnet": (3.0, 15.0, 3.75, 0.30),
    "claude-haiku-4-5": (1.0, 5.0, 1.25, 0.10),
    "claude-3-opus": (15.0, 75.0, 18.75, 1.50),
    "claude-3-haiku": (0.25, 1.25, 0.30, 0.03),
}


@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_each_shipped_anthropic_model_costs_its_published_price(model: str) -> None:
    price_in, price_out, price_write, price_read = PUBLISHED[model]
    # A million tokens of each kind, one kind at a time, then all at once.
    assert cost_of(model, input_tokens=MILLION) == price_in
    assert cost_of(model, output_tokens=MILLION) == price_out
    assert cost_of(model, cache_creation_tokens=MILLION) == price_write
    assert cost_of(model, cache_read_tokens=MILLION) == price_read
    assert cost_of(model, input_tokens=1200, output_tokens=340, cache_read_tokens=56_000,
                   cache_creation_tokens=7800) == pytest.approx(
        (1200 * price_in + 340 * price_out + 56_000 * price_read + 7800 * price_write)
        / MILLION, abs=1e-9)


def test_the_shipped_table_names_its_source_and_date() -> None:
    table = shipped_prices()
    assert len(table) >= 20
    for name in table:
        price = table[name]
        assert price.source and price.as_of, name
    providers = {table[name].provider for name in table}
    assert {"anthropic", "openai"} <= providers


@pytest.mark.parametrize("spelling", [
    "claude-sonnet-4-5-20250929",
    "claude-sonnet-4-5",
    "anthropic/claude-sonnet-4-5",
    "anthropic.claude-sonnet-4-5-20250929-v1:0",
    "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "eu.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "apac.anthropic.claude-sonnet-4-5-20250929-v1:0",
    "claude-sonnet-4-5@20250929",
    "CLAUDE-SONNET-4-5-20250929",
])
def test_model_names_as_providers_and_logs_spell_them(spelling: str) -> None:
    assert cost_of(spelling, input_tokens=MILLION) == 3.0


def test_names_that_are_another_model_are_not_priced() -> None:
    for name in ("claude-sonnet", "claude-sonnet-4-5-turbo", "sonnet", "", "claude-opus-4-5-x",
                 "our-own-model"):
        assert cost_of(name, input_tokens=MILLION) is None, name
    assert cost_of(None, input_tokens=1) is None


def test_an_exact_entry_wins_over_a_normalised_match() -> None:
    table = PriceTable({"m": Price(1e-6, 2e-6), "m-20250101": Price(5e-6, 5e-6)})
    assert cost_of("m-20250101", input_tokens=MILLION, prices=table) == 5.0
    assert cost_of("m-20990101", input_tokens=MILLION, prices=table) == 1.0
    assert model_key("us.anthropic.claude-3-5-sonnet-20241022-v2:0") == "claude-3-5-sonnet"


def test_without_cache_prices_cache_tokens_cost_as_input() -> None:
    table = PriceTable({"gpt-x": Price(2e-6, 8e-6, cache_read=None)})
    assert cost_of("gpt-x", cache_read_tokens=MILLION, prices=table) == 2.0


def litellm_file(path: Path, **entries: dict) -> Path:
    data = {"sample_spec": {"input_cost_per_token": "what it is"},
            "dall-e-3": {"mode": "image_generation", "output_cost_per_image": 0.04},
            **entries}
    path.write_text(json.dumps(data))
    return path


def test_a_litellm_file_loads_and_overrides_the_shipped_entries(tmp_path: Path) -> None:
    path = litellm_file(tmp_path / "model_prices_and_context_window.json", **{
        "claude-sonnet-4-5": {"input_cost_per_token": 4e-06, "output_cost_per_token": 2e-05,
                              "cache_read_input_token_cost": 4e-07,
                              "cache_creation_input_token_cost": 5e-06,
                              "litellm_provider": "anthropic", "mode": "chat",
                              "supports_vision": True, "max_tokens": 64000},
        "house-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
    })
    loaded = load_prices(path)
    assert set(loaded) == {"claude-sonnet-4-5", "house-model"}
    table = shipped_prices().updated(loaded)
    # The override also replaces the dated spelling of the same model.
    assert cost_of("claude-sonnet-4-5-20250929", input_tokens=MILLION, prices=table) == 4.0
    assert cost_of("house-model", output_tokens=MILLION, prices=table) == 1.0
    assert cost_of("claude-haiku-4-5", input_tokens=MILLION, prices=table) == 1.0


def test_our_own_format_loads(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"format": "telemetry_orm.prices/1", "source": "our contract",
                                "as_of": "2026-11-01", "models": {
                                    "house": {"input": 1e-6, "output": 3e-6,
                                              "cache_read": None, "cache_write": None}}}))
    table = load_prices(path)
    assert table["house"].source == "our contract" and table["house"].as_of == "2026-11-01"
    assert table["house"].per_million() == (1.0, 3.0, None, None)


def test_the_environment_names_an_override_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = litellm_file(tmp_path / "p.json", **{
        "house-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}})
    assert cost_of("house-model", input_tokens=MILLION) is None
    monkeypatch.setenv(ENV_PRICES, str(path))
    assert cost_of("house-model", input_tokens=MILLION) == 1.0
    assert "house-model" in default_prices()


@pytest.mark.parametrize("text, named", [
    ("{not json", "not JSON"),
    ('{"m": {"input_cost_per_token": -1, "output_cost_per_token": 0}}',
     "m: input_cost_per_token: not a price in USD >= 0 (-1)"),
    ('{"m": {"input_cost_per_token": "cheap", "output_cost_per_token": 0}}',
     "m: input_cost_per_token: not a price in USD >= 0 ('cheap')"),
    ('{"m": {"input_cost_per_token": 1e999, "output_cost_per_token": 0}}',
     "m: input_cost_per_token: not a price in USD >= 0 (inf)"),
    ('{"format": "telemetry_orm.prices/1", "models": {"m": {"input": 1e-6}}}',
     "m: output: not a price in USD >= 0 (None)"),
    ('{"format": "telemetry_orm.prices/9", "models": {}}', "is not 'telemetry_orm.prices/1'"),
])
def test_a_bad_price_file_names_the_file_and_the_model(tmp_path: Path, text: str,
                                                       named: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(TelemetryValidationError) as caught:
        load_prices(path)
    assert str(path) in str(caught.value) and named in str(caught.value)


def test_a_bad_price_file_is_a_usage_error_on_the_command_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"m": {"input_cost_per_token": -1, "output_cost_per_token": 0}}')
    monkeypatch.setenv(ENV_PRICES, str(path))
    transcript = tmp_path / "s.jsonl"
    transcript.write_text(json.dumps({
        "type": "assistant", "timestamp": "2026-11-30T10:00:00Z", "sessionId": "s",
        "requestId": "r", "message": {"id": "x", "model": "m", "usage": {"input_tokens": 1}}})
        + "\n")
    status = cli.main(["import", "claude-code", str(transcript), "--db",
                       str(tmp_path / "t.db")])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(path) in err and "m: input_cost_per_token" in err


def test_records_from_usage_are_priced_with_the_table() -> None:
    usage = {"input_tokens": 1000, "output_tokens": 100, "cache_read_input_tokens": 10_000,
             "cache_creation_input_tokens": 2000}
    record = TelemetryRecord.from_usage(usage, repo="a/b", event_type="push",
                                        model="claude-haiku-4-5-20251001", conclusion="success")
    expected: Optional[float] = cost_of("claude-haiku-4-5", input_tokens=1000,
                                        output_tokens=100, cache_read_tokens=10_000,
                                        cache_creation_tokens=2000)
    assert expected is not None and record.cost_usd == pytest.approx(expected)
    given = TelemetryRecord.from_usage(usage, repo="a/b", event_type="push", model="m",
                                       conclusion="success", cost_usd=0.5)
    assert given.cost_usd == 0.5
    unpriced = TelemetryRecord.from_usage(usage, repo="a/b", event_type="push", model="ours",
                                          conclusion="success")
    assert unpriced.cost_usd == 0.0


def test_the_prices_command_lists_the_table_and_the_unpriced_models(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from telemetry_orm import create_telemetry_store

    db = tmp_path / "t.db"
    with create_telemetry_store(db) as store:
        for model in ("claude-sonnet-4-5-20250929", "ours-1", "ours-1", "ours-2"):
            store.record({"repo": "a/b", "event_type": "push", "model": model,
                          "conclusion": "success"})
    before = db.read_bytes()
    assert cli.main(["prices", "--db", str(db), "--format", "json"]) == 0
    value = json.loads(capsys.readouterr().out)
    assert value["unpriced"] == {"ours-1": 2, "ours-2": 1}
    sonnet = next(e for e in value["prices"] if e["model"] == "claude-sonnet-4-5")
    assert (sonnet["input"], sonnet["output"], sonnet["cache_read"], sonnet["cache_write"]) == (
        3.0, 15.0, 0.3, 3.75)
    assert db.read_bytes() == before
    assert cli.main(["prices"]) == 0
    text = capsys.readouterr().out
    assert "claude-opus-4-5 " in text and "$6.25" in text and "source: LiteLLM" in text
    assert "without a price" not in text


# --- cost modes of reports ----------------------------------------------------------

SONNET_RUN = dict(input_tokens=1000, output_tokens=200, cache_read_tokens=30_000,
                  cache_creation_tokens=4000)
SONNET_COST = (1000 * 3 + 200 * 15 + 30_000 * 0.30 + 4000 * 3.75) / MILLION


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """A priced model with a recorded cost (acme/api), the same model
    recorded at cost 0 (acme/web), and a model without a price (acme/lab)."""
    from telemetry_orm import create_telemetry_store

    db = tmp_path / "mixed.db"
    run = {"event_type": "push", "conclusion": "success"}
    with create_telemetry_store(db) as store:
        for _ in range(2):
            store.record({**run, **SONNET_RUN, "repo": "acme/api",
                          "model": "claude-sonnet-4-5-20250929", "cost_usd": 1.0})
        for _ in range(3):
            store.record({**run, **SONNET_RUN, "repo": "acme/web",
                          "model": "claude-sonnet-4-5-20250929"})
        for _ in range(4):
            store.record({**run, **SONNET_RUN, "repo": "acme/lab", "model": "lab-model-7",
                          "cost_usd": 0.25})
    return db


def report_json(db: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert cli.main(["report", "--db", str(db), "--since", "1d", "--format", "json", *args]) == 0
    value: dict = json.loads(capsys.readouterr().out)
    return value


def costs(document: dict) -> dict:
    return {row["repo"]: row["cost_usd"] for row in document["rows"]}


def test_recorded_cost_is_what_was_stored(mixed: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    document = report_json(mixed, capsys)
    assert document["cost"] == "recorded"
    assert costs(document) == {"acme/api": 2.0, "acme/web": 0.0, "acme/lab": 1.0}
    assert document["totals"]["cost_usd"] == 3.0 and document["unpriced"] == {}


def test_calculated_cost_prices_every_row_and_leaves_the_unpriced_out(
        mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = report_json(mixed, capsys, "--cost", "calculated")
    assert costs(document) == {"acme/api": pytest.approx(2 * SONNET_COST),
                               "acme/web": pytest.approx(3 * SONNET_COST), "acme/lab": None}
    assert document["totals"]["cost_usd"] == pytest.approx(5 * SONNET_COST)
    assert document["unpriced"] == {"lab-model-7": 4}
    assert [row["repo"] for row in document["rows"]][-1] == "acme/lab"


def test_auto_keeps_recorded_costs_and_calculates_the_zero_ones(
        mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = report_json(mixed, capsys, "--cost", "auto")
    # acme/lab recorded a cost above 0: kept, though its model has no price.
    assert costs(document) == {"acme/api": 2.0, "acme/web": pytest.approx(3 * SONNET_COST),
                               "acme/lab": 1.0}
    assert document["unpriced"] == {}
    assert document["totals"]["cost_usd"] == pytest.approx(3.0 + 3 * SONNET_COST)


def test_the_table_shows_n_a_and_names_the_unpriced_models(
        mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "--db", str(mixed), "--since", "1d", "--cost",
                     "calculated"]) == 0
    text = capsys.readouterr().out
    lab = next(line for line in text.splitlines() if line.startswith("acme/lab"))
    assert " n/a " in f"{lab} "
    assert "4 executions left unpriced" in text and "lab-model-7 (4)" in text
    assert "cost from list prices" in text
    assert cli.main(["report", "--db", str(mixed), "--since", "1d", "--cost",
                     "calculated", "--format", "csv"]) == 0
    rows = {line.split(",")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert ",," in rows["acme/lab"] or rows["acme/lab"].endswith(",")


def test_a_price_file_prices_the_unpriced_model(
        mixed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = litellm_file(tmp_path / "p.json", **{
        "lab-model-7": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}})
    document = report_json(mixed, capsys, "--cost", "calculated", "--prices", str(path))
    # No cache prices: cache tokens at the input price.
    assert costs(document)["acme/lab"] == pytest.approx(
        4 * (1000 + 200 * 2 + 30_000 + 4000) / MILLION)
    assert document["unpriced"] == {}


def test_the_calculation_agrees_with_a_per_row_sum(mixed: Path) -> None:
    import sqlite3

    from telemetry_orm.reports import open_readonly, report

    conn = sqlite3.connect(mixed)
    expected = 0.0
    for model, tokens_in, out, read, write in conn.execute(
            "SELECT model, input_tokens, output_tokens, cache_read_tokens, "
            "cache_creation_tokens FROM executions"):
        cost = cost_of(model, input_tokens=tokens_in, output_tokens=out,
                       cache_read_tokens=read, cache_creation_tokens=write)
        expected += cost or 0.0
    conn.close()
    database = open_readonly(mixed)
    try:
        result = report(database, group_by=("model",), cost="calculated")
    finally:
        database.close()
    assert result.totals.cost_usd == pytest.approx(expected)
    with pytest.raises(TelemetryValidationError, match="cost"):
        report(database, cost="guessed")


def test_the_cost_modes_agree_on_postgresql(mixed: Path, pg_url: str) -> None:
    from telemetry_orm import create_telemetry_store
    from telemetry_orm.reports import open_readonly, report
    from telemetry_orm.transfer import migrate

    with create_telemetry_store(pg_url) as target:
        migrate(mixed, target)
    for mode in ("recorded", "calculated", "auto"):
        results = []
        for where in (str(mixed), pg_url):
            database = open_readonly(where)
            try:
                got = report(database, group_by=("repo", "model"), cost=mode)
            finally:
                database.close()
            results.append(({tuple(r.keys.values()): r.metrics.cost_usd for r in got.rows},
                            got.totals.cost_usd, dict(got.unpriced)))
        (sqlite_rows, sqlite_total, sqlite_left), (pg_rows, pg_total, pg_left) = results
        assert pg_rows.keys() == sqlite_rows.keys() and pg_left == sqlite_left, mode
        for key, value in sqlite_rows.items():
            assert pg_rows[key] == (None if value is None else pytest.approx(value)), (mode, key)
        assert pg_total == pytest.approx(sqlite_total)


def test_openai_dated_snapshots_are_not_priced_as_the_undated_model() -> None:
    # gpt-4o-2024-05-13 listed at $5 / $15, gpt-4o at $2.50 / $10: a guess would be wrong.
    assert cost_of("gpt-4o", input_tokens=MILLION) == 2.5
    assert cost_of("openai/gpt-4o", input_tokens=MILLION) == 2.5
    assert cost_of("gpt-4o-2024-05-13", input_tokens=MILLION) is None


def test_a_deeply_nested_price_file_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000)
    with pytest.raises(TelemetryValidationError, match="deep.json: not JSON"):
        load_prices(path)


def test_an_unpriced_model_is_recorded_at_0_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    usage = {"input_tokens": 10, "output_tokens": 1}
    with caplog.at_level("WARNING", logger="telemetry_orm"):
        record = TelemetryRecord.from_usage(usage, repo="a/b", event_type="push",
                                            model="house-model", conclusion="success")
    assert record.cost_usd == 0.0
    assert "model 'house-model' has no price" in caplog.text
    given_none = TelemetryRecord.from_usage(usage, repo="a/b", event_type="push",
                                            model="claude-haiku-4-5", conclusion="success",
                                            cost_usd=None)
    assert given_none.cost_usd == cost_of("claude-haiku-4-5", input_tokens=10, output_tokens=1)

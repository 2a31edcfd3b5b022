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

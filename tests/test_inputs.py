"""Records from what agents and APIs return (telemetry_orm.inputs), checked
against the SDKs' own classes: claude_agent_sdk.ResultMessage,
anthropic.types.Usage and the openai usage types."""

from __future__ import annotations

import json
from typing import Any, Dict

import pytest

from telemetry_orm import TelemetryRecord, TelemetryValidationError, create_telemetry_store

sdk = pytest.importorskip("claude_agent_sdk", reason="needs claude-agent-sdk (sdks extra)")
anthropic_types = pytest.importorskip("anthropic.types", reason="needs anthropic (sdks extra)")
openai_types = pytest.importorskip("openai.types", reason="needs openai (sdks extra)")
from openai.types.responses import ResponseUsage  # noqa: E402

WHERE = {"repo": "acme/api", "event_type": "pull_request.opened"}


def model_usage(inp: int, out: int, read: int, write: int, cost: float) -> Dict[str, Any]:
    """A ModelUsage entry as the SDKs pass it through (camelCase)."""
    return {"inputTokens": inp, "outputTokens": out, "cacheReadInputTokens": read,
            "cacheCreationInputTokens": write, "webSearchRequests": 0, "costUSD": cost,
            "contextWindow": 200_000, "maxOutputTokens": 64_000}


def result(**overrides: Any) -> Any:
    """A Python SDK ResultMessage of a run with a subagent: ``usage`` covers
    the main agent only, the per-model usage both."""
    values: Dict[str, Any] = dict(
        subtype="success", duration_ms=81_234, duration_api_ms=70_000, is_error=False,
        num_turns=12, session_id="5f1c…", stop_reason="end_turn", total_cost_usd=0.4321,
        usage={"input_tokens": 1_000, "output_tokens": 2_000, "cache_read_input_tokens": 30_000,
               "cache_creation_input_tokens": 4_000, "service_tier": "standard"},
        model_usage={"claude-sonnet-4-5-20250929": model_usage(1_500, 2_600, 41_000, 5_000, 0.40),
                     "claude-haiku-4-5-20251001": model_usage(300, 900, 2_000, 700, 0.03)},
        result="done",
    )
    values.update(overrides)
    return sdk.ResultMessage(**values)


def test_a_run_with_subagents_sums_the_per_model_usage() -> None:
    record = TelemetryRecord.from_agent_result(result(), **WHERE, pr_number=7,
                                               delivery_id="d-1")
    # Not the main agent's usage: the per-model usage, which includes the subagent.
    assert (record.input_tokens, record.output_tokens, record.cache_read_tokens,
            record.cache_creation_tokens) == (1_800, 3_500, 43_000, 5_700)
    assert record.cost_usd == 0.4321
    assert record.model == "claude-sonnet-4-5-20250929"  # the one that cost most
    assert (record.conclusion, record.duration_ms, record.num_turns, record.stop_reason) == (
        "success", 81_234, 12, "end_turn")
    assert (record.repo, record.pr_number, record.delivery_id, record.provider) == (
        "acme/api", 7, "d-1", "anthropic")


def test_without_per_model_usage_the_usage_counts_and_model_must_be_given() -> None:
    message = result(model_usage=None)
    with pytest.raises(TelemetryValidationError) as info:
        TelemetryRecord.from_agent_result(message, **WHERE)
    assert info.value.field == "model"
    record = TelemetryRecord.from_agent_result(message, **WHERE, model="claude-opus-4-1")
    assert (record.input_tokens, record.output_tokens, record.cache_read_tokens,
            record.cache_creation_tokens, record.model) == (1_000, 2_000, 30_000, 4_000,
                                                            "claude-opus-4-1")


def test_error_max_turns_and_is_error_with_subtype_success() -> None:
    turns = TelemetryRecord.from_agent_result(
        result(subtype="error_max_turns", is_error=True, stop_reason=None), **WHERE)
    assert turns.conclusion == "error_max_turns" and turns.stop_reason is None
    api = TelemetryRecord.from_agent_result(result(is_error=True, api_error_status=529),
                                            **WHERE)
    assert api.conclusion == "api_error"


def test_cost_falls_back_to_the_per_model_costs_then_zero() -> None:
    record = TelemetryRecord.from_agent_result(result(total_cost_usd=None), **WHERE)
    assert record.cost_usd == pytest.approx(0.43)
    bare = TelemetryRecord.from_agent_result(
        result(total_cost_usd=None, model_usage=None, usage=None), **WHERE, model="m")
    assert bare.cost_usd == 0.0 and bare.input_tokens == 0


def test_ties_in_cost_go_to_the_most_output_tokens() -> None:
    message = result(total_cost_usd=None, model_usage={
        "a": model_usage(1, 10, 0, 0, 0.5), "b": model_usage(1, 20, 0, 0, 0.5)})
    assert TelemetryRecord.from_agent_result(message, **WHERE).model == "b"


def test_the_typescript_sdks_json_gives_the_same_record() -> None:
    message = result()
    wire = {
        "type": "result", "subtype": message.subtype, "duration_ms": message.duration_ms,
        "duration_api_ms": message.duration_api_ms, "is_error": message.is_error,
        "num_turns": message.num_turns, "session_id": message.session_id,
        "stop_reason": message.stop_reason, "total_cost_usd": message.total_cost_usd,
        "usage": message.usage, "modelUsage": message.model_usage, "result": "done",
        "permission_denials": [], "uuid": "u-1", "a_field_added_later": {"x": 1},
    }
    from_json = TelemetryRecord.from_agent_result(json.loads(json.dumps(wire)), **WHERE)
    assert from_json == TelemetryRecord.from_agent_result(message, **WHERE)
    snake = {**wire, "model_usage": wire.pop("modelUsage")}
    assert TelemetryRecord.from_agent_result(snake, **WHERE) == from_json


@pytest.mark.parametrize(("overrides", "field"), [
    ({"usage": {"input_tokens": "12"}, "model_usage": None}, "usage.input_tokens"),
    ({"model_usage": {"m": {**model_usage(1, 1, 1, 1, 0.1), "outputTokens": -1}}},
     "model_usage.m.outputTokens"),
    ({"total_cost_usd": float("nan")}, "total_cost_usd"),
    ({"subtype": None}, "subtype"),
    ({"is_error": "no"}, "is_error"),
    ({"num_turns": 2.5}, "num_turns"),
])
def test_a_wrong_type_names_the_field_as_the_sdk_spells_it(overrides: Dict[str, Any],
                                                           field: str) -> None:
    message = result(**overrides)
    with pytest.raises(TelemetryValidationError) as info:
        TelemetryRecord.from_agent_result(message, **WHERE, model="m")
    assert info.value.field == field


def test_anthropic_usage() -> None:
    usage = anthropic_types.Usage(input_tokens=120, output_tokens=45,
                                  cache_read_input_tokens=9_000,
                                  cache_creation_input_tokens=1_100)
    record = TelemetryRecord.from_usage(usage, **WHERE, model="claude-haiku-4-5",
                                        conclusion="success", cost_usd=0.01, duration_ms=900)
    assert (record.input_tokens, record.output_tokens, record.cache_read_tokens,
            record.cache_creation_tokens, record.cost_usd, record.duration_ms) == (
        120, 45, 9_000, 1_100, 0.01, 900)
    # The cache fields are optional in the API: absent counts as 0.
    bare = anthropic_types.Usage(input_tokens=1, output_tokens=2)
    assert TelemetryRecord.from_usage(bare, **WHERE, model="m", conclusion="success"
                                      ).cache_read_tokens == 0


def test_openai_chat_usage_moves_cached_tokens_out_of_the_input() -> None:
    usage = openai_types.CompletionUsage(
        prompt_tokens=1_000, completion_tokens=300, total_tokens=1_300,
        prompt_tokens_details={"cached_tokens": 600},
        completion_tokens_details={"reasoning_tokens": 100})
    record = TelemetryRecord.from_usage(usage, **WHERE, model="gpt-4.1", conclusion="success",
                                        provider="openai")
    assert (record.input_tokens, record.cache_read_tokens, record.output_tokens) == (
        400, 600, 300)
    plain = openai_types.CompletionUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15)
    assert TelemetryRecord.from_usage(plain, **WHERE, model="m", conclusion="success"
                                      ).input_tokens == 10


def test_openai_responses_usage() -> None:
    usage = ResponseUsage(input_tokens=2_000, output_tokens=500, total_tokens=2_500,
                          input_tokens_details={"cached_tokens": 1_500,
                                                "cache_write_tokens": 300},
                          output_tokens_details={"reasoning_tokens": 200})
    record = TelemetryRecord.from_usage(usage.model_dump(), **WHERE, model="o4-mini",
                                        conclusion="success")
    # input_tokens includes what was read from and written to the cache.
    assert (record.input_tokens, record.cache_read_tokens, record.cache_creation_tokens,
            record.output_tokens) == (200, 1_500, 300, 500)
    older = {"input_tokens": 2_000, "output_tokens": 500,
             "input_tokens_details": {"cached_tokens": 1_500}}
    assert TelemetryRecord.from_usage(older, **WHERE, model="o4-mini", conclusion="success"
                                      ).input_tokens == 500
    assert TelemetryRecord.from_usage(usage, **WHERE, model="o4-mini",
                                      conclusion="success") == record


@pytest.mark.parametrize("usage", [{"tokens": 5}, None, "12", {"prompt_tokens": 5,
                                   "completion_tokens": 1,
                                   "prompt_tokens_details": {"cached_tokens": 9}}])
def test_an_unknown_or_inconsistent_usage_is_refused(usage: Any) -> None:
    with pytest.raises(TelemetryValidationError) as info:
        TelemetryRecord.from_usage(usage, **WHERE, model="m", conclusion="success")
    assert str(info.value.field).startswith("usage")


def test_a_record_from_the_sdk_is_stored(tmp_path: Any) -> None:
    with create_telemetry_store(tmp_path / "t.db") as store:
        row_id = store.record(TelemetryRecord.from_agent_result(result(), **WHERE))
        row = store.model.get_by_id(row_id)
    assert (row.model, row.input_tokens, row.conclusion) == (
        "claude-sonnet-4-5-20250929", 1_800, "success")

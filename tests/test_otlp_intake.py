"""OTLP bodies decoded and mapped to executions (telemetry_orm.intake):
Claude Code's events and GenAI spans as the real OpenTelemetry SDK encodes
them, the input-token rule, keys, instants, labels, and the records
rejected for impossible values while the rest are kept."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
import textwrap
from typing import Any, Dict, List

import pytest
from otlp_support import (
    T0,
    T0_NANOS,
    Call,
    Event,
    api_error,
    api_request,
    chat,
    encode_spans,
    finished_spans,
    log_records,
    logs_json,
    logs_request,
    span_key,
    spans_request,
)

from telemetry_orm import PeeweeTelemetryStore, TelemetryValidationError, prices
from telemetry_orm.intake import (
    decode,
    label_attributes,
    map_logs,
    map_spans,
    response,
    signals,
    status,
)

UTC = dt.timezone.utc


def logs(events: List[Any], **options: Any) -> Any:
    """The intake of ``events`` sent as protobuf bytes, decoded again."""
    body = logs_request(events).SerializeToString()
    return map_logs(decode("logs", body), **options)


def spans(calls: List[Any], **options: Any) -> Any:
    body = spans_request(calls).SerializeToString()
    return map_spans(decode("traces", body), **options)


def fields(intake: Any, position: int = 0) -> Dict[str, Any]:
    record = intake.records[position]
    return {**record.as_dict(), "labels": dict(record.labels)}


# --- Claude Code events ------------------------------------------------------------


def test_an_api_request_as_claude_code_sends_it_is_one_execution() -> None:
    intake = logs([api_request()], label_keys=("team",))

    assert intake.rejected == [] and intake.read == 1
    assert fields(intake) == {
        "delivery_id": None, "repo": "acme/api", "pr_number": None,
        "event_type": "claude_code.api_request", "provider": "anthropic",
        "model": "claude-sonnet-4-5-20250929", "input_tokens": 120, "output_tokens": 450,
        "cache_read_tokens": 3000, "cache_creation_tokens": 200, "duration_ms": 2310,
        "cost_usd": 0.0123, "conclusion": "success", "session_id": "5f1c0e2a-sess",
        "num_turns": None, "stop_reason": None,
        "labels": {"user": "alice@example.com", "org": "org-9", "query_source": "main",
                   "team": "platform"},
    }
    assert intake.keys == ["otlp.log.request:req_011CUabc"]
    assert intake.at == [T0]


def test_the_event_is_named_by_event_name_else_the_body_else_the_attribute() -> None:
    by_field = Event(api_request(request_id="a"), body="", event_name="claude_code.api_request")
    by_body = Event(api_request(request_id="b", **{"event.name": None}))
    by_attribute = Event(api_request(request_id="c"), body="")
    unprefixed = Event(api_request(request_id="d"), body="", event_name="api_request")
    other_events = [Event({"event.name": "user_prompt", "prompt_length": "12"}),
                    Event({"event.name": "tool_result", "tool_name": "Bash"}),
                    Event({"event.name": "api_request"}, body="", event_name="api_error_x")]
    intake = logs([by_field, by_body, *other_events, by_attribute, unprefixed])

    assert [k.rsplit(":", 1)[1] for k in intake.keys] == ["a", "b", "c", "d"]
    assert intake.positions == [0, 1, 5, 6] and intake.read == 7
    assert intake.rejected == []  # other events are no executions, and not refused


def test_an_api_error_is_an_execution_without_tokens() -> None:
    intake = logs([api_error()])

    record = intake.records[0]
    assert (record.event_type, record.conclusion, record.model) == (
        "claude_code.api_error", "error", "claude-sonnet-4-5-20250929")
    assert (record.input_tokens, record.output_tokens, record.cost_usd,
            record.duration_ms) == (0, 0, 0.0, 800)
    assert intake.at == [dt.datetime(2026, 5, 4, 9, 31, tzinfo=UTC)]
    assert intake.keys[0].startswith("otlp.log.digest:")
    without_model = logs([api_error(model=None)]).records[0]
    assert without_model.model == "unknown"


def test_numbers_may_be_ints_or_doubles_too() -> None:
    intake = logs([api_request(input_tokens=120, output_tokens=450.0, cost_usd=0.5,
                               duration_ms=2310.6, cache_read_tokens=None)])

    record = intake.records[0]
    assert (record.input_tokens, record.output_tokens, record.cache_read_tokens,
            record.cost_usd, record.duration_ms) == (120, 450, 0, 0.5, 2311)


def test_the_instant_is_event_timestamp_else_the_record_time_else_the_observed_time() -> None:
    stamped = Event(api_request(request_id="a"))
    timed = Event(api_request(request_id="b", **{"event.timestamp": None}),
                  timestamp=T0_NANOS + 60 * 10**9)
    observed = Event(api_request(request_id="c", **{"event.timestamp": None}),
                     timestamp=None, observed=T0_NANOS + 120 * 10**9)
    naive = Event(api_request(request_id="d", **{"event.timestamp": "2026-05-04T09:30:00"}))

    intake = logs([stamped, timed, observed, naive])

    assert intake.at == [T0, T0 + dt.timedelta(minutes=1), T0 + dt.timedelta(minutes=2),
                         dt.datetime(2026, 5, 4, 9, 30, tzinfo=UTC)]


def test_without_a_request_id_the_key_is_a_digest_of_what_tells_events_apart() -> None:
    first = api_request(request_id=None)
    again = logs([first, first]).keys
    next_one = logs([api_request(request_id=None, **{"event.sequence": "8"})]).keys
    other_session = logs([api_request(request_id=None, **{"session.id": "s2"})]).keys

    assert again[0] == again[1] and again[0].startswith("otlp.log.digest:")
    assert len({again[0], next_one[0], other_session[0]}) == 3


def test_a_digest_key_tells_apart_what_differs_and_only_that() -> None:
    def key(**attributes: Any) -> str:
        return logs([api_request(request_id=None, **attributes)]).keys[0]

    # A separator inside a value cannot make two events one.
    assert key(**{"session.id": "s\x1fp", "prompt.id": "x"}) != \
        key(**{"session.id": "s", "prompt.id": "p\x1fx"})
    # An error and a request at the same moment are two events.
    error = logs([api_error(request_id=None)]).keys[0]
    assert error != key(**{k: v for k, v in api_error(request_id=None).items()
                           if k in ("session.id", "prompt.id", "event.sequence",
                                    "event.timestamp")})
    # One instant written two ways is one event.
    assert key(**{"event.timestamp": "2026-05-04T09:30:00Z"}) == \
        key(**{"event.timestamp": "2026-05-04T09:30:00.000+00:00"})


def test_without_cost_usd_the_tokens_are_priced_and_an_unknown_model_stays_unpriced() -> None:
    intake = logs([api_request(cost_usd=None, request_id="a"),
                   api_request(cost_usd=None, model="our-own-model", request_id="b")])

    expected = prices.cost_of("claude-sonnet-4-5-20250929", input_tokens=120,
                              output_tokens=450, cache_read_tokens=3000,
                              cache_creation_tokens=200)
    assert expected is not None and expected > 0
    assert intake.records[0].cost_usd == expected
    assert intake.records[1].cost_usd == 0.0
    assert intake.unpriced == {"our-own-model": 1}


@pytest.mark.parametrize("attribute, value, reason", [
    ("input_tokens", "-5", "input_tokens: must be a whole number >= 0, got '-5'"),
    ("output_tokens", "1.5", "output_tokens: must be a whole number >= 0, got '1.5'"),
    ("cache_read_tokens", "many", "cache_read_tokens: must be a number, got 'many'"),
    ("cost_usd", "NaN", "cost_usd: must be a finite number of USD >= 0, got 'NaN'"),
    ("cost_usd", "-0.01", "cost_usd: must be a finite number of USD >= 0, got '-0.01'"),
    ("cost_usd", "Infinity", "cost_usd: must be a finite number of USD >= 0"),
    ("duration_ms", "-1", "duration_ms: must be a number >= 0, got '-1'"),
    ("event.timestamp", "yesterday", "event.timestamp: must be an ISO 8601 time, "
                                     "got 'yesterday'"),
    ("event.timestamp", "0001-01-01T00:00:00Z", "event.timestamp: must be from 1000-01-01"),
    ("input_tokens", str(10**13), "input_tokens: must be an integer <= 10**12"),
    ("model", None, "model: an api_request names no model"),
])
def test_a_record_with_an_impossible_value_is_rejected_and_the_rest_kept(
        attribute: str, value: Any, reason: str) -> None:
    good = [api_request(request_id=f"ok-{i}") for i in range(3)]
    bad = api_request(request_id="bad", **{attribute: value})

    intake = logs([good[0], bad, good[1], good[2]])

    assert [k.rsplit(":", 1)[1] for k in intake.keys] == ["ok-0", "ok-1", "ok-2"]
    assert [r.index for r in intake.rejected] == [1]
    assert reason in intake.rejected[0].reason
    assert intake.message().startswith("1 of 4 log records rejected: log record 1: ")


def test_the_message_names_the_first_reasons_and_counts_the_rest() -> None:
    events = [api_request(request_id=f"r{i}", input_tokens="-1") for i in range(5)]

    intake = logs(events)

    message = intake.message()
    assert message.startswith("5 of 5 log records rejected: log record 0: input_tokens")
    assert "log record 2:" in message and "log record 3:" not in message
    assert message.endswith("; and 2 more")
    assert logs([api_request()]).message() == ""


# --- Where a row belongs ------------------------------------------------------------


def test_repo_pr_and_labels_come_from_the_record_first_then_the_resource() -> None:
    own = api_request(request_id="a", **{"vcs.repository.name": "acme/own",
                                         "vcs.change.id": "42", "agent.name": "reviewer"})
    resource_only = api_request(request_id="b", **{"user.email": None})
    no_repo = {"service.name": "claude-code", "repo": "acme/plain", "team": 7}

    intake = map_logs(logs_request([own, resource_only]), label_keys=("team",))
    plain = map_logs(logs_request([api_request(**{"vcs.change.id": "I8a3f"})], no_repo),
                     label_keys=("team",))
    bare = map_logs(logs_request([api_request()], {"service.name": "claude-code"}))

    assert (intake.records[0].repo, intake.records[0].pr_number) == ("acme/own", 42)
    assert intake.records[0].labels["agent"] == "reviewer"
    assert intake.records[1].repo == "acme/api"
    assert intake.records[1].labels["user"] == "acct-1"  # user.account_uuid next
    assert (plain.records[0].repo, plain.records[0].pr_number) == ("acme/plain", None)
    assert plain.records[0].labels["team"] == "7"
    assert bare.records[0].repo == "unknown" and "team" not in bare.records[0].labels


def test_label_attributes_are_checked_when_given() -> None:
    assert label_attributes(["team", "deployment.environment", "team"]) == (
        "team", "deployment.environment")
    with pytest.raises(TelemetryValidationError, match="'Team' is not a label name"):
        label_attributes(["Team"])
    with pytest.raises(TelemetryValidationError, match="'user' is a label read already"):
        label_attributes(["user"])
    with pytest.raises(TelemetryValidationError, match="at most 12"):
        label_attributes([f"k{i}" for i in range(13)])


def test_a_label_value_too_long_rejects_its_record() -> None:
    intake = logs([api_request(**{"user.email": "x" * 300})])

    assert intake.records == []
    assert "labels.user: must be at most 256 characters" in intake.rejected[0].reason


# --- GenAI spans ----------------------------------------------------------------------


def test_a_chat_span_is_one_execution_with_input_less_the_cache() -> None:
    made = finished_spans([chat()])
    intake = map_spans(decode("traces", encode_spans(made).SerializeToString()),
                       label_keys=("team",))

    assert intake.rejected == []
    assert fields(intake) == {
        "delivery_id": None, "repo": "acme/web", "pr_number": None,
        "event_type": "gen_ai.chat", "provider": "anthropic",
        "model": "claude-sonnet-4-5-20250929", "input_tokens": 300, "output_tokens": 250,
        "cache_read_tokens": 600, "cache_creation_tokens": 100, "duration_ms": 1500,
        "cost_usd": prices.cost_of("claude-sonnet-4-5-20250929", input_tokens=300,
                                   output_tokens=250, cache_read_tokens=600,
                                   cache_creation_tokens=100),
        "conclusion": "success", "session_id": "conv-1", "num_turns": None,
        "stop_reason": "end_turn", "labels": {"team": "ml"},
    }
    assert intake.keys == [span_key(made[0])]
    assert intake.at == [T0]


@pytest.mark.parametrize("reported, read, written, stored", [
    (1000, 600, 100, 300),   # the conventions: input includes the cache
    (700, 600, 100, 0),      # all of it cached
    (50, 600, 100, 50),      # smaller than the cache: reported without it, kept as is
    (1000, 0, 0, 1000),
])
def test_the_input_token_rule(reported: int, read: int, written: int, stored: int) -> None:
    intake = spans([chat(**{"gen_ai.usage.input_tokens": reported,
                            "gen_ai.usage.cache_read.input_tokens": read,
                            "gen_ai.usage.cache_creation.input_tokens": written})])

    record = intake.records[0]
    assert (record.input_tokens, record.cache_read_tokens,
            record.cache_creation_tokens) == (stored, read, written)


def test_model_provider_and_older_names_fall_back_in_order() -> None:
    older = Call({"gen_ai.operation.name": "text_completion", "gen_ai.system": "openai",
                  "gen_ai.request.model": "gpt-4o", "gen_ai.usage.prompt_tokens": "80",
                  "gen_ai.usage.completion_tokens": "20",
                  "gen_ai.response.finish_reasons": "stop"})
    no_provider = chat(**{"gen_ai.provider.name": None, "gen_ai.response.model": None})

    intake = spans([older, no_provider])

    first, second = intake.records
    assert (first.provider, first.model, first.event_type, first.input_tokens,
            first.output_tokens, first.stop_reason) == (
        "openai", "gpt-4o", "gen_ai.text_completion", 80, 20, "stop")
    assert (second.provider, second.model) == ("unknown", "claude-sonnet-4-5")


def test_an_error_status_concludes_error() -> None:
    intake = spans([Call(chat(), error=True)])

    assert intake.records[0].conclusion == "error"


def test_agent_and_tool_spans_and_spans_without_usage_are_no_executions() -> None:
    calls = [Call({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "x",
                   "gen_ai.usage.input_tokens": 5000}, name="invoke_agent x"),
             Call({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "grep"}),
             chat(**{k: None for k in ("gen_ai.usage.input_tokens",
                                       "gen_ai.usage.output_tokens",
                                       "gen_ai.usage.cache_read.input_tokens",
                                       "gen_ai.usage.cache_creation.input_tokens")}),
             Call({"http.method": "GET"}, name="GET /"),
             Call(chat(**{"gen_ai.operation.name": "embeddings",
                          "gen_ai.usage.output_tokens": None}))]

    intake = spans(calls)

    assert intake.read == 5 and intake.rejected == []
    assert [r.event_type for r in intake.records] == ["gen_ai.embeddings"]
    assert intake.positions == [4]


def test_a_span_with_impossible_usage_is_rejected_and_the_rest_kept() -> None:
    intake = spans([chat(), chat(**{"gen_ai.usage.output_tokens": -3}),
                    chat(**{"gen_ai.request.model": None, "gen_ai.response.model": None}),
                    chat()])

    assert intake.positions == [0, 3]
    assert [(r.index, r.reason) for r in intake.rejected] == [
        (1, "gen_ai.usage.output_tokens: must be a whole number >= 0, got -3"),
        (2, "gen_ai.request.model: the span names no model (nor gen_ai.response.model)")]
    assert intake.message().startswith("2 of 4 spans rejected: span 1: ")


def test_a_log_and_a_span_never_share_a_key() -> None:
    log_keys = logs([api_request(), api_request(request_id=None)]).keys
    span_keys = spans([chat()]).keys

    assert all(k.startswith("otlp.log.") for k in log_keys)
    assert all(k.startswith("otlp.span:") for k in span_keys)


# --- Bodies: protobuf and OTLP JSON ---------------------------------------------------


def test_the_sdk_json_encoding_decodes_to_the_same_request() -> None:
    events = [api_request(), api_error()]

    from_json = decode("logs", logs_json(events), as_json=True)
    from_protobuf = decode("logs", logs_request(events).SerializeToString())

    assert map_logs(from_json).records == map_logs(from_protobuf).records
    assert from_json.resource_logs[0].scope_logs[0].log_records[1].time_unix_nano == T0_NANOS


def test_otlp_json_ids_are_hex_and_int64_may_be_strings_or_numbers() -> None:
    span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
            "parentSpanId": "", "name": "chat", "kind": 3,
            "startTimeUnixNano": str(T0_NANOS), "endTimeUnixNano": T0_NANOS + 10**9,
            "status": {"code": 2}, "someFutureField": {"x": 1},
            "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "12"}},
                {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 3}}]}
    body = json.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [
        {"scope": {"name": "s"}, "spans": [span]}]}]}).encode()

    intake = map_spans(decode("traces", body, as_json=True))

    assert intake.keys == ["otlp.span:5b8efff798038103d269b633813fc60c:eee19b7ec3c1b174"]
    record = intake.records[0]
    assert (record.input_tokens, record.output_tokens, record.duration_ms,
            record.conclusion) == (12, 3, 1000, "error")


def nested(depth: int) -> Dict[str, Any]:
    """An OTLP JSON attribute value: arrays in arrays, ``depth`` deep."""
    value: Dict[str, Any] = {"stringValue": "x"}
    for _ in range(depth):
        value = {"arrayValue": {"values": [value]}}
    return value


@pytest.mark.parametrize("body, as_json, reason", [
    (b"\xff\xff\xff\xff", False, "is not a protobuf ExportLogsServiceRequest"),
    (b"{not json", True, "is not JSON"),
    (b"[1, 2]", True, "must be a JSON object (ExportLogsServiceRequest), got list"),
    (b'{"resourceLogs": 5}', True, "is not an OTLP JSON ExportLogsServiceRequest"),
    (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}', True,
     "traceId must be hexadecimal (OTLP JSON), got 'zz'"),
    (b"[" * 50_000 + b"]" * 50_000, True, "is not"),
    (json.dumps({"resourceLogs": [{"resource": {"attributes": [{"key": "k", "value": nested(
        200)}]}}]}).encode(), True, "is not an OTLP JSON ExportLogsServiceRequest"),
])
def test_an_undecodable_body_is_refused_saying_why(body: bytes, as_json: bool,
                                                   reason: str) -> None:
    with pytest.raises(TelemetryValidationError) as raised:
        decode("logs", body, as_json=as_json)

    assert raised.value.field == "body"
    assert reason in raised.value.reason


def test_responses_and_statuses_in_both_encodings() -> None:
    found = signals()
    quiet = found["logs"].response.FromString(response("logs"))
    partial = found["traces"].response.FromString(response("traces", 2, "2 of 5 spans"))
    as_json = json.loads(response("metrics", 1, "no", as_json=True))

    assert not quiet.HasField("partial_success")
    assert (partial.partial_success.rejected_spans,
            partial.partial_success.error_message) == (2, "2 of 5 spans")
    assert as_json == {"partialSuccess": {"rejectedDataPoints": "1", "errorMessage": "no"}}
    assert json.loads(status("bad body", as_json=True)) == {"code": 3, "message": "bad body"}
    from google.rpc import status_pb2
    assert status_pb2.Status.FromString(status("bad")).message == "bad"


# --- Stored ---------------------------------------------------------------------------


def test_recorded_through_record_many_and_a_second_time_adds_nothing(
        store: PeeweeTelemetryStore, witness: sqlite3.Connection) -> None:
    request = logs_request([api_request(request_id=f"r{i}") for i in range(3)]
                           + [api_request(request_id="bad", output_tokens="-1"),
                              api_error()])
    span_request = spans_request([chat(), chat()])

    for _ in range(2):
        for intake in (map_logs(request, label_keys=("team",)), map_spans(span_request)):
            store.record_many(intake.records, keys=intake.keys, at=intake.at)

    rows = witness.execute(
        "SELECT e.event_type, e.created_at, e.input_tokens, k.key FROM executions e "
        "JOIN telemetry_orm_keys k ON k.execution_id = e.id ORDER BY e.id").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == (
        [("claude_code.api_request", "2026-05-04 09:30:00", 120)] * 3
        + [("claude_code.api_error", "2026-05-04 09:31:00", 0)]
        + [("gen_ai.chat", "2026-05-04 09:30:00", 300)] * 2)
    assert [r[3] for r in rows[:3]] == [f"otlp.log.request:r{i}" for i in range(3)]
    labels = witness.execute(
        "SELECT name, value FROM telemetry_orm_labels WHERE execution_id = ? ORDER BY name",
        (witness.execute("SELECT min(id) FROM executions").fetchone()[0],)).fetchall()
    assert [tuple(r) for r in labels] == [("org", "org-9"), ("query_source", "main"),
                                         ("team", "platform"), ("user", "alice@example.com")]


def test_the_log_records_of_the_sdk_carry_what_claude_code_sends() -> None:
    # The requests above are what they claim: numbers as strings, the body
    # prefixed, event.name without it.
    record = log_records([api_request()])[0]
    encoded = logs_request([api_request()]).resource_logs[0].scope_logs[0].log_records[0]

    assert record.log_record.body == "claude_code.api_request"
    assert encoded.body.string_value == "claude_code.api_request"
    attributes = {kv.key: kv.value for kv in encoded.attributes}
    assert attributes["input_tokens"].string_value == "120"
    assert attributes["event.name"].string_value == "api_request"


def test_the_package_imports_without_the_serve_extra_and_the_intake_names_it() -> None:
    # A fresh interpreter where the generated classes cannot be imported.
    script = textwrap.dedent("""
        import sys
        class Missing:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("opentelemetry", "google", "waitress"):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, Missing())
        import telemetry_orm, telemetry_orm.intake, telemetry_orm.cli
        try:
            telemetry_orm.intake.decode("logs", b"")
        except ImportError as exc:
            print(exc)
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True)

    assert done.stdout.startswith(
        "the OTLP intake needs the 'serve' extra: pip install 'telemetry_orm[serve]' "
        "(missing: google")

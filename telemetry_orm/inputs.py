"""What agents and APIs return, read into record fields.

- The Claude Agent SDK's final result message: the Python SDK's
  ``claude_agent_sdk.ResultMessage`` (attributes) or the TypeScript SDK's
  ``SDKResultMessage`` as JSON (a mapping: the same snake_case fields, with
  ``modelUsage`` in camelCase; ``model_usage`` is accepted too).
- An API's usage object or mapping: Anthropic Messages (``input_tokens``
  excludes the cache), OpenAI Chat Completions (``prompt_tokens`` includes
  the cached ones) and OpenAI Responses (``input_tokens`` includes them).

Field names and meanings: the SDKs' published types (claude-agent-sdk-python
``types.py``, the TypeScript package's ``sdk.d.ts``), Anthropic's and
OpenAI's API references. :meth:`TelemetryRecord.from_agent_result` and
:meth:`TelemetryRecord.from_usage` build records from these.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Tuple

from . import prices
from .checks import check_optional_text, check_token_count, check_usd, is_text
from .errors import TelemetryValidationError

_log = logging.getLogger("telemetry_orm")

#: Per-model usage keys (camelCase, as the SDKs pass them through) and the
#: record fields they add up to.
MODEL_USAGE_TOKENS: Tuple[Tuple[str, str], ...] = (
    ("inputTokens", "input_tokens"),
    ("outputTokens", "output_tokens"),
    ("cacheReadInputTokens", "cache_read_tokens"),
    ("cacheCreationInputTokens", "cache_creation_tokens"),
)

#: Anthropic usage keys (the main agent's ``usage`` of a result message too).
ANTHROPIC_USAGE_TOKENS: Tuple[Tuple[str, str], ...] = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_input_tokens", "cache_read_tokens"),
    ("cache_creation_input_tokens", "cache_creation_tokens"),
)

_MISSING = object()


def get(source: Any, name: str) -> Any:
    """``source[name]`` of a mapping or ``source.name`` of an object; ``None`` if absent."""
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, name, None)


def _has(source: Any, name: str) -> bool:
    if isinstance(source, Mapping):
        return name in source
    return getattr(source, name, _MISSING) is not _MISSING


def _tokens(where: str, usage: Any, keys: Tuple[Tuple[str, str], ...]) -> Dict[str, int]:
    return {field: check_token_count(f"{where}.{key}", get(usage, key)) for key, field in keys}


def agent_result_fields(message: Any, *, model: Optional[str] = None) -> Dict[str, Any]:
    """The record fields of a Claude Agent SDK result message (without
    ``repo`` and the others only the caller knows).

    Tokens are summed over the per-model usage when it is there and not
    empty (it includes subagents, which ``usage`` does not), else taken
    from ``usage``. ``cost_usd`` is ``total_cost_usd``, else the sum of the
    per-model ``costUSD``, else the list price of each model's tokens
    (:mod:`telemetry_orm.prices`; a model without a price counts 0).
    ``model`` is the one given, else the per-model entry that cost most
    (then: most output tokens).
    ``conclusion``: ``success``; ``api_error`` when the subtype is
    ``success`` but ``is_error`` is true; else the subtype itself.
    """
    if message is None:
        raise TelemetryValidationError("message", "must be an Agent SDK result message, got None")
    subtype = get(message, "subtype")
    if not is_text(subtype):
        raise TelemetryValidationError("subtype", f"must be a non-empty string, got {subtype!r}")
    is_error = get(message, "is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise TelemetryValidationError("is_error", f"must be true or false, got {is_error!r}")
    name = "modelUsage" if _has(message, "modelUsage") else "model_usage"
    per_model = get(message, name)
    if per_model is not None and not isinstance(per_model, Mapping):
        raise TelemetryValidationError(name, f"must be a mapping of model to usage, "
                                             f"got {type(per_model).__name__}")
    fields: Dict[str, Any] = {}
    costs: Dict[str, Tuple[float, int]] = {}
    counted: Dict[str, Dict[str, int]] = {}
    if per_model:
        totals = {field: 0 for _, field in MODEL_USAGE_TOKENS}
        for model_name, usage in per_model.items():
            where = f"{name}.{model_name}"
            if not isinstance(usage, Mapping):
                raise TelemetryValidationError(where, f"must be a mapping, got "
                                                      f"{type(usage).__name__}")
            counts = _tokens(where, usage, MODEL_USAGE_TOKENS)
            for field, value in counts.items():
                totals[field] += value
            counted[str(model_name)] = counts
            cost = check_usd(f"{where}.costUSD", usage.get("costUSD"))
            costs[str(model_name)] = (cost if cost is not None else -1.0,
                                      counts["output_tokens"])
        fields.update(totals)
    else:
        usage = get(message, "usage")
        if usage is not None and not isinstance(usage, Mapping) and not hasattr(
                usage, "input_tokens"):
            raise TelemetryValidationError("usage", f"must be a mapping, got "
                                                    f"{type(usage).__name__}")
        fields.update(_tokens("usage", usage or {}, ANTHROPIC_USAGE_TOKENS))
    total = check_usd("total_cost_usd", get(message, "total_cost_usd"))
    if total is None:
        known = [cost for cost, _ in costs.values() if cost >= 0]
        total = sum(known) if known else None
    if model is None and costs:
        model = max(costs, key=lambda m: costs[m])
    if total is None:
        # No cost given: the list price of each model's tokens (a model
        # without a price counts 0).
        priced = counted or ({model: {f: fields.get(f, 0) for _, f in MODEL_USAGE_TOKENS}}
                             if model is not None else {})
        total = sum(list_price(name, counts) or 0.0 for name, counts in priced.items())
    fields["cost_usd"] = total
    if model is None:
        raise TelemetryValidationError(
            "model", "the result message names no model (no per-model usage): give model="
        )
    fields["model"] = model
    if subtype == "success":
        fields["conclusion"] = "api_error" if is_error else "success"
    else:
        fields["conclusion"] = subtype
    # Absent, it counts 0.
    fields["duration_ms"] = check_token_count("duration_ms", get(message, "duration_ms"))
    fields["num_turns"] = None if get(message, "num_turns") is None else check_token_count(
        "num_turns", get(message, "num_turns"))
    fields["session_id"] = check_optional_text("session_id", get(message, "session_id"))
    fields["stop_reason"] = check_optional_text("stop_reason", get(message, "stop_reason"))
    return fields


def list_price(model: Optional[str], counts: Mapping[str, int]) -> Optional[float]:
    """The list price of token counts (record field names) of ``model``,
    from the price table in use; ``None`` (and a WARNING log) when the model
    has no price."""
    cost = prices.cost_of(model, input_tokens=counts.get("input_tokens", 0),
                          output_tokens=counts.get("output_tokens", 0),
                          cache_read_tokens=counts.get("cache_read_tokens", 0),
                          cache_creation_tokens=counts.get("cache_creation_tokens", 0))
    if cost is None:
        _log.warning("model %r has no price: its cost is recorded as 0 (give prices with "
                     "$%s or load_prices)", model, prices.ENV_PRICES)
    return cost


def usage_fields(usage: Any) -> Dict[str, int]:
    """The four token counts of an API usage object or mapping, its shape
    recognised from its keys (see the module's docstring)."""
    if usage is None or isinstance(usage, (str, bytes, int, float)):
        raise TelemetryValidationError("usage", f"must be a usage object or mapping, "
                                                f"got {type(usage).__name__}")
    if _has(usage, "prompt_tokens"):  # OpenAI Chat Completions
        return _openai("usage", usage, "prompt_tokens", "completion_tokens",
                       "prompt_tokens_details")
    if _has(usage, "input_tokens_details"):  # OpenAI Responses
        return _openai("usage", usage, "input_tokens", "output_tokens", "input_tokens_details")
    if _has(usage, "input_tokens") and _has(usage, "output_tokens"):  # Anthropic Messages
        return _tokens("usage", usage, ANTHROPIC_USAGE_TOKENS)
    raise TelemetryValidationError(
        "usage", "is not a usage shape this package knows: expected Anthropic's input_tokens/"
        "output_tokens, or OpenAI's prompt_tokens/completion_tokens or input_tokens/"
        "input_tokens_details",
    )


def _openai(where: str, usage: Any, prompt: str, completion: str, details: str) -> Dict[str, int]:
    # OpenAI counts cached tokens (read, and written where it reports them:
    # the Responses API's cache_write_tokens) inside the prompt: split them
    # out, so the four counts never overlap (as Anthropic's do not).
    prompt_tokens = check_token_count(f"{where}.{prompt}", get(usage, prompt))
    detail = get(usage, details)
    cached = check_token_count(f"{where}.{details}.cached_tokens",
                    None if detail is None else get(detail, "cached_tokens"))
    written = check_token_count(f"{where}.{details}.cache_write_tokens",
                     None if detail is None else get(detail, "cache_write_tokens"))
    if cached + written > prompt_tokens:
        raise TelemetryValidationError(
            f"{where}.{details}.cached_tokens",
            f"cached and cache-write tokens ({cached} + {written}) must not exceed "
            f"{prompt} ({prompt_tokens})",
        )
    return {
        "input_tokens": prompt_tokens - cached - written,
        "output_tokens": check_token_count(f"{where}.{completion}", get(usage, completion)),
        "cache_read_tokens": cached,
        "cache_creation_tokens": written,
    }

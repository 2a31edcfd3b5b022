"""LiteLLM: every call, one execution, from LiteLLM's own callback::

    import litellm
    from telemetry_orm import create_telemetry_store
    from telemetry_orm.integrations.litellm import TelemetryLogger

    store = create_telemetry_store("data/telemetry.db")
    litellm.callbacks = [TelemetryLogger(store, repo="acme/api")]
    litellm.completion(model="anthropic/claude-sonnet-4-5", messages=[...],
                       metadata={"pr_number": 42, "labels": {"team": "ml"}})

Sync, async and streaming calls, successes and failures, each record one
execution through the store's background recorder: the call never waits
for a database write. The mapping (docs/litellm.md):

- key: the call's ``standard_logging_object["id"]`` (a call logged twice is
  stored once); ``model``; ``provider``: ``custom_llm_provider``;
- tokens that never overlap: LiteLLM's ``prompt_tokens`` is OpenAI-style and
  includes the cache reads (``prompt_tokens_details.cached_tokens``) and
  writes (``cache_creation_input_tokens``): they are taken out of input;
- ``cost_usd``: LiteLLM's ``response_cost``, else the list price of the
  tokens (:mod:`telemetry_orm.prices`; a model without one counts 0);
- ``duration_ms`` from the call's start and end; ``conclusion``
  ``success``, or ``error`` for a failure; ``stop_reason`` the finish reason;
- from the call's ``metadata``: ``repo``, ``pr_number``, ``event_type``,
  ``session_id`` and ``labels``; LiteLLM's user, team and end-user ids
  (its proxy's keys, or the call's ``user``) as labels ``user``, ``team``,
  ``end_user``.

Needs LiteLLM (``pip install litellm``); the package never imports it.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any, Dict, Mapping, Optional, Tuple

from ..errors import TelemetryValidationError
from ..inputs import get, list_price
from ..record import TelemetryRecord

try:
    _custom_logger = importlib.import_module("litellm.integrations.custom_logger")
except ImportError as exc:  # pragma: no cover - without LiteLLM
    raise ImportError("telemetry_orm.integrations.litellm needs LiteLLM: "
                      "pip install litellm") from exc

__all__ = ["NO_REPO", "TelemetryLogger", "execution"]

#: The repo of a call whose metadata names none, when the logger has none either.
NO_REPO = "unknown"
#: What a call's ``metadata`` may set, and the labels LiteLLM's ids become.
FROM_METADATA = ("repo", "pr_number", "event_type", "session_id")
ID_LABELS = (("user", "user_api_key_user_id"), ("team", "user_api_key_team_id"),
             ("end_user", "user_api_key_end_user_id"))

_log = logging.getLogger("telemetry_orm.integrations.litellm")


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _metadata(kwargs: Mapping[str, Any], logged: Mapping[str, Any]) -> Dict[str, Any]:
    """The call's metadata: what the caller passed (``metadata=``), over
    what LiteLLM's proxy carried (spend-log and requester metadata)."""
    found: Dict[str, Any] = {}
    proxy = logged.get("metadata") or {}
    params = kwargs.get("litellm_params") or {}
    for source in (proxy.get("spend_logs_metadata"), proxy.get("requester_metadata"),
                   params.get("metadata")):
        if isinstance(source, Mapping):
            found.update(source)
    return found


def _tokens(logged: Mapping[str, Any], response: Any) -> Dict[str, int]:
    usage = (logged.get("metadata") or {}).get("usage_object") or get(response, "usage") or {}
    prompt = _count(logged.get("prompt_tokens", get(usage, "prompt_tokens")))
    details = get(usage, "prompt_tokens_details") or {}
    read = _count(get(details, "cached_tokens")) or _count(get(usage, "cache_read_input_tokens"))
    written = (_count(get(usage, "cache_creation_input_tokens"))
               or _count(get(details, "cache_creation_tokens")))
    # OpenAI-style: the prompt holds what was read from and written to the
    # cache. A prompt smaller than those holds neither (already apart).
    held = read + written if read + written <= prompt else 0
    return {"input_tokens": prompt - held,
            "output_tokens": _count(logged.get("completion_tokens",
                                               get(usage, "completion_tokens"))),
            "cache_read_tokens": read, "cache_creation_tokens": written}


def _seconds(value: Any) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    timestamp = getattr(value, "timestamp", None)
    return float(timestamp()) if callable(timestamp) else None


def execution(kwargs: Mapping[str, Any], response: Any, start_time: Any, end_time: Any, *,
              failed: bool, repo: Optional[str] = None,
              event_type: str = "litellm.completion") -> Tuple[Dict[str, Any], Optional[str]]:
    """The record fields of one LiteLLM callback's arguments, and its key."""
    logged: Mapping[str, Any] = kwargs.get("standard_logging_object") or {}
    meta = _metadata(kwargs, logged)
    tokens = _tokens(logged, response)
    model = str(logged.get("model") or kwargs.get("model") or "unknown")
    cost = kwargs.get("response_cost", logged.get("response_cost"))
    if not isinstance(cost, (int, float)) or isinstance(cost, bool) or cost < 0:
        cost = 0.0 if failed else (list_price(model, tokens) or 0.0)
    start = _seconds(logged.get("startTime")) or _seconds(start_time)
    end = _seconds(logged.get("endTime")) or _seconds(end_time)
    proxy = logged.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()
              if v is not None} if isinstance(meta.get("labels"), Mapping) else {}
    for label, key in ID_LABELS:
        value = proxy.get(key) or (logged.get("end_user") or kwargs.get("user")
                                   if label == "end_user" else None)
        if value:
            labels.setdefault(label, str(value))
    choices = get(response, "choices") or []
    fields: Dict[str, Any] = {
        "repo": meta.get("repo") or repo or NO_REPO,
        "event_type": meta.get("event_type") or event_type,
        "model": model,
        "provider": str(logged.get("custom_llm_provider") or kwargs.get("custom_llm_provider")
                        or "unknown"),
        "conclusion": "error" if failed or logged.get("status") == "failure" else "success",
        **tokens,
        "cost_usd": float(cost),
        "duration_ms": max(0, round((end - start) * 1000)) if start and end else 0,
        "pr_number": meta.get("pr_number"),
        "session_id": meta.get("session_id") or logged.get("session_id") or None,
        "stop_reason": get(choices[0], "finish_reason") if choices else None,
        "labels": labels,
    }
    call_id = logged.get("id") or kwargs.get("litellm_call_id")
    return fields, (str(call_id) if call_id else None)


_Base: Any = _custom_logger.CustomLogger


class TelemetryLogger(_Base):
    """A LiteLLM callback recording each call into ``store`` (see the
    module): ``litellm.callbacks = [TelemetryLogger(store)]``. ``repo`` and
    ``event_type`` are used where a call's metadata names none. Errors are
    logged, never raised into the call. :meth:`flush` waits for the
    executions queued so far; :meth:`close` also stops the recorder."""

    def __init__(self, store: Any, repo: Optional[str] = None,
                 event_type: str = "litellm.completion", **options: Any) -> None:
        super().__init__(**options)
        self.store = store
        self.repo = repo
        self.event_type = event_type
        self._recorder: Any = None
        self._lock = threading.Lock()

    @property
    def recorder(self) -> Any:
        """The store's background recorder this logger writes through (made at first use)."""
        with self._lock:
            if self._recorder is None or self._recorder.closed:
                self._recorder = self.store.background()
            return self._recorder

    def _record(self, kwargs: Any, response: Any, start_time: Any, end_time: Any,
                failed: bool) -> None:
        try:
            fields, key = execution(kwargs, response, start_time, end_time, failed=failed,
                                    repo=self.repo, event_type=self.event_type)
            self.recorder.record(_checked(fields), key=key)
        except Exception as exc:  # LiteLLM would hide it: say it here
            _log.warning("a LiteLLM call was not recorded: %s: %s", type(exc).__name__, exc)

    def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any,
                          end_time: Any) -> None:
        self._record(kwargs, response_obj, start_time, end_time, failed=False)

    def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any,
                          end_time: Any) -> None:
        self._record(kwargs, response_obj, start_time, end_time, failed=True)

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        self._record(kwargs, response_obj, start_time, end_time, failed=False)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        self._record(kwargs, response_obj, start_time, end_time, failed=True)

    def flush(self) -> None:
        """Wait until every execution queued so far is committed."""
        self.recorder.flush()

    def close(self) -> None:
        """Write what is queued and stop the recorder."""
        with self._lock:
            if self._recorder is not None:
                self._recorder.close()


#: Fields a call's metadata gives: a bad value is left out, not the call.
_OPTIONAL: Dict[str, Any] = {"pr_number": None, "session_id": None, "labels": {},
                             "stop_reason": None}


def _checked(fields: Dict[str, Any]) -> TelemetryRecord:
    """The record, with any metadata value it refuses left out (and said)."""
    for _ in range(len(_OPTIONAL) + 3):
        try:
            return TelemetryRecord(**fields)
        except TelemetryValidationError as exc:
            name = (exc.field or "").split(".", 1)[0]
            if name in _OPTIONAL and fields[name] != _OPTIONAL[name]:
                fields[name] = _OPTIONAL[name]
            elif name in ("repo", "event_type") and fields[name] != NO_REPO:
                fields[name] = NO_REPO if name == "repo" else "litellm.completion"
            else:
                raise
            _log.warning("a LiteLLM call's %s was left out: %s", name, exc.reason)
    return TelemetryRecord(**fields)

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
for a database write. When the recorder is full (the database is locked
for long), a call is dropped with a warning rather than made to wait
(:attr:`TelemetryLogger.dropped` counts them). Calls LiteLLM calls back
for while the interpreter exits (its own flush of async callbacks runs
then), or after :meth:`TelemetryLogger.close`, are written one by one as
they come: no writer thread would write a queue. The mapping
(docs/litellm.md):

- key: the call's ``standard_logging_object["id"]`` (a call logged twice is
  stored once); ``model``; ``provider``: ``custom_llm_provider``;
- tokens that never overlap: LiteLLM's ``prompt_tokens`` is OpenAI-style and
  includes the cache reads (``prompt_tokens_details.cached_tokens``) and
  writes (``cache_creation_input_tokens``): they are taken out of input;
- ``cost_usd``: LiteLLM's ``response_cost`` (a negative or non-finite one
  counts as none), else the list price of the tokens
  (:mod:`telemetry_orm.prices`; a model without one counts 0); a failure
  has the tokens and cost LiteLLM reports for it (usually none), never a
  list price;
- ``duration_ms`` from the call's start and end; ``conclusion``
  ``success``, or ``error`` for a failure; ``stop_reason`` the finish reason;
- from the call's ``metadata``: ``repo``, ``pr_number``, ``event_type``,
  ``session_id`` and ``labels``; LiteLLM's user, team and end-user ids
  (its proxy's keys, or the call's ``user``) as labels ``user``, ``team``,
  ``end_user``. A metadata value the record refuses is left out (the
  logger's ``repo`` and ``event_type`` take the place of refused ones; a
  refused label leaves the others), with a warning.

Needs LiteLLM (``pip install litellm``); the package never imports it.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from typing import Any, Dict, Mapping, Optional, Tuple

from ..background import MAX_QUEUE
from ..checks import MAX_LABELS, check_labels, is_amount
from ..errors import StoreClosedError, TelemetryValidationError
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
#: The event type of a call whose metadata names none (the logger's default).
EVENT_TYPE = "litellm.completion"
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


def _labels(meta: Mapping[str, Any], proxy: Mapping[str, Any], logged: Mapping[str, Any],
            kwargs: Mapping[str, Any]) -> Dict[str, str]:
    """The metadata's labels, then LiteLLM's ids; a label the record refuses
    is left out (and said), not the others."""
    given = meta.get("labels")
    if given is not None and not isinstance(given, Mapping):
        _log.warning("a LiteLLM call's labels were left out: must be a mapping of label "
                     "names to strings, got %s", type(given).__name__)
    wanted = {str(k): str(v) for k, v in given.items()
              if v is not None} if isinstance(given, Mapping) else {}
    for label, key in ID_LABELS:
        value = proxy.get(key) or (logged.get("end_user") or kwargs.get("user")
                                   if label == "end_user" else None)
        if value:
            wanted.setdefault(label, str(value))
    labels: Dict[str, str] = {}
    for name, value in wanted.items():
        try:
            check_labels("labels", {name: value})
        except TelemetryValidationError as exc:
            _log.warning("a LiteLLM call's label %r was left out: %s", name, exc.reason)
            continue
        if len(labels) == MAX_LABELS:
            _log.warning("a LiteLLM call's label %r was left out: an execution carries at "
                         "most %d labels", name, MAX_LABELS)
            continue
        labels[name] = value
    return labels


def execution(kwargs: Mapping[str, Any], response: Any, start_time: Any, end_time: Any, *,
              failed: bool, repo: Optional[str] = None,
              event_type: str = EVENT_TYPE) -> Tuple[Dict[str, Any], Optional[str]]:
    """The record fields of one LiteLLM callback's arguments, and its key."""
    logged: Mapping[str, Any] = kwargs.get("standard_logging_object") or {}
    meta = _metadata(kwargs, logged)
    tokens = _tokens(logged, response)
    model = str(logged.get("model") or kwargs.get("model") or "unknown")
    cost = kwargs.get("response_cost", logged.get("response_cost"))
    if not is_amount(cost):  # none, or one no record takes (NaN, inf, < 0)
        cost = 0.0 if failed else (list_price(model, tokens) or 0.0)
    start = _seconds(logged.get("startTime")) or _seconds(start_time)
    end = _seconds(logged.get("endTime")) or _seconds(end_time)
    proxy = logged.get("metadata") or {}
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
        "labels": _labels(meta, proxy, logged, kwargs),
    }
    call_id = logged.get("id") or kwargs.get("litellm_call_id")
    return fields, (str(call_id) if call_id else None)


def _exiting() -> bool:
    """Whether the interpreter is shutting down. Its atexit handlers run
    after the main thread has stopped, and LiteLLM's flush of the async
    callbacks it still holds is one of them: a recorder's own exit handler
    may already have run, and one made now would never be written."""
    return sys.is_finalizing() or not threading.main_thread().is_alive()


_Base: Any = _custom_logger.CustomLogger


class TelemetryLogger(_Base):
    """A LiteLLM callback recording each call into ``store`` (see the
    module): ``litellm.callbacks = [TelemetryLogger(store)]``. ``repo`` and
    ``event_type`` are used where a call's metadata names none (or one the
    record refuses). Errors are logged, never raised into the call.

    Calls are queued for a background recorder holding at most
    ``max_queue`` executions; a call that finds it full is dropped, never
    waited for (an async callback runs on the caller's event loop), with a
    warning, and counted in :attr:`dropped`. :meth:`flush` waits for the
    executions queued so far; :meth:`close` writes them and stops the
    recorder: calls that still arrive then, and any while the interpreter
    exits, are written one by one as they come."""

    def __init__(self, store: Any, repo: Optional[str] = None,
                 event_type: str = EVENT_TYPE, *, max_queue: int = MAX_QUEUE,
                 **options: Any) -> None:
        super().__init__(**options)
        self.store = store
        self.repo = repo
        self.event_type = event_type
        self.max_queue = max_queue
        #: Calls dropped because the recorder was full.
        self.dropped = 0
        self._dropping = 0  # of those, since the recorder last had room
        self._recorder: Any = None
        self._closed = False
        self._lock = threading.Lock()

    def _record(self, kwargs: Any, response: Any, start_time: Any, end_time: Any,
                failed: bool) -> None:
        try:
            fields, key = execution(kwargs, response, start_time, end_time, failed=failed,
                                    repo=self.repo, event_type=self.event_type)
            record = _checked(fields, {"repo": self.repo or NO_REPO,
                                       "event_type": self.event_type})
            if not self._queued(record, key):
                self.store.record(record, key=key)
        except Exception as exc:  # LiteLLM would hide it: say it here
            _log.warning("a LiteLLM call was not recorded: %s: %s", type(exc).__name__, exc)

    def _queued(self, record: TelemetryRecord, key: Optional[str]) -> bool:
        """Queue ``record`` (or drop it when the recorder is full); ``False``
        when it must be written here: no writer thread would write it."""
        with self._lock:  # one caller at a time: room seen is room used
            if self._closed or _exiting():
                return False
            if self._recorder is None:
                self._recorder = self.store.background(max_queue=self.max_queue)
            recorder = self._recorder
            if recorder.held >= recorder.max_queue:
                self.dropped += 1
                self._dropping += 1
                if self._dropping == 1:
                    _log.warning("the background recorder of %s is full (%d executions): "
                                 "LiteLLM calls are dropped until it has room",
                                 self.store.path, recorder.max_queue)
                return True
            try:
                recorder.record(record, key=key)
            except StoreClosedError:
                return False  # closed at exit, or with the store
            self._said_dropped()
            return True

    def _said_dropped(self) -> None:
        # Called with the lock held.
        if self._dropping:
            _log.warning("%d LiteLLM calls were dropped while the background recorder was "
                         "full (%d in all)", self._dropping, self.dropped)
            self._dropping = 0

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
        with self._lock:
            recorder = self._recorder
        if recorder is not None and not recorder.closed:
            recorder.flush()

    def close(self) -> None:
        """Write what is queued and stop the recorder; calls that still
        arrive are written one by one as they come."""
        with self._lock:
            self._closed = True
            self._said_dropped()
            recorder = self._recorder
        if recorder is not None:
            recorder.close()


#: Fields a call's metadata gives: a bad value is left out, not the call.
_OPTIONAL: Dict[str, Any] = {"pr_number": None, "session_id": None, "labels": {},
                             "stop_reason": None}
#: What takes the place of a refused repo or event type when the logger's does too.
_LAST_RESORT = {"repo": NO_REPO, "event_type": EVENT_TYPE}


def _checked(fields: Dict[str, Any], defaults: Mapping[str, Any]) -> TelemetryRecord:
    """The record, with any metadata value it refuses left out (and said):
    a refused ``repo`` or ``event_type`` becomes the logger's (``defaults``),
    else :data:`NO_REPO` or :data:`EVENT_TYPE`."""
    for _ in range(len(_OPTIONAL) + 2 * len(_LAST_RESORT) + 1):
        try:
            return TelemetryRecord(**fields)
        except TelemetryValidationError as exc:
            name = (exc.field or "").split(".", 1)[0]
            if name in _OPTIONAL and fields[name] != _OPTIONAL[name]:
                fields[name] = _OPTIONAL[name]
            elif name in _LAST_RESORT and fields[name] != _LAST_RESORT[name]:
                fields[name] = (defaults[name] if fields[name] != defaults[name]
                                else _LAST_RESORT[name])
            else:
                raise
            _log.warning("a LiteLLM call's %s was left out: %s", name, exc.reason)
    return TelemetryRecord(**fields)

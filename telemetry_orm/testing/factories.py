"""factory-boy factories for tests and demos (needs the ``testing`` extra).

>>> from telemetry_orm.factories import TelemetryRecordFactory
>>> record = TelemetryRecordFactory()                      # a valid, realistic record
>>> record = TelemetryRecordFactory(repo="acme/api", conclusion="failure")

``ExecutionFactory.create(store=store, created_at=...)`` writes a row into a
store, with ``created_at`` optionally set (for retention tests).
"""

from __future__ import annotations

import datetime as _dt
import random
from typing import Any, Optional

try:
    import factory
    from factory import fuzzy
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "telemetry_orm.factories needs factory-boy and Faker (the testing extra): "
        "pip install factory-boy Faker, or pip install '.[testing]' in a checkout"
    ) from exc

from ..prices import cost_of
from ..record import TelemetryRecord
from ..schema import Execution, format_timestamp
from ..store import TelemetryStore

EVENT_TYPES = (
    "pull_request.opened",
    "pull_request.synchronize",
    "issue_comment.created",
    "pull_request_review_comment.created",
    "issues.opened",
    "workflow_run.completed",
)

STOP_REASONS = ("end_turn", "max_tokens", "tool_use", "stop_sequence")

#: The models of generated runs (each has a price in the shipped table).
DEMO_MODELS = ("claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5", "claude-sonnet-4")


def list_price(o: Any) -> float:
    """The list price of a generated run's tokens, in USD to the
    micro-dollar; 0 for a model without a price (one given to the factory)."""
    cost = cost_of(o.model, input_tokens=o.input_tokens, output_tokens=o.output_tokens,
                   cache_read_tokens=o.cache_read_tokens,
                   cache_creation_tokens=o.cache_creation_tokens)
    return 0.0 if cost is None else round(cost, 6)


def _repo(_: Any) -> str:
    fake = factory.Faker._get_faker()
    owner = fake.user_name().replace(".", "-")
    name = fake.slug(fake.words(nb=random.randint(1, 2)))[:30] or "service"
    return f"{owner}/{name}"


class TelemetryRecordFactory(factory.Factory):
    """Builds valid, varied :class:`TelemetryRecord` values.

    Token counts follow a rough shape of real agent runs; ``cost_usd`` is the
    list price of those tokens for the chosen model.
    """

    class Meta:
        model = TelemetryRecord

    delivery_id = factory.Faker("uuid4")
    repo = factory.LazyAttribute(_repo)
    pr_number = factory.Maybe(
        factory.LazyFunction(lambda: random.random() < 0.8),
        yes_declaration=fuzzy.FuzzyInteger(1, 4000),
        no_declaration=None,
    )
    event_type = fuzzy.FuzzyChoice(EVENT_TYPES)
    provider = "anthropic"
    model = fuzzy.FuzzyChoice(DEMO_MODELS)
    input_tokens = factory.LazyFunction(lambda: int(random.lognormvariate(7.5, 1.0)))
    output_tokens = factory.LazyFunction(lambda: int(random.lognormvariate(7.0, 0.9)))
    cache_read_tokens = factory.LazyFunction(lambda: int(random.lognormvariate(10.5, 1.2)))
    cache_creation_tokens = factory.LazyFunction(lambda: int(random.lognormvariate(8.5, 1.1)))
    duration_ms = factory.LazyFunction(lambda: int(random.lognormvariate(10.8, 0.7)))
    cost_usd = factory.LazyAttribute(list_price)
    conclusion = factory.LazyFunction(
        lambda: random.choices(("success", "failure", "error", "timeout"), (86, 8, 4, 2))[0]
    )
    session_id = factory.Faker("uuid4")
    num_turns = fuzzy.FuzzyInteger(1, 40)
    stop_reason = fuzzy.FuzzyChoice(STOP_REASONS)


class ExecutionFactory(TelemetryRecordFactory):
    """Writes rows into a store: ``ExecutionFactory.create(store=store)``.

    ``created_at`` (a datetime, naive meaning UTC) backdates the row; without
    it the database sets it, as ``store.record()`` does. ``build()`` returns
    the unsaved :class:`TelemetryRecord`. ``create()`` returns the saved
    ``Execution`` row as read back from the store.
    """

    class Meta:
        model = TelemetryRecord
        exclude = ()

    @classmethod
    def _build(cls, model_class: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("store", None)
        kwargs.pop("created_at", None)
        return model_class(*args, **kwargs)

    @classmethod
    def _create(cls, model_class: Any, *args: Any, store: Optional[TelemetryStore] = None,
                created_at: Optional[_dt.datetime] = None, **kwargs: Any) -> Execution:
        if store is None:
            raise TypeError("ExecutionFactory.create() needs store=<a TelemetryStore>")
        record = model_class(*args, **kwargs)
        model = store.model
        if created_at is None:
            row_id = store.record(record)
        else:
            values = record.as_dict()
            values["created_at"] = format_timestamp(created_at)
            row_id = model.insert(values).execute()
        return model.get_by_id(row_id)

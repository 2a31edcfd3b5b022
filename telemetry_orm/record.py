"""The :class:`TelemetryRecord` value: one agent execution, validated on construction.

The dataclass below is the single source of truth for the record's fields:
their order is the column order of the ``executions`` table after ``id`` and
``created_at``, and the INSERT, the model and the reports are derived from (or
checked against) :data:`FIELD_NAMES`.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

from .checks import (
    MAX_COST_USD,
    MAX_COUNT,
    MAX_INT,
    NO_LABELS,
    check_cost,
    check_labels,
    check_length,
    check_optional_text,
    check_required_text,
    check_whole,
)
from .errors import TelemetryValidationError
from .inputs import agent_result_fields, list_price, usage_fields

_Check = Callable[[str, Any], Any]
T = TypeVar("T")

#: Each bounded column and its bound. Rows past a bound (written by another
#: program, or by hand) count as the bound in rollups and reports, and
#: below 0 as 0 (see :func:`telemetry_orm.sql.bounded`).
BOUNDS: Mapping[str, float] = {
    "input_tokens": MAX_COUNT, "output_tokens": MAX_COUNT, "cache_read_tokens": MAX_COUNT,
    "cache_creation_tokens": MAX_COUNT, "duration_ms": MAX_COUNT, "num_turns": MAX_COUNT,
    "cost_usd": MAX_COST_USD,
}

# The field checks: the rules live in telemetry_orm.checks.
_positive = functools.partial(check_whole, minimum=1, maximum=MAX_INT, or_none=True)


def _optional_count(name: str, value: Any) -> None:
    if value is not None:
        check_whole(name, value)


def _field(check: _Check, **kwargs: Any) -> Any:
    return dataclasses.field(metadata={"check": check}, **kwargs)


@dataclasses.dataclass(frozen=True)
class TelemetryRecord:
    """One execution of an agent, as stored in a row of ``executions``.

    Required: ``repo``, ``event_type``, ``model``, ``conclusion``. Every other
    field has the default of the original store's schema. Values are checked
    when the record is made; a bad one raises
    :class:`~telemetry_orm.TelemetryValidationError` naming the field::

        >>> TelemetryRecord(repo="acme/api", event_type="pull_request.opened",
        ...                 model="claude-sonnet-4-5", conclusion="success",
        ...                 input_tokens=1200, cost_usd=0.02).provider
        'anthropic'
    """

    delivery_id: Optional[str] = _field(check_optional_text, default=None, kw_only=True)
    repo: str = _field(check_required_text, kw_only=True)
    pr_number: Optional[int] = _field(_positive, default=None, kw_only=True)
    event_type: str = _field(check_required_text, kw_only=True)
    provider: str = _field(check_required_text, default="anthropic", kw_only=True)
    model: str = _field(check_required_text, kw_only=True)
    input_tokens: int = _field(check_whole, default=0, kw_only=True)
    output_tokens: int = _field(check_whole, default=0, kw_only=True)
    cache_read_tokens: int = _field(check_whole, default=0, kw_only=True)
    cache_creation_tokens: int = _field(check_whole, default=0, kw_only=True)
    duration_ms: int = _field(check_whole, default=0, kw_only=True)
    cost_usd: float = _field(check_cost, default=0.0, kw_only=True)
    conclusion: str = _field(check_required_text, kw_only=True)
    session_id: Optional[str] = _field(check_optional_text, default=None, kw_only=True)
    num_turns: Optional[int] = _field(_optional_count, default=None, kw_only=True)
    stop_reason: Optional[str] = _field(check_optional_text, default=None, kw_only=True)
    #: Who or what the execution is for (``{"user": "alice@example.com",
    #: "team": "platform"}``): not a column of ``executions``, kept beside it.
    labels: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: NO_LABELS, kw_only=True,
        metadata={"check": check_labels, "column": False})

    def __post_init__(self) -> None:
        row = _as_row(self)
        if not _plainly_valid(*row):
            for (name, check), value in zip(_CHECKS, row, strict=True):
                check(name, value)
        if self.labels is not NO_LABELS:
            object.__setattr__(self, "labels", check_labels("labels", self.labels))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> TelemetryRecord:
        """Build a record from a mapping with snake_case or camelCase keys.

        The original store's camelCase names (``deliveryId``, ``prNumber``,
        ``costUsd`` …) are accepted beside the snake_case ones. As with the
        original's ``?? default``, ``None`` for a field that has a non-``None``
        default means "use the default". An unknown key, a key given twice
        (in both spellings) or a missing required field raises
        :class:`~telemetry_orm.TelemetryValidationError` naming it.
        """
        if cls is TelemetryRecord:
            plain = _plain(mapping)
            if plain is not None:
                # Checked already: skip the generated __init__, which sets
                # each field through object.__setattr__ (frozen), and fill
                # __dict__ in one call.
                record: TelemetryRecord = object.__new__(cls)
                record.__dict__.update(plain[0])
                return record
        if not isinstance(mapping, Mapping):
            raise TelemetryValidationError(
                None, f"expected a TelemetryRecord or a mapping, got {type(mapping).__name__}"
            )
        kwargs: Dict[str, Any] = {}
        for key, value in mapping.items():
            if key == "labels":
                if value is not None:
                    kwargs["labels"] = value
                continue
            name = _ALIASES.get(key) if isinstance(key, str) else None
            if name is None:
                raise TelemetryValidationError(
                    str(key), f"unknown field; expected one of {', '.join(FIELD_NAMES)}"
                )
            if name in kwargs:
                raise TelemetryValidationError(name, f"given twice (as {key!r} too)")
            if value is None and _DEFAULTS.get(name) is not None:
                continue
            kwargs[name] = value
        for name in REQUIRED_FIELDS:
            if name not in kwargs:
                raise TelemetryValidationError(name, "is required")
        return cls(**kwargs)

    @classmethod
    def from_agent_result(
        cls,
        message: Any,
        *,
        repo: str,
        event_type: str,
        pr_number: Optional[int] = None,
        delivery_id: Optional[str] = None,
        provider: Optional[str] = None,
        model: Optional[str] = None,
    ) -> TelemetryRecord:
        """A record of one Claude Agent SDK run, from its final result message:
        ``claude_agent_sdk.ResultMessage`` or the TypeScript SDK's JSON.

        Tokens, cost, model, conclusion, duration, turns, session and stop
        reason come from the message (see
        :func:`telemetry_orm.inputs.agent_result_fields`); the rest, which
        only the caller knows, from the arguments. A wrong type in a field
        that is used raises :class:`~telemetry_orm.TelemetryValidationError`
        naming it as the SDK spells it (``usage.input_tokens``)::

            async for message in query(prompt=prompt, options=options):
                if isinstance(message, ResultMessage):
                    store.record(TelemetryRecord.from_agent_result(
                        message, repo="acme/api", event_type="pull_request.opened",
                        pr_number=42))
        """
        fields = agent_result_fields(message, model=model)
        return cls.from_mapping({
            **fields, "repo": repo, "event_type": event_type, "pr_number": pr_number,
            "delivery_id": delivery_id, "provider": provider,
        })

    @classmethod
    def from_usage(
        cls,
        usage: Any,
        *,
        repo: str,
        event_type: str,
        model: str,
        conclusion: str,
        **fields: Any,
    ) -> TelemetryRecord:
        """A record of one API call from its usage object or mapping:
        Anthropic Messages, OpenAI Chat Completions or OpenAI Responses,
        recognised from its keys (OpenAI's cached tokens are moved out of the
        input count into ``cache_read_tokens``). ``fields`` are the other
        record fields (``cost_usd``, ``duration_ms``, ``pr_number`` …); without
        ``cost_usd``, the list price of the tokens (0 for a model without a
        price in :mod:`telemetry_orm.prices`)::

            response = client.messages.create(...)
            record = TelemetryRecord.from_usage(
                response.usage, repo="acme/api", event_type="push",
                model=response.model, conclusion="success")
        """
        counts = usage_fields(usage)
        if fields.get("cost_usd") is None and fields.get("costUsd") is None:
            fields.pop("costUsd", None)
            fields["cost_usd"] = list_price(model, counts) or 0.0
        return cls.from_mapping({**counts, **fields, "repo": repo,
                                 "event_type": event_type, "model": model,
                                 "conclusion": conclusion})

    def as_row(self) -> Tuple[Any, ...]:
        """The field values in column order (the INSERT's parameters)."""
        return _as_row(self)

    def as_dict(self) -> Dict[str, Any]:
        """The fields as a plain ``dict`` with snake_case keys."""
        return dict(zip(FIELD_NAMES, _as_row(self), strict=True))


# A record made without __init__ (the fast path) reads its labels here. The
# field's default is a factory: a dict default (Labels is one) is refused
# as mutable before Python 3.11.
TelemetryRecord.labels = NO_LABELS

#: What the store takes as one execution: a record, or a mapping of its fields.
Entry = Union[TelemetryRecord, Mapping[str, Any]]


def coerce_record(entry: Any) -> TelemetryRecord:
    """Return ``entry`` as a :class:`TelemetryRecord` (validating a mapping)."""
    if type(entry) is TelemetryRecord:
        return entry
    if isinstance(entry, TelemetryRecord):
        return entry
    return TelemetryRecord.from_mapping(entry)


def record_of(fields: Mapping[str, Any]) -> TelemetryRecord:
    """``TelemetryRecord(**fields)`` (``labels`` among them): the same checks
    and errors, without the constructor's call per field when the values are
    plainly valid, for code that builds records by the thousand (the OTLP
    intake)."""
    rest = dict(fields)
    labels = rest.pop("labels", None)
    plain = _plain(rest)
    if plain is None:
        return TelemetryRecord(**fields)
    record: TelemetryRecord = object.__new__(TelemetryRecord)
    record.__dict__.update(plain[0])
    if "labels" in fields:
        record.__dict__["labels"] = check_labels("labels", labels)
    return record


def row_of(entry: Any) -> Tuple[Any, ...]:
    """The INSERT parameters of ``entry`` (a record, or a mapping validated here)."""
    if type(entry) is TelemetryRecord:
        return _as_row(entry)
    plain = _plain(entry)
    if plain is not None:
        return plain[1]
    return _as_row(coerce_record(entry))


def entry_of(entry: Any) -> Tuple[Tuple[Any, ...], Mapping[str, str]]:
    """The INSERT parameters of ``entry`` and its labels (checked), as
    :func:`row_of` validates them."""
    if type(entry) is TelemetryRecord:
        return _as_row(entry), entry.labels
    plain = _plain(entry)  # a mapping with labels is not plain
    if plain is not None:
        return plain[1], NO_LABELS
    record = coerce_record(entry)
    return _as_row(record), record.labels


def rows_of(entries: Iterable[Any]) -> List[Tuple[Any, ...]]:
    """The INSERT parameters of every entry, all validated before any is used.

    A bad entry raises :class:`~telemetry_orm.TelemetryValidationError`
    naming its position and its field.
    """
    return _each(entries, row_of)


def entries_of(entries: Iterable[Any]
               ) -> Tuple[List[Tuple[Any, ...]], Optional[List[Mapping[str, str]]]]:
    """The INSERT parameters of every entry (as :func:`rows_of`) and their
    labels, one mapping per entry; ``None`` when no entry has any."""
    checked = _each(entries, entry_of)
    labelsets = [labels for _, labels in checked]
    return [row for row, _ in checked], (labelsets if any(labelsets) else None)


def _each(entries: Iterable[Any], convert: Callable[[Any], T]) -> List[T]:
    if isinstance(entries, (Mapping, TelemetryRecord, str, bytes)):
        raise TelemetryValidationError(
            "entries",
            f"must be an iterable of records or mappings, got one {type(entries).__name__} "
            "(use record() for a single entry)",
        )
    try:
        iterator = iter(entries)
    except TypeError:
        raise TelemetryValidationError(
            "entries", f"must be an iterable of records or mappings, got {type(entries).__name__}"
        ) from None
    converted: List[T] = []
    append = converted.append
    for index, entry in enumerate(iterator):
        try:
            append(convert(entry))
        except TelemetryValidationError as exc:
            raise exc.at_index(index) from None
    return converted


def length_check(limits: Mapping[str, int], engine: str) -> Callable[[Sequence[Any]], None]:
    """A check of a row (an engine's ``check_row``) that refuses text longer
    than its column holds on ``engine``, naming the field; ``limits`` maps
    text fields to their most characters. Nothing is truncated::

        check_row = staticmethod(length_check({"repo": 255, "model": 255}, "MySQL"))
    """
    texts = {name: index for index, name in TEXT_FIELDS}
    unknown = sorted(set(limits) - set(texts))
    if unknown:
        raise ValueError(f"not text fields of a record: {', '.join(unknown)}")
    holder = f"what {engine} holds in this column"
    checked = tuple((texts[name], name, limit) for name, limit in limits.items())

    def check_row(row: Sequence[Any]) -> None:
        for index, name, limit in checked:
            check_length(name, row[index], limit, holder)

    return check_row


def _plainly_valid(
    delivery_id: Any,
    repo: Any,
    pr_number: Any,
    event_type: Any,
    provider: Any,
    model: Any,
    input_tokens: Any,
    output_tokens: Any,
    cache_read_tokens: Any,
    cache_creation_tokens: Any,
    duration_ms: Any,
    cost_usd: Any,
    conclusion: Any,
    session_id: Any,
    num_turns: Any,
    stop_reason: Any,
) -> bool:
    """True when every value is of the plain, usual type and in range.

    One inline expression instead of sixteen check calls keeps validation
    cheap on the write path. It accepts only values the field checks accept
    too; anything else (``False`` here is never a verdict) goes through the
    checks, which decide and name the field. It is deliberately narrower than
    the checks (ASCII text, integers within their bounds), so that it stays on
    the safe side of them. The parameters are the fields in column order, so
    a new field fails loudly until it is added here.
    """
    return (
        type(repo) is str and repo != "" and repo.isascii()
        and type(event_type) is str and event_type != "" and event_type.isascii()
        and type(provider) is str and provider != "" and provider.isascii()
        and type(model) is str and model != "" and model.isascii()
        and type(conclusion) is str and conclusion != "" and conclusion.isascii()
        and (delivery_id is None or (type(delivery_id) is str and delivery_id.isascii()))
        and (session_id is None or (type(session_id) is str and session_id.isascii()))
        and (stop_reason is None or (type(stop_reason) is str and stop_reason.isascii()))
        and type(input_tokens) is int and 0 <= input_tokens <= MAX_COUNT
        and type(output_tokens) is int and 0 <= output_tokens <= MAX_COUNT
        and type(cache_read_tokens) is int and 0 <= cache_read_tokens <= MAX_COUNT
        and type(cache_creation_tokens) is int and 0 <= cache_creation_tokens <= MAX_COUNT
        and type(duration_ms) is int and 0 <= duration_ms <= MAX_COUNT
        and (num_turns is None or (type(num_turns) is int and 0 <= num_turns <= MAX_COUNT))
        and (pr_number is None or (type(pr_number) is int and 0 < pr_number <= MAX_INT))
        and type(cost_usd) is float and 0.0 <= cost_usd <= MAX_COST_USD
    )


def _plain(mapping: Any) -> Optional[Tuple[Dict[str, Any], Tuple[Any, ...]]]:
    """Every field's value, and the row, when ``mapping`` is the usual kind
    and plainly valid; ``None`` means: let the full rules decide.

    The usual kind is a ``dict`` whose keys are snake_case field names and
    include the required ones. ``None`` for a field whose default is not
    ``None`` fails :func:`_plainly_valid`, so ``from_mapping`` handles it.
    """
    if type(mapping) is not dict:
        return None
    values = {**_DEFAULTS, **mapping}
    if len(values) != len(FIELD_NAMES):
        return None  # a key that is not a field name
    try:
        row: Tuple[Any, ...] = _row_of_values(values)
    except KeyError:
        return None  # a required field is missing
    if _plainly_valid(*row):
        return values, row
    return None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


#: The fields that are columns of ``executions`` (all but ``labels``).
_FIELDS = tuple(f for f in dataclasses.fields(TelemetryRecord) if f.metadata.get("column", True))

#: The record's fields, in column order.
FIELD_NAMES: Tuple[str, ...] = tuple(f.name for f in _FIELDS)

#: Fields without a default.
REQUIRED_FIELDS: Tuple[str, ...] = tuple(
    f.name
    for f in _FIELDS
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)

#: The text fields, each with its position in a row.
TEXT_FIELDS: Tuple[Tuple[int, str], ...] = tuple(
    (index, f.name) for index, f in enumerate(_FIELDS)
    if f.metadata["check"] in (check_required_text, check_optional_text)
)

_CHECKS: Tuple[Tuple[str, _Check], ...] = tuple((f.name, f.metadata["check"]) for f in _FIELDS)
_DEFAULTS: Dict[str, Any] = {
    f.name: f.default for f in _FIELDS if f.default is not dataclasses.MISSING
}
_ALIASES: Dict[str, str] = {**{_camel(n): n for n in FIELD_NAMES}, **{n: n for n in FIELD_NAMES}}
_as_row = operator.attrgetter(*FIELD_NAMES)
_row_of_values = operator.itemgetter(*FIELD_NAMES)

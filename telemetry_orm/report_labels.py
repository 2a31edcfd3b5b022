"""Reports by label: the group key ``label:NAME`` (the execution's value
of label ``NAME``, ``None`` without one) and the filter ``labels={NAME:
VALUE}`` (executions carrying every one of those labels).

Both read ``telemetry_orm_labels`` from each execution row by its primary
key (execution id, name): a group key is a scalar subquery, a filter an
``EXISTS``, so the rest of a report's SQL (its sums, percentiles, zone
buckets) is unchanged. Where the table does not exist, no execution has a
label: a key is ``NULL`` and a filter matches nothing. Nothing here writes.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from peewee import SQL, ColumnBase, fn

from .checks import check_labels
from .errors import TelemetryValidationError
from .schema import LABELS_TABLE
from .tables import tables_of

#: How a group key names a label: ``label:user``.
PREFIX = "label:"

#: A report's label filter: (name, value) pairs, by name.
LabelFilter = Tuple[Tuple[str, str], ...]


def label_name(key: str) -> Optional[str]:
    """``user`` for the group key ``label:user``; ``None`` for another key.
    A bad label name raises :class:`~telemetry_orm.TelemetryValidationError`."""
    if not key.startswith(PREFIX):
        return None
    name = key[len(PREFIX):]
    try:
        check_labels("group_by", {name: "x"})
    except TelemetryValidationError as exc:
        raise TelemetryValidationError("group_by", f"{key!r}: {exc.reason}") from None
    return name


def checked_filter(labels: Optional[Mapping[str, str]]) -> LabelFilter:
    """A report's ``labels`` argument as a filter (checked as an
    execution's labels are; ``None`` or empty: no filter)."""
    if labels is None:
        return ()
    return tuple(check_labels("labels", labels).items())


def parse_label(text: str) -> Tuple[str, str]:
    """``team=platform`` (a command line's ``--label``) as a name and a value."""
    name, sep, value = text.partition("=")
    if not sep:
        raise TelemetryValidationError("--label", f"expected NAME=VALUE, got {text!r}")
    check_labels("--label", {name: value})
    return name, value


def uses_labels(keys: Sequence[str], labels: LabelFilter) -> bool:
    """Whether a report grouped by ``keys`` and filtered by ``labels`` reads labels."""
    return bool(labels) or any(key.startswith(PREFIX) for key in keys)


def key_column(model: Optional[Any], execution_id: ColumnBase, name: str) -> ColumnBase:
    """The value of label ``name`` of the execution ``execution_id`` (its
    column), ``NULL`` without one; ``model``: the bound labels model, or
    ``None`` when its table does not exist."""
    if model is None:
        return SQL("NULL")
    value = (model.select(model.value)
             .where((model.execution_id == execution_id) & (model.name == name)))
    # In a function's arguments, as an expression: peewee 3 gives a bare
    # subquery an alias of its own inside a window's PARTITION BY.
    found: ColumnBase = fn.COALESCE(value, None)
    return found


def filter_conditions(model: Optional[Any], execution_id: ColumnBase,
                      labels: LabelFilter) -> Sequence[ColumnBase]:
    """One condition per label of the filter: the execution carries it."""
    if model is None:
        return [SQL("1 = 0")] if labels else []
    return [fn.EXISTS(model.select(SQL("1")).where(
        (model.execution_id == execution_id) & (model.name == name) & (model.value == value)))
        for name, value in labels]


def known(database: Any, name: str) -> Tuple[bool, Tuple[str, ...]]:
    """Whether some execution has (or had) a label ``name``; if not, the
    label names there are (at most 20, sorted). Reads only."""
    tables = tables_of(database)
    conn = tables.engine.statements(database)
    if not tables.engine.has_table(conn, LABELS_TABLE):
        return False, ()
    model: Any = tables.labels
    if model.select(SQL("1")).where(model.name == name).limit(1).exists():
        return True, ()
    names = model.select(model.name).distinct().order_by(model.name).limit(20).tuples()
    return False, tuple(str(row[0]) for row in names)


def label_filter(option: str, pairs: Sequence[Tuple[str, str]]) -> Optional[Dict[str, str]]:
    """Labels given one at a time (``--label NAME=VALUE``) as a filter
    (``None``: none); one name with two values is refused."""
    found: Dict[str, str] = {}
    for name, value in pairs:
        if found.get(name, value) != value:
            raise TelemetryValidationError(
                option, f"{name} is given twice ({found[name]!r}, {value!r}); an execution "
                        "has one value per label")
        found[name] = value
    return found or None


def check_known(database: Any, keys: Sequence[str], labels: Mapping[str, str]) -> None:
    """Refuse a label no execution has (a typo would give an empty report,
    or one group of none), naming the labels there are."""
    names = [label_name(key) for key in keys] + list(labels)
    for name in dict.fromkeys(n for n in names if n is not None):
        found, there = known(database, name)
        if not found:
            raise TelemetryValidationError(
                "label", f"no execution has a label {name!r}; the label names there: "
                         f"{', '.join(there) or 'none'}")

"""The part of a report by label that the label rollups stand for (see
:mod:`telemetry_orm.label_rollups`), in whole hours as the hour tier's.

A report reads them when it names one label (``label:NAME`` among its
keys, or ``labels={NAME: VALUE}``, or both with the same name) besides
time keys and ``model``, with no filter but ``model``; other reports by
label read rows, and say where purged history begins
(``Report.incomplete_before``).

The executions without the label (the group whose key is ``None``) are
not kept anywhere: their hours' figures are those of the main hours less
those of the label's hours, both read for the same hours and keys (sums,
cost parts and duration sketches all add up, so they subtract exactly).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

from peewee import ColumnBase

from .label_rollups import LABEL_DURATIONS_TABLE, LABEL_ROLLUPS_TABLE
from .report_labels import PREFIX, label_name
from .report_query import TIME_KEYS, BucketCounts, CostPart, ReportFilters, RollupQuery, Sums
from .tables import tables_of


@dataclasses.dataclass(frozen=True)
class LabelReport:
    """What a report asks of one label: its name, the value it is filtered
    to (``None``: none), and where its key is among the report's keys
    (``None``: not grouped by it)."""

    name: str
    value: Optional[str]
    position: Optional[int]


def answerable(filters: ReportFilters, keys: Sequence[str]) -> Optional[LabelReport]:
    """What the label rollups can answer of a report by label, or ``None``."""
    names = {label_name(key) for key in keys if key.startswith(PREFIX)}
    names |= {name for name, _ in filters.labels}
    if len(names) != 1 or len(filters.labels) > 1:
        return None
    if any(not key.startswith(PREFIX) and key not in (*TIME_KEYS, "model") for key in keys):
        return None
    if any(getattr(filters, name) is not None for name in ("repo", "event_type", "conclusion")):
        return None
    name = names.pop()
    assert name is not None
    label_key = f"{PREFIX}{name}"
    return LabelReport(name, filters.labels[0][1] if filters.labels else None,
                       keys.index(label_key) if label_key in keys else None)


def parts(label: LabelReport, make: Any, keys: Tuple[str, ...],
          filters: ReportFilters) -> List[Any]:
    """The parts of a report for one stretch of hours: ``make(cls,
    filters, keys, sign)`` builds a :class:`RollupQuery` (or
    :class:`LabelRollupQuery`) over those hours."""
    labelled = make(LabelRollupQuery, filters, keys, 1)
    labelled.label = label
    found: List[Any] = [labelled]
    if label.position is not None and label.value is None:
        # Those without the label: every execution less those with it.
        rest = tuple(k for k in keys if k != keys[label.position])
        plain = dataclasses.replace(filters, labels=())
        every = make(RollupQuery, plain, rest, 1)
        less = make(LabelRollupQuery, plain, rest, -1)
        less.label = dataclasses.replace(label, position=None)
        found += [_NoneAt(every, label.position), _NoneAt(less, label.position)]
    return found


class LabelRollupQuery(RollupQuery):
    """:class:`RollupQuery` on the label hours: only the label's rows (of
    its value, when filtered) are read; a label key reads their value."""

    label: LabelReport

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        tables = tables_of(self.database)
        self.rollup = tables.rollup(LABEL_ROLLUPS_TABLE)
        self.durations = tables.rollup(LABEL_DURATIONS_TABLE)

    def _select(self, model: Any, keys: Sequence[ColumnBase], *columns: ColumnBase,
                marginal: bool = False) -> Any:
        query = super()._select(model, keys, *columns, marginal=marginal)
        label = self.label
        query = query.where(model.name == label.name)
        return query if label.value is None else query.where(model.value == label.value)


class _NoneAt:
    """A part whose groups lack the label key: ``None`` put in its place."""

    def __init__(self, part: RollupQuery, position: int) -> None:
        self._part = part
        self._position = position

    def _key(self, key: Tuple[Any, ...]) -> Tuple[Any, ...]:
        return (*key[:self._position], None, *key[self._position:])

    def aggregate(self) -> Dict[Tuple[Any, ...], Sums]:
        return {self._key(k): v for k, v in self._part.aggregate().items()}

    def cost_parts(self) -> Dict[Tuple[Any, ...], List[CostPart]]:
        return {self._key(k): v for k, v in self._part.cost_parts().items()}

    def bucket_counts(self) -> BucketCounts:
        return {self._key(k): v for k, v in self._part.bucket_counts().items()}

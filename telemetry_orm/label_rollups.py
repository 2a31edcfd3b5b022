"""Labels in the rollups: each execution's labels are folded into their
hour beside its sums, so that a report by label over purged history gives
the figures it gave before the purge.

Two tables, made with the other rollup tables:

- ``telemetry_orm_label_rollups``: per hour, label (name and value),
  model and ``paid`` (a recorded cost above 0, or not), the sums of
  :data:`~telemetry_orm.rollups.SUMS`. Model and ``paid`` are kept so that
  a cost calculated from list prices (``cost="calculated"`` or
  ``"auto"``) works from them as it does from the hours; the other
  columns (repo, event type, provider, conclusion) are left out: a key of
  all of them and a label is longer than MySQL's index key.
- ``telemetry_orm_label_durations``: per hour, label, model and duration
  bucket, the executions (the p95 sketch).

They change exactly when the hours do (:func:`telemetry_orm.folding.fold_rows`
runs :func:`fold` with the same rows, in the same transaction), so an hour
of the label tables counts what the same hour of the main tables counts.
The executions without a label are not kept: a report gets them as the
hour's executions less those with that label (see
:mod:`telemetry_orm.report_plan`).
"""

from __future__ import annotations

from typing import Any, List, Tuple

from peewee import SQL, BigIntegerField, Case, CompositeKey, DoubleField, IntegerField, Model, fn

from . import rollups
from .schema import KeyTextField, LabelTextField, TimeTextField
from .sql import COST_UNITS_PER_USD, bounded, cost_units, render

LABEL_ROLLUPS_TABLE = "telemetry_orm_label_rollups"
LABEL_DURATIONS_TABLE = "telemetry_orm_label_durations"


class LabelRollup(Model):
    """One hour of one label, model and ``paid``: the executions' sums."""

    hour = TimeTextField()
    name = LabelTextField()
    value = LabelTextField()
    model = KeyTextField()
    paid = IntegerField()
    executions = BigIntegerField()
    input_tokens = BigIntegerField()
    output_tokens = BigIntegerField()
    cache_read_tokens = BigIntegerField()
    cache_creation_tokens = BigIntegerField()
    cost_usd = DoubleField()
    duration_ms = BigIntegerField()
    failed = BigIntegerField()

    class Meta:
        table_name = LABEL_ROLLUPS_TABLE
        primary_key = CompositeKey("hour", "name", "value", "model", "paid")
        without_rowid = True


class LabelRollupDuration(Model):
    """How many executions of one hour, label and model fell in one duration bucket."""

    hour = TimeTextField()
    name = LabelTextField()
    value = LabelTextField()
    model = KeyTextField()
    bucket = IntegerField()
    executions = BigIntegerField()

    class Meta:
        table_name = LABEL_DURATIONS_TABLE
        primary_key = CompositeKey("hour", "name", "value", "model", "bucket")
        without_rowid = True


#: The label rollup models, last in an engine's ``rollup_models`` (the
#: order of :class:`~telemetry_orm.rollups.RollupModels`).
MODELS: Tuple[Any, ...] = (LabelRollup, LabelRollupDuration)


def fold(models: Any, model: Any, labels: Any, dialect: Any, where: Any, sign: int
         ) -> List[Any]:
    """The statements adding the labels of the executions matching
    ``where`` to their hours (``sign=-1``: taking them out, then removing
    the rows left with no execution), as the main hours' fold does (see
    :func:`telemetry_orm.rollups.fold`): each label row upserted where the
    engine adds rows as they come, grouped first elsewhere."""
    m, lab = model, labels
    paid = Case(None, [(m.cost_usd > 0, 1)], 0)
    failed = Case(None, [(m.conclusion != "success", 1)], 0)
    each = dialect.add_rows is not None
    signed = (lambda value: value) if sign == 1 else (
        lambda value: value * SQL(str(int(sign))))
    if each:
        values: List[Any] = [
            SQL("1"), *(bounded(getattr(m, name)) for name in rollups.SUMS[1:5]),
            cost_units(bounded(m.cost_usd)) / COST_UNITS_PER_USD,
            bounded(m.duration_ms), failed]
        sums = [signed(v) for v in values]
        count: Any = signed(SQL("1"))
    else:
        sums = [signed(v) for v in rollups.row_sums(m)]
        count = signed(fn.COUNT(SQL("*")))
    statements: List[Any] = []

    def upsert(target: Any, key: List[Any], columns: List[Any], added: Tuple[str, ...]
               ) -> None:
        fields = [getattr(target, name) for name in added]
        query = m.select(*columns).join(lab, on=(lab.execution_id == m.id)).where(where)
        if each:
            statements.append(dialect.add_rows(
                target.insert_from(query, [*key, *fields]), key, fields))
            return
        query = query.group_by(*(SQL(str(i)) for i in range(1, len(key) + 1)))
        statements.append(dialect.upsert(target.insert_from(query, [*key, *fields]), key,
                                         fields, True))

    r, d = models.label_hours, models.label_durations
    hour = dialect.hour(m.created_at)
    upsert(r, [r.hour, r.name, r.value, r.model, r.paid],
           [hour, lab.name, lab.value, m.model, paid, *sums], rollups.SUMS)
    upsert(d, [d.hour, d.name, d.value, d.model, d.bucket],
           [hour, lab.name, lab.value, m.model, dialect.bucket(m.duration_ms), count],
           ("executions",))
    if sign == -1:
        for table in (r, d):
            touched = m.select(hour).where(where)
            statements.append(table.delete().where(
                (table.executions == 0) & table.hour.in_(touched)))
    return statements


#: Executions read to find how many labels rows carry (see :func:`weight`).
SAMPLE = 1000


def weight(conn: Any, backend: Any, labels: Any, newest: int) -> float:
    """1 + the labels per execution among the :data:`SAMPLE` newest ids
    (up to ``newest``): what a row costs to fold or purge against a row
    without labels (a label is one upsert in each of the two label tables,
    as a row is one in each of the two hour tables; a purge deletes it).
    Long folds and purges size their steps by it. One range of the labels'
    primary key is read."""
    if not backend.has_table(conn, labels._meta.table_name):
        return 1.0
    count = conn.execute(*render(labels._meta.database, labels.select(fn.COUNT(SQL("*"))).where(
        (labels.execution_id > newest - SAMPLE) & (labels.execution_id <= newest)))).fetchone()[0]
    return 1.0 + int(count or 0) / SAMPLE

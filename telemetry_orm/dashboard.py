"""Pictures of a report: a self-contained HTML page and a terminal chart.

:func:`dashboard` gathers what the page shows (the report itself, cost per
time bucket by repo and by model, executions and failures per bucket, the
totals of the range before for comparison) in one read; :func:`render_html`
turns it into one HTML file with inline CSS and SVG drawn here, nothing
fetched when it is viewed, the table complete without JavaScript (a few
inline lines make it sortable where scripts run). :func:`terminal_chart`
draws cost per bucket with Unicode block bars, or ASCII.

Every value from the data (repo and model names above all) is escaped with
:func:`html.escape` wherever it lands: text, attributes, SVG titles.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from . import zones
from .checks import to_utc
from .formats import (
    _LABELS,
    _caption,
    _human,
    _when,
    iso,
    printable,
    report_records,
    set_filters,
)
from .reports import METRICS, Metrics, Report, report

__all__ = ["Dashboard", "SERIES", "dashboard", "render_html", "terminal_chart"]

#: Series drawn by name in a stacked chart; the rest are summed as "other".
SERIES = 8

#: Above this many days a page's time bucket is the week, else the day.
DAY_BUCKETS_UP_TO = 90

_OTHER = "(other)"


@dataclasses.dataclass(frozen=True)
class Dashboard:
    """What the HTML page of a report shows."""

    #: The report the table shows (``--by``).
    report: Report
    #: ``day`` or ``week``.
    bucket: str
    #: Every bucket of the range, in order (also those without executions).
    buckets: Tuple[str, ...]
    #: Cost per bucket and repo, per bucket and model: ``{bucket: {name: cost}}``.
    cost_by_repo: Mapping[str, Mapping[str, float]]
    cost_by_model: Mapping[str, Mapping[str, float]]
    #: Executions and failures per bucket.
    runs: Mapping[str, Tuple[int, int]]
    #: The totals of the range of the same length just before (``None``:
    #: an open range, nothing to compare with).
    previous: Optional[Metrics]
    #: The range's totals for the headline: the report's, or, when the report
    #: could not count purged history (``--by pr``), those of every execution.
    headline: Optional[Metrics] = None
    #: The first and last buckets when the range covers only part of them
    #: (it starts or ends inside a day or week): their bars are drawn lighter.
    partial: Tuple[str, ...] = ()


def _bucket_of(when: _dt.datetime, bucket: str) -> str:
    if bucket == "day":
        return when.strftime("%Y-%m-%d")
    year, week, _ = when.isocalendar()
    return f"{year}-W{week:02d}"


def _all_buckets(since: _dt.datetime, until: _dt.datetime, zone: Any,
                 bucket: str) -> Tuple[str, ...]:
    labels: List[str] = []
    day = to_utc(since).astimezone(zone).date()
    last = (to_utc(until).astimezone(zone) - _dt.timedelta(microseconds=1)).date()
    while day <= last:
        label = _bucket_of(_dt.datetime(day.year, day.month, day.day), bucket)
        if not labels or labels[-1] != label:
            labels.append(label)
        day += _dt.timedelta(days=1)
    return tuple(labels)


def _starts_bucket(when: _dt.datetime, zone: Any, bucket: str) -> bool:
    """Whether ``when`` is where a bucket starts: midnight in ``zone``
    (a Monday's, for weeks)."""
    local = to_utc(when).astimezone(zone)
    return local.time() == _dt.time(0) and (bucket == "day" or local.weekday() == 0)


def dashboard(source: Any, *, since: Optional[_dt.datetime] = None,
              until: Optional[_dt.datetime] = None, group_by: Sequence[str] = ("repo",),
              bucket: Optional[str] = None, **options: Any) -> Dashboard:
    """Gather a page's figures: :func:`~telemetry_orm.reports.report` with
    the same arguments (``options``: filters, ``cost``, ``prices``, ``tz``),
    and the same executions by time bucket and repo, and by bucket and
    model. ``bucket`` defaults to ``day`` for ranges up to
    :data:`DAY_BUCKETS_UP_TO` days, else ``week``."""
    main = report(source, since=since, until=until, group_by=list(group_by), **options)
    f = main.filters
    zone = zones.check_zone("tz", f.tz)
    start = f.since
    end = f.until or main.generated_at
    if bucket is None and start is not None:
        bucket = "day" if end - start <= _dt.timedelta(days=DAY_BUCKETS_UP_TO) else "week"
    # One read for both charts (the hours of the range once), by week in the
    # database for long ranges, and no p95: its queries are most of a
    # report's time.
    by_time = report(source, since=f.since, until=f.until,
                     group_by=[bucket or "day", "repo", "model"], p95=False, **options)
    if start is None:  # all time: from the first day there is
        days = [r.keys["day"] for r in by_time.rows]
        start = (_dt.datetime.fromisoformat(min(days)).replace(tzinfo=zone) if days else end)
    span = end - start
    if bucket is None:
        bucket = "day" if span <= _dt.timedelta(days=DAY_BUCKETS_UP_TO) else "week"
    previous = None
    if f.since is not None and span > _dt.timedelta(0):
        try:
            before: Optional[_dt.datetime] = f.since - span
        except OverflowError:  # a range from the first centuries: nothing lies before it
            before = None
        if before is not None:
            previous = report(source, since=before, until=f.since, group_by=[],
                              **options).totals

    def label_of(row: Any) -> str:
        if "week" in row.keys:
            return str(row.keys["week"])
        return _bucket_of(_dt.datetime.fromisoformat(row.keys["day"]), bucket)

    def per_bucket(key: str) -> Dict[str, Dict[str, float]]:
        found: Dict[str, Dict[str, float]] = {}
        for row in by_time.rows:
            label = label_of(row)
            name = str(row.keys[key])
            series = found.setdefault(label, {})
            series[name] = series.get(name, 0.0) + (row.metrics.cost_usd or 0.0)
        return found

    runs: Dict[str, Tuple[int, int]] = {}
    for row in by_time.rows:
        label = label_of(row)
        n, failed = runs.get(label, (0, 0))
        runs[label] = (n + row.metrics.executions, failed + row.metrics.failed)
    headline = main.totals
    if main.incomplete_before is not None:  # the charts count it all: so do the cards
        headline = report(source, since=f.since, until=f.until, group_by=[], **options).totals
    buckets = _all_buckets(start, end, zone, bucket)
    partial = [(buckets[:1], start), (buckets[-1:], end)] if buckets else []
    cut = tuple(dict.fromkeys(label for edge, when in partial for label in edge
                              if not _starts_bucket(when, zone, bucket)))
    return Dashboard(main, bucket, buckets, per_bucket("repo"), per_bucket("model"), runs,
                     previous, headline, cut)


# --- the page ----------------------------------------------------------------------

_CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--bg:#fff;--panel:#f5f7fa;--grid:#d9dee7;
--c0:#2f6db5;--c1:#e0762b;--c2:#3a9a5b;--c3:#c4424f;--c4:#7d5bb5;--c5:#8c6239;--c6:#d660a6;
--c7:#1f9fb0;--c8:#9aa1ad;--bad:#c4424f}
@media (prefers-color-scheme:dark){:root{--fg:#e6e9ef;--muted:#a3abba;--bg:#14171d;
--panel:#1e232c;--grid:#353c48;--c0:#6ea6ec;--c1:#f4a261;--c2:#6fcf8e;--c3:#ef7a85;
--c4:#b39ddb;--c5:#c9a27e;--c6:#f19ccf;--c7:#5fd0de;--c8:#7b8494;--bad:#ef7a85}}
*{box-sizing:border-box}body{margin:0;padding:24px;font:14px/1.45 system-ui,-apple-system,
"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1040px;margin:0 auto}h1{font-size:22px;margin:0 0 4px}
h2{font-size:16px;margin:28px 0 8px}.muted{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;
margin:16px 0}.card{background:var(--panel);border-radius:8px;padding:12px}
.card b{display:block;font-size:20px}.card span{color:var(--muted);font-size:12px}
svg{width:100%;height:auto;display:block}svg text{fill:var(--muted);font-size:11px}
.grid{stroke:var(--grid)}.legend{display:flex;flex-wrap:wrap;gap:6px 14px;margin:6px 0;
font-size:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;
border-radius:2px}
""" + "".join(f".s{n}{{fill:var(--c{n})}}.legend .s{n}{{background:var(--c{n})}}"
              for n in range(9)) + """
.bad{fill:var(--bad)}.legend .bad{background:var(--bad)}
.partial{fill-opacity:.4}.legend i.partial{opacity:.4}
table{border-collapse:collapse;width:100%;font-size:11.5px;font-variant-numeric:tabular-nums}
th,td{padding:4px 5px;border-bottom:1px solid var(--grid);text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{cursor:pointer;user-select:none}
tfoot td{font-weight:600}.wrap{overflow-x:auto}
.hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
@page{size:A4;margin:12mm}
@media print{body{padding:0;font-size:11px}.card b{font-size:16px}section{break-inside:avoid}
th{cursor:auto}}
"""

# Sorts the table by a column when its header is clicked (the page is
# complete without it).
_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function(t){
t.querySelectorAll("thead th").forEach(function(th,i){th.addEventListener("click",function(){
var b=t.tBodies[0],rows=Array.prototype.slice.call(b.rows),up=th.dataset.up!=="1";
rows.sort(function(x,y){var p=x.cells[i].dataset.sort,q=y.cells[i].dataset.sort;
var a=parseFloat(p),c=parseFloat(q);var r=(!isNaN(a)&&!isNaN(c))?a-c:p.localeCompare(q);
return up?r:-r;});th.dataset.up=up?"1":"0";rows.forEach(function(r){b.appendChild(r);});});});});
"""

_WIDTH, _HEIGHT, _LEFT, _BOTTOM, _TOP = 960, 240, 72, 28, 8


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _money(value: Optional[float]) -> str:
    return "n/a" if value is None else f"${value:,.2f}"


def _top(per_bucket: Mapping[str, Mapping[str, float]]) -> List[str]:
    totals: Dict[str, float] = {}
    for series in per_bucket.values():
        for name, cost in series.items():
            totals[name] = totals.get(name, 0.0) + cost
    ranked = sorted(totals, key=lambda name: (-totals[name], name))
    return ranked if len(ranked) <= SERIES + 1 else ranked[:SERIES]


def _stacks(d: Dashboard, per_bucket: Mapping[str, Mapping[str, float]]
            ) -> Tuple[List[str], List[List[float]]]:
    """The series names (top ones, then "other") and, per bucket, each one's value."""
    names = _top(per_bucket)
    other = any(name not in names for series in per_bucket.values() for name in series)
    shown = names + ([_OTHER] if other else [])
    stacks = []
    for label in d.buckets:
        series = per_bucket.get(label, {})
        values = [series.get(name, 0.0) for name in names]
        if other:
            values.append(sum(v for name, v in series.items() if name not in names))
        stacks.append(values)
    return shown, stacks


#: Gridline steps: these times a power of ten.
_STEPS = (1.0, 2.0, 2.5, 5.0)


def _axis(top: float, *, whole: bool, most: int = 5) -> Tuple[float, int]:
    """The gridline step and how many steps the axis has: the smallest
    step of :data:`_STEPS` that reaches ``top`` in at most ``most`` steps
    (``whole``: a whole number, for counts)."""
    if not 0 < top < math.inf:
        return 1.0, 1
    power = math.floor(math.log10(top / most))
    while True:
        for m in _STEPS:
            step = m * 10.0 ** power
            if whole and (step < 1 or step != math.floor(step)):
                continue
            steps = math.ceil(top / step * (1 - 1e-12))
            if steps <= most:
                return step, max(steps, 1)
        power += 1


def _tick(value: float, step: float, money: bool) -> str:
    """A gridline's label, with as many decimals as the step needs
    (``$2.50`` on a ``$2.5`` step, ``$0.025`` on ``$0.025``)."""
    decimals = next((d for d in range(20) if abs(round(step, d) - step) <= step * 1e-9), 20)
    if money:
        return f"${value:,.{max(decimals, 2) if decimals else 0}f}"
    return f"{value:,.{decimals}f}"


def _chart(d: Dashboard, title: str, names: List[str], stacks: List[List[float]],
           money: bool, classes: Optional[List[str]] = None) -> str:
    """A stacked bar chart as inline SVG: one ``<rect>`` per non-zero
    segment, with its value in ``data-value`` and a ``<title>``; gridlines
    at round steps, each labelled with its value; the bars of a bucket only
    partly inside the range drawn lighter, and said so in the legend."""
    label = _money if money else _count
    classes = classes or [f"s{n}" if name != _OTHER else "s8" for n, name in enumerate(names)]
    step, steps = _axis(max((sum(v for v in s if v < math.inf) for s in stacks), default=0.0),
                        whole=not money)
    top = step * steps
    plot_w, plot_h = _WIDTH - _LEFT - 8, _HEIGHT - _BOTTOM - _TOP
    width = plot_w / max(len(d.buckets), 1)
    bar = max(width * 0.8, 1.0)
    parts = [f'<svg viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" aria-label="{_e(title)}" '
             f'data-max="{top!r}"><title>{_e(title)}</title>']
    for n in range(steps + 1):
        y = _TOP + plot_h * (1 - n / steps)
        parts.append(f'<line class="grid" x1="{_LEFT}" x2="{_WIDTH - 8}" y1="{y:.1f}" '
                     f'y2="{y:.1f}"/><text class="tick" x="{_LEFT - 6}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{_e(_tick(step * n, step, money))}</text>')
    every = max(1, len(d.buckets) // 12)
    for i, (bucket, values) in enumerate(zip(d.buckets, stacks, strict=True)):
        x = _LEFT + i * width + (width - bar) / 2
        y = _TOP + plot_h
        partial = " partial" if bucket in d.partial else ""
        for name, cls, value in zip(names, classes, values, strict=True):
            if not 0 < value < math.inf:  # an infinite sum written by another program
                continue
            h = plot_h * value / top
            y -= h
            parts.append(f'<rect class="{cls}{partial}" x="{x:.2f}" y="{y:.2f}" '
                         f'width="{bar:.2f}" height="{h:.2f}" data-bucket="{_e(bucket)}" '
                         f'data-series="{_e(name)}" data-value="{value!r}"><title>'
                         f'{_e(bucket)} · {_e(name)}: {_e(label(value))}'
                         f'{" (part of the " + d.bucket + ")" if partial else ""}</title></rect>')
        # A label every so many bars, none crowding the last one shown.
        if i % every == 0 and (every == 1 or i <= len(d.buckets) - every):
            middle = x + bar / 2
            anchor = "end" if middle > _WIDTH - 40 else "middle"
            parts.append(f'<text x="{min(middle, _WIDTH - 8):.1f}" y="{_HEIGHT - 10}" '
                         f'text-anchor="{anchor}">{_e(bucket[5:] if d.bucket == "day" else bucket)}'
                         "</text>")
    parts.append("</svg>")
    legend = "".join(f'<span><i class="{cls}"></i>{_e(name)}</span>'
                     for name, cls in zip(names, classes, strict=True))
    if d.partial:  # (a range with no executions has no series: the first colour then)
        legend += (f'<span data-partial="{_e(" ".join(d.partial))}"><i class="'
                   f'{classes[0] if classes else "s0"} '
                   f'partial"></i>lighter: {_e(_partial_note(d))}</span>')
    return f'<div class="legend">{legend}</div>' + "".join(parts)


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _partial_note(d: Dashboard) -> str:
    """Which buckets the range covers only in part."""
    if len(d.partial) == 1:
        return f"{d.partial[0]}, a {d.bucket} only partly inside the range"
    return f"{' and '.join(d.partial)}, {d.bucket}s only partly inside the range"


def _change(now: Optional[float], before: Optional[float], *, points: bool = False) -> str:
    if now is None or before is None:
        return "nothing to compare with"
    if points:
        change = (now - before) * 100
        return f"{change:+.1f} pts vs previous" if round(change, 1) else "same as previous"
    if before == 0:
        return "new" if now else "no change"
    change = (now - before) / before * 100
    return f"{change:+.1f}% vs previous" if round(change, 1) else "same as previous"


def _cards(d: Dashboard) -> str:
    t = d.headline or d.report.totals
    p = d.previous if d.previous is not None and d.previous.executions else None

    def rate(m: Optional[Metrics]) -> Optional[float]:
        return None if m is None or not m.executions else m.failed / m.executions

    def cache(m: Optional[Metrics]) -> Optional[float]:
        if m is None or not m.total_tokens:
            return None
        return (m.cache_read_tokens + m.cache_creation_tokens) / m.total_tokens

    cards = [
        ("cost", _money(t.cost_usd), _change(t.cost_usd, p.cost_usd if p else None)),
        ("executions", f"{t.executions:,}",
         _change(t.executions, p.executions if p else None)),
        ("failure rate", "-" if rate(t) is None else f"{rate(t) * 100:.1f}%",  # type: ignore[operator]
         _change(rate(t), rate(p), points=True)),
        ("p95 duration", "-" if t.p95_duration_ms is None else f"{t.p95_duration_ms:,} ms",
         _change(t.p95_duration_ms, p.p95_duration_ms if p else None)),
        ("tokens", f"{t.total_tokens:,}",
         ("-" if cache(t) is None else f"{cache(t) * 100:.0f}% from the cache; ")  # type: ignore[operator]
         + _change(t.total_tokens, p.total_tokens if p else None)),
    ]
    return '<div class="cards">' + "".join(
        f'<div class="card" data-card="{_e(name)}"><span>{_e(name)}</span><b>{_e(value)}</b>'
        f'<span>{_e(note)}</span></div>' for name, value, note in cards) + "</div>"


def _table(r: Report) -> str:
    keys = list(r.key_names)
    head = "".join(f'<th scope="col" title="{_e(name)}">{_e(_LABELS.get(name, name))}</th>'
                   for name in keys + list(METRICS))
    body = []
    for record in report_records(r):
        cells = "".join(
            f'<td data-sort="{_e("" if record[name] is None else record[name])}">'
            f"{_e(_human(name, record[name]))}</td>" for name in keys + list(METRICS))
        body.append(f"<tr>{cells}</tr>")
    totals = r.totals.as_dict()
    foot = "".join([f'<td colspan="{max(len(keys), 1)}">TOTAL</td>' if keys else ""] + [
        f"<td>{_e(_human(name, totals[name]))}</td>" for name in METRICS])
    if not keys:
        foot = "".join(f"<td>{_e(_human(name, totals[name]))}</td>" for name in METRICS)
    return (f'<div class="wrap"><table class="sortable"><caption class="hidden">'
            f"{_e(_caption(r))}</caption><thead><tr>{head}</tr></thead><tbody>"
            f'{"".join(body)}</tbody><tfoot><tr>{foot}</tr></tfoot></table></div>')


def render_html(d: Dashboard) -> str:
    """The page, as one self-contained HTML document."""
    r = d.report
    f = r.filters
    repo_names, repo_stacks = _stacks(d, d.cost_by_repo)
    model_names, model_stacks = _stacks(d, d.cost_by_model)
    runs = [[float(n - failed), float(failed)] for n, failed in
            (d.runs.get(b, (0, 0)) for b in d.buckets)]
    zone = zones.check_zone("tz", f.tz)
    filters = set_filters(f)
    filters["since"] = _when(f.since, zone) if f.since else "all time"
    filters["until"] = _when(f.until, zone) if f.until else "now"
    notes = []
    if r.unpriced:
        notes.append(f"{sum(r.unpriced.values()):,} executions have no price and count in no "
                     f"cost (models: {', '.join(r.unpriced)}).")
    if r.incomplete_before is not None:
        notes.append(f"Executions before {_when(r.incomplete_before, zone)} were purged with "
                     "their PR detail: the table does not count them (the figures above and the "
                     "charts do).")
    if r.from_rollups:
        notes.append("Some figures come from the rollups: p95 there is an estimate within 1 %.")
    title = f"Agent usage: {_caption(r)[len('Executions '):]}"
    return "".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>Agent usage</h1><p class=\"muted\">{_e(_caption(r))}</p>",
        _cards(d),
        f'<section><h2>Cost per {_e(d.bucket)} by repo</h2>',
        _chart(d, f"Cost per {d.bucket} by repo", repo_names, repo_stacks, True),
        f'</section><section><h2>Cost per {_e(d.bucket)} by model</h2>',
        _chart(d, f"Cost per {d.bucket} by model", model_names, model_stacks, True),
        f'</section><section><h2>Executions and failures per {_e(d.bucket)}</h2>',
        _chart(d, f"Executions and failures per {d.bucket}", ["succeeded", "failed"], runs,
               False, ["s0", "bad"]),
        '</section><section><h2>Report</h2>', _table(r), "</section>",
        "".join(f'<p class="muted">{_e(n)}</p>' for n in notes),
        '<footer class="muted"><p>Filters: ',
        _e(", ".join(f"{k}={v}" for k, v in filters.items())),
        f" · time zone {_e(f.tz)} · generated {_e(iso(r.generated_at))} by telemetry-orm</p>",
        f"</footer></main><script>{_SCRIPT}</script></body></html>\n",
    ])


# --- the terminal ------------------------------------------------------------------

_EIGHTHS = " ▏▎▍▌▋▊▉"


def terminal_chart(d: Dashboard, width: int, encoding: Optional[str]) -> str:
    """Cost per bucket as one bar a line, fitted to ``width`` columns;
    Unicode blocks when ``encoding`` can show them, else ``#``. A bucket
    only partly inside the range is marked ``*`` (said under the chart)."""
    try:
        "█▏".encode(encoding or "ascii")
        unicode = True
    except (UnicodeEncodeError, LookupError):
        unicode = False
    costs = [sum(d.cost_by_repo.get(b, {}).values()) for b in d.buckets]
    mark = "*" if d.partial else ""
    labels = [printable(b) + ("*" if b in d.partial else " " * len(mark)) for b in d.buckets]
    values = [_money(c) for c in costs]
    label_w = max((len(x) for x in labels), default=0)
    value_w = max((len(x) for x in values), default=0)
    room = max(width - label_w - value_w - 3, 10)
    top = max(costs, default=0.0)
    lines = [f"Cost per {d.bucket}"]
    for label, cost, value in zip(labels, costs, values, strict=True):
        cells = room * cost / top if top > 0 else 0.0
        if unicode:
            whole, part = int(cells), int((cells - int(cells)) * 8)
            bar = "█" * whole + (_EIGHTHS[part] if part else "")
        else:
            bar = "#" * round(cells)
        lines.append(f"{label.ljust(label_w)} {bar.ljust(room)} {value.rjust(value_w)}")
    if d.partial:
        lines.append(f"* {_partial_note(d)}")
    return "\n".join(lines) + "\n"

"""The `notion-sync status --html` report: one self-contained HTML file with inline SVG charts.

No script and no external resource: the file opens from disk, offline, and can be mailed. The
charts are drawn by matplotlib (Agg backend, no display needed) as SVG with text kept as text;
it picks the axes' ranges and ticks (integers for counts, so zero 429s read 0 to 1, not 1e-10).
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from html import escape

import matplotlib
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from notion_sync.status import (
    FAILED_PARTITION_HEADERS,
    FAILURE_HEADERS,
    PARTITION_HEADERS,
    PARTITIONS_TITLE,
    RECONCILIATION_HEADERS,
    RECONCILIATIONS_TITLE,
    SKIP_HEADERS,
    USAGE_HEADERS,
    USAGE_NOTE,
    StatusReport,
    failed_partition_rows,
    heading,
    partition_rows,
    pattern_rows,
    rate_limit_text,
    reconciliation_rows,
    usage_rows,
)

matplotlib.use("Agg")  # no display: should anything import pyplot, it gets no GUI backend
SIZE_IN = (8.0, 2.6)
COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#be185d"]
_RC = {"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False}
_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 24px; color: #111; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; }
td, th { padding: 3px 10px; border-bottom: 1px solid #ddd; }
td { white-space: nowrap; }
th { text-align: left; background: #f3f4f6; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 12px 0; } figcaption { color: #444; }
"""


def _html_table(headers: Sequence[str], rows: list[list[object]]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{value}</td>'
            if isinstance(value, int | float)
            else f"<td>{escape(str(value))}</td>"
            for value in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _new_figure(unit: str) -> tuple[Figure, Axes]:
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=SIZE_IN, layout="constrained")
        axes = figure.add_subplot()
    axes.set_ylabel(unit)
    axes.grid(axis="y", color="#e5e7eb")
    axes.set_axisbelow(True)
    return figure, axes


def _time_axis(axes: Axes) -> None:
    locator = AutoDateLocator(minticks=3, maxticks=8)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def _svg(figure: Figure, title: str) -> str:
    """The figure as an inline ``<svg>`` element with its caption (XML prolog and DOCTYPE dropped)."""
    buffer = io.StringIO()
    with matplotlib.rc_context(_RC):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    label = escape(title)
    return f'<figure role="img" aria-label="{label}">{svg}<figcaption>{label}</figcaption></figure>'


def line_chart(
    title: str,
    times: Sequence[datetime],
    series: dict[str, Sequence[float | None]],
    unit: str,
    limit: tuple[str, float] | None = None,
) -> str:
    """One line per series over time; buckets without a value (None) are left out and the line joins
    the points on either side, with a marker on every point; ``limit`` is a dashed horizontal line."""
    figure, axes = _new_figure(unit)
    for i, (name, values) in enumerate(series.items()):
        points = [(t, v) for t, v in zip(times, values, strict=True) if v is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            [line] = axes.plot(xs, ys, color=COLORS[i % len(COLORS)], marker="o", markersize=2.5, label=name)
            line.set_gid(f"series-{name}")
    if limit:
        axes.axhline(limit[1], color="#111", linestyle="--", linewidth=1, label=limit[0])
    axes.set_ylim(bottom=0)
    _time_axis(axes)
    axes.legend(loc="upper left", fontsize=8, frameon=False, ncols=len(series) + 1)
    return _svg(figure, title)


def count_chart(
    title: str, labels: Sequence[datetime] | Sequence[str], stacks: dict[str, Sequence[float]], unit: str
) -> str:
    """Stacked bars of counts (integer ticks, from 0 to at least 1), over time or one per label."""
    figure, axes = _new_figure(unit)
    over_time = bool(labels) and isinstance(labels[0], datetime)
    positions = list(labels) if over_time else list(range(len(labels)))
    width = _bar_width(positions) if over_time else 0.6
    base = [0.0] * len(positions)
    for i, (name, values) in enumerate(stacks.items()):
        axes.bar(positions, values, width, bottom=base, color=COLORS[i % len(COLORS)], label=name)
        base = [b + v for b, v in zip(base, values, strict=True)]
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylim(0, max([*base, 1]) * 1.1)
    if over_time:
        _time_axis(axes)
    else:
        axes.set_xticks(positions, [str(label) for label in labels])
        axes.set_xlim(-0.75, max(len(labels), 4) - 0.25)  # a lone bar stays a bar, not a wall
    if len(stacks) > 1 or not over_time:
        axes.legend(fontsize=8, frameon=False)
    return _svg(figure, title)


def _bar_width(times: Sequence[datetime]) -> float:
    """80% of the bucket width, in matplotlib's date unit (days)."""
    if len(times) < 2:
        return 1 / 1440
    return (times[1] - times[0]).total_seconds() / 86400 * 0.8


def _charts(report: StatusReport) -> list[str]:
    buckets, width = report.timeline, report.bucket_width_s
    if not buckets:
        return ["<p>No API calls recorded: no charts.</p>"]
    times = [b.start for b in buckets]
    failures: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for pattern in report.failures:
        failures[f"{pattern.error_code} ({pattern.status})"][pattern.object] += pattern.count
    objects = sorted({p.object for p in report.failures})
    return [
        line_chart(
            f"Request rate against the limit ({width:g} s buckets, UTC)",
            times,
            {"requests/s": [b.requests / width for b in buckets]},
            "req/s",
            limit=(f"limit {report.limit_rps:g} req/s", report.limit_rps),
        ),
        count_chart(
            f"429 rate_limited answers ({width:g} s buckets)",
            times,
            {"429s": [b.rate_limited for b in buckets]},
            "429s",
        ),
        line_chart(
            "Latency (buckets with calls)",
            times,
            {"p50": [b.p50_ms for b in buckets], "p95": [b.p95_ms for b in buckets]},
            "ms",
        ),
        count_chart(
            "Failed record attempts by object and error code",
            objects,
            {code: [by_object[o] for o in objects] for code, by_object in failures.items()},
            "records",
        )
        if objects
        else "<p>No failed record attempts.</p>",
    ]


def render_html(report: StatusReport) -> str:
    statuses = ", ".join(f"{status}: {count}" for status, count in report.http_statuses.items()) or "none"
    return "\n".join(
        [
            '<!doctype html><html lang="en"><head><meta charset="utf-8">',
            f"<title>notion-sync status</title><style>{_STYLE}</style></head><body>",
            f"<h1>notion-sync status</h1><p>{escape(heading(report))}</p>",
            "<h2>API usage</h2>",
            f"<p>{escape(USAGE_NOTE)}</p>",
            _html_table(USAGE_HEADERS, usage_rows(report)),
            f"<p>HTTP statuses: {escape(statuses)}</p>",
            f"<p>429s by the Notion limit they hit: {escape(rate_limit_text(report))}</p>",
            *_charts(report),
            "<h2>Partitions</h2>",
            f"<p>{escape(PARTITIONS_TITLE)}</p>",
            _html_table(PARTITION_HEADERS, partition_rows(report)),
            "<h2>Failed partitions</h2>",
            _html_table(FAILED_PARTITION_HEADERS, failed_partition_rows(report)),
            "<h2>Failure patterns</h2>",
            _html_table(FAILURE_HEADERS, pattern_rows(report.failures)),
            "<h2>Skipped records</h2>",
            _html_table(SKIP_HEADERS, pattern_rows(report.skips)),
            "<h2>Reconciliations</h2>",
            f"<p>{escape(RECONCILIATIONS_TITLE)}</p>",
            _html_table(RECONCILIATION_HEADERS, reconciliation_rows(report)),
            "</body></html>",
        ]
    )

"""The `notion-sync status --html` report: one self-contained HTML file with inline SVG charts.

No script and no external resource: the file opens from disk, offline, and can be mailed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from html import escape

from notion_sync.status import (
    FAILURE_HEADERS,
    PARTITION_HEADERS,
    SKIPPED_HEADERS,
    USAGE_HEADERS,
    StatusReport,
    failure_rows,
    heading,
    partition_rows,
    rate_limit_text,
    skipped_rows,
    usage_rows,
)

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 720, 220, 56, 28, 12
COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#be185d"]
_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 24px; color: #111; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; }
td, th { padding: 3px 10px; border-bottom: 1px solid #ddd; }
td { white-space: nowrap; }
th { text-align: left; background: #f3f4f6; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 12px 0; } figcaption { color: #444; } svg text { font: 11px system-ui, sans-serif; }
.legend span { margin-right: 14px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
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


def _frame(top: float, x_labels: Sequence[str], unit: str) -> list[str]:
    """Axes, horizontal grid lines with their values, and a few x labels."""
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    parts = []
    for i in range(5):
        y = PAD_TOP + plot_h * i / 4
        parts.append(f'<line x1="{PAD_LEFT}" x2="{WIDTH}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        parts.append(
            f'<text x="{PAD_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{top * (4 - i) / 4:.3g}</text>'
        )
    parts.append(f'<text x="4" y="{PAD_TOP - 2}">{escape(unit)}</text>')
    step = max(1, len(x_labels) // 6)
    for i in range(0, len(x_labels), step):
        x = _x(i, len(x_labels))
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle">{escape(x_labels[i])}</text>')
    return parts


def _x(i: float, n: int) -> float:
    return PAD_LEFT + (WIDTH - PAD_LEFT - 8) * (i + 0.5) / max(n, 1)


def _y(value: float, top: float) -> float:
    return PAD_TOP + (HEIGHT - PAD_TOP - PAD_BOTTOM) * (1 - value / top)


def _figure(parts: list[str], title: str, legend: str) -> str:
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(title)}">{"".join(parts)}</svg>'
    )
    return f"<figure>{svg}<figcaption>{escape(title)}</figcaption>{legend}</figure>"


def _legend(names: Sequence[str], extra: str = "") -> str:
    items = "".join(
        f'<span><i style="background:{COLORS[i % len(COLORS)]}"></i>{escape(name)}</span>'
        for i, name in enumerate(names)
    )
    return f'<div class="legend">{items}{escape(extra)}</div>'


def line_chart(
    title: str,
    x_labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    unit: str,
    limit: tuple[str, float] | None = None,
) -> str:
    """Lines over time (None = no data: the line breaks); ``limit`` draws a dashed horizontal line."""
    values = [v for line in series.values() for v in line if v is not None]
    top = max([*values, limit[1] if limit else 0.0, 1e-9]) * 1.1
    parts = _frame(top, x_labels, unit)
    for i, points in enumerate(series.values()):
        path, pen = [], "M"
        for j, value in enumerate(points):
            if value is None:
                pen = "M"
                continue
            path.append(f"{pen}{_x(j, len(points)):.1f},{_y(value, top):.1f}")
            pen = "L"
        color = COLORS[i % len(COLORS)]
        parts.append(f'<path d="{" ".join(path)}" fill="none" stroke="{color}" stroke-width="2"/>')
    extra = ""
    if limit:
        y = _y(limit[1], top)
        parts.append(
            f'<line x1="{PAD_LEFT}" x2="{WIDTH}" y1="{y:.1f}" y2="{y:.1f}" stroke="#111" '
            'stroke-dasharray="6 4"/>'
        )
        extra = f"- - - {limit[0]}"
    return _figure(parts, title, _legend(list(series), extra))


def bar_chart(title: str, x_labels: Sequence[str], stacks: dict[str, Sequence[float]], unit: str) -> str:
    """Stacked bars, one per x label, one colour per key of ``stacks``."""
    n = len(x_labels)
    top = max([sum(column) for column in zip(*stacks.values(), strict=True)] + [1e-9]) * 1.1
    parts = _frame(top, x_labels, unit)
    bar_w = min(60.0, max(1.0, (WIDTH - PAD_LEFT - 8) / max(n, 1) * 0.8))
    base = [0.0] * n
    for i, values in enumerate(stacks.values()):
        for j, value in enumerate(values):
            if value:
                y0, y1 = _y(base[j], top), _y(base[j] + value, top)
                parts.append(
                    f'<rect x="{_x(j, n) - bar_w / 2:.1f}" y="{y1:.1f}" width="{bar_w:.1f}" '
                    f'height="{y0 - y1:.1f}" fill="{COLORS[i % len(COLORS)]}"><title>{value:g}</title></rect>'
                )
                base[j] += value
    return _figure(parts, title, _legend(list(stacks)))


def _charts(report: StatusReport) -> list[str]:
    buckets, width = report.timeline, report.bucket_width_s
    if not buckets:
        return ["<p>No API calls recorded: no charts.</p>"]
    labels = [b.start.strftime("%H:%M:%S" if width < 60 else "%m-%d %H:%M") for b in buckets]
    failures: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for pattern in report.failures:
        failures[f"{pattern.error_code} ({pattern.status})"][pattern.object] += pattern.count
    objects = sorted({p.object for p in report.failures})
    return [
        line_chart(
            f"Request rate against the limit ({width:g} s buckets, UTC)",
            labels,
            {"requests/s": [b.requests / width for b in buckets]},
            "req/s",
            limit=(f"limit {report.limit_rps:g} req/s", report.limit_rps),
        ),
        bar_chart("429 rate_limited answers", labels, {"429s": [b.rate_limited for b in buckets]}, "429s"),
        line_chart(
            "Latency", labels, {"p50": [b.p50_ms for b in buckets], "p95": [b.p95_ms for b in buckets]}, "ms"
        ),
        bar_chart(
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
            _html_table(USAGE_HEADERS, usage_rows(report)),
            f"<p>HTTP statuses: {escape(statuses)}</p>",
            f"<p>429s by the Notion limit they hit: {escape(rate_limit_text(report))}</p>",
            *_charts(report),
            "<h2>Partitions</h2>",
            _html_table(PARTITION_HEADERS, partition_rows(report)),
            "<h2>Failure patterns</h2>",
            _html_table(FAILURE_HEADERS, failure_rows(report)),
            "<h2>Skipped records</h2>",
            _html_table(SKIPPED_HEADERS, skipped_rows(report)),
            "</body></html>",
        ]
    )

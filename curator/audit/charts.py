"""Inline SVG charts for the corpus report: no JavaScript, no fonts or scripts to fetch, no plotting library.

Two shapes cover every figure of the report: horizontal bars (one row per
category; several series side by side, or stacked, optionally as shares of the
row) and vertical columns (a histogram's bins). Every bar is a ``<rect
class="bar">`` with a ``<title>`` tooltip giving its exact value, and every
chart is an ``<svg class="chart" data-bars="N">``, so a browser test can check
that each chart drew something.
"""

from __future__ import annotations

from html import escape

COLOURS = ("#3b6ea8", "#d9822b", "#5a9e5a", "#b04a4a", "#7d62a8", "#8c6d4f", "#4a9bb0", "#b0a04a")
WIDTH = 760
CHAR_PX = 7.4  # a generous mean advance of a 12 px system-ui character, for label column widths
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}"


def _legend(names: list[str], y: float, x0: float) -> tuple[list[str], float]:
    """Legend swatches in a row that wraps; returns the elements and the height used."""
    out, x, line = [], x0, 0
    for k, name in enumerate(names):
        w = 18 + len(name) * CHAR_PX + 14
        if x + w > WIDTH and x > x0:
            x, line = x0, line + 1
        yy = y + line * 18
        out.append(f'<rect x="{x:.1f}" y="{yy:.1f}" width="12" height="12" fill="{COLOURS[k % len(COLOURS)]}"/>')
        out.append(f'<text x="{x + 16:.1f}" y="{yy + 10:.1f}" {FONT}>{escape(name)}</text>')
        x += w
    return out, (line + 1) * 18 + 6


def bars(
    labels: list[str],
    series: dict[str, list[float]],
    *,
    stacked: bool = False,
    shares: bool = False,
    label: str = "",
    title: str = "",
) -> str:
    """Horizontal bars, one row per label; ``shares`` scales each stacked row to 100%; ``title`` above them."""
    labels = [str(x) if x is not None else "(none)" for x in labels]
    names = list(series)
    if not labels or not names:
        return ""
    left = min(340, max(60, max(len(x) for x in labels) * CHAR_PX + 12))
    fits = int((left - 12) / CHAR_PX)  # a longer label is cut with an ellipsis; its bar's tooltip has it whole
    shown = [x if len(x) <= fits else x[: fits - 1] + "\u2026" for x in labels]
    right = 70
    plot = WIDTH - left - right
    head = 22 if title else 0
    legend, top = _legend(names, 4 + head, left) if len(names) > 1 else ([], 4)
    top += head
    band = 22 if stacked or len(names) == 1 else 8 + 13 * len(names)
    height = top + band * len(labels) + 6
    totals = [sum(series[n][i] or 0 for n in names) for i in range(len(labels))]
    peak = 1.0 if shares else max([*(totals if stacked else (v or 0 for n in names for v in series[n])), 1])
    parts = [*legend]
    if title:
        parts.append(f'<text x="0" y="15" font-weight="bold" {FONT}>{escape(title)}</text>')
    n_bars = 0
    for i, row in enumerate(labels):
        y0 = top + i * band
        parts.append(
            f'<text x="{left - 6:.1f}" y="{y0 + band / 2 + 4:.1f}" text-anchor="end" {FONT}>{escape(shown[i])}</text>'
        )
        x = left
        for k, name in enumerate(names):
            v = series[name][i] or 0
            scale = (v / totals[i] if totals[i] else 0) if shares else v / peak
            w = scale * plot
            h = band - 6 if stacked or len(names) == 1 else 11
            y = y0 + 3 if stacked or len(names) == 1 else y0 + 4 + k * 13
            bx = x if stacked else left
            tip = f"{row} · {name}: {_fmt(v)}" + (f" ({100 * scale:.1f}%)" if shares else "")
            if v:
                parts.append(
                    f'<rect class="bar" x="{bx:.1f}" y="{y:.1f}" width="{max(w, 1):.1f}" height="{h}" '
                    f'fill="{COLOURS[k % len(COLOURS)]}"><title>{escape(tip)}</title></rect>'
                )
                n_bars += 1
            if stacked:
                x += w
            elif v or len(names) == 1:
                parts.append(f'<text x="{bx + w + 4:.1f}" y="{y + h - 2:.1f}" {FONT}>{_fmt(v)}</text>')
        if stacked and not shares:
            parts.append(f'<text x="{x + 4:.1f}" y="{y0 + band / 2 + 4:.1f}" {FONT}>{_fmt(totals[i])}</text>')
    return _svg(parts, height, n_bars, label)


def columns(labels: list[str], series: dict[str, list[float]], *, x_title: str = "", label: str = "") -> str:
    """Vertical columns over ordered bins (a histogram), series side by side in each bin."""
    names = list(series)
    if not labels or not names:
        return ""
    legend, top = _legend(names, 4, 50) if len(names) > 1 else ([], 4)
    left, plot_h, bottom = 50, 160, 40
    plot_w = WIDTH - left - 10
    slot = plot_w / len(labels)
    width = max(1.0, (slot - 4) / len(names))
    peak = max([*(v or 0 for n in names for v in series[n]), 1])
    base = top + plot_h
    parts = [*legend, f'<line x1="{left}" y1="{base}" x2="{WIDTH - 10}" y2="{base}" stroke="#999"/>']
    parts.append(f'<text x="{left - 6}" y="{top + 10}" text-anchor="end" {FONT}>{_fmt(peak)}</text>')
    parts.append(f'<text x="{left - 6}" y="{base}" text-anchor="end" {FONT}>0</text>')
    n_bars = 0
    every = max(1, round(len(labels) / 12))  # at most ~12 bin labels under the axis
    for i, row in enumerate(labels):
        for k, name in enumerate(names):
            v = series[name][i] or 0
            if not v:
                continue
            h = max(1.0, v / peak * plot_h)
            x = left + i * slot + 2 + k * width
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{base - h:.1f}" width="{width:.1f}" height="{h:.1f}" '
                f'fill="{COLOURS[k % len(COLOURS)]}"><title>{escape(f"{row} · {name}: {_fmt(v)}")}</title></rect>'
            )
            n_bars += 1
        if i % every == 0:
            cx = left + (i + 0.5) * slot
            parts.append(f'<text x="{cx:.1f}" y="{base + 14}" text-anchor="middle" {FONT}>{escape(str(row))}</text>')
    if x_title:
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{base + 32}" text-anchor="middle" {FONT}>{escape(x_title)}</text>'
        )
    return _svg(parts, base + bottom, n_bars, label)


def _svg(parts: list[str], height: float, n_bars: int, label: str) -> str:
    return (
        f'<svg class="chart" data-bars="{n_bars}" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
        f'viewBox="0 0 {WIDTH} {height:.0f}">' + "".join(parts) + "</svg>"
    )

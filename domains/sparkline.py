"""A server-rendered SVG sparkline: the last hour of a domain's CPU % in a table cell.

Pure: numbers in, markup out, no models and no database. The markup carries no ``style``
attribute (the Content-Security-Policy forbids inline styles); the colour comes from the
``sparkline`` / ``sparkline-line`` CSS classes, with ``stroke="currentColor"`` as the
fallback when no stylesheet matches (a presentation attribute loses to any CSS rule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

# Room above the top and below the bottom of the scale, so the stroke is not clipped.
PAD = 1.0
# How long an isolated point (no data on either side) is drawn, in user units.
DOT = 1.0


def _num(v: float) -> str:
    """``v`` rounded to 1 decimal, without a useless ``.0`` or a ``-0``."""
    text = f"{v:.1f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _finite(v: float | None) -> float | None:
    """``v`` as a float, or None for no data (None, NaN, ±inf)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def sparkline(
    values: Sequence[float | None],
    *,
    width: int = 120,
    height: int = 24,
    maximum: float | None = None,
    label: str = "",
) -> SafeString:
    """An inline ``<svg>`` drawing ``values`` (oldest first) as one line, or "" without data.

    - None (also NaN and ±inf) is a gap: the line stops and starts again with a new ``M``;
      a point with gaps on both sides becomes a short horizontal segment, so it shows.
    - x: the first value at 0, the last at ``width``, evenly spaced (a lone value sits at 0).
    - y: 0 at ``height - 1``, ``maximum`` at 1; values outside [0, maximum] are clamped.
    - ``maximum`` None (or not a positive number): the largest value, and at least 1, so an
      all-zero series is a flat line at the bottom.
    """
    if width <= 0 or height <= 2 * PAD:
        raise ValueError(f"sparkline box too small: {width}x{height}")
    points = [_finite(v) for v in values]
    present = [v for v in points if v is not None]
    if not present:
        return mark_safe("")

    top = _finite(maximum)
    if top is None or top <= 0:
        top = max(max(present), 1.0)
    step = width / (len(points) - 1) if len(points) > 1 else 0.0
    span = height - 2 * PAD

    def y_of(v: float) -> float:
        return height - PAD - min(max(v, 0.0), top) / top * span

    # Runs of consecutive values with data: one subpath each.
    runs: list[list[tuple[float, float]]] = []
    run: list[tuple[float, float]] = []
    for i, v in enumerate(points):
        if v is None:
            if run:
                runs.append(run)
                run = []
        else:
            run.append((i * step, y_of(v)))
    if run:
        runs.append(run)

    commands: list[str] = []
    for run in runs:
        if len(run) == 1:
            x, y = run[0]
            # Centred on the point, shifted back inside the box at either end.
            x0 = min(max(x - DOT / 2, 0.0), width - DOT)
            run = [(max(x0, 0.0), y), (min(x0 + DOT, float(width)), y)]
        commands.append(f"M {_num(run[0][0])} {_num(run[0][1])}")
        commands.extend(f"L {_num(x)} {_num(y)}" for x, y in run[1:])

    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="sparkline" role="img" '
        'aria-label="{}" viewBox="0 0 {} {}" width="{}" height="{}">'
        '<path class="sparkline-line" fill="none" stroke="currentColor" stroke-width="1.5" '
        'stroke-linejoin="round" stroke-linecap="round" d="{}"/></svg>',
        label,
        width,
        height,
        width,
        height,
        " ".join(commands),
    )

"""The patch-window curve as server-side SVG: devices running a supplement over the time
since it was posted. Pure: numbers in, SVG text out (nothing from the network, no script)."""

import math
from collections.abc import Sequence
from datetime import timedelta

WIDTH, HEIGHT = 360, 150
LEFT, RIGHT, TOP, BOTTOM = 34, 10, 10, 26


def _unit(longest: timedelta) -> tuple[float, str]:
    """Seconds per axis unit and its name: hours up to three days, else days."""
    return (3600.0, "h") if longest <= timedelta(days=3) else (86400.0, "d")


def patch_window_svg(durations: Sequence[timedelta], total: int) -> str:
    """A step curve of how many devices ran the supplement ``t`` after posting.

    ``durations`` are each device's time from posting to running it; ``total``
    the devices it concerns (fixed, pending, blocked, unknown) — the dashed
    line the curve should reach. Returns an ``<svg>`` element (viewBox units).
    """
    ordered = sorted(durations)
    ceiling = max(total, len(ordered), 1)
    longest = ordered[-1] if ordered else timedelta(hours=1)
    per_unit, unit = _unit(longest)
    # A tenth more than the last arrival, so its step shows as a plateau, rounded up to a
    # whole number of round steps (1, 2 or 5 times a power of ten) for the axis labels.
    needed = max(longest.total_seconds() / per_unit * 1.1, 1.0)
    step = _round_step(needed)
    span = math.ceil(needed / step) * step
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(seconds: float) -> float:
        return LEFT + plot_w * min(seconds / per_unit / span, 1.0)

    def y(count: int) -> float:
        return TOP + plot_h * (1 - count / ceiling)

    points = [(x(0), y(0))]
    for count, duration in enumerate(ordered, start=1):
        at = x(duration.total_seconds())
        points += [(at, y(count - 1)), (at, y(count))]
    points.append((x(span * per_unit), y(len(ordered))))
    line = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
    area = f"{LEFT:.1f},{y(0):.1f} {line} {x(span * per_unit):.1f},{y(0):.1f}"
    fixed_share = len(ordered) * 100 // ceiling
    ticks = "".join(
        f'<text x="{x(f * span * per_unit):.1f}" y="{HEIGHT - 8}" class="tick" '
        f'text-anchor="middle">{_number(f * span)}{unit}</text>'
        for f in (i * step / span for i in range(round(span / step) + 1))
    )
    return (
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" class="curve" role="img" '
        f'aria-label="{len(ordered)} of {ceiling} devices fixed ({fixed_share}%) within '
        f'{_number(span)}{unit} of posting">'
        f'<line x1="{LEFT}" y1="{y(ceiling):.1f}" x2="{WIDTH - RIGHT}" y2="{y(ceiling):.1f}" '
        'class="target"/>'
        f'<line x1="{LEFT}" y1="{y(0):.1f}" x2="{WIDTH - RIGHT}" y2="{y(0):.1f}" class="axis"/>'
        f'<polygon points="{area}" class="fill"/>'
        f'<polyline points="{line}" class="line"/>'
        f'<text x="{LEFT - 4}" y="{y(ceiling) + 4:.1f}" class="tick" text-anchor="end">'
        f"{ceiling}</text>"
        f'<text x="{LEFT - 4}" y="{y(0) + 4:.1f}" class="tick" text-anchor="end">0</text>'
        f"{ticks}"
        f'<text x="{WIDTH - RIGHT}" y="{y(ceiling) - 2 + 12:.1f}" class="share" text-anchor="end">'
        f"{len(ordered)} of {ceiling} running it ({fixed_share}%)</text></svg>"
    )


def _round_step(span: float) -> float:
    """The axis step for ``span`` units: the smallest of 1, 2 or 5 times a power of ten
    that needs at most four steps (five labels)."""
    power = 10.0 ** math.floor(math.log10(span / 4))
    return next(m * power for m in (1, 2, 5, 10) if span / (m * power) <= 4)


def _number(value: float) -> str:
    """An axis label: whole numbers bare, others with one decimal."""
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"

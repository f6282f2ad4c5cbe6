"""The patch-window curve is well-formed SVG whose steps climb one device at a time and
end at the number of devices running the supplement."""

from __future__ import annotations

from datetime import timedelta
from xml.etree import ElementTree

from bsi.server.console.curve import BOTTOM, HEIGHT, TOP, patch_window_svg

NS = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ElementTree.Element:
    return ElementTree.fromstring(svg.replace("<svg ", f'<svg xmlns="{NS[1:-1]}" ', 1))


def test_the_curve_climbs_to_the_devices_running_it() -> None:
    durations = [timedelta(hours=h) for h in (30, 2, 5)]
    root = parse(patch_window_svg(durations, total=6))
    points = [
        tuple(map(float, p.split(",")))
        for p in root.find(f"{NS}polyline").get("points").split()  # type: ignore[union-attr]
    ]
    ys = [y for _, y in points]
    assert ys == sorted(ys, reverse=True)  # never goes down
    plot = HEIGHT - TOP - BOTTOM
    assert ys[0] == HEIGHT - BOTTOM  # starts at zero devices
    assert abs(ys[-1] - (TOP + plot * (1 - 3 / 6))) < 0.1  # ends at 3 of 6
    labels = [t.text for t in root.iter(f"{NS}text")]
    assert "3 of 6 running it (50%)" in labels
    assert "0h" in labels  # within three days the axis is in hours
    assert "3 of 6 devices" in root.get("aria-label", "")


def test_no_device_yet_and_long_windows() -> None:
    empty = parse(patch_window_svg([], total=0))
    assert "0 of 1 running it (0%)" in [t.text for t in empty.iter(f"{NS}text")]
    # 20 days and a tenth more, rounded up to round steps: 0, 10, 20, 30 days.
    assert axis(patch_window_svg([timedelta(days=20)], total=1), "d") == ["0", "10", "20", "30"]
    assert axis(patch_window_svg([timedelta(hours=5)], total=1), "h") == ["0", "2", "4", "6"]


def axis(svg: str, unit: str) -> list[str]:
    """The time axis' labels (those ending in ``unit``), without the unit."""
    texts = [t.text or "" for t in parse(svg).iter(f"{NS}text")]
    return [t.removesuffix(unit) for t in texts if t.endswith(unit)]

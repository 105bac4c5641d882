"""The CPU sparkline: a pure function, no database and no daemon needed."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from django.utils.safestring import SafeString

from domains.sparkline import sparkline

SVG = "{http://www.w3.org/2000/svg}"


def _parse(markup: str) -> tuple[ET.Element, ET.Element]:
    svg = ET.fromstring(markup)
    assert svg.tag == SVG + "svg"
    paths = svg.findall(SVG + "path")
    assert len(paths) == 1
    return svg, paths[0]


def _subpaths(d: str) -> list[list[tuple[float, float]]]:
    """``d`` as a list of subpaths, each a list of (x, y); checks the grammar on the way."""
    assert re.fullmatch(r"M -?[\d.]+ -?[\d.]+( [ML] -?[\d.]+ -?[\d.]+)*", d), d
    out: list[list[tuple[float, float]]] = []
    for cmd, x, y in re.findall(r"([ML]) (-?[\d.]+) (-?[\d.]+)", d):
        if cmd == "M":
            out.append([])
        out[-1].append((float(x), float(y)))
    return out


def test_element_and_attributes():
    out = sparkline([0, 50, 100], width=120, height=24, maximum=100, label="CPU")
    assert isinstance(out, SafeString)
    svg, path = _parse(out)
    assert svg.get("viewBox") == "0 0 120 24"
    assert svg.get("width") == "120" and svg.get("height") == "24"
    assert svg.get("class") == "sparkline"
    assert svg.get("role") == "img"
    assert svg.get("aria-label") == "CPU"
    assert path.get("class") == "sparkline-line"
    assert path.get("fill") == "none"
    # 1 px of padding: 0 at height - 1, the maximum at 1, x from 0 to the width.
    assert _subpaths(path.get("d")) == [[(0, 23), (60, 12), (120, 1)]]


def test_numbers_rounded_to_one_decimal():
    _, path = _parse(sparkline([1, 2, 3, 4], width=100, height=10, maximum=3))
    numbers = re.findall(r"[\d.]+", path.get("d"))
    assert numbers and all(len(n.partition(".")[2]) <= 1 for n in numbers)
    assert "33.3" in numbers  # 100 / 3


def test_gaps_break_the_path():
    values = [10, 20, None, 30, 40, None, None, 50, 60, 70]
    _, path = _parse(sparkline(values, maximum=100))
    d = path.get("d")
    assert d.count("M") == 3
    runs = _subpaths(d)
    assert [len(r) for r in runs] == [2, 2, 3]
    # Nothing is drawn at the gaps' x positions, and no point drops to zero (y = height - 1).
    step = 120 / 9
    xs = {x for r in runs for x, _ in r}
    assert not any(abs(x - round(i * step, 1)) < 0.01 for i in (2, 5, 6) for x in xs)
    assert all(y < 23 for r in runs for _, y in r)


def test_leading_and_trailing_gaps():
    _, path = _parse(sparkline([None, None, 5, 6, None], width=40, maximum=10))
    runs = _subpaths(path.get("d"))
    assert runs == [[(20, 12), (30, 9.8)]]


def test_all_zero_is_flat_at_the_bottom():
    _, path = _parse(sparkline([0] * 60))
    (run,) = _subpaths(path.get("d"))
    assert len(run) == 60
    assert {y for _, y in run} == {23}
    assert run[0][0] == 0 and run[-1][0] == 120


def test_auto_maximum_is_the_largest_value():
    _, path = _parse(sparkline([0, 40, 80], height=24))
    (run,) = _subpaths(path.get("d"))
    assert [y for _, y in run] == [23, 12, 1]


def test_auto_maximum_is_at_least_one():
    _, path = _parse(sparkline([0, 0.5], height=24))
    (run,) = _subpaths(path.get("d"))
    assert [y for _, y in run] == [23, 12]


def test_values_above_maximum_and_below_zero_are_clamped():
    _, path = _parse(sparkline([-5, 250, 100, 400], width=30, height=24, maximum=100))
    (run,) = _subpaths(path.get("d"))
    assert [y for _, y in run] == [23, 1, 1, 1]
    assert all(0 <= x <= 30 and 0 <= y <= 24 for x, y in run)


def test_isolated_point_is_visible():
    _, path = _parse(sparkline([None, 50, None, 20, 30], width=40, maximum=100))
    runs = _subpaths(path.get("d"))
    assert len(runs) == 2
    dot = runs[0]
    assert len(dot) == 2
    (x0, y0), (x1, y1) = dot
    assert y0 == y1 == 12  # horizontal, at the point's height
    assert x1 - x0 >= 1  # long enough to show
    assert x0 <= 10 <= x1  # around the point's x


@pytest.mark.parametrize(
    "values, where",
    [([7], (0, 1)), ([7, None], (0, 1)), ([None, 7], (119, 120))],
)
def test_isolated_point_at_an_edge_stays_in_the_box(values, where):
    _, path = _parse(sparkline(values, maximum=10))
    ((p0, p1),) = _subpaths(path.get("d"))
    assert (p0[0], p1[0]) == where


@pytest.mark.parametrize("values", [[], [None], [None] * 60, [float("nan"), None]])
def test_no_data_is_an_empty_string(values):
    out = sparkline(values, label="CPU")
    assert out == ""
    assert isinstance(out, SafeString)


def test_label_is_escaped():
    label = "<script>alert(\"x\")</script> & 'q'"
    out = sparkline([1, 2], label=label)
    assert "<script>" not in out
    assert "&lt;script&gt;" in out
    svg, _ = _parse(out)
    assert svg.get("aria-label") == label


def test_no_inline_style():
    out = sparkline([None, 1, None, 3, 4, None, 200], maximum=100, label="CPU")
    svg, path = _parse(out)
    assert "style" not in svg.attrib and "style" not in path.attrib
    assert "style" not in out


def test_box_too_small_is_refused():
    with pytest.raises(ValueError):
        sparkline([1, 2], height=2)
    with pytest.raises(ValueError):
        sparkline([1, 2], width=0)

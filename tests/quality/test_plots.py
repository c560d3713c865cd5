"""The inline-SVG helpers: well-formed SVG with a stable id, axes that cover the data."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from deepcvr.quality import plots

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    # Inline SVG in HTML needs no namespace; add it here so ElementTree can parse it.
    return ET.fromstring(svg.replace("<svg ", f'<svg xmlns="{SVG[1:-1]}" ', 1))


@pytest.mark.parametrize(
    "svg",
    [
        plots.bar_chart(
            "p", "t", ["a", "b"], {"train": [1.0, 0.01], "test": [0.5, None]}, log=True
        ),
        plots.bar_chart("p", "t", ["a"], {"x": [3.0]}, axis_label="n"),
        plots.histogram("p", "t", [(0, 1, 5), (1, 2, 0), (2, 3, 7)], "structures"),
        plots.loglog("p", "t", [(1, 100), (2, 50), (1000, 1)]),
    ],
)
def test_plots_are_well_formed_with_id_title_and_marks(svg: str) -> None:
    root = parse(svg)
    assert root.get("id") == "p" and root.find(f"{SVG}title").text == "t"  # type: ignore[union-attr]
    marks = root.findall(f"{SVG}rect") + root.findall(f"{SVG}polyline")
    assert marks


@pytest.mark.parametrize(
    "svg",
    [
        plots.bar_chart("p", "t", [], {}),
        plots.bar_chart("p", "t", ["a"], {"x": [0.0]}, log=True),
        plots.histogram("p", "t", [], "x"),
        plots.loglog("p", "t", [(0, 5)]),
    ],
)
def test_empty_data_still_gives_the_plot_saying_so(svg: str) -> None:
    root = parse(svg)
    assert root.get("id") == "p"
    assert [t.text for t in root.iter(f"{SVG}text")] == ["no data"]


def test_text_is_escaped() -> None:
    svg = plots.bar_chart("p<", "a & b", ["<x>"], {"s": [1.0]})
    assert "<x>" not in svg and "&lt;x&gt;" in svg and 'id="p&lt;"' in svg
    parse(svg)


def test_ticks_cover_the_data() -> None:
    assert plots.nice_ticks(7.3) == [0, 2, 4, 6, 8]
    assert plots.nice_ticks(0) == [0.0, 1.0]
    assert plots.log_ticks(0.003, 96) == [0.001, 0.01, 0.1, 1, 10, 100]
    assert plots.log_ticks(5, 5) == [1, 10]
    assert plots.human(1_234_567) == "1.23M" and plots.percent(0.0005) == "5.0e-04%"

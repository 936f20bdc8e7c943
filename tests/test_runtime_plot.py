"""area.png's chart, drawn with OpenCV: round ticks, every series where it belongs, a readable PNG."""

from __future__ import annotations

import numpy as np
import pytest

from echoseg.runtime.plot import BLUE, GREEN, RED, Series, line_chart, nice_ticks


@pytest.mark.parametrize("lo,hi,want", [(0, 6.2, [0, 2, 4, 6]), (0, 6.2, [0, 1, 2, 3, 4, 5, 6]),
                                        (2530, 4100, [3000, 3500, 4000]), (0.013, 0.049, [0.02, 0.03, 0.04])])
def test_nice_ticks_are_round_and_inside_the_range(lo, hi, want):
    ticks = nice_ticks(lo, hi, 6 if len(want) < 7 else 8)
    assert ticks == pytest.approx(want)
    assert all(lo <= t <= hi for t in ticks)
    assert nice_ticks(5, 5) and nice_ticks(float("nan"), 1)  # a flat or broken range still gets ticks


def _near(img, color, tol=40):
    return (np.abs(img.astype(int) - np.array(color)).sum(-1) < tol)


def test_line_chart_draws_each_series_where_its_values_are(tmp_path):
    import cv2

    t = np.linspace(0, 4, 200)
    y = 3000 + 400 * np.sin(2 * np.pi * t)
    peaks, troughs = [12, 62], [37, 87]
    out = line_chart(tmp_path / "a.png", [Series(t, y, "smoothed", BLUE, 2), Series(t[peaks], y[peaks], "ED", RED, 0, "o"),
                                          Series(t[troughs], y[troughs], "ES", GREEN, 0, "v")],
                     "clip: LV area", "time (s)", "LV area (px)", size=(800, 320))
    img = cv2.imread(str(out))
    assert img.shape == (320, 800, 3)
    blue, red, green = _near(img, BLUE), _near(img, RED), _near(img, GREEN)
    assert blue.sum() > 1000 and red.sum() > 40 and green.sum() > 40
    # the red dots sit above the green triangles (peaks high, troughs low; image rows grow downwards),
    # legend box (top right) left out
    plot = np.zeros(img.shape[:2], bool)
    plot[:, :600] = True
    assert np.nonzero(red & plot)[0].mean() < np.nonzero(green & plot)[0].mean() - 100
    # the curve spans the plot from left to right
    cols = np.nonzero(blue.any(0))[0]
    assert cols.min() < 100 and cols.max() > 700


def test_line_chart_refuses_an_unwritable_path(tmp_path):
    with pytest.raises(OSError, match="could not write the PNG"):
        line_chart(tmp_path / "missing" / "a.png", [Series(np.arange(3.0), np.arange(3.0), "x", BLUE)], "t", "x", "y")

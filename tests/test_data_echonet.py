"""EchoNet-Dynamic reader: polygons, ED/ES by area, scaling, and skipping bad input."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from echoseg.data.dataset import DataError, detect_layout, load_split
from echoseg.data.echonet import label_ed_es, polygon_area, polygon_mask, tracing_polygon
from echoseg.data.video import write_video


def square_tracing(x0: float, x1: float, y0: float, y1: float, chords: int = 11) -> list[tuple[float, ...]]:
    """A hand-made tracing of the rectangle [x0,x1]x[y0,y1]: long axis, then horizontal chords."""
    rows = [((x0 + x1) / 2, y0, (x0 + x1) / 2, y1)]
    for y in np.linspace(y0, y1, chords):
        rows.append((x0, float(y), x1, float(y)))
    return rows


def test_polygon_mask_of_hand_made_tracing():
    rows = square_tracing(20, 60, 10, 50)
    poly = tracing_polygon(rows)
    # down the X1 ends (x=20), back up the X2 ends (x=60): a closed rectangle.
    assert poly.shape == (22, 2)
    assert np.allclose(poly[:11, 0], 20) and np.allclose(poly[11:, 0], 60)
    assert poly[0, 1] == 10 and poly[10, 1] == 50 and poly[11, 1] == 50 and poly[-1, 1] == 10
    assert polygon_area(poly) == pytest.approx(40 * 40)
    mask = polygon_mask(poly, 112, 112)
    assert abs(int(mask.sum()) - 1600) <= 90  # pixel-centre rasterisation of a 40x40 square
    assert mask[30, 40] and not mask[5, 40] and not mask[30, 70]


def test_ed_es_by_area_not_csv_order():
    small = tracing_polygon(square_tracing(30, 50, 20, 40))
    big = tracing_polygon(square_tracing(20, 60, 10, 50))
    assert label_ed_es({3: small, 17: big}) == {3: "ES", 17: "ED"}
    assert label_ed_es({17: big, 3: small}) == {3: "ES", 17: "ED"}


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _mini_echonet(root: Path, video_size: int = 112) -> Path:
    """Two TEST videos written by hand in the documented format."""
    (root / "Videos").mkdir(parents=True)
    frames = np.full((6, video_size, video_size, 3), 40, np.uint8)
    for name in ("A", "B"):
        write_video(root / "Videos" / f"{name}.avi", frames, 50)
    _write_csv(root / "FileList.csv",
               ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"],
               [[n, 55.0, 20, 45, 112, 112, 50, 6, "TEST"] for n in ("A", "B")])
    rows = []
    for name in ("A", "B"):
        for frame, tr in ((1, square_tracing(30, 50, 20, 40)), (4, square_tracing(20, 60, 10, 50))):
            rows += [[f"{name}.avi", *r, frame] for r in tr]
    _write_csv(root / "VolumeTracings.csv", ["FileName", "X1", "Y1", "X2", "Y2", "Frame"], rows)
    return root


def test_reads_documented_format(tmp_path):
    root = _mini_echonet(tmp_path / "e")
    assert detect_layout(root) == "echonet"
    fs = load_split(root, "test")
    assert fs.images.shape == (4, 112, 112, 3) and fs.masks.shape == (4, 112, 112)
    assert fs.names == ["A#1", "A#4", "B#1", "B#4"]
    assert fs.phases == ["ES", "ED", "ES", "ED"]
    assert abs(int(fs.masks[1].sum()) - 1600) <= 90 and abs(int(fs.masks[0].sum()) - 400) <= 50
    assert fs.skipped.total == 0
    assert len(load_split(root, "train")) == 0


def test_tracings_scaled_to_video_size(tmp_path):
    root = _mini_echonet(tmp_path / "e", video_size=224)
    fs = load_split(root, "test", size=(112, 112))
    # Drawn at 224x224 from coordinates scaled x2, then resized back: same area as at 112.
    assert abs(int(fs.masks[1].sum()) - 1600) <= 120


def test_bad_rows_missing_and_corrupt_videos_are_skipped_and_counted(tmp_path):
    root = _mini_echonet(tmp_path / "e")
    # C: corrupt video; D: missing video; E: one traced frame; bad numeric row for A.
    (root / "Videos" / "C.avi").write_bytes(b"this is not an avi file at all" * 10)
    with open(root / "FileList.csv", "a", newline="") as fh:
        w = csv.writer(fh)
        for n in ("C", "D", "E"):
            w.writerow([n, 50, 1, 2, 112, 112, 50, 6, "TEST"])
    shutil.copy(root / "Videos" / "A.avi", root / "Videos" / "E.avi")
    with open(root / "VolumeTracings.csv", "a", newline="") as fh:
        w = csv.writer(fh)
        for n in ("C", "D"):
            for frame in (1, 4):
                w.writerows([[f"{n}.avi", *r, frame] for r in square_tracing(20, 60, 10, 50)])
        w.writerows([["E.avi", *r, 2] for r in square_tracing(20, 60, 10, 50)])
        w.writerow(["A.avi", "x", "1", "2", "3", 1])
    fs = load_split(root, "test")
    assert fs.names == ["A#1", "A#4", "B#1", "B#4"]
    reasons = dict(fs.skipped.reasons)
    assert reasons["bad tracing row"] == 1
    assert reasons["fewer than 2 traced frames"] == 1
    assert reasons[next(r for r in reasons if r.startswith("missing or unreadable video (file not found"))] == 1
    assert sum(v for r, v in reasons.items() if r.startswith("missing or unreadable video")) == 2
    assert fs.skipped.total == 4
    assert "skipped 4" in fs.skipped.summary()


def test_missing_columns_one_error_naming_expected(tmp_path):
    root = _mini_echonet(tmp_path / "e")
    _write_csv(root / "VolumeTracings.csv", ["FileName", "X1", "Y1", "Frame"], [["A.avi", 1, 2, 1]])
    with pytest.raises(DataError, match=r"missing columns \['X2', 'Y2'\].*expected columns"):
        load_split(root, "test")


def test_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match="not a dataset"):
        detect_layout(tmp_path)


def test_names_that_leave_videos_are_refused_in_one_line_each(tmp_path, caplog):
    import logging

    from echoseg.data.echonet import name_problem, read_filelist

    root = _mini_echonet(tmp_path / "data" / "e")
    outside = tmp_path / "in"
    outside.mkdir()
    shutil.copy(root / "Videos" / "A.avi", outside / "good.avi")
    escapes = ["../../../in/good", str(outside / "good")]
    with open(root / "FileList.csv", "a", newline="") as fh:
        w = csv.writer(fh)
        for n in escapes:
            w.writerow([n, 50, 1, 2, 112, 112, 50, 6, "TEST"])
    with open(root / "VolumeTracings.csv", "a", newline="") as fh:
        w = csv.writer(fh)
        for n in escapes:
            for frame in (1, 4):
                w.writerows([[f"{n}.avi", *r, frame] for r in square_tracing(20, 60, 10, 50)])
    assert (root / "Videos" / f"{escapes[0]}.avi").resolve() == (outside / "good.avi").resolve()  # would be read
    with caplog.at_level(logging.WARNING):
        fs = load_split(root, "test")
        names = [r.name for r in read_filelist(root)]
    assert fs.names == ["A#1", "A#4", "B#1", "B#4"]  # the rest goes on
    assert names == ["A", "B"]
    refused = [r.getMessage() for r in caplog.records if "inside Videos/" in r.getMessage()]
    # one line per FileList row (once, however often the list is read) and one per tracing name (not per row)
    assert sum("FileList.csv" in m for m in refused) == 2 and sum("VolumeTracings.csv" in m for m in refused) == 2
    assert all("\n" not in m for m in refused)
    assert fs.skipped.reasons["name does not stay inside Videos/ (a path, not a file name)"] == 2
    assert [name_problem(n) is None for n in ("0X1A2B", "clip[apical]", "a b", "..", "a/b", "/x", "..\\x")] == \
        [True, True, True, False, False, False, False]

"""The synthetic generator: deterministic, EchoNet layout, truth that is internally consistent."""

from __future__ import annotations

import csv

import numpy as np

from echoseg.data.echonet import area_length_volume_px3, polygon_area, polygon_mask, tracing_polygon
from echoseg.data.synthetic import make_video
from echoseg.data.video import probe, read_video


def test_deterministic_for_a_seed():
    a, b, c = make_video(5, frames=12), make_video(5, frames=12), make_video(6, frames=12)
    assert np.array_equal(a.frames, b.frames) and a.ef == b.ef
    assert not np.array_equal(a.frames, c.frames)


def test_beats_ed_es_and_ef_are_consistent():
    v = make_video(11, frames=120)
    area = v.masks.sum(axis=(1, 2))
    assert len(v.ed_frames) >= 2 and len(v.es_frames) >= 1
    for ed in v.ed_frames:  # ED is a local maximum of the true area, ES a local minimum
        assert area[ed] >= area[max(0, ed - 3): ed + 4].max() - 2
    for es in v.es_frames:
        assert area[es] <= area[max(0, es - 3): es + 4].min() + 2
    assert 20 <= v.ef <= 80
    # EF from the exact masks by area-length agrees with the recorded truth.
    def vol(i):
        m = v.masks[i]
        ys, xs = np.nonzero(m)
        pts = np.stack([xs, ys], 1).astype(float)
        length = max(np.linalg.norm(pts - p, axis=1).max() for p in pts[:: max(1, len(pts) // 200)])
        return area_length_volume_px3(m.sum(), length)
    ef_masks = 100 * (1 - vol(v.es_frames[0]) / vol(v.ed_frames[0]))
    assert abs(ef_masks - v.ef) < 8


def test_tracing_polygon_matches_exact_mask():
    v = make_video(3, frames=60)
    for frame, lines in v.tracings.items():
        poly = tracing_polygon([tuple(r) for r in lines])
        m = polygon_mask(poly, 112, 112)
        inter = np.logical_and(m, v.masks[frame]).sum()
        assert 2 * inter / (m.sum() + v.masks[frame].sum()) > 0.95
        assert polygon_area(poly) > 300


def test_dataset_layout(synth_dir):
    rows = list(csv.DictReader(open(synth_dir / "FileList.csv")))
    assert len(rows) == 12
    assert {r["Split"] for r in rows} == {"TRAIN", "VAL", "TEST"}
    assert list(rows[0]) == ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS",
                             "NumberOfFrames", "Split"]
    tr = list(csv.DictReader(open(synth_dir / "VolumeTracings.csv")))
    per = {}
    for r in tr:
        per.setdefault((r["FileName"], r["Frame"]), 0)
        per[(r["FileName"], r["Frame"])] += 1
    assert set(per.values()) == {21}  # long axis + 20 chords, as EchoNet-Dynamic
    name = rows[0]["FileName"]
    info = probe(synth_dir / "Videos" / f"{name}.avi")
    assert (info.width, info.height, round(info.fps)) == (112, 112, 50)
    assert read_video(synth_dir / "Videos" / f"{name}.avi").shape == (40, 112, 112, 3)

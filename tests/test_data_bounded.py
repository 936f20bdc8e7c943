"""Bounded-memory EchoNet reading: only traced frames, verified seeking, off-frame tracings,
max_frames, the frame cache, lazily read unlabelled frames, still images refused."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from echoseg.data import seek
from echoseg.data.dataset import DataError, load_split, load_unlabelled
from echoseg.data.echonet import OFF_FRAME
from echoseg.data.synthetic import write_dataset
from echoseg.data.video import VideoError, iter_frames, probe, read_frames, read_video, write_video


@pytest.fixture()
def small(tmp_path) -> Path:
    return write_dataset(tmp_path / "d", videos=10, frames=30, seed=3)


def _traced(root: Path) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    with open(root / "VolumeTracings.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["FileName"][:-4], set()).add(int(row["Frame"]))
    return out


def test_only_the_traced_frames_are_read_and_kept_as_copies(small, monkeypatch):
    import echoseg.data.echonet as echonet

    asked: dict[str, list[int]] = {}
    real = echonet.read_frames

    def spy(path, indices):
        asked[Path(path).stem] = sorted(indices)
        got = real(path, indices)
        assert all(f.base is None for f in got.values())  # each frame its own array, no view of a video
        return got

    monkeypatch.setattr(echonet, "read_frames", spy)
    fs = load_split(small, "train")
    traced = _traced(small)
    assert asked and all(set(v) == traced[k] for k, v in asked.items())
    assert len(fs) == 2 * len(asked) and fs.images.shape[1:] == (112, 112, 3)
    video = read_video(small / "Videos" / f"{fs.names[0].split('#')[0]}.avi")
    np.testing.assert_array_equal(fs.images[0], video[int(fs.names[0].split("#")[1])])


def test_seeking_is_verified_once_per_kind_and_falls_back_when_wrong(tmp_path, monkeypatch):
    frames = np.stack([np.full((32, 32, 3), 10 * i, np.uint8) for i in range(12)])
    a = write_video(tmp_path / "a.avi", frames, 25)
    b = write_video(tmp_path / "b.avi", frames, 25)
    monkeypatch.setattr(seek, "_SEEK_TRUSTED", {})
    got = read_frames(a, [3, 9])
    seq = list(iter_frames(a))
    assert sorted(got) == [3, 9] and all(np.array_equal(got[i], seq[i]) for i in got)
    assert list(seek._SEEK_TRUSTED.values()) == [True]
    assert sorted(read_frames(a, [3, 40])) == [3]  # beyond the end: absent
    # A codec whose seeks land on the wrong frame: the check catches it, then every file decodes sequentially.
    monkeypatch.setattr(seek, "_SEEK_TRUSTED", {})
    real = seek._seeked
    monkeypatch.setattr(seek, "_seeked", lambda cap, wanted, n: {i: f for i, f in zip(wanted, real(cap, [0] * len(wanted), n).values())}
                        if real(cap, [0], n) is not None else None)
    got = read_frames(b, [3, 9])
    assert all(np.array_equal(got[i], seq[i]) for i in (3, 9))
    assert list(seek._SEEK_TRUSTED.values()) == [False]
    monkeypatch.setattr(seek, "_seeked", lambda *a: pytest.fail("seeking must not be used once found inexact"))
    assert np.array_equal(read_frames(a, [5])[5], seq[5])


def _shift_tracings(root: Path, names: set[str] | None, dx: float) -> None:
    path = root / "VolumeTracings.csv"
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    for r in rows[1:]:
        if names is None or r[0][:-4] in names:
            r[1], r[3] = str(float(r[1]) + dx), str(float(r[3]) + dx)
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def test_off_frame_tracings_are_skipped_and_an_all_off_split_is_refused(small):
    names = sorted(_traced(small))
    full = load_split(small, "train")
    _shift_tracings(small, {names[0]}, 500.0)  # entirely off the 112x112 frame
    _shift_tracings(small, {names[1]}, 60.0)  # half off the frame
    fs = load_split(small, "train")
    assert fs.skipped.reasons[OFF_FRAME] == 4
    assert not any(n.startswith((names[0], names[1])) for n in fs.names) and len(fs) == len(full) - 4
    assert all(m.any() for m in fs.masks)
    _shift_tracings(small, None, 1000.0)
    with pytest.raises(DataError, match="no traced frame of the train split has any LV pixel"):
        load_split(small, "train")


def test_max_frames_reads_only_that_many_spread_over_the_split(small, monkeypatch):
    import echoseg.data.echonet as echonet

    opened: list[str] = []
    real = echonet.read_frames
    monkeypatch.setattr(echonet, "read_frames", lambda p, i: opened.append(Path(p).stem) or real(p, i))
    fs = load_split(small, "train", max_frames=4)
    assert len(opened) == 2  # two videos of seven, two traced frames each
    full = load_split(small, "train")
    assert len(fs) == 4 and set(fs.names) <= set(full.names)
    assert fs.names == [n for n in full.names if n in fs.names]  # file order kept


def test_progress_is_called_per_video(small):
    calls: list[tuple[int, int]] = []
    load_split(small, "val", progress=lambda d, n: calls.append((d, n)))
    assert calls and calls[-1][0] == calls[-1][1] and [d for d, _ in calls] == list(range(1, len(calls) + 1))


def test_frame_cache_is_reused_until_a_source_changes(small, tmp_path, caplog, monkeypatch):
    cache = tmp_path / "cache"
    first = load_split(small, "train", cache=cache)
    again = load_split(small, "train", cache=cache)
    assert isinstance(again.images, np.memmap) and again.names == first.names
    np.testing.assert_array_equal(again.images, first.images)
    np.testing.assert_array_equal(again.masks, first.masks)
    video = small / "Videos" / f"{first.names[0].split('#')[0]}.avi"
    st = video.stat()
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    with caplog.at_level(logging.INFO, logger="echoseg.data"):
        rebuilt = load_split(small, "train", cache=cache)
    assert "stale" in caplog.text and rebuilt.names == first.names
    assert not (small / ".echoseg-cache").exists()  # off unless asked for
    monkeypatch.setenv("ECHOSEG_FRAME_CACHE", "1")
    load_split(small, "val")
    assert (small / ".echoseg-cache" / "labelled-val-112x112" / "meta.json").is_file()


def test_unlabelled_frames_are_lazy_sampled_and_match_the_videos(small, tmp_path):
    lazy = load_unlabelled(small, "train", max_frames=50)
    assert len(lazy) == 50 and lazy.shape == (50, 112, 112, 3)
    pick = np.array([0, 7, 49, 7])
    batch = lazy[pick]
    assert batch.shape == (4, 112, 112, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[1], batch[3])
    everything = load_unlabelled(small, "train", max_frames=0)
    train_videos = sorted((small / "Videos").glob("*.avi"))[:7]
    assert len(everything) == 7 * 30
    np.testing.assert_array_equal(everything[31], read_video(train_videos[1])[1])
    cached = load_unlabelled(small, "train", max_frames=50, cache=tmp_path / "c")
    np.testing.assert_array_equal(cached[pick], batch)
    np.testing.assert_array_equal(load_unlabelled(small, "train", max_frames=50, cache=tmp_path / "c")[pick], batch)


def test_a_still_image_renamed_avi_is_refused(tmp_path):
    import cv2

    png = tmp_path / "frame.avi"
    ok, buf = cv2.imencode(".png", np.zeros((40, 40, 3), np.uint8))
    png.write_bytes(buf.tobytes())
    with pytest.raises(VideoError, match="PNG still image, not a video"):
        probe(png)
    with pytest.raises(VideoError, match="PNG still image"):
        list(iter_frames(png))
    assert os.environ.get("OPENCV_FFMPEG_LOGLEVEL") == "-8"


def test_unknown_frame_rate_is_reported_as_zero():
    from echoseg.data.capture import believable_fps as _believable_fps

    assert _believable_fps(float("nan")) == 0.0 and _believable_fps(0.0) == 0.0 and _believable_fps(90000.0) == 0.0
    assert _believable_fps(50.0) == 50.0

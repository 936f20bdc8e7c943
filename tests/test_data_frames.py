"""Frame-folder reader: split folders, flat 80/10/10 split, resizing, non-zero masks."""

from __future__ import annotations

import cv2
import numpy as np

from echoseg.data.dataset import detect_layout, load_split, load_unlabelled


def _write_pair(folder, name, size=(200, 150), value=255):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    h, w = size
    img = np.full((h, w), 90, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = value
    cv2.imwrite(str(folder / "images" / f"{name}.png"), img)
    cv2.imwrite(str(folder / "masks" / f"{name}.png"), mask)


def test_split_folders_resize_and_binarise(tmp_path):
    for split in ("train", "val", "test"):
        for i in range(3):
            _write_pair(tmp_path / split, f"{split}{i}", value=7)  # any non-zero value is LV
    assert detect_layout(tmp_path) == "frames"
    fs = load_split(tmp_path, "val")
    assert fs.images.shape == (3, 112, 112, 3)
    assert fs.masks.dtype == bool
    frac = fs.masks.mean(axis=(1, 2))
    assert np.allclose(frac, 0.25, atol=0.02)  # the centre half in each axis survives resizing
    assert fs.names == ["val0", "val1", "val2"]


def test_flat_folder_split_80_10_10_fixed(tmp_path):
    for i in range(20):
        _write_pair(tmp_path, f"f{i:02d}")
    parts = {s: load_split(tmp_path, s).names for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    assert set(parts["train"]).isdisjoint(parts["val"]) and set(parts["val"]).isdisjoint(parts["test"])
    assert sorted(sum(parts.values(), [])) == [f"f{i:02d}" for i in range(20)]
    assert load_split(tmp_path, "val").names == parts["val"]  # deterministic


def test_unpaired_and_unreadable_files_skipped(tmp_path):
    _write_pair(tmp_path / "train", "ok")
    cv2.imwrite(str(tmp_path / "train" / "images" / "lonely.png"), np.zeros((10, 10), np.uint8))
    (tmp_path / "train" / "images" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "train" / "masks" / "broken.png").write_bytes(b"not a png")
    fs = load_split(tmp_path, "train")
    assert fs.names == ["ok"]
    assert fs.skipped.reasons["no mask with the same name in masks/"] == 1
    assert fs.skipped.reasons["unreadable image or mask file"] == 1
    assert load_unlabelled(tmp_path, "train").shape[0] == 2  # ok + lonely (broken is unreadable)

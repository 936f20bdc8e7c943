"""A mask of another size than its image is used stretched, but never silently."""

from __future__ import annotations

import logging

import numpy as np

from echoseg.data.frames import load_frames


def test_a_mask_of_another_size_is_warned_about_once_per_file(tmp_path, caplog):
    import cv2

    for name, mask_size in (("same", (64, 64)), ("small", (32, 48))):
        for sub in ("images", "masks"):
            (tmp_path / sub).mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), np.full((64, 64, 3), 90, np.uint8))
        mask = np.zeros(mask_size, np.uint8)
        mask[8:20, 8:20] = 255
        cv2.imwrite(str(tmp_path / "masks" / f"{name}.png"), mask)
    with caplog.at_level(logging.WARNING, logger="echoseg.data.frames"):
        frames = [load_frames(tmp_path, split) for split in ("train", "val", "test")]
    assert sum(len(f) for f in frames) == 2  # both pairs are still used
    warned = [r.getMessage() for r in caplog.records if "stretched" in r.getMessage()]
    assert len(warned) == 1 and "small.png" in warned[0] and "48x32" in warned[0] and "64x64" in warned[0]

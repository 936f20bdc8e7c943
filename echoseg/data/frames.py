"""Frame-folder reader (the paper's own data): DIR/{train,val,test}/{images,masks}/NAME.png.

Masks are binary (any non-zero pixel is LV); images of any size are resized to the model
input. A folder with only images/ and masks/ is split 80/10/10 by video with a fixed seed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .frameset import DataError, FrameSet, SkipReport, resize_pair

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.8, 0.1)

log = logging.getLogger(__name__)


def _images_in(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def split_names(names: list[str], split: str) -> list[str]:
    """The 80/10/10 share of ``names`` for a split, dealt by video (``<video>_<frame>`` names):
    frames of one video (patient) never land in two splits."""
    from .folds import group_by_video, split_videos

    groups = group_by_video(names)
    videos = split_videos(list(groups), SPLIT_FRACTIONS, SPLIT_SEED)[split]
    return sorted(names[i] for v in videos for i in groups[v])


def split_dir(root: Path, split: str) -> tuple[Path, list[str] | None]:
    """(folder holding images/ and masks/, names to keep or None for all) for a split."""
    if (root / split / "images").is_dir():
        return root / split, None
    if (root / "images").is_dir():
        names = list(_images_in(root / "images"))
        return root, split_names(names, split)
    raise DataError(f"{root}: no {split}/images/ nor images/ folder; expected DIR/{{train,val,test}}/"
                    "{images,masks}/NAME.png or DIR/{images,masks}/NAME.png")


def load_frames(root: str | Path, split: str, size: tuple[int, int] = (112, 112),
                report: SkipReport | None = None) -> FrameSet:
    """Image/mask pairs of one split; unreadable or unpaired files are skipped and counted."""
    import cv2

    root = Path(root)
    report = report if report is not None else SkipReport()
    if split not in ("train", "val", "test"):
        raise DataError(f"unknown split {split!r}; use train, val or test")
    folder, keep = split_dir(root, split)
    if not (folder / "masks").is_dir():
        raise DataError(f"{folder}: has images/ but no masks/ folder")
    images = _images_in(folder / "images")
    masks = _images_in(folder / "masks")
    names = keep if keep is not None else list(images)
    items = []
    for name in names:
        if name not in masks:
            report.skip(f"image {name}", "no mask with the same name in masks/")
            continue
        img = cv2.imread(str(images[name]), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(masks[name]), cv2.IMREAD_GRAYSCALE)
        if img is None or mask is None:
            report.skip(f"image {name}", "unreadable image or mask file")
            continue
        if img.shape[:2] != mask.shape[:2]:
            log.warning("%s: mask is %dx%d but its image is %dx%d; the mask is stretched to the image (check they "
                        "belong together)", masks[name], mask.shape[1], mask.shape[0], img.shape[1], img.shape[0])
            mask = cv2.resize(mask, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
        img, m = resize_pair(img, mask > 0, size)
        items.append((name, "", img, m))
    return FrameSet.from_items(items, size, report, "frames")


def load_frames_unlabelled(root: str | Path, split: str = "train", size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """Training images plus any in DIR/train/unlabelled/ (frames without masks)."""
    import cv2

    root = Path(root)
    folder, keep = split_dir(root, split)
    paths = [p for n, p in _images_in(folder / "images").items() if keep is None or n in keep]
    if (folder / "unlabelled").is_dir():
        paths += list(_images_in(folder / "unlabelled").values())
    frames = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is not None:
            frames.append(cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA))
    return np.stack(frames) if frames else np.zeros((0, size[0], size[1], 3), np.uint8)

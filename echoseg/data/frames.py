"""Frame-folder reader (the paper's own data): DIR/{train,val,test}/{images,masks}/NAME.png.

Masks are binary (any non-zero pixel is LV); images of any size are resized to the model
input. A folder with only images/ and masks/ is split 80/10/10 by video with a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .frameset import DataError, FrameSet, FrameSetBuilder, Progress, SkipReport, log, log_progress, resize_pair

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.8, 0.1)



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


def videos_per_split(root: str | Path) -> dict[str, int]:
    """How many videos (``<video>_<frame>`` names) each split of a frame folder holds, in either layout;
    a split with no images is left out."""
    from .folds import group_by_video

    counts = {}
    for split in ("train", "val", "test"):
        try:
            folder, keep = split_dir(Path(root), split)
        except DataError:
            return {}
        names = keep if keep is not None else list(_images_in(folder / "images"))
        if names:
            counts[split] = len(group_by_video(names))
    return counts


def load_frames(root: str | Path, split: str, size: tuple[int, int] = (112, 112),
                report: SkipReport | None = None, progress: Progress | None = None,
                max_frames: int = 0) -> FrameSet:
    """Image/mask pairs of one split; unreadable or unpaired files are skipped and counted.

    ``max_frames`` > 0 reads only that many pairs, spread evenly over the split.
    """
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
    if max_frames and len(names) > max_frames:
        names = [names[int(i)] for i in np.linspace(0, len(names) - 1, max_frames).round()]
    tick = progress or log_progress(f"{split} images", len(names))
    built = FrameSetBuilder(len(names), size)
    for done, name in enumerate(names, start=1):
        tick(done, len(names))
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
        built.add(name, "", img, m)
    fs = built.build(report, "frames")
    if len(fs) and not fs.masks.any():
        raise DataError(f"{folder / 'masks'}: no mask of the {split} split has any LV pixel (all black); "
                        "masks must mark the LV with non-zero pixels")
    return fs


def unlabelled_paths(root: str | Path, split: str = "train") -> list[Path]:
    """Training images plus any in DIR/train/unlabelled/ (frames without masks) that OpenCV can read."""
    import cv2

    folder, keep = split_dir(Path(root), split)
    paths = [p for n, p in _images_in(folder / "images").items() if keep is None or n in keep]
    if (folder / "unlabelled").is_dir():
        paths += list(_images_in(folder / "unlabelled").values())
    return [p for p in paths if cv2.haveImageReader(str(p))]

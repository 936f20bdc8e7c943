"""One entry point for both layouts: detect which one a folder is, and load a split."""

from __future__ import annotations

from pathlib import Path

from .frameset import DataError, FrameSet, Progress, SkipReport
from .lazy import LazyFrames


def detect_layout(root: str | Path) -> str:
    """'echonet' (FileList.csv) or 'frames' (image/mask folders); a clear error otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder")
    if (root / "FileList.csv").is_file():
        return "echonet"
    if (root / "train" / "images").is_dir() or (root / "images").is_dir():
        return "frames"
    raise DataError(f"{root}: not a dataset; expected EchoNet-Dynamic (FileList.csv, VolumeTracings.csv, "
                    "Videos/) or frame folders (DIR/{train,val,test}/{images,masks}/NAME.png); "
                    "make a synthetic one with: echo-synth DIR")


def load_split(root: str | Path, split: str, size: tuple[int, int] = (112, 112),
               report: SkipReport | None = None, progress: Progress | None = None,
               max_frames: int = 0, cache: bool | str | Path | None = None) -> FrameSet:
    """Labelled frames of ``split`` (train/val/test) from either layout, at model size.

    ``max_frames`` > 0: only about that many frames, spread over the split (reads only what
    it needs). ``cache``: EchoNet-Dynamic's memory-mapped frame cache (see data/cache.py).
    """
    layout = detect_layout(root)
    if layout == "echonet":
        from .echonet import load_echonet

        return load_echonet(root, split, size, report, progress=progress, max_frames=max_frames, cache=cache)
    from .frames import load_frames

    return load_frames(root, split, size, report, progress=progress, max_frames=max_frames)


def load_unlabelled(root: str | Path, split: str = "train", size: tuple[int, int] = (112, 112),
                    max_frames: int = 20000, cache: bool | str | Path | None = None) -> LazyFrames:
    """Frames without masks for the autoencoder, read on demand (len, x[idx] like an N,H,W,3 array)."""
    from .unlabelled import load_echonet_unlabelled, load_frames_unlabelled

    if detect_layout(root) == "echonet":
        return load_echonet_unlabelled(root, split, size, max_frames, cache=cache)
    return load_frames_unlabelled(root, split, size, max_frames)


__all__ = ["DataError", "FrameSet", "LazyFrames", "SkipReport", "detect_layout", "load_split", "load_unlabelled"]

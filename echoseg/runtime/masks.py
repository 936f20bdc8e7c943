"""Per-frame LV masks on the input's own pixel grid, written as the frames stream (bounded memory).

``masks.npz`` holds one array, ``masks``: frames x H x W uint8, 1 inside the LV, 0 outside (what
``np.load(path)["masks"]`` gives). Its frame count is known only at the end, so the frames go,
1 bit per pixel, to a scratch file beside it, and the archive is assembled from that in chunks on
close. ``masks/000000.png`` ...: one 8-bit PNG per frame, 255 inside the LV (viewable as is).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

MASKS_NPZ = "masks.npz"
MASKS_DIR = "masks"
MASK_FORMATS = ("npz", "png")
#: Frames unpacked at a time while the npz is assembled.
_CHUNK_FRAMES = 64


class NpzMaskSink:
    """A FrameSink writing every mask into ``path`` (masks.npz) on close()."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._bits_path = path.with_name(f".{path.name}.bits")
        self._bits = open(self._bits_path, "wb")
        self._shape: tuple[int, int] | None = None
        self._frames = 0

    def __call__(self, index: int, frame: np.ndarray, mask: np.ndarray) -> None:
        if self._shape is None:
            self._shape = mask.shape[:2]
        elif mask.shape[:2] != self._shape:
            raise ValueError(f"{self.path}: frame {index} mask is {mask.shape[:2]}, earlier ones {self._shape}")
        self._bits.write(np.packbits(mask.astype(bool, copy=False), axis=None).tobytes())
        self._frames += 1

    def close(self) -> None:
        """Assemble masks.npz (deflated) and remove the scratch file; nothing written for zero frames."""
        if self._bits.closed:
            return
        self._bits.close()
        try:
            if self._frames and self._shape is not None:
                self._assemble()
        finally:
            self._bits_path.unlink(missing_ok=True)

    def discard(self) -> None:
        if not self._bits.closed:
            self._bits.close()
        self._bits_path.unlink(missing_ok=True)

    def _assemble(self) -> None:
        h, w = self._shape
        per = (h * w + 7) // 8
        header = {"descr": np.dtype(np.uint8).str, "fortran_order": False, "shape": (self._frames, h, w)}
        with zipfile.ZipFile(self.path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf, \
                zf.open("masks.npy", "w", force_zip64=True) as member, open(self._bits_path, "rb") as src:
            np.lib.format.write_array_header_2_0(member, header)
            left = self._frames
            while left:
                k = min(left, _CHUNK_FRAMES)
                packed = np.frombuffer(src.read(per * k), np.uint8).reshape(k, per)
                member.write(np.unpackbits(packed, axis=1, count=h * w).tobytes())
                left -= k


class PngMaskSink:
    """A FrameSink writing ``folder``/NNNNNN.png per frame (0 / 255)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, index: int, frame: np.ndarray, mask: np.ndarray) -> None:
        import cv2

        p = self.folder / f"{index:06d}.png"
        if not cv2.imwrite(str(p), mask.astype(np.uint8) * 255):
            raise OSError(f"{p}: OpenCV could not write this PNG")

    def close(self) -> None:
        pass

    def discard(self) -> None:
        pass


def mask_sink(fmt: str, out_dir: Path) -> NpzMaskSink | PngMaskSink:
    """The sink for ``--save-masks`` ``fmt`` (npz | png) writing into ``out_dir``."""
    if fmt == "npz":
        return NpzMaskSink(out_dir / MASKS_NPZ)
    if fmt == "png":
        return PngMaskSink(out_dir / MASKS_DIR)
    raise ValueError(f"--save-masks {fmt!r}: use one of {', '.join(MASK_FORMATS)}")

"""Pictures people would rather look at than read: training curves and best/worst montages."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from echoseg.atomic import atomic_path, write_bytes


def _save_fig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_curves(rows: list[dict], path: str | Path, title: str = "", selected: int | None = None) -> Path:
    """Loss (train, val) and validation Dice (per granularity for a matae-unet) by epoch; the
    epoch chosen for best.pt is marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    ep = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(ep, [r["train_loss"] for r in rows], "o-", label="train loss")
    a.plot(ep, [r.get("val_loss", np.nan) for r in rows], "s-", label="val BCE")
    a.set_xlabel("epoch")
    a.set_yscale("log")
    a.legend()
    a.set_title(f"{title} loss")
    gkeys = sorted({k for r in rows for k in r if k.startswith("val_dice_g")}, key=lambda k: float(k[10:]))
    if gkeys:
        for k in gkeys:
            b.plot(ep, [r.get(k, np.nan) for r in rows], "o-", label=f"g={k[10:]}")
    else:
        b.plot(ep, [r.get("val_dice", np.nan) for r in rows], "o-", label="val Dice")
    if selected is not None:
        b.axvline(selected, color="grey", ls="--", lw=1, label=f"best.pt (epoch {selected})")
    b.set_xlabel("epoch")
    b.set_ylim(0, 1)
    b.grid(alpha=0.3)
    b.legend(loc="lower right")
    b.set_title("validation Dice")
    _save_fig(fig, path)
    return path


def contour_tile(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, label: str, scale: int = 2) -> np.ndarray:
    """One frame with truth (green) and prediction (red) contours and a label, upscaled."""
    import cv2

    img = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    for mask, colour in ((truth, (0, 200, 0)), (pred, (0, 0, 255))):
        m = cv2.resize(mask.astype(np.uint8), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, contours, -1, colour, 1)
    cv2.putText(img, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def montage(images: np.ndarray, truths: np.ndarray, preds: np.ndarray, dice: np.ndarray,
            names: list[str], path: str | Path, k: int = 4) -> Path:
    """Top row: the k best frames by Dice; bottom row: the k worst. Green truth, red prediction."""
    import cv2

    path = Path(path)
    order = np.argsort(dice)
    k = max(1, min(k, len(order)))
    rows = []
    for idx in (order[::-1][:k], order[:k]):
        tiles = [contour_tile(images[i], truths[i], preds[i], f"{names[i][-14:]} D={dice[i]:.3f}") for i in idx]
        while len(tiles) < k:
            tiles.append(np.zeros_like(tiles[0]))
        rows.append(np.hstack(tiles))
    ok, png = cv2.imencode(".png", np.vstack(rows))
    if not ok:
        raise ValueError(f"{path}: the montage could not be encoded as PNG")
    write_bytes(path, png.tobytes())  # a full disk raises OSError(ENOSPC) here, not libpng lines
    return path

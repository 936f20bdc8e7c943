"""Model output on frames during training and evaluation: normalising, logits, the validation row.

Below the loop, the recipe and the per-epoch records, which all use it (torch imported inside).
"""

from __future__ import annotations

import numpy as np

from echoseg.config import InputSpec
from echoseg.data.dataset import FrameSet

from .metrics import summarize


def normalise(x, spec: InputSpec):
    """float 0..255 N,C,H,W torch tensor -> (x - mean) / std."""
    import torch

    mean = torch.tensor(spec.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def predict_logits(model, images: np.ndarray, spec: InputSpec, g: float = 1.0, device: str = "cpu",
                   batch: int = 32, tta: str = "none") -> np.ndarray:
    """Logits N,H,W for uint8 frames N,H,W,3 at granularity g (eval mode, no grad). ``tta``: a view
    set of echoseg.runtime.tta (shift3: three shifted views averaged, as echo-run --tta runs it)."""
    import torch

    from echoseg.runtime.tta import average_views, black, check_tta

    check_tta(tta)
    model.eval()
    fill = black(spec.mean, spec.std)
    out = []
    with torch.inference_mode():
        def run(x: np.ndarray) -> np.ndarray:
            return model(torch.from_numpy(x).to(device), g).float().cpu().numpy()

        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i:i + batch]).to(device).permute(0, 3, 1, 2).float()
            x = normalise(x, spec)
            if tta == "none":
                out.append(model(x, g)[:, 0].float().cpu().numpy())
            else:
                out.append(average_views(run, x.cpu().numpy(), tta, fill)[:, 0])
    return np.concatenate(out) if out else np.zeros((0,) + images.shape[1:3], np.float32)


def validate(model, val: FrameSet, spec: InputSpec, device: str, granularities) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    row: dict[str, float] = {}
    for g in sorted(granularities, reverse=True):
        logits = predict_logits(model, val.images, spec, g, device)
        scores = summarize(logits > 0, val.masks)
        if g == 1.0:
            row["val_loss"] = float(F.binary_cross_entropy_with_logits(
                torch.from_numpy(logits), torch.from_numpy(val.masks.astype(np.float32))))
            row.update({f"val_{k}": scores[k] for k in ("dice", "iou", "pixel_accuracy")})
        if len(granularities) > 1:
            row[f"val_dice_g{g:g}"] = scores["dice"]
    return row

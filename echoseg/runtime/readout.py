"""Whether a read-out says anything: masks empty on (nearly) every frame are a finding of their own.

A model that finds no LV at all (a damaged or wrong model, a view that is not apical, a blank
clip) otherwise reads as a plain "no beat found", as if the heart had merely not beaten
long enough. This says what it is, in one line, for summary.json and the terminal.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: share of frames with an empty mask from which the whole read-out is called empty
EMPTY_SHARE = 0.9


def mask_readout(area_px: np.ndarray, empty_share: float = EMPTY_SHARE) -> dict[str, Any]:
    """{"empty_mask_frames": n, "mask_warning": one line or None} for a video's per-frame LV areas."""
    area = np.asarray(area_px, dtype=np.float64).reshape(-1)
    n = int(area.size)
    empty = int(np.count_nonzero(~(area > 0)))  # NaN counts as empty
    warning = None
    if n and empty >= empty_share * n:
        warning = (f"LV mask empty on {empty} of {n} frames: the model found no LV, so nothing is measured "
                   "(a wrong or damaged model, or not an apical view?)")
    return {"empty_mask_frames": empty, "mask_warning": warning}

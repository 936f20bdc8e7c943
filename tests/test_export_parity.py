"""The parity gate's numbers and verdicts on hand-made logits."""

from __future__ import annotations


import numpy as np
import pytest


def _logits(mask: np.ndarray, on: float = 3.0, off: float = -3.0) -> np.ndarray:
    return np.where(mask, on, off).astype(np.float32)[:, None]


def test_compare_counts_flips_areas_and_logit_differences():
    from echoseg.export.parity import compare

    ref_mask = np.zeros((2, 6, 6), bool)
    ref_mask[0, 1:4, 1:4] = True  # 9 px
    ref_mask[1, 2:5, 2:6] = True  # 12 px
    cand_mask = ref_mask.copy()
    cand_mask[0, 0, 0] = True  # one extra pixel in frame 0
    cand_mask[1, 2, 2:5] = False  # three missing in frame 1
    ref, cand = _logits(ref_mask), _logits(cand_mask)
    cand[0, 0, 5, 5] += 0.25  # a logit change that flips nothing
    r = compare(ref, cand, threshold=0.5)
    inter = 9 + 9
    assert r["frames"] == 2
    assert r["mask_dice"] == pytest.approx(2 * inter / (21 + 19))
    assert r["lv_area_ref_px"] == pytest.approx(10.5)
    assert r["lv_area_err_px_mean"] == pytest.approx(2.0) and r["lv_area_err_px_max"] == 3.0
    assert r["lv_area_err_pct_mean"] == pytest.approx((1 / 9 + 3 / 12) / 2 * 100)
    assert r["max_abs_logit"] == pytest.approx(6.0)
    assert r["mean_abs_logit"] == pytest.approx((4 * 6.0 + 0.25) / ref.size)


def test_threshold_is_a_probability():
    from echoseg.export.parity import compare

    ref = np.full((1, 1, 2, 2), 1.0, np.float32)  # sigmoid(1) = 0.73
    cand = ref.copy()
    cand[0, 0, 0, 0] = 1.5  # sigmoid(1.5) = 0.82
    assert compare(ref, cand, threshold=0.5)["mask_dice"] == 1.0  # all LV in both
    assert compare(ref, cand, threshold=0.8)["mask_dice"] == 0.0  # only the candidate finds one pixel


def test_empty_masks_agree_and_nan_outputs_fail():
    from echoseg.export.parity import ExportParityError, check, compare

    ref = np.full((1, 1, 4, 4), -5.0, np.float32)
    assert compare(ref, ref + 0.1)["mask_dice"] == 1.0
    bad = ref.copy()
    bad[0, 0, 0, 0] = np.nan
    r = compare(ref, bad)
    assert r["max_abs_logit"] == float("inf")
    with pytest.raises(ExportParityError, match="max \\|logit diff\\| inf"):
        check(r, "fp32", "x")


def test_check_passes_marks_and_fails_with_the_numbers():
    from echoseg.export.parity import GATES, ExportParityError, check, compare

    assert GATES["fp32"] == {"max_abs_logit": 1e-3, "mask_dice": 0.999}
    assert GATES["fp16"]["mask_dice"] == 0.99 and GATES["int8"]["mask_dice"] == 0.98
    mask = np.zeros((1, 10, 10), bool)
    mask[0, 2:8, 2:8] = True
    ref = _logits(mask)
    ok = check(compare(ref, ref + 5e-4), "fp32", "graph")
    assert ok["passed"] is True and ok["gate"] == GATES["fp32"]
    near = compare(ref, ref + 2e-3)
    with pytest.raises(ExportParityError) as exc:
        check(near, "fp32", "model.onnx vs PyTorch")
    assert near["passed"] is False
    msg = str(exc.value)
    assert "model.onnx vs PyTorch" in msg and "max |logit diff| 0.002 > 0.001" in msg and "\n" not in msg
    flipped = mask.copy()
    flipped[0, 2, 2:8] = False  # 6 of 36 pixels lost: Dice 60/66
    r = compare(ref, _logits(flipped))
    with pytest.raises(ExportParityError, match="mask agreement 0.90909 < 0.98"):
        check(r, "int8", "model.int8.onnx vs FP32")

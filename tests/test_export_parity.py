"""The parity gate's numbers and verdicts on hand-made logits."""

from __future__ import annotations


import numpy as np
import pytest
from test_export_fixtures import export_base, exported, no_tensorrt  # noqa: F401


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


class _Fixed:
    """A runner (``run(batch) -> logits``) that returns fixed logits and records what it was given."""

    def __init__(self, logits: np.ndarray) -> None:
        self.logits, self.seen = logits, []

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.seen.append(batch)
        return self.logits[: len(batch)]


def _blobs(n: int = 4, size: int = 20) -> np.ndarray:
    mask = np.zeros((n, size, size), bool)
    for i in range(n):
        mask[i, 4:14, 3 + i:13 + i] = True  # 100 px a frame
    return mask


def test_gate_runs_both_sides_and_judges_a_few_flipped_pixels_at_the_named_threshold(monkeypatch):
    """12 of 400 LV pixels lost (Dice 776/788 = 0.98477): passes the int8 gate (0.98), misses fp16 (0.99);
    the report carries the numbers, the limits and the verdict, and check() raises with them."""
    from echoseg.export import parity
    from echoseg.export.parity import GATES, ExportParityError, check, gate

    mask = _blobs()
    frames = np.zeros((4, 3, 20, 20), np.float32)
    flipped = mask.copy()
    flipped[0, 4, 3:9] = False
    flipped[3, 13, 7:13] = False
    ref, cand = _Fixed(_logits(mask)), _Fixed(_logits(flipped))
    dice = 2 * 388 / (400 + 388)
    r8 = gate(ref, cand, frames, "int8", threshold=0.5)
    assert r8["passed"] is True and r8["gate"] == GATES["int8"] == {"mask_dice": 0.98}
    assert r8["mask_dice"] == pytest.approx(dice) and r8["lv_area_err_px_max"] == 6.0
    assert r8["lv_area_err_px_mean"] == 3.0 and r8["frames"] == 4
    assert len(ref.seen) == len(cand.seen) == 1 and ref.seen[0] is frames and cand.seen[0] is frames
    r16 = gate(ref, cand, frames, "fp16", threshold=0.5)
    assert r16["passed"] is False and r16["gate"] == {"mask_dice": 0.99}
    with pytest.raises(ExportParityError, match="model.fp16.onnx vs FP32: parity gate missed \\(mask agreement 0.98477 < 0.99;"):
        check(r16, "fp16", "model.fp16.onnx vs FP32")
    monkeypatch.setitem(parity.GATES, "int8", {"mask_dice": 0.985})  # the named gate's limits, read when it runs
    assert gate(ref, cand, frames, "int8")["passed"] is False
    # a threshold that puts the flipped pixels' logits (-3) inside the mask in both: nothing differs
    assert gate(ref, cand, frames, "fp16", threshold=0.01)["passed"] is True
    same = gate(ref, ref, frames, "fp32")
    assert same["passed"] is True and same["max_abs_logit"] == 0.0 and same["mask_dice"] == 1.0
    off = gate(ref, _Fixed(_logits(mask) + 2e-3), frames, "fp32")  # same masks, logits 2e-3 apart
    assert off["passed"] is False and off["mask_dice"] == 1.0
    with pytest.raises(Exception, match="unknown parity gate"):
        gate(ref, cand, frames, "fp8")


def test_gate_takes_computed_logits_and_several_candidates_by_the_worse_numbers():
    from echoseg.export.parity import compare, gate

    mask = _blobs()
    frames = np.zeros((4, 3, 20, 20), np.float32)
    one, two = mask.copy(), mask.copy()
    one[1, 4, 4:6] = False  # 2 px
    two[2, 4:6, 5:10] = False  # 10 px
    ref = _logits(mask)
    r = gate(ref, {"emulated": _Fixed(_logits(one)), "ort_cpu": _Fixed(_logits(two))}, frames, "int8")
    a, b = compare(ref, _logits(one)), compare(ref, _logits(two))
    assert r["emulated"] == a and r["ort_cpu"] == b
    assert r["mask_dice"] == min(a["mask_dice"], b["mask_dice"]) == b["mask_dice"]
    assert r["lv_area_err_px_max"] == 10.0 and r["passed"] is True
    assert list(r)[: len(a)] == list(a)  # the first run's numbers first, as the manifest has them
    with pytest.raises(Exception, match="logits of 3 frames"):
        gate(ref[:3], _Fixed(ref), frames, "int8")


def test_a_runner_s_session_error_is_an_export_error():
    from echoseg.backends.session import SessionError
    from echoseg.export.onnx import ExportError
    from echoseg.export.parity import gate

    class Broken:
        def run(self, batch):
            raise SessionError("model.int8.onnx: ONNX Runtime failed on a batch")

    frames = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(ExportError, match="ONNX Runtime failed on a batch"):
        gate(np.zeros((2, 1, 8, 8), np.float32), Broken(), frames, "int8")


def test_gate_reports_have_the_keys_the_manifest_stores(exported):
    """Each gate the export runs stores gate()'s report as it is: the same keys, in order (plus the
    extras the export adds: the INT8 latency, OpenVINO's version and timing)."""
    import json

    from echoseg.export.parity import OnnxGraph, TorchModel, gate, open_graph
    from echoseg.models.checkpoint import build_from_checkpoint, load_checkpoint

    d = exported / "unet"
    man = json.loads((d / "manifest.json").read_text())
    rec = man["exports"][0]["parity"]
    ckpt = load_checkpoint(man["checkpoint"])
    frames = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    fp32, int8, fp16 = (open_graph(d / f) for f in ("model.onnx", "model.int8.onnx", "model.fp16.onnx"))
    try:
        y32 = fp32.run(frames)
        import onnx

        from echoseg.export.fp16 import emulate_fp16

        emu = OnnxGraph(emulate_fp16(onnx.load(str(d / "model.fp16.onnx"))))
        reports = {"fp32_vs_torch": gate(TorchModel(build_from_checkpoint(ckpt), 1.0), y32, frames, "fp32"),
                   "int8_vs_fp32": gate(y32, int8, frames, "int8"),
                   "fp16_vs_fp32": gate(y32, {"emulated": emu, "ort_cpu": fp16}, frames, "fp16")}
    finally:
        for s in (fp32, int8, fp16):
            s.close()
    for key, r in reports.items():
        stored = [k for k in rec[key] if k != "onnxruntime_latency_ms_b1"]
        assert list(r) == stored, key
        if key == "fp16_vs_fp32":
            assert list(r["emulated"]) == list(rec[key]["emulated"]) and list(r["ort_cpu"]) == list(rec[key]["ort_cpu"])
    for key in ("openvino_fp32_vs_fp32", "openvino_int8_vs_fp32"):
        if key in rec and "error" not in rec[key]:
            assert [k for k in rec[key] if k not in ("openvino", "capabilities", "latency_ms_b1")] == list(reports["int8_vs_fp32"])

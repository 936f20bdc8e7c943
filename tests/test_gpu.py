"""On a CUDA GPU (``-m gpu``): a training step on CUDA, the torch runtime on CUDA against the CPU, NVML.

Every test skips with its reason where the GPU, a CUDA build of torch or nvidia-ml-py is absent,
so the file runs (as skips) in CI too. The rest of the suite runs on the CPU even where CUDA is
visible (conftest.py), so these are the tests that reach the GPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def _cuda_problem() -> str:
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA GPU (CPU build, no driver, or none visible)"
    return ""


needs_cuda = pytest.mark.skipif(bool(_cuda_problem()), reason=_cuda_problem() or "CUDA present")


@needs_cuda
def test_one_cuda_training_epoch_writes_a_checkpoint(synth_dir, tmp_path):
    """The real loop on CUDA: autocast, GradScaler where FP16, pinned memory, the loader's default
    workers, SyncBatchNorm-free single process; the checkpoint is on the CPU and loads anywhere."""
    import torch

    from echoseg.config import TrainConfig
    from echoseg.models.checkpoint import load_checkpoint
    from echoseg.train.loop import train

    cfg = TrainConfig(data=str(synth_dir), model="matae-unet", width=8, epochs=1, batch_size=8, device="cuda",
                      out=str(tmp_path / "run"), bn_recal_frames=32, ema_decay=0.0)
    res = train(cfg)
    (row,) = res.rows
    assert np.isfinite(row["train_loss"]) and 0.0 <= row["val_dice"] <= 1.0
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")  # weights-only load, on a machine without CUDA too
    assert ckpt.model.name == "matae-unet" and torch.cuda.is_available()
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert len(log) == 2  # header + the one epoch


@needs_cuda
def test_torch_runtime_on_cuda_agrees_with_the_cpu(unet_ckpt, monkeypatch):
    """The torch backend (what echo-run runs on a checkpoint) on cuda:0 against the CPU, FP32 (TF32
    off) and FP16: the same masks, logits within FP32 / FP16 rounding."""
    import torch

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    from echoseg.data.synthetic import make_video
    from echoseg.runtime import open_session, preprocess
    from echoseg.train.metrics import mask_agreement

    cpu = open_session(unet_ckpt, "torch", device="cpu")
    frames = make_video(21, frames=12).frames
    x = preprocess(frames, cpu.info.meta)
    y_cpu = cpu.run(x)
    for precision, atol in (("fp32", 1e-2), ("fp16", 2e-1)):
        gpu = open_session(unet_ckpt, "torch", device="cuda", precision=precision)
        assert gpu.info.device.startswith("cuda")
        y = gpu.run(x)
        assert y.shape == y_cpu.shape and y.dtype == np.float32
        assert float(np.abs(y - y_cpu).max()) < atol, precision
        assert mask_agreement(y > 0, y_cpu > 0) > 0.99, precision
        gpu.close()
    cpu.close()


def test_nvml_describes_the_gpu_and_samples_it():
    """nvidia-ml-py: the benchmark's GPU description and one sampler reading of this process."""
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded where there is no GPU
        pytest.skip(f"NVML does not start here ({type(exc).__name__}: {exc})")
    try:
        count = pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()
    if count < 1:
        pytest.skip("NVML sees no GPU")
    from echoseg.bench.sampler import ResourceSampler, gpu_description

    desc = gpu_description(0)
    assert desc is not None and desc["name"] and float(desc["memory_mb"]) > 1000 and desc["driver"]
    with ResourceSampler(interval_s=0.02, gpu_index=0) as s:
        assert s.has_gpu
        t0 = s.mark()
        t1 = s.mark()
    st = s.stats(t0, t1)
    assert st.gpu_util_pct_avg is not None and 0.0 <= st.gpu_util_pct_avg <= 100.0
    assert st.gpu_mem_mb_peak is not None and st.gpu_mem_mb_peak >= 0.0
    json.dumps(desc)  # plain strings, as the report writes them

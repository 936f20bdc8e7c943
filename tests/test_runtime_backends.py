"""Every backend present here against the PyTorch reference, granularity choice, the lean ONNX path, the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from echoseg.data.synthetic import make_video
from echoseg.data.video import write_video
from echoseg.runtime import open_session, preprocess, run_videos
from echoseg.backends.choose import choose
from echoseg.backends.session import SessionError
from echoseg.runtime.stream import stream_video
from echoseg.train.metrics import mask_agreement

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    v = make_video(13, frames=32)
    return v, write_video(tmp_path_factory.mktemp("vid") / "clip.avi", v.frames, v.fps)


def _export_dir(tmp: Path, src_ckpt: Path, frames: np.ndarray, grans: tuple[float, ...]) -> Path:
    """The (briefly trained) checkpoint plus one ONNX per granularity (model.onnx for g=1)."""
    from echoseg.export.onnx import export_onnx, sub_network
    from echoseg.models.checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint

    ck = load_checkpoint(src_ckpt)
    model = build_from_checkpoint(ck)
    d = tmp / ck.model.name
    best = save_checkpoint(d / "best.pt", model, ck.model, ck.input_spec, threshold=ck.threshold)
    ck = load_checkpoint(best)
    for g in grans:
        name = "model.onnx" if g == 1.0 else f"model.g{g:g}.onnx"
        export_onnx(sub_network(model, g), ck.meta(g), d / name)
    return d


@pytest.fixture(scope="module")
def unet_dir(tmp_path_factory, unet_ckpt, video):
    return _export_dir(tmp_path_factory.mktemp("exp"), unet_ckpt, video[0].frames, (1.0,))


@pytest.fixture(scope="module")
def matae_dir(tmp_path_factory, matae_ckpt, video):
    return _export_dir(tmp_path_factory.mktemp("exp"), matae_ckpt, video[0].frames, (1.0, 0.5))


def _masks(path: Path, session) -> np.ndarray:
    out: list[np.ndarray] = []
    stream_video(path, session, batch=5, sink=lambda i, f, m: out.append(m))
    session.close()
    return np.stack(out)


@pytest.fixture()
def no_tf32():
    """TF32 off for CUDA convolutions and matmuls while a test runs.

    With TF32 (on by default for cuDNN convolutions) a CUDA reference keeps a 10-bit mantissa,
    about 1e-3 relative error, which no FP32 parity tolerance of 1e-4 survives; with it off the
    CPU and CUDA FP32 results agree to ~1e-6 relative, well inside the tolerance below.
    """
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("which,g", [("unet", 1.0), ("matae", 1.0), ("matae", 0.5)])
def test_onnxruntime_agrees_with_the_torch_reference(request, video, which, g, no_tf32):
    d = request.getfixturevalue(f"{which}_dir")
    choice = choose(d, "onnxruntime", None if g == 1.0 else g)
    # FP32 parity on the CPU provider (the CUDA provider may use TF32 too); the reference on
    # whatever device torch picks, with TF32 off
    ort = open_session(choice.path, "onnxruntime", providers=["CPUExecutionProvider"])
    ref = open_session(d / "best.pt", "torch", granularity=g)
    assert ort.info.meta.granularity == ref.info.meta.granularity == g
    assert ort.info.meta.threshold == pytest.approx(ref.info.meta.threshold)
    x = preprocess(video[0].frames[:7], ort.info.meta)
    np.testing.assert_allclose(ort.run(x), ref.run(x), atol=1e-4, rtol=1e-4)
    m_ort, m_ref = _masks(video[1], ort), _masks(video[1], ref)
    assert m_ort.shape == m_ref.shape == (32, 112, 112)
    assert 0.05 < m_ref.mean() < 0.95  # masks are far from empty or full: agreement means something
    assert mask_agreement(m_ort, m_ref) > 0.995


def test_granularity_picks_the_matching_export(matae_dir, video, tmp_path):
    assert choose(matae_dir, "auto", 0.5).path.name == "model.g0.5.onnx"
    assert choose(matae_dir, "auto").path.name == "model.onnx"
    with pytest.raises(SessionError, match="granularity 0.25"):
        choose(matae_dir, "onnxruntime", 0.25)
    with pytest.raises(SessionError, match="is granularity 1"):
        choose(matae_dir / "model.onnx", "auto", 0.5)
    res = run_videos([video[1]], model=matae_dir, granularity=0.5, out=tmp_path / "o", video=False)
    assert res[0].ok and res[0].summary["granularity"] == 0.5 and res[0].summary["backend"] == "onnxruntime"
    with pytest.raises(SessionError, match="granularity"):
        open_session(matae_dir / "best.pt", "torch", granularity=0.3)


def test_run_videos_same_areas_on_onnxruntime_and_torch(unet_dir, video, tmp_path):
    areas = {}
    for backend in ("onnxruntime", "torch"):
        res = run_videos([video[1]], model=unet_dir, backend=backend, out=tmp_path / backend, video=False)
        assert res[0].ok and res[0].summary["backend"] == backend
        with open(Path(res[0].out_dir) / "frames.csv", newline="") as fh:
            areas[backend] = np.array([int(r["lv_area_px"]) for r in csv.DictReader(fh)])
    assert len(areas["torch"]) == 32
    np.testing.assert_allclose(areas["onnxruntime"], areas["torch"], rtol=0.01, atol=5)


def test_onnxruntime_path_does_not_import_torch(unet_dir, video, tmp_path):
    """No torch, no onnx library and no matplotlib on the edge path, not even once area.png is drawn."""
    code = (
        "import sys, json\n"
        "import echoseg.runtime.stream as st\n"
        "heavy = ('torch', 'onnx', 'matplotlib')\n"
        "seen, real = [], st.mask_at\n"
        "def mask_at(*a, **k):\n"
        "    seen.append(sorted(m for m in heavy if m in sys.modules)) if not seen else None\n"
        "    return real(*a, **k)\n"
        "st.mask_at = mask_at\n"
        "from echoseg.runtime.cli import app\n"
        f"app([{str(video[1])!r}, '--model', {str(unet_dir / 'model.onnx')!r}, '--out', {str(tmp_path / 'o')!r}],"
        " standalone_mode=False)\n"
        "print(json.dumps([seen[0], sorted(m for m in heavy if m in sys.modules)]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    at_first_frame, at_end = json.loads(proc.stdout.strip().splitlines()[-1])
    assert at_first_frame == [] and at_end == []  # area.png is drawn with OpenCV (runtime/plot.py)
    summary = json.loads((tmp_path / "o" / "clip" / "summary.json").read_text())
    assert (tmp_path / "o" / "clip" / "area.png").stat().st_size > 10_000
    assert summary["backend"] == "onnxruntime" and summary["frames"] == 32


def test_cli_exit_codes_and_one_line_errors(unet_dir, video, tmp_path):
    from typer.testing import CliRunner

    from echoseg.runtime.cli import app

    bad = tmp_path / "bad.avi"
    bad.write_text("not a video")
    runner = CliRunner()
    ok = runner.invoke(app, [str(video[1]), "-m", str(unet_dir / "model.onnx"), "-o", str(tmp_path / "a"),
                             "--no-video", "--batch", "4"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "a" / "clip" / "frames.csv").is_file()
    assert not (tmp_path / "a" / "clip" / "overlay.avi").exists()
    mixed = runner.invoke(app, [str(video[1]), str(bad), "-m", str(unet_dir / "model.onnx"),
                                "-o", str(tmp_path / "b")])
    assert mixed.exit_code == 1
    lines = [ln for ln in mixed.output.splitlines() if "failed:" in ln]
    assert len(lines) == 1 and str(bad) in lines[0] and "cannot open it as a video" in lines[0]
    assert (tmp_path / "b" / "clip" / "summary.json").is_file() and not (tmp_path / "b" / "bad").exists()
    nomodel = runner.invoke(app, [str(video[1]), "-m", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "c")])
    assert nomodel.exit_code == 2 and "no such model" in nomodel.output
    assert "Traceback" not in mixed.output + nomodel.output


@pytest.mark.trt
def test_tensorrt_engine_agrees_with_onnxruntime(unet_dir, video, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    pytest.importorskip("pycuda", reason="pycuda is not installed")
    from echoseg.config import EngineSidecar
    from echoseg.artifacts import file_sha256, read_onnx_meta, write_sidecar
    from echoseg.export.tensorrt import build_engine, plan_engine, tensorrt_status

    version, why = tensorrt_status()
    if not version:
        pytest.skip(why)
    onnx = unet_dir / "model.onnx"
    engine = tmp_path / "model.fp32.engine"
    plan = plan_engine(version, "fp32", {"fp32": onnx}, profile=(1, 4, 8))
    gpu = built = build_engine(plan, engine)
    write_sidecar(engine, EngineSidecar(
        meta=read_onnx_meta(onnx), tensorrt_version=version, cuda_version=gpu["cuda_version"],
        gpu_name=gpu["gpu_name"], compute_capability=gpu["compute_capability"], onnx_sha256=file_sha256(onnx),
        onnx_file=onnx.name, precision="fp32", profile=(1, 4, 8), build_seconds=built["build_seconds"]))
    trt_sess = open_session(engine, "tensorrt")
    ort_sess = open_session(onnx, "onnxruntime")
    x = preprocess(video[0].frames[:11], ort_sess.info.meta)  # 11 > max batch 8: split, and a partial chunk
    np.testing.assert_allclose(trt_sess.run(x), ort_sess.run(x), atol=2e-3)
    assert trt_sess.run(x[:1]).shape == (1, 1, 112, 112)
    m_trt, m_ort = _masks(video[1], trt_sess), _masks(video[1], ort_sess)
    assert mask_agreement(m_trt, m_ort) > 0.99

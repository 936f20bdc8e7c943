"""echo-run never loses data nor fails silently: foreign folders, locks, SIGTERM, stale staging, bad models."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from oracle import CyclingOracle
from tiny_onnx import make_model

from echoseg.config import ONNX_META_KEY, ArtifactMeta, InputSpec, ModelConfig
from echoseg.data.synthetic import make_video
from echoseg.data.video import write_video
from echoseg.runtime import api, run_videos
from echoseg.backends.choose import ModelChoice
from echoseg.backends.session import SessionError

RUN_MARKER = ".echoseg-run"  # echoseg.runtime.outputs.RUN_MARKER, spelled out: it is part of the contract


@pytest.fixture(scope="module")
def synth():
    return make_video(5, frames=24)


def _video(path: Path, synth, n: int = 12) -> Path:
    return write_video(path, synth.frames[:n], 50.0)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _cli(args: list[str], monkeypatch, synth):
    """echo-run through its Typer app, with model discovery and opening replaced by the oracle."""
    from typer.testing import CliRunner

    from echoseg.runtime.cli import app

    monkeypatch.setattr(api, "choose", lambda *a, **k: ModelChoice(Path("oracle.onnx"), "onnxruntime", "test"))
    monkeypatch.setattr(api, "open_choice", lambda *a, **k: CyclingOracle(synth.masks))
    return CliRunner().invoke(app, args, env={"COLUMNS": "250"})


# -- 1: a folder echo-run did not create is never deleted -------------------------------------

def test_an_existing_folder_without_the_marker_is_left_alone(tmp_path, synth, monkeypatch):
    good = _video(tmp_path / "in" / "good.avi", synth)
    other = _video(tmp_path / "in" / "other.avi", synth)
    home = tmp_path / "o" / "home"
    (home / "good").mkdir(parents=True)
    (home / "good" / "thesis.txt").write_text("four years of work")
    (home / "summary.csv").write_text("patient,ef\n1,55\n")  # the user's own file of that name
    errors: list[str] = []
    results = run_videos([good, other], out=home, session=CyclingOracle(synth.masks), video=False, errors=errors)
    assert (home / "summary.csv").read_text() == "patient,ef\n1,55\n"
    assert len(errors) == 1 and "summary.csv" in errors[0] and "did not write" in errors[0]
    by = {r.name: r for r in results}
    assert not by["good"].ok and by["other"].ok
    assert "did not write" in by["good"].error and "\n" not in by["good"].error
    assert (home / "good" / "thesis.txt").read_text() == "four years of work"
    assert sorted(p.name for p in (home / "good").iterdir()) == ["thesis.txt"]
    assert (home / "other" / RUN_MARKER).is_file()
    res = _cli([str(good), "--out", str(home), "--no-video"], monkeypatch, synth)
    assert res.exit_code == 1
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("failed:")] == [
        ln for ln in res.stderr.splitlines() if "did not write" in ln]
    assert (home / "good" / "thesis.txt").read_text() == "four years of work"
    (home / "plain").write_text("a file, not a folder")
    plain = _video(tmp_path / "in2" / "plain.avi", synth)
    (r,) = run_videos([plain], out=home, session=CyclingOracle(synth.masks), video=False)
    assert not r.ok and "existing file" in r.error and (home / "plain").read_text() == "a file, not a folder"


def test_its_own_output_is_replaced(tmp_path, synth):
    v = _video(tmp_path / "a.avi", synth)
    (first,) = run_videos([v], out=tmp_path / "out", session=CyclingOracle(synth.masks), video=False)
    (Path(first.out_dir) / "stale.txt").write_text("old")
    (second,) = run_videos([v], out=tmp_path / "out", session=CyclingOracle(synth.masks), video=False)
    assert second.ok and not (Path(second.out_dir) / "stale.txt").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a"]


# -- 5: one writer per output folder ------------------------------------------------------------

def test_a_video_another_process_is_writing_is_refused_with_its_pid(tmp_path, synth):
    from echoseg.atomic import exclusive

    a = _video(tmp_path / "in" / "a.avi", synth)
    b = _video(tmp_path / "in" / "b.avi", synth)
    out = tmp_path / "out"
    with exclusive(out / ".a.lock"):
        results = run_videos([a, b], out=out, session=CyclingOracle(synth.masks), video=False)
    by = {r.name: r for r in results}
    assert not by["a"].ok and by["b"].ok
    assert f"pid {os.getpid()}" in by["a"].error and "another echo-run" in by["a"].error
    assert sorted(p.name for p in out.iterdir()) == ["b", "summary.csv"]


_STRESS = textwrap.dedent("""
    import sys, traceback
    from pathlib import Path
    from echoseg.runtime.outputs import OutputRefused, StagingDir
    final, n, tag = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    done = refused = 0
    for i in range(n):
        try:
            s = StagingDir(final)
        except OutputRefused:
            refused += 1
            continue
        try:
            (s.tmp / "a.txt").write_text(f"{tag}{i}")
            (s.tmp / "b.txt").write_text(f"{tag}{i}")
            s.commit()
            done += 1
        except BaseException:
            s.discard()
            traceback.print_exc()
            sys.exit(1)
    print(done, refused)
""")


def test_two_processes_committing_the_same_output_never_crash_nor_leave_leftovers(tmp_path):
    final = tmp_path / "out" / "clip"
    procs = [subprocess.Popen([sys.executable, "-c", _STRESS, str(final), "40", tag],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for tag in "xy"]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (so, se) in zip(procs, outs):
        assert p.returncode == 0, se
    assert sum(int(so.split()[0]) for so, _ in outs) >= 1
    a, b = (final / "a.txt").read_text(), (final / "b.txt").read_text()
    assert a == b  # one writer's complete folder, never a mix
    assert sorted(p.name for p in final.parent.iterdir()) == ["clip"]


# -- 7: SIGTERM and leftovers of killed runs ----------------------------------------------------

_SLOW_RUN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from echoseg.config import ArtifactMeta, InputSpec, ModelConfig
    from echoseg.runtime import api
    from echoseg.runtime.cli import app
    from echoseg.backends.choose import ModelChoice
    from echoseg.backends.session import SessionInfo

    class Slow:
        info = SessionInfo("slow", "fp32", "cpu", 1, 0, ArtifactMeta(ModelConfig("unet", 8), InputSpec()), "slow")
        def run(self, x):
            time.sleep(0.2)
            return np.zeros((len(x), 1, 112, 112), np.float32)
        def close(self):
            pass

    api.choose = lambda *a, **k: ModelChoice(Path("slow.onnx"), "onnxruntime", "test")
    api.open_choice = lambda *a, **k: Slow()
    app(sys.argv[1:], prog_name="echo-run")
""")


def test_sigterm_cleans_the_staging_folder_like_ctrl_c(tmp_path, synth):
    video = write_video(tmp_path / "long.avi", np.concatenate([synth.frames] * 10), 50.0)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_RUN, str(video), "--out", str(out), "--batch", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out.is_dir() and any(p.name.startswith(".long.part") for p in out.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    assert list(out.iterdir()) == []


def test_staging_left_by_dead_processes_is_removed_and_nothing_else(tmp_path, synth):
    out = tmp_path / "out"
    dead = _dead_pid()
    ours = out / f".a.part{dead}"
    ours.mkdir(parents=True)
    (ours / RUN_MARKER).write_text("x")
    (ours / "frames.csv").write_text("half")
    old = out / f".a.old{dead}"
    old.mkdir()
    (old / RUN_MARKER).write_text("x")
    foreign = out / f".b.part{dead}"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not echo-run's")
    alive = out / f".c.part{os.getppid()}"
    alive.mkdir()
    (alive / RUN_MARKER).write_text("x")
    v = _video(tmp_path / "in" / "z.avi", synth)
    (r,) = run_videos([v], out=out, session=CyclingOracle(synth.masks), video=False)
    assert r.ok
    assert sorted(p.name for p in out.iterdir()) == sorted([foreign.name, alive.name, "z"])


# -- 4: unwritable or full output folder --------------------------------------------------------

def test_an_unwritable_out_is_one_line_before_any_work(tmp_path, synth, monkeypatch):
    a = _video(tmp_path / "a.avi", synth)
    b = _video(tmp_path / "b.avi", synth)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should go")
    with pytest.raises(OSError, match="cannot write outputs here"):
        run_videos([a, b], out=blocker / "out", session=CyclingOracle(synth.masks))
    res = _cli([str(a), str(b), "--out", str(blocker / "out")], monkeypatch, synth)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and not isinstance(res.exception, OSError)
    (line,) = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert line.startswith("error:") and str(blocker / "out") in line and "--out" in line


def test_a_full_disk_fails_one_video_and_the_summary_with_one_line_each(tmp_path, synth, monkeypatch):
    a = _video(tmp_path / "in" / "a.avi", synth)
    b = _video(tmp_path / "in" / "b.avi", synth)
    out = tmp_path / "out"
    real_plot, calls = api.plot_area, []

    def plot_once_full(path, *args, **kw):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_plot(path, *args, **kw)

    def summary_full(path, rows):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(api, "plot_area", plot_once_full)
    monkeypatch.setattr(api, "write_summary_csv", summary_full)
    res = _cli([str(a), str(b), "--out", str(out), "--no-video"], monkeypatch, synth)
    assert res.exit_code == 1 and not isinstance(res.exception, OSError)
    assert "Traceback" not in res.output
    failed = [ln for ln in res.stderr.splitlines() if ln.startswith("failed:")]
    assert len(failed) == 1 and "No space left" in failed[0] and "a.avi" in failed[0]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "summary.csv" in errors[0] and "No space left" in errors[0]
    assert "b.avi" in res.stdout  # the good video's line is printed
    assert sorted(p.name for p in out.iterdir()) == ["b"]  # nothing half-written


# -- 6 and 7: models that cannot run, batch bounds ----------------------------------------------

def _onnx_model(path: Path, side: int, spec: InputSpec) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["N", 3, side, side])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1, side, side])
    node = helper.make_node("ReduceMean", ["frames"], ["logits"], axes=[1], keepdims=1)
    model = make_model(helper.make_graph([node], "g", [x], [y]))
    meta = ArtifactMeta(model=ModelConfig("unet", 8), input_spec=spec)
    helper.set_model_props(model, {ONNX_META_KEY: meta.to_json()})
    onnx.save(model, str(path))
    return path


def test_an_onnx_contradicting_its_input_spec_is_refused_at_open(tmp_path, synth):
    v = _video(tmp_path / "a.avi", synth)
    bad = _onnx_model(tmp_path / "bad.onnx", 64, InputSpec())  # graph 64x64, spec 112x112
    with pytest.raises(SessionError, match="input spec") as info:
        run_videos([v], model=bad, backend="onnxruntime", out=tmp_path / "out")
    assert "112" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out" / "a").exists()
    good = _onnx_model(tmp_path / "good.onnx", 64, InputSpec(height=64, width=64))
    (r,) = run_videos([v], model=good, backend="onnxruntime", out=tmp_path / "out", video=False)
    assert r.ok and r.summary["frames"] == 12


def test_a_checkpoint_with_an_unknown_model_is_a_session_error(tmp_path, synth, unet_ckpt):
    import torch

    raw = torch.load(unet_ckpt, map_location="cpu", weights_only=True)
    raw["model"]["name"] = "vit"
    bad = tmp_path / "vit.pt"
    torch.save(raw, bad)
    v = _video(tmp_path / "a.avi", synth)
    with pytest.raises(SessionError, match="unknown model 'vit'"):
        run_videos([v], model=bad, backend="torch", out=tmp_path / "out")


def test_batch_bounds_are_one_line(tmp_path, synth, monkeypatch):
    v = _video(tmp_path / "a.avi", synth)
    for bad in (0, 100000000):
        with pytest.raises(SessionError, match="between 1 and 4096"):
            run_videos([v], session=CyclingOracle(synth.masks), batch=bad, out=tmp_path / "out")
    res = _cli([str(v), "--batch", "100000000", "--out", str(tmp_path / "out")], monkeypatch, synth)
    assert res.exit_code == 2
    (line,) = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert "between 1 and 4096" in line

"""One checkpoint -> one export directory: ONNX, FP16, INT8, engine per granularity, manifest.

Layout of ``OUT/<run>/`` (the directory reflects the last build; earlier model files are
removed first):

- ``model.onnx``, ``model.fp16.onnx``, ``model.int8.onnx``, ``model.fp16.engine`` (+ its
  ``model.fp16.json`` sidecar): the full network (granularity 1);
- ``model.g0.25.onnx``, ``model.g0.25.fp16.onnx``, ... : each nested sub-network asked for with
  ``--granularity`` (matae-unet), built from ``model.sliced(G)``; every file says its
  granularity in its metadata, which is what the runtime selects by;
- ``parity.json`` and ``manifest.json`` covering all of them.

Every graph passes the parity gate before it is kept; one that misses it is renamed
``*.rejected.onnx`` and the export fails with the numbers. Every gate is
:func:`echoseg.export.parity.gate`, with each file opened through :mod:`echoseg.backends` as
echo-run opens it; the FP32 graph's logits on the parity frames are computed once and are the
reference of every gate after its own.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from echoseg.atomic import (LockHeld, NotWritableError, check_writable, exclusive, remove_stale_temps,
                            write_json)
from echoseg.artifacts import artifact_name, file_sha256, preprocess, rejected_name, sidecar_path
from echoseg.config import EngineSidecar
from echoseg.errors import EchosegError

from . import frames as frame_source
from .domains import check_domains
from .fp16 import convert_fp16, emulate_fp16, last_compute_node, tensor_types
from .int8 import quantize_int8
from .manifest import MANIFEST, PARITY, build_manifest, write_sidecar
from .onnx import ExportError, export_onnx, save_onnx, sub_network
from . import openvino_gate
from .parity import OnnxGraph, TorchModel, batch1_latency_ms, check, gate, open_graph, run_logits
from .tensorrt import (DEFAULT_PROFILE, DEFAULT_WORKSPACE_MB, TensorRTUnavailable, build_engine,
                       plan_engine, tensorrt_status)

log = logging.getLogger(__name__)

Report = Callable[[str], None]
#: Held in an export directory while one echo-export writes it; a second one is refused.
LOCK_NAME = ".echoseg-export.lock"


@dataclass(frozen=True)
class BuildOptions:
    """What `echo-export build` was asked to do."""

    out: Path = Path("exports")
    fp16: bool = False
    int8: bool = False
    engine: bool = False  # an engine is required: a missing TensorRT/GPU is an error
    granularities: tuple[float, ...] = ()  # besides the full network (1.0), always exported
    profile: tuple[int, int, int] = DEFAULT_PROFILE
    calib_frames: int = 128
    calib_method: str = "minmax"
    int8_form: str = "cpu"  # export/int8.py FORMS: cpu (ONNX Runtime, OpenVINO) or tensorrt
    parity_frames: int = 32
    parity: bool = True
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    timing_cache: Path | None = None  # default: OUT/timing.cache
    opset: int = 17


@dataclass
class ExportResult:
    """The outcome for one checkpoint: where it went, notes (skipped steps) and errors."""

    run: str
    checkpoint: Path
    dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def run_name(checkpoint: str | os.PathLike) -> str:
    """runs/unet/best.pt -> 'unet'; a run directory -> its name; other files -> their stem."""
    p = Path(checkpoint)
    if p.is_dir():
        return p.resolve().name
    return p.parent.resolve().name if p.name in ("best.pt", "last.pt") else p.stem


def _clear_old(d: Path) -> None:
    for pattern in ("model*.onnx", "model*.engine", "model*.json", MANIFEST, PARITY):
        for p in d.glob(pattern):
            p.unlink()


def _reject(path: Path) -> Path:
    bad = rejected_name(path)
    os.replace(path, bad)
    return bad


def export_checkpoint(checkpoint: str | os.PathLike, opts: BuildOptions, say: Report = log.info) -> ExportResult:
    """Export one checkpoint at every asked granularity; one failing granularity stops only itself."""
    from echoseg.models import UnknownModelError
    from echoseg.models.checkpoint import CheckpointError, build_from_checkpoint, load_checkpoint

    path = Path(checkpoint)
    result = ExportResult(run=run_name(path), checkpoint=path)
    try:
        ckpt = load_checkpoint(path)
        model = build_from_checkpoint(ckpt)
    except CheckpointError as exc:
        result.errors.append(str(exc))
        return result
    except UnknownModelError as exc:
        result.errors.append(f"{path}: {exc}; this checkpoint names a model this echoseg does not have")
        return result
    result.checkpoint = ckpt.path or path
    wanted = []
    for g in sorted(set(float(g) for g in opts.granularities) | {1.0}, reverse=True):
        try:
            model.default_granularity(g)
            wanted.append(g)
        except ValueError:
            if len(model.granularities) == 1:
                note = f"{result.run}: granularity {g:g} skipped: {ckpt.model.name} is not nested (only 1)"
                result.notes.append(note)
                say(note)
            else:
                result.errors.append(f"{result.run}: {ckpt.model.name} has no granularity {g:g} "
                                     f"(it has {', '.join(f'{k:g}' for k in model.granularities)})")
    d = Path(opts.out) / result.run
    try:
        check_writable(d, "pass a writable --out (or free some space)")
        with exclusive(d / LOCK_NAME):
            remove_stale_temps(d)  # temp files of an echo-export that was killed
            result.dir = d
            _export_into(d, ckpt, model, wanted, opts, say, result)
    except LockHeld as exc:
        who = f"pid {exc.pid}" if exc.pid else "another process"
        result.errors.append(f"{d}: another echo-export ({who}) is writing this export right now; "
                             "wait for it to finish or pass another --out")
    except NotWritableError as exc:
        result.errors.append(str(exc))
    except EchosegError as exc:  # any other echoseg error (frames for the gates, a session): this checkpoint only
        result.errors.append(f"{result.run}: {exc}")
    except OSError as exc:  # e.g. the disk filled up half-way: files written so far are complete
        result.errors.append(f"{exc.filename or d}: cannot write ({exc.strerror or exc}); "
                             "free some space or pass another --out")
    return result


def _export_into(d: Path, ckpt, model, wanted: list[float], opts: BuildOptions, say: Report,
                 result: ExportResult) -> None:
    """Every asked granularity into ``d`` (held locked by the caller), then parity.json and manifest.json."""
    from echoseg.models import count_macs

    size = (ckpt.input_spec.height, ckpt.input_spec.width)
    _clear_old(d)
    x, source = _parity_batch(ckpt, opts) if opts.parity else (np.zeros((0,)), "")
    sections = []
    for g in wanted:
        section: dict[str, Any] = {"granularity": g, "macs_per_frame": count_macs(model, g, size), "files": {},
                                   "parity": {}, "steps": {}}
        sections.append(section)
        try:
            _export_granularity(ckpt, model, g, d, opts, x, section, say, result)
        except ExportError as exc:
            section["error"] = str(exc)
            result.errors.append(f"{result.run} g={g:g}: {exc}")
    parity = {f"{s['granularity']:g}": dict(s["parity"], frames_source=source) for s in sections}
    write_json(d / PARITY, parity)
    manifest = build_manifest(d, meta=ckpt.meta(1.0).to_dict(), checkpoint=str(result.checkpoint),
                              macs={f"{g:g}": count_macs(model, g, size) for g in model.granularities},
                              exports=sections, profile=opts.profile, parity_source=source)
    write_json(d / MANIFEST, manifest)


def _parity_batch(ckpt, opts: BuildOptions) -> tuple[np.ndarray, str]:
    frames, source = frame_source.checkpoint_frames(ckpt, "val", max(1, opts.parity_frames),
                                                    frame_source.PARITY_SEED)
    return preprocess(frames, ckpt.meta()), source


def _export_granularity(ckpt, model, g: float, d: Path, opts: BuildOptions, x: np.ndarray,
                        section: dict[str, Any], say: Report, result: ExportResult) -> None:
    from echoseg.models import count_macs

    meta = ckpt.meta(g)
    net = sub_network(model, g)
    section["macs_per_frame_exported"] = count_macs(net, 1.0, (meta.input_spec.height, meta.input_spec.width))
    files, parity, steps = section["files"], section["parity"], section["steps"]
    threshold = ckpt.threshold
    fp32_path = d / artifact_name(g)
    info = export_onnx(net, meta, fp32_path, opset=opts.opset)
    files["fp32"] = fp32_path.name
    steps["onnx"] = info.to_dict()
    say(f"{fp32_path}: {info.nodes} nodes, opset {info.opset}, {info.simplified_by or 'not simplified'}")
    y32 = _run_file(fp32_path, x) if opts.parity else None
    if opts.parity:
        report = parity["fp32_vs_torch"] = gate(TorchModel(model, g), y32, x, "fp32", threshold=threshold)
        if not report["passed"]:
            files["fp32"] = _reject(fp32_path).name
            check(report, "fp32", f"{fp32_path} vs PyTorch")
        say(_line("ONNX FP32 vs PyTorch", report))
    if opts.fp16 or opts.engine:
        _fp16_step(fp32_path, d / artifact_name(g, "fp16"), x, y32, threshold, opts, section, say)
    if opts.int8:
        _int8_step(ckpt, fp32_path, d / artifact_name(g, "int8"), meta, x, y32, threshold, opts, section, say)
    if opts.parity and openvino_gate.available():
        int8_path = d / artifact_name(g, "int8")
        parity.update(openvino_gate.gate_all(fp32_path, int8_path if files.get("int8") == int8_path.name else None,
                                             x, y32, threshold, say, opts.int8_form))
    if opts.fp16 or opts.engine:
        _engine_step(d, g, meta, opts, section, say, result)
        if opts.parity and "engine" in section["files"]:
            _engine_gate(d / section["files"]["engine"], x, y32, threshold, section, say)
    if opts.int8 and files.get("int8") == artifact_name(g, "int8"):
        _engine_step(d, g, meta, opts, section, say, result, precision="int8")
        if opts.parity and "engine_int8" in section["files"]:
            _engine_gate(d / section["files"]["engine_int8"], x, y32, threshold, section, say, precision="int8")


def _engine_gate(engine: Path, x: np.ndarray, y32: np.ndarray, threshold: float, section, say: Report,
                 precision: str = "fp16") -> None:
    """The engine itself against the FP32 graph, through the runtime's engine runner (what echo-run
    runs), at its precision's gate (FP16 or INT8); a miss renames the engine and its sidecar
    *.rejected.* and fails."""
    key = "engine" if precision == "fp16" else f"engine_{precision}"
    from echoseg.backends.session import SessionError
    from echoseg.backends.tensorrt import TrtSession

    try:
        sess = TrtSession(engine)
    except SessionError as exc:
        raise ExportError(str(exc)) from exc
    try:
        report = section["parity"][f"{key}_vs_fp32"] = gate(y32, _Chunked(sess), x, precision, threshold=threshold)
    finally:
        sess.close()
    if not report["passed"]:
        side = sidecar_path(engine)
        section["files"][key] = _reject(engine).name
        if side.is_file():
            section["files"][f"{key}_sidecar"] = _reject(side).name
        check(report, precision, f"{engine} vs FP32")
    say(_line(f"TensorRT {precision.upper()} engine vs FP32", report))


class _Chunked:
    """A TensorRT session fed at most 16 frames a call (within its profile): what the engine gate
    has always run, so its numbers come from the batch size the engine is tuned for (OPT 16)."""

    def __init__(self, sess) -> None:
        self.sess = sess

    def run(self, batch: np.ndarray) -> np.ndarray:
        step = max(self.sess.info.min_batch, min(self.sess.info.max_batch, 16))
        return np.concatenate([self.sess.run(batch[i:i + step]) for i in range(0, len(batch), step)])


def _run_file(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of the ONNX file ``path`` on ``x``, opened as echo-run opens it on a CPU (the FP32 reference)."""
    sess = open_graph(path)
    try:
        return run_logits(sess, x)
    finally:
        sess.close()


def _line(what: str, r: dict[str, Any]) -> str:
    return (f"{what}: max |dlogit| {r['max_abs_logit']:.2e}, mask agreement {r['mask_dice']:.5f}, "
            f"LV area error {r['lv_area_err_px_mean']:.2f} px mean / {r['lv_area_err_px_max']:.0f} max")


def _fp16_step(fp32_path: Path, path: Path, x, y32, threshold, opts: BuildOptions, section, say: Report) -> None:
    import onnx

    src = onnx.load(str(fp32_path))
    keep_nodes: list[str] = []
    for attempt in range(2):
        proto, info = convert_fp16(src, keep_fp32_nodes=keep_nodes)
        onnx.checker.check_model(proto)
        check_domains(proto, path.name)
        _check_ir(proto, src, path)
        save_onnx(proto, path)
        section["files"]["fp16"] = path.name
        section["steps"]["fp16"] = {**info.to_dict(), "types": tensor_types(proto)}
        if not opts.parity:
            return
        report = section["parity"]["fp16_vs_fp32"] = _fp16_gate(path, proto, x, y32, threshold)
        if report["passed"]:
            say(_line("FP16 vs FP32 (worse of ORT CPU and FP16-tensor emulation)", report))
            return
        head = last_compute_node(src)
        if attempt == 0 and head:
            say(f"FP16 graph missed the gate (agreement {report['mask_dice']:.5f}); "
                f"retrying with the logit head {head} in FP32")
            keep_nodes = [head]
            continue
        bad = _reject(path)
        section["files"]["fp16"] = bad.name
        check(report, "fp16", f"{bad} vs FP32")


def _fp16_gate(path: Path, proto, x, y32, threshold) -> dict[str, Any]:
    """The FP16 file on ONNX Runtime's CPU provider and its FP16-tensor emulation (export/fp16.py),
    against FP32; the emulation exists only in memory, hence OnnxGraph."""
    emulated = OnnxGraph(emulate_fp16(proto), optimize=False, name=f"{path.name} (FP16 emulation)")
    sess = open_graph(path)
    try:
        return gate(y32, {"emulated": emulated, "ort_cpu": sess}, x, "fp16", threshold=threshold)
    finally:
        sess.close()
        emulated.close()


def _check_ir(proto, src, path: Path) -> None:
    """A converted graph keeps the FP32 graph's IR version (what the runtimes were tested to load)."""
    if proto.ir_version > src.ir_version:
        raise ExportError(f"{path.name} has IR version {proto.ir_version}, above its FP32 graph's "
                          f"{src.ir_version}; older runtimes may refuse it (see echoseg.export.domains.keep_ir_version)")


def _int8_step(ckpt, fp32_path: Path, path: Path, meta, x, y32, threshold, opts: BuildOptions, section,
               say: Report) -> None:
    frames, source = frame_source.checkpoint_frames(ckpt, "train", max(1, opts.calib_frames), frame_source.CALIB_SEED)
    calib = preprocess(frames, ckpt.meta())
    info = quantize_int8(fp32_path, path, calib, meta, calib_source=source, method=opts.calib_method,
                         form=opts.int8_form)
    section["files"]["int8"] = path.name
    section["steps"]["int8"] = info.to_dict()
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    check_domains(proto, path.name)
    _check_ir(proto, onnx.load(str(fp32_path), load_external_data=False), path)
    if not opts.parity:
        return
    sess = open_graph(path)
    try:
        report = section["parity"]["int8_vs_fp32"] = gate(y32, sess, x, "int8", threshold=threshold)
    finally:
        sess.close()
    if not report["passed"]:
        bad = _reject(path)
        section["files"]["int8"] = bad.name
        check(report, "int8", f"{bad} vs FP32 (try --calib-method entropy or more --calib frames)")
    ms = report["onnxruntime_latency_ms_b1"] = _ort_latency({"fp32": fp32_path, "int8": path}, x)
    speed = ms["fp32"] / ms["int8"]
    say(_line(f"INT8, {info.form} form ({info.calib_frames} {source} calibration frames) vs FP32", report)
        + f"; ONNX Runtime batch 1 here: {ms['int8']:.2f} ms vs FP32 {ms['fp32']:.2f} ms ({speed:.2f}x"
        + (", slower: prefer FP32 or OpenVINO on this CPU)" if speed < 1 else ")"))


def _ort_latency(graphs: dict[str, Path], x: np.ndarray) -> dict[str, float]:
    """Batch-1 latency of each graph on ONNX Runtime as echo-run opens it (CPU provider, default threads)."""
    from echoseg.backends.ort import OrtSession

    sessions: dict[str, OrtSession] = {}
    try:
        for k, p in graphs.items():
            sessions[k] = OrtSession(p, providers=["CPUExecutionProvider"])
        return batch1_latency_ms({k: s.run for k, s in sessions.items()}, x)
    finally:
        for s in sessions.values():
            s.close()


def _engine_step(d: Path, g: float, meta, opts: BuildOptions, section, say: Report, result: ExportResult,
                 precision: str = "fp16") -> None:
    """The TensorRT engine of ``precision`` (fp16: from model.fp16.onnx; int8: from the tensorrt-form QDQ
    graph) where TensorRT and a GPU exist; otherwise a one-line note (an error with --engine)."""
    key = "engine" if precision == "fp16" else f"engine_{precision}"
    version, why = tensorrt_status()
    if not version:
        if opts.engine:
            raise TensorRTUnavailable(f"--engine asked for a TensorRT engine but {why}")
        _skip_engine(section, key, result, say, "TensorRT engine skipped", why)
        return
    if precision == "int8" and opts.int8_form != "tensorrt":
        why = (f"{artifact_name(g, 'int8')} is the {opts.int8_form} INT8 form, which TensorRT does not take; "
               "pass --int8-form tensorrt for an INT8 engine")
        _skip_engine(section, key, result, say, "TensorRT INT8 engine skipped", why)
        return
    graphs = {p: d / artifact_name(g, p) for p in ("fp32", "fp16", "int8")}
    plan = plan_engine(version, precision, graphs, opts.profile, opts.workspace_mb)
    engine = d / artifact_name(g, precision, "engine")
    built = build_engine(plan, engine, opts.timing_cache or Path(opts.out) / "timing.cache")
    gpu = {k: built[k] for k in ("gpu_name", "compute_capability", "cuda_version")}  # the CUDA device built on
    sidecar = EngineSidecar(meta=meta, tensorrt_version=built["tensorrt_version"], cuda_version=gpu["cuda_version"],
                            gpu_name=gpu["gpu_name"], compute_capability=gpu["compute_capability"],
                            onnx_sha256=file_sha256(plan.onnx_path), onnx_file=plan.onnx_path.name,
                            precision=plan.precision, profile=plan.profile, build_seconds=built["build_seconds"],
                            strongly_typed=plan.strongly_typed)
    side = write_sidecar(engine, sidecar)
    section["files"][key] = engine.name
    section["files"][f"{key}_sidecar"] = side.name
    section["steps"][key] = {**plan.to_dict(), **built, **gpu, "onnx_sha256": sidecar.onnx_sha256}
    say(f"{engine}: TensorRT {built['tensorrt_version']}, {gpu['gpu_name']} (sm {gpu['compute_capability']}), "
        f"{precision.upper()}, built in {built['build_seconds']:.1f} s")


def _skip_engine(section: dict, key: str, result, say, what: str, why: str) -> None:
    """Record a skipped engine step, and note it once per export (not once per granularity)."""
    section["steps"][key] = {"skipped": why}
    if not any(what.removeprefix("TensorRT ") in n for n in result.notes):
        note = f"{what}: {why}"
        result.notes.append(note)
        say(note)

"""What to benchmark: artifacts found under exports/ (or runs/), one Target per runnable file.

An export directory holds ONNX files (FP32, FP16, INT8, granularity sub-networks) and maybe
TensorRT engines with ``<engine>.json`` sidecars; each ONNX file describes itself (model,
granularity) in its metadata. The PyTorch reference is the checkpoint the export came from:
named in ``manifest.json`` or found under runs/ by the sha256 the ONNX metadata records.
Whatever cannot run here becomes a :class:`Skipped` entry with the reason, never silently dropped.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
BACKENDS = ("torch", "onnxruntime", "tensorrt")
CHECKPOINT_NAMES = ("best.pt", "last.pt")
ENGINE_SUFFIXES = (".engine", ".plan")


@dataclass(frozen=True)
class Target:
    """One artifact run by one backend (the batch size is chosen later)."""

    model: str  # label: the export or run directory name
    arch: str
    granularity: float
    backend: str
    precision: str
    artifact: str
    checkpoint: str = ""  # the PyTorch reference; "" when unknown
    artifact_mb: float = 0.0
    macs_per_frame: int | None = None  # from the export's manifest, where it records them


@dataclass(frozen=True)
class Skipped:
    model: str
    backend: str
    precision: str
    reason: str
    granularity: float | None = None
    batch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    targets: list[Target] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def precision_of(name: str) -> str:
    """fp16/int8 from the file name (model.fp16.onnx, model.int8.onnx), fp32 otherwise."""
    n = name.lower()
    return "fp16" if ".fp16." in n else "int8" if ".int8." in n else "fp32"


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _usable(p: Path) -> bool:
    """Not a hidden/temporary file and not a graph the exporter rejected at its parity gate."""
    return not p.name.startswith(".") and ".rejected." not in p.name


def trt_problem() -> str | None:
    """None when TensorRT can run here, else what is missing (the runtime's own check)."""
    try:
        from echoseg.runtime.discover import tensorrt_problem
    except ImportError:  # runtime without discovery: only check that the module exists
        return None if has_module("tensorrt") else "tensorrt is not installed"
    return tensorrt_problem()


def has_cuda_gpu() -> bool:
    """A cheap check for an NVIDIA GPU (driver present), without importing torch."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def _mb(path: Path) -> float:
    return path.stat().st_size / (1024.0 * 1024.0)


class CheckpointFinder:
    """Finds the run checkpoint with a given sha256 under a runs/ folder (hashes cached)."""

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = Path(runs_dir)
        self._hashes: dict[str, Path] | None = None

    def find(self, sha256: str) -> Path | None:
        if not sha256:
            return None
        if self._hashes is None:
            from echoseg.train.checkpoint import file_sha256

            self._hashes = {}
            if self.runs_dir.is_dir():
                for name in CHECKPOINT_NAMES:
                    for p in sorted(self.runs_dir.glob(f"*/{name}")):
                        self._hashes.setdefault(file_sha256(p), p)
        return self._hashes.get(sha256)


def manifest_macs(export_dir: Path, g: float) -> int | None:
    """MACs per frame at granularity g as the export's manifest.json records them, if it does."""
    try:
        macs = json.loads((export_dir / "manifest.json").read_text()).get("macs_per_frame") or {}
        value = macs.get(f"{g:g}") if isinstance(macs, dict) else None
        return int(value) if value is not None else None
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def _manifest_checkpoint(export_dir: Path, sha256: str) -> Path | None:
    """A source checkpoint path recorded in manifest.json, if it exists and matches the sha256."""
    from echoseg.train.checkpoint import file_sha256

    mf = export_dir / "manifest.json"
    if not mf.is_file():
        return None
    try:
        data = json.loads(mf.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    found: list[str] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if isinstance(v, str) and v.endswith((".pt", ".pth")) and ("checkpoint" in k or "source" in k):
                    found.append(v)
                else:
                    walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    walk(data)
    for cand in found:
        for p in (Path(cand), export_dir / cand):
            if p.is_file() and (not sha256 or file_sha256(p) == sha256):
                return p
    return None


def _torch_targets(label: str, arch: str, ckpt: Path, granularities: Iterable[float],
                   precisions: tuple[str, ...], plan: Plan) -> None:
    if not has_module("torch"):
        plan.skipped.append(Skipped(label, "torch", "fp32", "PyTorch is not installed here (pip install 'echoseg[train]')"))
        return
    for prec in precisions:
        if prec == "int8":
            continue  # PyTorch int8 is not a backend here; INT8 runs through ONNX Runtime / TensorRT
        if prec == "fp16" and not has_cuda_gpu():
            plan.skipped.append(Skipped(label, "torch", "fp16", "torch fp16 needs a CUDA GPU; none on this machine"))
            continue
        for g in sorted(set(granularities)):
            plan.targets.append(Target(label, arch, g, "torch", prec, str(ckpt), str(ckpt), _mb(ckpt)))


def plan_export(export_dir: Path, finder: CheckpointFinder, backends: tuple[str, ...],
                precisions: tuple[str, ...]) -> Plan:
    """Targets of one export directory (ONNX files, engines, and its source checkpoint)."""
    from echoseg.config import ConfigError, EngineSidecar
    from echoseg.runtime.ort import read_onnx_meta
    from echoseg.runtime.session import SessionError

    plan = Plan()
    label = export_dir.name
    onnx_files = sorted(p for p in export_dir.rglob("*.onnx") if _usable(p))
    metas = []
    for p in onnx_files:
        try:
            metas.append((p, read_onnx_meta(p)))
        except SessionError as exc:
            plan.skipped.append(Skipped(label, "onnxruntime", precision_of(p.name), str(exc)))
    arch = metas[0][1].model.name if metas else "?"
    sha = next((m.source_sha256 for _, m in metas if m.source_sha256), "")
    if "onnxruntime" in backends:
        for p, m in metas:
            if precision_of(p.name) in precisions:
                plan.targets.append(Target(label, m.model.name, m.granularity, "onnxruntime",
                                           precision_of(p.name), str(p), "", _mb(p),
                                           manifest_macs(p.parent, m.granularity)))
        have = {precision_of(p.name) for p, _ in metas}
        for prec in precisions:
            if prec not in have:
                plan.skipped.append(Skipped(label, "onnxruntime", prec,
                                            f"{export_dir} has no {prec} ONNX; make one with echo-export"))
    if "tensorrt" in backends:
        engines = sorted(p for p in export_dir.rglob("*") if p.suffix in ENGINE_SUFFIXES and _usable(p))
        problem = trt_problem() if engines else None
        if not engines:
            plan.skipped.append(Skipped(label, "tensorrt", "-", f"no TensorRT engine in {export_dir}; "
                                        "build one on the GPU box with echo-export (engine option)"))
        for e in engines:
            prec = precision_of(e.name)
            if prec not in precisions:
                continue
            side = e.with_suffix(".json")  # model.fp16.engine -> model.fp16.json
            try:
                sidecar = EngineSidecar.from_dict(json.loads(side.read_text()))
            except (OSError, json.JSONDecodeError, ConfigError) as exc:
                plan.skipped.append(Skipped(label, "tensorrt", prec, f"{e}: no readable sidecar {side.name} ({exc})"))
                continue
            meta, prec = sidecar.meta, sidecar.precision
            if problem:
                plan.skipped.append(Skipped(label, "tensorrt", prec, f"TensorRT cannot run here: {problem} "
                                            "(GPU box: pip install 'echoseg[gpu]')", meta.granularity))
                continue
            plan.targets.append(Target(label, meta.model.name, meta.granularity, "tensorrt", prec, str(e), "", _mb(e),
                                       manifest_macs(e.parent, meta.granularity)))
    ckpt = _manifest_checkpoint(export_dir, sha) or finder.find(sha)
    plan.targets = [Target(**{**asdict(t), "checkpoint": str(ckpt or "")}) for t in plan.targets]
    if "torch" in backends:
        if ckpt is None:
            plan.skipped.append(Skipped(label, "torch", "fp32", f"no checkpoint with sha256 {sha[:12] or '?'} "
                                        f"under {finder.runs_dir}/ (the export's source); no PyTorch reference"))
        else:
            gs = {m.granularity for _, m in metas} or {1.0}
            _torch_targets(label, arch, ckpt, gs, precisions, plan)
    return plan


def plan_checkpoint(path: Path, backends: tuple[str, ...], precisions: tuple[str, ...]) -> Plan:
    """Targets of a run directory or checkpoint file that has no export: PyTorch only."""
    from echoseg.train.checkpoint import load_checkpoint, resolve

    plan = Plan()
    ckpt = resolve(path)
    label = path.name if path.is_dir() else path.parent.name
    for b in backends:
        if b != "torch":
            plan.skipped.append(Skipped(label, b, "-", f"{path} is a checkpoint with no export; "
                                        f"export it with echo-export to benchmark {b}"))
    if "torch" in backends:
        if not has_module("torch"):
            plan.skipped.append(Skipped(label, "torch", "fp32", "PyTorch is not installed here"))
            return plan
        cfg = load_checkpoint(ckpt).model
        _torch_targets(label, cfg.name, ckpt, cfg.granularities, precisions, plan)
    return plan


def plan_onnx(path: Path, finder: CheckpointFinder, precisions: tuple[str, ...]) -> Plan:
    from echoseg.runtime.ort import read_onnx_meta

    meta = read_onnx_meta(path)
    ckpt = finder.find(meta.source_sha256)
    return Plan([Target(path.parent.name, meta.model.name, meta.granularity, "onnxruntime",
                        precision_of(path.name), str(path), str(ckpt or ""), _mb(path))])


def _is_export(d: Path) -> bool:
    return any(_usable(p) for pattern in ("*.onnx", "*.engine", "*.plan") for p in d.rglob(pattern))


def discover(sources: list[str] | None = None, exports_dir: str | Path = "exports", runs_dir: str | Path = "runs",
             backends: Iterable[str] = BACKENDS, precisions: Iterable[str] = PRECISIONS,
             granularities: Iterable[float] | None = None, names: Iterable[str] = ()) -> Plan:
    """Everything to benchmark: given sources, else every export, else every run checkpoint.

    ``names`` keeps targets whose label or architecture matches; ``granularities`` filters too.
    """
    backends, precisions = tuple(backends), tuple(precisions)
    finder = CheckpointFinder(Path(runs_dir))
    paths = [Path(s) for s in sources or []]
    if not paths:
        ex = Path(exports_dir)
        paths = sorted(p for p in ex.iterdir() if p.is_dir()) if ex.is_dir() else []
        paths = [p for p in paths if _is_export(p)]
        if not paths and Path(runs_dir).is_dir():
            paths = sorted(p.parent for p in Path(runs_dir).glob("*/best.pt")) or \
                sorted(p.parent for p in Path(runs_dir).glob("*/last.pt"))
    plan = Plan()
    for p in paths:
        if not p.exists():
            plan.skipped.append(Skipped(str(p), "-", "-", f"{p}: no such export, run or model file"))
            continue
        if p.is_dir() and _is_export(p):
            sub = plan_export(p, finder, backends, precisions)
        elif p.suffix == ".onnx":
            sub = plan_onnx(p, finder, precisions) if "onnxruntime" in backends else Plan()
        else:
            sub = plan_checkpoint(p, backends, precisions)
        plan.targets += sub.targets
        plan.skipped += sub.skipped
    names = tuple(names)
    if names:
        plan.targets = [t for t in plan.targets if t.model in names or t.arch in names]
        plan.skipped = [s for s in plan.skipped if s.model in names]
    if granularities:
        gs = {float(g) for g in granularities}
        plan.targets = [t for t in plan.targets if t.granularity in gs]
    plan.targets.sort(key=lambda t: (t.model, -t.granularity, BACKENDS.index(t.backend), PRECISIONS.index(t.precision)))
    return plan

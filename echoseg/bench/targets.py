"""What to benchmark: artifacts found under exports/ (or runs/), one Target per runnable file.

An export directory holds ONNX files (FP32, FP16, INT8, granularity sub-networks) and maybe
TensorRT engines with ``<engine>.json`` sidecars; each ONNX file describes itself (model,
granularity) in its metadata. The PyTorch reference is the checkpoint the export came from:
named in ``manifest.json`` or found under runs/ by the sha256 the ONNX metadata records.
Whatever cannot run here becomes a :class:`Skipped` entry with the reason, never silently dropped.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from echoseg import artifacts, pretrained
from echoseg.artifacts import CHECKPOINT_NAMES, ArtifactError, file_sha256, precision_of
from echoseg.config import ConfigError

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
#: what a row can run at: the files' precisions, and bf16 (OpenVINO running the FP32 graph in BF16)
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


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


def has_module(name: str) -> bool:
    from echoseg.backends.registry import importable

    return importable(name)


def backend_problem(name: str, path: Path) -> str | None:
    """The runtime backend's own check of whether ``path`` can run here (None: it can)."""
    from echoseg.backends.registry import get

    return get(name).problem(path)


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
            self._hashes = {}
            if self.runs_dir.is_dir():
                for name in CHECKPOINT_NAMES:
                    for p in sorted(self.runs_dir.glob(f"*/{name}")):
                        self._hashes.setdefault(file_sha256(p), p)
        return self._hashes.get(sha256)


def manifest_macs(export_dir: Path, g: float) -> int | None:
    """MACs per frame at granularity g as the export's manifest.json records them, if it does."""
    try:
        macs = artifacts.read_manifest(export_dir).get("macs_per_frame") or {}
        value = macs.get(f"{g:g}") if isinstance(macs, dict) else None
        return int(value) if value is not None else None
    except (ArtifactError, ValueError, AttributeError, TypeError):
        return None


def _manifest_checkpoint(export_dir: Path, sha256: str) -> Path | None:
    """The source checkpoint the manifest names, if it exists and matches the sha256."""
    try:
        named = str(artifacts.read_manifest(export_dir).get("checkpoint") or "")
    except ArtifactError:
        return None
    for p in (Path(named), export_dir / named) if named else ():
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
    """Targets of one export directory (its index: ONNX files, engines) and its source checkpoint."""
    plan = Plan()
    label = export_dir.name
    index = artifacts.index_export_dir(export_dir)
    for bad, why in index.refused:
        plan.skipped.append(Skipped(label, "-", precision_of(bad), why, artifacts.granularity_from_name(bad)))
    for bad in index.rejected:
        plan.skipped.append(Skipped(label, "-", precision_of(bad), f"{bad.name} was rejected at the export's "
                                    "parity gate; not benchmarked", artifacts.granularity_from_name(bad)))
    onnx = [a for a in index.files if a.kind == "onnx"]
    for a in onnx:
        if a.problem:
            plan.skipped.append(Skipped(label, "onnxruntime", a.precision, a.problem, a.granularity))
    metas = [a for a in onnx if not a.problem]
    arch = metas[0].meta.model.name if metas else "?"
    sha = next((a.meta.source_sha256 for a in metas if a.meta.source_sha256), "")
    if "onnxruntime" in backends:
        for a in metas:
            if a.precision in precisions:
                plan.targets.append(Target(label, a.meta.model.name, a.granularity, "onnxruntime", a.precision,
                                           str(a.path), "", _mb(a.path), manifest_macs(export_dir, a.granularity)))
        have = {a.precision for a in metas}
        for prec in precisions:
            if prec not in have:
                plan.skipped.append(Skipped(label, "onnxruntime", prec,
                                            f"{export_dir} has no {prec} ONNX; make one with echo-export"))
    if "openvino" in backends:
        _openvino_targets(label, export_dir, metas, precisions, plan)
    if "tensorrt" in backends:
        engines = [a for a in index.files if a.kind == "engine"]
        if not engines:
            plan.skipped.append(Skipped(label, "tensorrt", "-", f"no TensorRT engine in {export_dir}; "
                                        "build one on the GPU box with echo-export (engine option)"))
        for e in engines:
            if e.precision not in precisions:
                continue
            problem = e.problem or backend_problem("tensorrt", e.path)
            if problem:
                plan.skipped.append(Skipped(label, "tensorrt", e.precision, f"TensorRT cannot run {e.path.name} "
                                            f"here: {problem}", e.granularity))
                continue
            plan.targets.append(Target(label, e.meta.model.name, e.granularity, "tensorrt", e.precision,
                                       str(e.path), "", _mb(e.path), manifest_macs(export_dir, e.granularity)))
    ckpt = _manifest_checkpoint(export_dir, sha) or finder.find(sha)
    plan.targets = [Target(**{**asdict(t), "checkpoint": str(ckpt or "")}) for t in plan.targets]
    if "torch" in backends:
        if ckpt is None:
            plan.skipped.append(Skipped(label, "torch", "fp32", f"no checkpoint with sha256 {sha[:12] or '?'} "
                                        f"under {finder.runs_dir}/ (the export's source); no PyTorch reference"))
        else:
            gs = {a.granularity for a in metas} or {1.0}
            _torch_targets(label, arch, ckpt, gs, precisions, plan)
    return plan


def _openvino_targets(label: str, export_dir: Path, metas, precisions: tuple[str, ...], plan: Plan) -> None:
    """OpenVINO rows: fp32 and bf16 on each FP32 graph, int8 on each INT8 graph; what cannot run is skipped."""
    metas = [a for a in metas if a.precision in ("fp32", "int8")]  # OpenVINO leaves FP16 graphs to TensorRT
    if not metas:
        return
    problem = backend_problem("openvino", metas[0].path)  # the library's own check, on a file it runs
    if problem:
        plan.skipped.append(Skipped(label, "openvino", "-", problem))
        return
    from echoseg.backends import ovplan

    bf16 = ovplan.has_bf16()
    for a in metas:
        runs = {"fp32": ("fp32", "bf16"), "int8": ("int8",)}.get(a.precision, ())
        for prec in runs:
            if prec not in precisions:
                continue
            if prec == "bf16" and not bf16:
                plan.skipped.append(Skipped(label, "openvino", "bf16", "this CPU reports no BF16 to OpenVINO "
                                            f"({', '.join(ovplan.capabilities())})", a.granularity))
                continue
            plan.targets.append(Target(label, a.meta.model.name, a.granularity, "openvino", prec, str(a.path), "",
                                       _mb(a.path), manifest_macs(export_dir, a.granularity)))


def plan_checkpoint(path: Path, backends: tuple[str, ...], precisions: tuple[str, ...]) -> Plan:
    """Targets of a run directory or checkpoint file that has no export: PyTorch only."""
    from echoseg.models.checkpoint import load_checkpoint, resolve

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
    if artifacts.is_rejected(path):
        return Plan(skipped=[Skipped(path.parent.name, "onnxruntime", precision_of(path),
                                     f"{path.name} was rejected at the export's parity gate; not benchmarked")])
    meta = artifacts.read_onnx_meta(path)
    ckpt = finder.find(meta.source_sha256)
    return Plan([Target(path.parent.name, meta.model.name, meta.granularity, "onnxruntime",
                        precision_of(path), str(path), str(ckpt or ""), _mb(path))])


def _is_export(d: Path) -> bool:
    try:
        return d.is_dir() and artifacts.artifact_kind(d) == "export-dir"
    except ArtifactError:
        return False


def _bundled_or_fail() -> Path:
    d = pretrained.bundled_dir()
    if d is None:
        raise ConfigError("--model pretrained: this install has no bundled model; build it with make pretrained")
    return d


def discover(sources: list[str] | None = None, exports_dir: str | Path = "exports", runs_dir: str | Path = "runs",
             backends: Iterable[str] = BACKENDS, precisions: Iterable[str] = PRECISIONS,
             granularities: Iterable[float] | None = None, names: Iterable[str] = ()) -> Plan:
    """Everything to benchmark: given sources, else every export, else every run checkpoint.

    ``names`` keeps targets whose label or architecture matches; ``granularities`` filters too.
    """
    backends, precisions = tuple(backends), tuple(precisions)
    finder = CheckpointFinder(Path(runs_dir))
    paths = [_bundled_or_fail() if pretrained.is_name(s) else Path(s) for s in sources or []]
    if not paths:
        ex = Path(exports_dir)
        paths = artifacts.export_dirs_under(ex) if ex.is_dir() and not (ex / artifacts.MANIFEST).is_file() else []
        if not paths and Path(runs_dir).is_dir():
            paths = sorted(p.parent for p in Path(runs_dir).glob("*/best.pt")) or \
                sorted(p.parent for p in Path(runs_dir).glob("*/last.pt"))
        if not paths and pretrained.bundled_dir() is not None:
            log.warning("no export under %s nor run under %s: benchmarking %s", exports_dir, runs_dir,
                        pretrained.describe())
            paths = [pretrained.bundled_dir()]
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

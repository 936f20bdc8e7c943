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



def _records():
    from echoseg.backends import registry

    return registry.all_backends()


def bench_order() -> tuple[str, ...]:
    """The registered backends as bench lists them: auto's order reversed (the PyTorch reference first)."""
    return tuple(b.name for b in reversed(_records()))


def bench_precisions() -> tuple[str, ...]:
    """Every precision some backend is planned at; a precision new to the list goes right after the one it
    follows in its backend's own list (auto's order of backends): fp32, bf16, fp16, int8 for the built-in ones."""
    out: list[str] = []
    for b in _records():
        for i, p in enumerate(b.bench_precisions):
            if p not in out:
                prev = b.bench_precisions[i - 1] if i else None
                out.insert(out.index(prev) + 1 if prev in out else len(out), p)
    return tuple(out)


def reference_backend() -> str:
    """The backend that runs a checkpoint itself (PyTorch): the reference every row's masks are compared with."""
    return next(b.name for b in reversed(_records()) if b.artifact == "checkpoint")


def _record(name: str):
    """The registered backend called ``name``, or None (an unknown name asked through the API plans nothing)."""
    return next((b for b in _records() if b.name == name), None)


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


def _checkpoint_targets(rec, label: str, arch: str, ckpt: Path, granularities: Iterable[float],
                        precisions: tuple[str, ...], plan: Plan) -> None:
    """Rows of a backend that runs the checkpoint itself (PyTorch): each asked precision it is planned at."""
    problem = rec.problem(ckpt)
    if problem:
        plan.skipped.append(Skipped(label, rec.name, rec.bench_precisions[0], problem))
        return
    for prec in precisions:
        if prec not in rec.bench_precisions:
            continue  # e.g. PyTorch int8 is not a backend here; INT8 runs through ONNX Runtime / TensorRT
        why = _cannot_run(rec, prec)
        if why:
            plan.skipped.append(Skipped(label, rec.name, prec, why))
            continue
        for g in sorted(set(granularities)):
            plan.targets.append(Target(label, arch, g, rec.name, prec, str(ckpt), str(ckpt), _mb(ckpt)))


def _cannot_run(rec, prec: str) -> str | None:
    """Why this machine cannot run ``prec`` with the backend (None: it can)."""
    if prec in rec.gpu_precisions and not has_cuda_gpu():
        return f"{rec.name} {prec} needs a CUDA GPU; none on this machine"
    return rec.unavailable(prec)


def _file_targets(rec, label: str, export_dir: Path, index, precisions: tuple[str, ...], plan: Plan) -> None:
    """Rows of a backend that runs the export's files of its kind: each file in the precisions its record
    runs it at (``file_precision``), checked as its ``plan_check`` says; what cannot run is skipped."""
    runs = {p: rec.file_precision.get(p, p) for p in rec.bench_precisions}
    files = [a for a in index.files if a.kind == rec.artifact and (rec.plan_check == "file" or not a.problem)]
    own = [a for a in files if a.precision in runs.values()]
    if not own and rec.none_found:
        plan.skipped.append(Skipped(label, rec.name, "-", rec.none_found.format(dir=export_dir)))
    if own and rec.plan_check == "library":  # the library's own check, on a file it runs
        problem = rec.problem(own[0].path)
        if problem:
            plan.skipped.append(Skipped(label, rec.name, "-", problem))
            return
    for a in own:
        for prec in [p for p, f in runs.items() if f == a.precision and p in precisions]:
            problem = (a.problem or rec.problem(a.path)) if rec.plan_check == "file" else None
            if problem:
                plan.skipped.append(Skipped(label, rec.name, a.precision, f"{rec.title} cannot run {a.path.name} "
                                            f"here: {problem}", a.granularity))
                continue
            why = _cannot_run(rec, prec)
            if why:
                plan.skipped.append(Skipped(label, rec.name, prec, why, a.granularity))
                continue
            plan.targets.append(Target(label, a.meta.model.name, a.granularity, rec.name, prec, str(a.path), "",
                                       _mb(a.path), manifest_macs(export_dir, a.granularity)))
    if rec.missing:
        have = {a.precision for a in own}
        for prec in precisions:
            if rec.file_precision.get(prec, prec) not in have:
                plan.skipped.append(Skipped(label, rec.name, prec, rec.missing.format(dir=export_dir, prec=prec)))


def _asked(backends: tuple[str, ...]) -> list:
    """The asked backends' records, in bench's order."""
    return [b for b in reversed(_records()) if b.name in backends]


def _files_reported_once(kind: str):
    """The backend a damaged file of ``kind`` is listed under when no backend of that kind checks its files
    itself (ONNX files: under ONNX Runtime, whatever was asked); None when one does."""
    of_kind = [b for b in reversed(_records()) if b.artifact == kind]
    return None if not of_kind or any(b.plan_check == "file" for b in of_kind) else of_kind[0]


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
    for a in index.files:
        under = _files_reported_once(a.kind) if a.problem else None
        if under is not None:
            plan.skipped.append(Skipped(label, under.name, a.precision, a.problem, a.granularity))
    metas = [a for a in index.files if a.kind == "onnx" and not a.problem]
    arch = metas[0].meta.model.name if metas else "?"
    sha = next((a.meta.source_sha256 for a in metas if a.meta.source_sha256), "")
    asked = _asked(backends)
    for rec in asked:
        if rec.artifact != "checkpoint":
            _file_targets(rec, label, export_dir, index, precisions, plan)
    ckpt = _manifest_checkpoint(export_dir, sha) or finder.find(sha)
    plan.targets = [Target(**{**asdict(t), "checkpoint": str(ckpt or "")}) for t in plan.targets]
    for rec in asked:
        if rec.artifact != "checkpoint":
            continue
        if ckpt is None:
            plan.skipped.append(Skipped(label, rec.name, rec.bench_precisions[0], f"no checkpoint with sha256 "
                                        f"{sha[:12] or '?'} under {finder.runs_dir}/ (the export's source); "
                                        f"no {rec.title} reference"))
        else:
            gs = {a.granularity for a in metas} or {1.0}
            _checkpoint_targets(rec, label, arch, ckpt, gs, precisions, plan)
    return plan


def plan_checkpoint(path: Path, backends: tuple[str, ...], precisions: tuple[str, ...]) -> Plan:
    """Targets of a run directory or checkpoint file that has no export: the checkpoint's backends only."""
    from echoseg.models.checkpoint import load_checkpoint, resolve

    plan = Plan()
    ckpt = resolve(path)
    label = path.name if path.is_dir() else path.parent.name
    for b in backends:
        rec = _record(b)
        if rec is None or rec.artifact != "checkpoint":
            plan.skipped.append(Skipped(label, b, "-", f"{path} is a checkpoint with no export; "
                                        f"export it with echo-export to benchmark {b}"))
    for rec in _asked(backends):
        if rec.artifact != "checkpoint":
            continue
        problem = rec.problem(ckpt)
        if problem:
            plan.skipped.append(Skipped(label, rec.name, rec.bench_precisions[0], problem))
            continue
        cfg = load_checkpoint(ckpt).model
        _checkpoint_targets(rec, label, cfg.name, ckpt, cfg.granularities, precisions, plan)
    return plan


def plan_onnx(path: Path, finder: CheckpointFinder, precisions: tuple[str, ...], backend: str) -> Plan:
    """A single ONNX file given: one row with ``backend`` at the file's own precision."""
    if artifacts.is_rejected(path):
        return Plan(skipped=[Skipped(path.parent.name, backend, precision_of(path),
                                     f"{path.name} was rejected at the export's parity gate; not benchmarked")])
    meta = artifacts.read_onnx_meta(path)
    ckpt = finder.find(meta.source_sha256)
    return Plan([Target(path.parent.name, meta.model.name, meta.granularity, backend,
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
             backends: Iterable[str] | None = None, precisions: Iterable[str] | None = None,
             granularities: Iterable[float] | None = None, names: Iterable[str] = ()) -> Plan:
    """Everything to benchmark: given sources, else every export, else every run checkpoint.

    ``backends``/``precisions``: default every registered backend and every precision one is planned at.
    ``names`` keeps targets whose label or architecture matches; ``granularities`` filters too.
    """
    order, known = bench_order(), bench_precisions()
    backends = order if backends is None else tuple(backends)
    precisions = known if precisions is None else tuple(precisions)
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
            runner = next((b for b in reversed(_records()) if b.artifact == "onnx"), None)  # ONNX Runtime
            sub = plan_onnx(p, finder, precisions, runner.name) if runner and runner.name in backends else Plan()
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
    plan.targets.sort(key=lambda t: (t.model, -t.granularity, order.index(t.backend), known.index(t.precision)))
    return plan

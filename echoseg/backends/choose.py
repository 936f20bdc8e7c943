"""Which model file and which backend: the newest export or run by default, ``auto`` by what is here.

``auto`` walks the registered backends in their order of preference (TensorRT engine, then
ONNX on OpenVINO where the export's OpenVINO parity records allow it, then ONNX on ONNX Runtime,
then a checkpoint on PyTorch) and takes the first whose artifact exists for the asked granularity
and can run here; each one passed over is named with its reason. A backend with a ``pick``
(OpenVINO) chooses its own file and precision among those that passed parity. The
export directory is read only through :func:`echoseg.artifacts.index_export_dir`, so a graph
the exporter rejected at its parity gate is never run: asking for it is a one-line error.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from echoseg.artifacts import (ArtifactError, artifact_kind, checkpoint_in, export_dirs_under, index_export_dir,
                               integrity_problem, is_rejected, meta_of)

from echoseg import pretrained

from . import registry
from .session import Session, SessionError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelChoice:
    """The artifact to open, the backend to open it with, and why."""

    path: Path
    backend: str
    reason: str
    options: dict[str, Any] = field(default_factory=dict)  # open options auto chose (e.g. precision)


def find_default_model(root: str | os.PathLike = ".") -> Path:
    """The newest export directory under exports/, else the newest run under runs/ (best.pt),
    else the model bundled with the package (said in one warning line)."""
    base = Path(root)
    exports = export_dirs_under(base / "exports")
    if exports:
        return max(exports, key=lambda p: p.stat().st_mtime)
    runs = [p for p in (base / "runs").rglob("best.pt") if p.is_file()] if (base / "runs").is_dir() else []
    if runs:
        return max(runs, key=lambda p: p.stat().st_mtime).parent
    bundled = pretrained.bundled_dir()
    if bundled is not None:
        log.warning("no model given and none under %s or %s: using %s", base / "exports", base / "runs",
                    pretrained.describe())
        return bundled
    raise SessionError(f"no model given and none found under {base / 'exports'} (manifest.json or model.onnx) "
                       f"or {base / 'runs'} (best.pt), and this install has no bundled model; pass --model PATH "
                       "or run echo-train / echo-export first")


def resolve_model(model: str | os.PathLike | None, root: str | os.PathLike = ".") -> Path:
    """--model as a path: ``pretrained`` is the bundled model; none given, the default search."""
    if pretrained.is_name(model):
        bundled = pretrained.bundled_dir()
        if bundled is None:
            raise SessionError("--model pretrained: this install has no bundled model (a source tree before "
                               "`make pretrained`); build it with make pretrained or pass --model PATH")
        return bundled
    return Path(model) if model is not None else find_default_model(root)


def _g_note(granularity: float | None) -> str:
    return "" if granularity is None else f" at granularity {granularity:g}"


def choose(model: str | os.PathLike | None, backend: str = "auto", granularity: float | None = None,
           root: str | os.PathLike = ".", precision: str | None = None,
           failed: dict[str, str] | None = None) -> ModelChoice:
    """Resolve --model/--backend/--granularity to one artifact and backend, or explain why not.

    ``failed``: backends auto already tried that could not open the model here (name -> why);
    they are passed over, with that reason (see :func:`open_with_fallback`)."""
    if backend != "auto":
        registry.get(backend)  # unknown names fail here, with the list of known ones
    path = resolve_model(model, root)
    if not path.exists():
        raise SessionError(f"{path}: no such model file or directory")
    try:
        kind = artifact_kind(path)
        if kind == "export-dir":
            return _choose_in_dir(path, backend, granularity, precision, failed or {})
        return _choose_file(path, kind, backend, granularity, failed or {})
    except ArtifactError as exc:
        raise SessionError(str(exc)) from exc


def _choose_file(path: Path, kind: str, backend: str, granularity: float | None,
                 failed: dict[str, str]) -> ModelChoice:
    if is_rejected(path):
        raise SessionError(f"{path}: this graph was rejected at the export's parity gate and is never run; "
                           "fix and re-export it with echo-export build, or pass another file")
    damaged = integrity_problem(path) if kind in ("onnx", "engine") else None
    if damaged:
        raise SessionError(damaged)
    able = registry.for_artifact(kind)
    if backend != "auto" and backend not in [b.name for b in able]:
        want = registry.get(backend).artifact
        raise SessionError(f"{path}: a {kind} cannot be run with backend {backend} (it runs a {want}); "
                           f"use --backend {' or '.join(b.name for b in able) or '?'} or auto")
    candidates = able if backend == "auto" else [registry.get(backend)]
    if granularity is not None and kind in ("engine", "onnx"):
        g = meta_of(path).granularity
        if abs(g - granularity) > 1e-9:
            raise SessionError(f"{path}: this artifact is granularity {g:g}, not {granularity:g}; pass the "
                               "export directory or the checkpoint to pick another granularity")
    problems = []
    for b in candidates:
        if b.name in failed:
            problems.append(f"{b.name}: {_could_not_open(failed[b.name])}")
            continue
        problem = b.problem(path) or (b.defer() if backend == "auto" else None)
        if problem is None and backend == "auto" and b.pick is not None:
            picked, chosen, why = b.pick(index_export_dir(path.parent), granularity, None, only=path)
            if picked is not None:
                return ModelChoice(path, b.name, f"{kind} given{_g_note(granularity)}: {why}", dict(chosen))
            problem = why
        if problem is None:
            return ModelChoice(path, b.name, f"{kind} given{_g_note(granularity)}")
        problems.append(f"{b.name}: {problem}")
    hint = "; pass the .onnx instead" if kind == "engine" else ""
    raise SessionError(f"{path}: cannot run this {kind} here ({'; '.join(problems)}){hint}")


def _pick_problem(b, d: Path) -> str | None:
    """The backend's own check, on the directory's plain model file (e.g. its library is missing)."""
    return b.problem(d / "model.onnx")


_WARNED: set[str] = set()


def _warn_refused(index, granularity: float | None, choice: ModelChoice) -> ModelChoice:
    """One warning line per refused file (once per process): it does not match its manifest, and what runs instead."""
    for p, why in index.refused_for(granularity):
        line = f"{why}; running {choice.path.name} with {choice.backend} instead"
        if line not in _WARNED:
            _WARNED.add(line)
            log.warning("%s", line)
    return choice


def _could_not_open(why: str) -> str:
    return f"could not open it here ({why})"


def _choose_in_dir(d: Path, backend: str, granularity: float | None, precision: str | None,
                   failed: dict[str, str]) -> ModelChoice:
    index = index_export_dir(d)
    note = _g_note(granularity)
    # files that do not match manifest.json never reach a backend; auto says so and goes on
    tried: list[str] = [f"{p.name} refused: it does not match the sha256 in manifest.json"
                        for p, _ in index.refused_for(granularity)]
    candidates = registry.all_backends() if backend == "auto" else [registry.get(backend)]
    for b in candidates:
        if b.name in failed:
            tried.append(f"{b.name} passed over: {_could_not_open(failed[b.name])}")
            continue
        if b.artifact == "checkpoint":
            found = checkpoint_in(d)
            if found is None or (index.rejected_for(granularity) and backend == "auto"):
                tried.append(f"{b.name}: no checkpoint in {d}" if found is None else "")
                continue
            path = found
        elif backend == "auto" and b.pick is not None:
            deferred = b.defer() or _pick_problem(b, d)
            picked_path, chosen, why_pick = (None, {}, deferred) if deferred else b.pick(index, granularity, precision)
            if picked_path is None:
                tried.append(f"{b.name} passed over: {why_pick}")
                continue
            why = "; ".join([t for t in tried if t] + [f"{picked_path.name}{note} runs with {b.name}: {why_pick}"])
            return _warn_refused(index, granularity, ModelChoice(picked_path, b.name, why, dict(chosen)))
        else:
            picked = index.select(b.artifact, granularity)
            if picked is None:
                tried.append(f"{b.name}: no {b.artifact} file{note}")
                continue
            path = picked.path
        problem = b.problem(path) or (b.defer() if backend == "auto" else None)
        if problem is None:
            why = "; ".join([t for t in tried if t] + [f"{path.name}{note} runs with {b.name}"])
            return _warn_refused(index, granularity, ModelChoice(path, b.name, why))
        tried.append(f"{b.name} skipped for {path.name}: {problem}")
    rejected = index.rejected_for(granularity)
    if rejected:
        names = ", ".join(p.name for p in rejected)
        raise SessionError(f"{d}: the graph{note} was rejected at the export's parity gate ({names}) and is never "
                           "run; re-export it with echo-export build, or choose another granularity")
    refused = index.refused_for(granularity)
    if refused and not index.select("onnx", granularity) and not index.select("engine", granularity):
        raise SessionError(refused[0][1] + (f" (and {len(refused) - 1} more file(s) likewise)" if len(refused) > 1 else ""))
    what = "nothing to run with any backend" if backend == "auto" else f"cannot run with backend {backend}"
    raise SessionError(f"{d}: {what}{note} ({'; '.join(t for t in tried if t)}); "
                       "export that granularity with echo-export or pass a checkpoint")


def open_session(path: str | os.PathLike, backend: str | None = None, **options: Any) -> Session:
    """Open an artifact (file, export directory or run directory) with ``backend`` or ``auto``.

    options: ``granularity`` (selects the file in an export directory; the torch backend slices
    to it), and per backend what its ``options`` lists (``providers``/``threads`` for
    onnxruntime, ``device``/``precision`` for torch, ``device`` for tensorrt). An option the
    chosen backend does not take is an error, not silently dropped.
    """
    backend = backend or "auto"
    choice = choose(path, backend, options.get("granularity"), precision=options.get("precision"))
    if backend != "auto":
        return open_choice(choice, **options)
    session, _ = open_with_fallback(choice, lambda c: open_choice(c, **options), lambda failed: choose(
        path, backend, options.get("granularity"), precision=options.get("precision"), failed=failed))
    return session


def open_with_fallback(choice: ModelChoice, open_one: Callable[[ModelChoice], Session],
                       rechoose: Callable[[dict[str, str]], ModelChoice]) -> tuple[Session, ModelChoice]:
    """auto's choice opened with ``open_one``; if that backend cannot open it here (e.g. OpenVINO's CPU
    plugin has no kernel for an INT8 graph on this CPU, which the export's parity record, measured on
    another machine, could not know), one warning line and auto chooses again without it
    (``rechoose(failed)``). When nothing else can run the model, the first failure is raised."""
    failed: dict[str, str] = {}
    first: SessionError | None = None
    while True:
        try:
            return open_one(choice), choice
        except SessionError as exc:
            first = first or exc
            failed[choice.backend] = str(exc)
            try:
                nxt = rechoose(dict(failed))
            except SessionError:
                raise first from None
            log.warning("%s could not open %s here (%s); running %s with %s instead", choice.backend,
                        choice.path.name, exc, nxt.path.name, nxt.backend)
            choice = nxt


def open_choice(choice: ModelChoice, **options: Any) -> Session:
    """Open what :func:`choose` decided, without choosing again (echo-run chooses once, says why,
    then opens). ``options`` as for :func:`open_session`; what auto chose (e.g. a precision) fills
    in what the caller did not give."""
    chosen = registry.get(choice.backend)
    opts = {k: v for k, v in options.items() if v is not None and not (k == "granularity" and k not in chosen.options)}
    unknown = sorted(set(opts) - set(chosen.options))
    if unknown:
        raise SessionError(f"backend {chosen.name} takes no option {', '.join(unknown)} "
                           f"(it takes {', '.join(chosen.options) or 'none'})")
    for k, v in choice.options.items():  # what auto chose (e.g. a precision); the caller's options win
        if k in chosen.options:
            opts.setdefault(k, v)
    log.info("backend %s on %s (%s)", chosen.name, choice.path, choice.reason)
    return chosen.open(choice.path, **opts)

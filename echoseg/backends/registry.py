"""The backend registry: each backend module registers itself; :func:`echoseg.backends.choose.open_session` opens through it.

A backend is a name, the artifact kind it runs (``onnx``, ``engine``, ``checkpoint``), a rank
for ``auto`` (lower is preferred), an opener and a ``problem(path)`` check that says, without
opening anything heavy, why that artifact cannot run here (None when it can). Adding a backend
is one module that calls :func:`register` at import and one entry in ``BUILTIN``. Built-in
modules are imported on first lookup; their heavy libraries only inside ``open``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .session import Session, SessionError

#: Modules that register the built-in backends (imported lazily, all cheap to import).
BUILTIN = ("echoseg.backends.tensorrt", "echoseg.backends.openvino", "echoseg.backends.ort", "echoseg.backends.torch")


@dataclass(frozen=True)
class Backend:
    name: str
    artifact: str  # onnx | engine | checkpoint
    rank: int  # auto prefers the lowest rank whose problem() is None
    open: Callable[..., Session]
    problem: Callable[[Path], str | None] = lambda path: None
    options: tuple[str, ...] = ()  # keyword options open() accepts
    gpu: bool = False  # computes on a GPU whenever it runs
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # auto only: why to pass this backend over although it can run (None: do not), e.g. a better one is here
    defer: Callable[[], str | None] = lambda: None
    # auto only, in an export directory: (file or None, open options, why) instead of the best-precision file
    pick: Callable[..., tuple[Path | None, dict[str, Any], str]] | None = None

    # echo-bench: how it plans and measures this backend (defaults fit a CPU backend run on its files as they are)
    label: str = ""  # how bench names it in reasons, e.g. "TensorRT" (empty: the name)
    bench_precisions: tuple[str, ...] = ("fp32",)  # what bench plans it at, in bench's order of precisions
    file_precision: dict[str, str] = field(default_factory=dict)  # a precision run from another's file: bf16 -> fp32
    gpu_precisions: tuple[str, ...] = ()  # planned only where a CUDA GPU is, else skipped with the reason
    unavailable: Callable[[str], str | None] = lambda precision: None  # why this machine cannot run a precision
    # when bench applies problem() while planning: "file" on each file it would run (reason: "<label> cannot run
    # <file> here: ..."), "library" once on its first file (the bare reason, precision "-"), "" never (the worker says)
    plan_check: str = "file"
    missing: str = ""  # reason for an asked precision the export has no file for ({dir}, {prec}); empty: say nothing
    none_found: str = ""  # reason when the export has no file of its kind at all ({dir}); empty: say nothing
    library: str = ""  # module the bench worker imports first and times (import_s); empty: none
    # which of the bench worker's settings it passes to open(): threads, precision, device, granularity
    bench_options: tuple[str, ...] = ()
    set_threads: Callable[[int], None] | None = None  # threads for a backend whose open() takes none
    sync: Callable[[Session], Callable[[], None] | None] = lambda session: None  # waits for queued device work
    table1_rank: int | None = None  # echo-bench table1's auto order where it differs from rank

    @property
    def title(self) -> str:
        return self.label or self.name


_REGISTRY: dict[str, Backend] = {}
_loaded = False


def register(backend: Backend) -> Backend:
    """Add (or replace) a backend; returns it so a module can keep a handle."""
    _REGISTRY[backend.name] = backend
    return backend


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in BUILTIN:
            importlib.import_module(mod)


def importable(module: str) -> bool:
    """Whether ``module`` can be imported here, without importing it (a module blocked with None counts as absent)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[module] is None or has no __spec__
        return False


def all_backends() -> list[Backend]:
    """Registered backends, in ``auto``'s order of preference."""
    _load_builtin()
    return sorted(_REGISTRY.values(), key=lambda b: (b.rank, b.name))


def names() -> tuple[str, ...]:
    return tuple(b.name for b in all_backends())


def get(name: str) -> Backend:
    _load_builtin()
    if name not in _REGISTRY:
        raise SessionError(f"unknown backend {name!r}; choose auto or one of {', '.join(names())}")
    return _REGISTRY[name]


def for_artifact(kind: str) -> list[Backend]:
    """Backends that run artifacts of ``kind``, preferred first."""
    return [b for b in all_backends() if b.artifact == kind]

"""The package's one-way arrows (README, Layout), read from the source: every import, lazy ones
inside functions included, and what those reach in turn."""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "echoseg"


def _module_of(path: Path) -> str:
    parts = ["echoseg", *path.relative_to(PKG).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_of(p): p for p in PKG.rglob("*.py")}


MODULES = _modules()


def _with_parents(name: str) -> set[str]:
    """Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c: all of them, where they are echoseg modules."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & MODULES.keys()


@lru_cache(maxsize=None)
def imports_of(module: str) -> frozenset[str]:
    """The echoseg modules that ``module`` imports anywhere in its source (module level, functions, classes),
    or lists by name in a tuple or list (imported with importlib)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found |= _with_parents(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found |= _with_parents(target)
            for alias in node.names:  # `from pkg import submodule`
                found |= _with_parents(f"{target}.{alias.name}")
        elif isinstance(node, (ast.Tuple, ast.List)):  # module names listed for importlib (the registry's BUILTIN)
            for elt in node.elts:
                if isinstance(elt, ast.Constant) and isinstance(elt.value, str) and elt.value in MODULES:
                    found |= _with_parents(elt.value)
    found.discard(module)
    return frozenset(found)


def reach(module: str) -> set[str]:
    """Every echoseg module that importing ``module`` can run, lazy imports included."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for m in imports_of(todo.pop()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _in(part: str) -> list[str]:
    return sorted(m for m in MODULES if _part(m) == part)


def _broken(part: str, forbidden: tuple[str, ...], transitive: bool = True) -> dict[str, list[str]]:
    bad = {}
    for m in _in(part):
        hits = sorted(x for x in (reach(m) if transitive else imports_of(m)) if _part(x) in forbidden)
        if hits:
            bad[m] = hits
    return bad


def test_the_scan_sees_lazy_and_relative_imports():
    assert "echoseg.models.checkpoint" in imports_of("echoseg.backends.torch")  # imported inside a function
    assert "echoseg.backends.registry" in imports_of("echoseg.backends.ort")  # `from .registry import ...`
    assert {"echoseg.backends", "echoseg.backends.choose"} <= imports_of("echoseg.runtime.api")
    assert "echoseg.models" in reach("echoseg.runtime.api")  # through the torch backend, lazily


def test_runtime_never_reaches_train_export_or_bench():
    assert _broken("runtime", ("train", "export", "bench")) == {}


def test_export_never_imports_runtime():
    assert _broken("export", ("runtime",), transitive=False) == {}


def test_backends_reach_none_of_the_parts_above_them():
    assert _in("backends")
    assert _broken("backends", ("train", "export", "runtime", "bench")) == {}


def test_models_reach_none_of_the_parts_above_them():
    assert "echoseg.models.checkpoint" in MODULES
    assert _broken("models", ("train", "export", "runtime", "bench", "backends")) == {}


def test_only_the_torch_backend_imports_models():
    users = sorted(m for m in _in("backends") if any(_part(x) == "models" for x in imports_of(m)))
    assert users == ["echoseg.backends.torch"]


def _circle(modules: list[str]) -> bool:
    """Whether the first module reaches itself through the others in ``modules``."""
    inside = set(modules)
    seen: set[str] = set()
    todo = [modules[0]]
    while todo:
        for m in imports_of(todo.pop()) & inside:
            if m == modules[0]:
                return True
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return False


def test_the_broken_import_circles_stay_broken():
    assert _circle(["echoseg.backends.registry", "echoseg.backends.choose"]) is False
    assert _circle(["echoseg.backends.choose", "echoseg.backends.registry", "echoseg.backends.tensorrt"]) is False
    assert _circle(["echoseg.data.synthetic", "echoseg.data.synth_echo"]) is False
    for first in ("video", "seek", "dicom"):  # the readers share data/capture.py, one floor down
        others = [m for m in ("video", "seek", "dicom") if m != first]
        assert _circle([f"echoseg.data.{m}" for m in (first, *others)]) is False, first
    assert imports_of("echoseg.data.capture") & {"echoseg.data.video", "echoseg.data.seek", "echoseg.data.dicom"} == set()
    assert _circle(["echoseg.train.eval", "echoseg.train.eval_artifact"]) is False
    for first in ("loop", "recipe", "records", "step"):
        others = [m for m in ("loop", "recipe", "records", "step") if m != first]
        assert _circle([f"echoseg.train.{m}" for m in (first, *others)]) is False, first

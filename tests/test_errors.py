"""One error root: every exception class echoseg defines subclasses EchosegError, and a CLI prints any of them in one line."""

from __future__ import annotations

import ast
import builtins
import importlib
from pathlib import Path

from typer.testing import CliRunner

from echoseg.errors import EchosegError

PKG = Path(__file__).resolve().parents[1] / "echoseg"
BUILTIN_EXC = {n for n in dir(builtins) if isinstance(getattr(builtins, n), type) and issubclass(getattr(builtins, n), BaseException)}


def _exception_classes() -> dict[str, str]:
    """name -> module of every class in the package that derives from an exception (by the names of its bases)."""
    defs: dict[str, tuple[str, list[str]]] = {}
    for path in PKG.rglob("*.py"):
        parts = ["echoseg", *path.relative_to(PKG).with_suffix("").parts]
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                defs[node.name] = (module, [ast.unparse(b).rpartition(".")[2] for b in node.bases])
    found: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for name, (module, bases) in defs.items():
            if name not in found and any(b in BUILTIN_EXC or b in found for b in bases):
                found[name] = module
                changed = True
    return found


def test_every_exception_class_has_the_one_root():
    found = _exception_classes()
    assert {"SessionError", "ArtifactError", "CheckpointError", "OutputRefused", "ExportParityError"} <= found.keys()
    loose = []
    for name, module in sorted(found.items()):
        cls = getattr(importlib.import_module(module), name)
        if issubclass(cls, Exception) and not issubclass(cls, EchosegError):
            loose.append(f"{module}.{name}")
        if not issubclass(cls, Exception):  # an interrupt (Terminated is a KeyboardInterrupt), not an error
            assert issubclass(cls, KeyboardInterrupt), f"{module}.{name}"
    assert loose == []


def test_the_root_keeps_each_class_s_other_base():
    from echoseg.artifacts import ArtifactError
    from echoseg.backends.session import SessionError
    from echoseg.runtime.outputs import OutputRefused

    assert issubclass(ArtifactError, ValueError) and issubclass(SessionError, RuntimeError)
    assert issubclass(OutputRefused, OSError) and OutputRefused(28, "No space left").errno == 28


def test_echo_run_prints_any_echoseg_error_in_one_line(tmp_path, monkeypatch):
    from echoseg.config import ConfigError  # a ValueError the CLI's old list of user errors did not name
    from echoseg.runtime import api, cli

    def refuse(*a, **k):
        raise ConfigError("input spec: expected 3 channels, found 4; re-export the model")

    monkeypatch.setattr(api, "choose", refuse)
    r = CliRunner().invoke(cli.app, [str(tmp_path / "a.avi"), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert [ln for ln in r.output.splitlines() if ln.strip()] == [
        "error: input spec: expected 3 channels, found 4; re-export the model"]


def test_the_clis_lists_of_user_errors_are_the_root():
    from echoseg.bench.cli import _errors
    from echoseg.bench.worker import _known_errors
    from echoseg.train.cli import _user_errors

    assert EchosegError in _errors() and EchosegError in _user_errors() and EchosegError in _known_errors()
    assert OSError in _user_errors()

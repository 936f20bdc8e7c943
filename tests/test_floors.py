"""The lower bounds pyproject.toml declares are the versions CI tests (.ci/floors.txt), and hold here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: declared but not in the floor run, each for its reason (.ci/floors.txt says the same)
NOT_PINNED = {"torch": "make installs torch==2.13.0, the declared floor, in both venvs",
              "openvino": "the floor venv has no OpenVINO; its tests skip there",
              "pytest": "the test runner itself"}
#: the extras the floor venv installs (Makefile test-floors); the gpu extra needs a GPU box
FLOOR_EXTRAS = ("cpu", "train", "export", "dicom", "dev")


def _declared() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in FLOOR_EXTRAS:
        reqs += project["optional-dependencies"][extra]
    out: dict[str, str] = {}
    for text in reqs:
        req = Requirement(text)
        lows = [s.version for s in req.specifier if s.operator == ">="]
        assert len(lows) == 1, f"{text}: declare exactly one lower bound (>=)"
        out[req.name.lower()] = lows[0]
    return out


def _pinned() -> dict[str, str]:
    out = {}
    for line in (REPO / ".ci" / "floors.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[name.strip().lower()] = version.strip()
    return out


def test_every_declared_floor_is_pinned_for_the_floor_run_at_exactly_its_bound():
    from packaging.version import Version

    declared, pinned = _declared(), _pinned()
    assert set(pinned) <= set(declared), f"pinned but not declared: {set(pinned) - set(declared)}"
    missing = set(declared) - set(pinned) - set(NOT_PINNED)
    assert not missing, f"declared floors no CI run tests: {sorted(missing)}; add them to .ci/floors.txt"
    for name, version in pinned.items():
        assert Version(version) == Version(declared[name]), f"{name}: floor run {version}, pyproject >={declared[name]}"
    assert declared["torch"] == "2.13"  # the torch make installs (Makefile) is the floor


def test_the_installed_versions_meet_the_declared_floors():
    """Whichever venv runs this (the newest versions, or the floors): nothing below what we declare."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    for name, low in _declared().items():
        try:
            have = version(name)
        except PackageNotFoundError:
            continue  # an extra this venv did not install
        assert Version(have).release >= Version(low).release, f"{name} {have} is below the declared {low}"


def test_importing_onnxslim_leaves_the_logging_setup_alone():
    """onnxslim 0.1.30-0.1.32 called logging.basicConfig(level=ERROR) at import, which silenced every
    warning echoseg logs after an export (the floor run caught it); 0.1.33 is the floor."""
    import subprocess

    pytest.importorskip("onnxslim", reason="onnxslim is not installed (the export extra)")
    code = "import logging, onnxslim; print(logging.root.level, len(logging.root.handlers))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(30), "0"]  # WARNING, no handler: the application's to set

"""Outputs are complete or absent: the one temp-name-then-rename helper every writer uses."""

from __future__ import annotations

import json
import os

import pytest

from echoseg.atomic import atomic_path, copy_file, temp_for, write_json


def test_temp_name_is_hidden_and_keeps_the_suffix(tmp_path):
    t = temp_for(tmp_path / "overlay.avi")
    assert t.parent == tmp_path and t.name.startswith(f".overlay.part{os.getpid()}-") and t.suffix == ".avi"
    assert temp_for(tmp_path / "bench.json").name.endswith(".json")


def test_failed_write_leaves_old_output_and_no_temp_file(tmp_path):
    out = write_json(tmp_path / "sub" / "m.json", {"dice": 0.9})
    assert json.loads(out.read_text()) == {"dice": 0.9}
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(out) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("disk full")
    assert json.loads(out.read_text()) == {"dice": 0.9}
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.json"]
    copy_file(out, tmp_path / "copy.json")
    assert (tmp_path / "copy.json").read_text() == out.read_text()

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


# -- several writers, dead writers, unwritable folders ------------------------------------------

_WRITER = """
import sys
from echoseg.atomic import write_json
for i in range(int(sys.argv[2])):
    write_json(sys.argv[1], {"writer": sys.argv[3], "i": i, "pad": "x" * 4096})
"""


def test_two_processes_writing_the_same_file_never_collide(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "m.json"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(out), "150", tag], stderr=subprocess.PIPE,
                              text=True) for tag in "ab"]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    data = json.loads(out.read_text())
    assert data["writer"] in "ab" and data["i"] == 149
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_lock_names_its_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    from echoseg.atomic import LockHeld, exclusive

    lock = tmp_path / "exp" / ".echoseg-export.lock"
    with exclusive(lock):
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(LockHeld) as held:
            with exclusive(lock):
                pass
        assert held.value.pid == os.getpid() and f"pid {os.getpid()}" in str(held.value)
        assert "\n" not in str(held.value)
    assert not lock.exists()  # released and removed
    lock.write_text(f"{_dead_pid()}\n")  # left by a process killed while holding it
    with exclusive(lock):
        assert lock.read_text().strip() == str(os.getpid())


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    from echoseg.atomic import remove_stale_temps

    dead = _dead_pid()
    stale = [tmp_path / f".model.part{dead}-abc123.onnx", tmp_path / f".model.int8.part{dead}-abc123.prep.onnx"]
    for p in stale:
        p.write_bytes(b"half")
    live = tmp_path / f".model.part{os.getppid()}-abc123.onnx"
    live.write_bytes(b"being written")
    keep = [tmp_path / "model.onnx", tmp_path / ".hidden.txt", tmp_path / "x.part12.txt"]
    for p in keep:
        p.write_bytes(b"user")
    assert sorted(remove_stale_temps(tmp_path)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in keep + [live])


def test_check_writable_says_in_one_line_what_is_wrong(tmp_path, monkeypatch):
    import errno

    from echoseg import atomic

    assert not atomic.check_writable(tmp_path / "later" / "dir", create=False).exists()
    assert not (tmp_path / "later").exists()
    with pytest.raises(OSError, match="not a folder"):
        (tmp_path / "f").write_text("x")
        atomic.check_writable(tmp_path / "f" / "sub", create=False)
    assert atomic.check_writable(tmp_path / "new" / "dir").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="not a folder") as exc:
        atomic.check_writable(tmp_path / "file", "pass another --out")
    assert "pass another --out" in str(exc.value) and "\n" not in str(exc.value)
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "write", full)
    with pytest.raises(OSError, match="No space left on device"):
        atomic.check_writable(tmp_path / "new")
    monkeypatch.setattr(atomic.os, "write", real_write)
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["dir"]  # no probe left behind


def test_atomic_writes_fsync_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    """A power loss right after the rename must not leave an empty file: the data is on the disk
    before the new name points at it, and the folder entry after (os.fsync calls recorded in order)."""
    events: list[tuple[str, int]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.stat(src).st_ino))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "sub" / "m.json"
    for write in (lambda: write_json(out, {"a": 1}), lambda: copy_file(out, tmp_path / "sub" / "c.json")):
        events.clear()
        write()
        target = out if len(list((tmp_path / "sub").iterdir())) == 1 else tmp_path / "sub" / "c.json"
        file_ino, dir_ino = target.stat().st_ino, (tmp_path / "sub").stat().st_ino
        assert events == [("fsync", file_ino), ("replace", file_ino), ("fsync", dir_ino)]
    assert json.loads(out.read_text()) == {"a": 1}


def test_a_folder_written_whole_is_synced_file_by_file(tmp_path, monkeypatch):
    from echoseg.atomic import durable_replace

    stage = tmp_path / ".stage"
    (stage / "x").mkdir(parents=True)
    (stage / "x" / "a.txt").write_text("a")
    (stage / "b.txt").write_text("b")
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real(fd))[1])
    inodes = {p.relative_to(stage).as_posix(): p.stat().st_ino for p in [stage, *stage.rglob("*")]}
    durable_replace(stage, tmp_path / "final")
    assert set(inodes.values()) <= set(synced)  # every file and folder in it
    assert synced[-1] == tmp_path.stat().st_ino  # then the folder that holds the new name
    assert (tmp_path / "final" / "x" / "a.txt").read_text() == "a"

"""Outputs that are complete or absent: write under a hidden temporary name, fsync, rename when done.

The temporary name keeps the file's suffix (``.name.part<pid>-<token>.ext``) so writers that
pick a format from it (OpenCV, matplotlib, numpy) behave as with the final name; the pid and a
random token make it unique per writer, so two processes writing the same output never rename
each other's half-written file. A failed write leaves no temporary file behind and never
touches an existing output.

Also here, because they serve the same promise: a lock file per output folder (one writer at a
time, a clear refusal for the second), an up-front check that a folder can be written, the
clean-up of temporary names left by writers that died, and SIGTERM turned into the same
interrupt as Ctrl-C so those clean-ups run.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from echoseg.errors import EchosegError

_TOKEN = secrets.token_hex(3)  # with the pid: unique per process, even across pid namespaces
_COUNTER = itertools.count()
_PART = re.compile(r"^\..+?\.(?:part|old)(\d+)(?:-[0-9a-f]+)*(?:\..*)?$")


def temp_for(path: str | os.PathLike) -> Path:
    """The hidden name this process writes ``path`` under before renaming it into place."""
    p = Path(path)
    return p.with_name(f".{p.stem}.part{os.getpid()}-{_TOKEN}{p.suffix}")


def _call_temp(path: Path) -> Path:
    """temp_for(path), also unique per call (two threads of one process writing the same file)."""
    t = temp_for(path)
    return t.with_name(f"{t.name[: len(t.name) - len(path.suffix)]}-{next(_COUNTER):x}{path.suffix}")


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's data (or a folder's entries) to the disk. A folder that cannot be opened for
    this (Windows) is skipped: there a rename is made durable by the file system itself."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY)
    except (IsADirectoryError, PermissionError):
        if p.is_dir():
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync a file, or every file and folder under a folder (a folder written whole, then renamed)."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        for root, dirs, files in os.walk(p):
            for name in files:
                if not os.path.islink(os.path.join(root, name)):
                    fsync_path(os.path.join(root, name))
            fsync_path(root)
    elif p.exists():
        fsync_path(p)


def durable_replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """os.replace made durable: ``src`` reaches the disk before the rename, the folder's new entry
    after it, so a power loss leaves the old file or the complete new one, never an empty one."""
    fsync_tree(src)
    os.replace(src, dst)
    fsync_path(Path(dst).parent)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and replaces ``path`` (and the
    folder is fsynced), on error it is removed."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _call_temp(out)
    try:
        yield tmp
        durable_replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Indented JSON; values JSON does not know (paths, numpy scalars) are written as strings."""
    return write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


# -- who may write: liveness, locks, writability ------------------------------------------------

def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temp_pid(name: str) -> int | None:
    """The writer's pid in a temporary name (``.x.part<pid>...``, ``.x.old<pid>``), else None."""
    m = _PART.match(name)
    return int(m.group(1)) if m else None


def remove_stale_temps(folder: str | os.PathLike, keep_dir=lambda p: False) -> list[Path]:
    """Remove temporary files and folders in ``folder`` left by writers whose process is gone.

    ``keep_dir(path)``: a folder for which it returns True is left alone (e.g. one without the
    writer's own marker in it). Returns what was removed.
    """
    d = Path(folder)
    removed: list[Path] = []
    if not d.is_dir():
        return removed
    for p in d.iterdir():
        pid = stale_temp_pid(p.name)
        if pid is None or pid == os.getpid() or pid_alive(pid):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                if keep_dir(p):
                    continue
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            continue  # another process cleaned it first, or we may not: not ours to fail on
    return removed


class LockHeld(EchosegError, RuntimeError):
    """Another live process holds the lock on an output (``pid``: its id when it wrote one)."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path, self.pid = path, pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"{path.parent}: {who} is writing here right now (lock {path.name}); "
                         "wait for it to finish or write somewhere else")


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


@contextmanager
def exclusive(lock_path: str | os.PathLike) -> Iterator[Path]:
    """Hold ``lock_path`` (an flock'ed file holding our pid) or raise LockHeld at once.

    The kernel drops the lock when its holder dies, so a lock file left by a killed process is
    simply taken over; the file is removed on release.
    """
    import fcntl

    path = Path(lock_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise LockHeld(path, holder) from None
            raise
        try:  # the previous holder may have removed the file between our open and our flock
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        try:
            path.unlink()  # still ours: nobody can hold it while we do
        except OSError:
            pass
        os.close(fd)


class NotWritableError(EchosegError, OSError):
    """A folder outputs cannot be written to (read-only, full, not a folder, no permission).

    Its text is the whole one-line message (no ``[Errno N]`` prefix); ``errno`` is kept.
    """

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


def check_writable(folder: str | os.PathLike, hint: str = "choose another output folder",
                   create: bool = True) -> Path:
    """Create ``folder`` if needed and write (then remove) a probe file in it; one-line error if not.

    ``create=False``: nothing is created; a folder that does not exist yet is judged by its
    nearest existing parent (where it would be created).
    """
    d = Path(folder)
    if not create:
        base = d
        while not os.path.lexists(base) and base.parent != base:
            base = base.parent
        if not base.is_dir():
            raise NotWritableError(f"{d}: cannot write outputs here ({base} is not a folder); {hint}",
                                   errno.ENOTDIR)
        check_writable(base, hint)
        return d
    probe = d / f".echoseg-probe{os.getpid()}-{_TOKEN}"
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"echoseg write check\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, (FileExistsError, NotADirectoryError)) and not d.is_dir():
            reason = "it is not a folder"
        raise NotWritableError(f"{d}: cannot write outputs here ({reason}); {hint}", exc.errno) from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    return d


# -- SIGTERM like Ctrl-C -----------------------------------------------------------------------

class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, docker stop) raised like Ctrl-C, so clean-up code runs."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within this block, SIGTERM raises Terminated in the main thread (no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame) -> None:
        raise Terminated(f"terminated by signal {signum}")

    old = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)

"""An optional one-time frame cache per split: decoded frames in .npy files, memory-mapped.

Built on first use and reused until a source file changes: the cache records the size and
modification time of FileList.csv, VolumeTracings.csv and every video of the split, and a
mismatch rebuilds it. Turned on by the loaders' ``cache`` argument or the environment:
``ECHOSEG_FRAME_CACHE=1`` (cache in ``DATA/.echoseg-cache``, or under ``~/.cache/echoseg``
when the data folder is read-only) or ``ECHOSEG_FRAME_CACHE=/some/dir``. A cache entry is
written in a temporary folder and renamed into place, so an interrupted build leaves none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable

import numpy as np

log = logging.getLogger("echoseg.data")

CACHE_ENV = "ECHOSEG_FRAME_CACHE"
CACHE_VERSION = 1
_OFF = ("", "0", "off", "no", "false")
_ON = ("1", "on", "yes", "true")


def cache_dir(root: Path, cache: bool | str | os.PathLike | None) -> Path | None:
    """Where the cache of ``root`` lives, or None when caching is off."""
    if cache is None:
        cache = os.environ.get(CACHE_ENV, "")
    if cache is False or (isinstance(cache, str) and cache.strip().lower() in _OFF):
        return None
    if cache is True or (isinstance(cache, str) and cache.strip().lower() in _ON):
        local = root / ".echoseg-cache"
        if os.access(root, os.W_OK):
            return local
        digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "echoseg" / digest
    return Path(cache)


def fingerprint(paths: Iterable[Path], **params) -> str:
    """A digest of the files' names, sizes and mtimes (absent files count too) and the parameters."""
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, **params}, sort_keys=True, default=str).encode())
    for p in paths:
        try:
            st = p.stat()
            h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p.name}\0missing\n".encode())
    return h.hexdigest()


def load_entry(entry: Path, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
    """(arrays memory-mapped copy-on-write, metadata) when ``entry`` is complete and current."""
    meta_path = entry / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("key") != key:
        log.info("frame cache %s is stale (the source files changed); rebuilding it", entry)
        return None
    try:
        arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="c") for name in meta.get("arrays", [])}
    except (OSError, ValueError):
        return None
    return arrays, meta


class EntryWriter:
    """Builds one cache entry in a temporary folder; ``commit`` renames it into place."""

    def __init__(self, entry: Path, key: str) -> None:
        self.entry, self.key = entry, key
        self.tmp = entry.with_name(f".{entry.name}.part{os.getpid()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.names: list[str] = []

    def array(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A writable memory-mapped .npy of that shape (filled by the caller frame by frame)."""
        self.names.append(name)
        return np.lib.format.open_memmap(self.tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)

    def save(self, name: str, arr: np.ndarray) -> None:
        self.names.append(name)
        np.save(self.tmp / f"{name}.npy", arr)

    def commit(self, meta: dict) -> Path:
        (self.tmp / "meta.json").write_text(json.dumps({**meta, "key": self.key, "arrays": self.names}))
        old = self.entry.with_name(f".{self.entry.name}.old{os.getpid()}")
        if self.entry.exists():
            os.replace(self.entry, old)
        os.replace(self.tmp, self.entry)
        shutil.rmtree(old, ignore_errors=True)
        return self.entry

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

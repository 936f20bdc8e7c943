"""Resource sampling in a background thread: RSS and CPU of a process tree, GPU use via NVML.

CPU % is defined as ``top`` does: 100 % is one core fully busy, so a process tree using two
cores reads 200 %. ``cpu_machine_pct`` divides by the logical core count (0-100 % of the whole
machine, as ``psutil.cpu_percent()`` reports system load). The average CPU figure is exact:
CPU-seconds of the tree over wall seconds between two marks, not a mean of noisy samples; the
peak is the busiest ``peak_window_s`` stretch. The sampler's own thread CPU is subtracted.

RSS is summed over the tree (pages shared between processes count once per process). NVML is
opened only for a configuration that computes on a GPU, on the device it uses: CUDA ordinal N is
the N-th entry of CUDA_VISIBLE_DEVICES (an index or a GPU-UUID), not NVML's index N. GPU
utilisation is NVML's device-wide figure; GPU memory is the tree's own use where NVML lists its
pids, else the whole device's used memory; ``gpu_mem_scope`` ("process" or "device") says which,
and a fallback to device-wide is logged.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)

MB = 1024.0 * 1024.0


@dataclass(frozen=True)
class GpuSample:
    util_pct: float
    mem_mb: float
    mem_scope: str  # "process" (the tree's own allocations) or "device" (all of the GPU's used memory)


@dataclass(frozen=True)
class Sample:
    t: float  # perf_counter seconds
    rss_mb: float
    cpu_s: float  # cumulative CPU seconds of the tree (sampler thread excluded)
    gpu: GpuSample | None


@dataclass(frozen=True)
class ResourceStats:
    """Figures over one window; GPU fields are None where no GPU/NVML is present."""

    seconds: float
    samples: int
    rss_mb_avg: float
    rss_mb_peak: float
    cpu_pct_avg: float  # top-style: 100 = one core
    cpu_pct_peak: float
    cpu_machine_pct_avg: float  # cpu_pct_avg / logical cores
    cores: int
    gpu_util_pct_avg: float | None = None
    gpu_util_pct_peak: float | None = None
    gpu_mem_mb_avg: float | None = None
    gpu_mem_mb_peak: float | None = None
    gpu_mem_scope: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- NVML (kept small and testable)

def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_gpu(nvml: Any, handle: Any, pids: set[int]) -> GpuSample:
    """One NVML reading: device utilisation, and memory of ``pids`` (or the device if none listed)."""
    util = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    own = None
    try:
        procs = list(nvml.nvmlDeviceGetComputeRunningProcesses(handle))
        used = [p.usedGpuMemory for p in procs if p.pid in pids and p.usedGpuMemory is not None]
        if used:
            own = float(sum(used)) / MB
    except nvml.NVMLError as exc:  # not supported on some boards / containers
        log.debug("NVML process list unavailable: %s", exc)
    if own is not None:
        return GpuSample(util, own, "process")
    if not getattr(read_gpu, "_warned", False):
        read_gpu._warned = True  # type: ignore[attr-defined]
        log.warning("NVML lists no memory for this process tree; GPU memory is the whole device's (scope 'device')")
    return GpuSample(util, float(nvml.nvmlDeviceGetMemoryInfo(handle).used) / MB, "device")


def nvml_device_for(cuda_ordinal: int = 0, visible: str | None = None) -> int | str:
    """The NVML index (or GPU UUID) of CUDA device ``cuda_ordinal`` under CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if visible is None or not visible.strip():
        return int(cuda_ordinal)
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if cuda_ordinal >= len(entries):
        raise ValueError(f"CUDA device {cuda_ordinal} is not visible (CUDA_VISIBLE_DEVICES={visible!r})")
    entry = entries[cuda_ordinal]
    return int(entry) if entry.isdigit() else entry


def open_nvml(index: int | str = 0) -> tuple[Any, Any] | None:
    """(pynvml module, device handle) for an NVML index or GPU UUID, or None where there is none."""
    try:
        import pynvml  # from nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        if isinstance(index, str):
            return pynvml, pynvml.nvmlDeviceGetHandleByUUID(index)
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception as exc:  # pynvml raises NVMLError subclasses, or OSError when libnvidia-ml is missing
        log.debug("NVML unavailable: %s", exc)
        return None


def gpu_description(index: int = 0) -> dict[str, str] | None:
    """GPU name, driver and total memory from NVML, or None where there is none."""
    opened = open_nvml(index)
    if opened is None:
        return None
    nvml, handle = opened
    try:
        return {"name": _text(nvml.nvmlDeviceGetName(handle)),
                "driver": _text(nvml.nvmlSystemGetDriverVersion()),
                "memory_mb": f"{nvml.nvmlDeviceGetMemoryInfo(handle).total / MB:.0f}"}
    except nvml.NVMLError as exc:
        log.debug("NVML query failed: %s", exc)
        return None


# ---------------------------------------------------------------- process tree

def _tree(root) -> list:
    import psutil

    try:
        return [root] + root.children(recursive=True)
    except psutil.Error:
        return [root]


def tree_reading(root) -> tuple[float, float, set[int]]:
    """(RSS MB, cumulative CPU seconds incl. reaped children, pids) of a psutil.Process tree."""
    import psutil

    rss, cpu, pids = 0.0, 0.0, set()
    for p in _tree(root):
        try:
            with p.oneshot():
                rss += p.memory_info().rss
                t = p.cpu_times()
            cpu += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
            pids.add(p.pid)
        except psutil.Error:  # exited between listing and reading
            continue
    return rss / MB, cpu, pids


class ResourceSampler:
    """Samples a process tree (default: this process) about ``1/interval_s`` times a second.

    Use as a context manager; ``mark()`` takes a sample now and returns its time, and
    ``stats(t0, t1)`` summarises the samples between two marks.
    """

    def __init__(self, pid: int | None = None, interval_s: float = 0.05, gpu_index: int | None = None,
                 peak_window_s: float = 0.25,
                 gpu_reader: Callable[[set[int]], GpuSample] | None = None) -> None:
        import psutil

        self._root = psutil.Process(pid or os.getpid())
        self.interval_s = float(interval_s)
        self.peak_window_s = float(peak_window_s)
        self.cores = psutil.cpu_count(logical=True) or 1
        self._gpu = gpu_reader
        self.gpu_device: int | str | None = None
        if self._gpu is None and gpu_index is not None:
            self.attach_gpu(gpu_index)
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._own_cpu_s = 0.0  # CPU the sampler thread itself spent, subtracted from the tree

    def attach_gpu(self, cuda_ordinal: int = 0) -> bool:
        """Sample NVML for CUDA device ``cuda_ordinal`` (mapped through CUDA_VISIBLE_DEVICES) from now on."""
        try:
            device = nvml_device_for(cuda_ordinal)
        except ValueError as exc:
            log.warning("%s; no GPU figures", exc)
            return False
        opened = open_nvml(device)
        if opened is None:
            return False
        nvml, handle = opened
        self.gpu_device = device
        self._gpu = lambda pids: read_gpu(nvml, handle, pids)
        return True

    @property
    def has_gpu(self) -> bool:
        return self._gpu is not None

    def _take(self, in_thread: bool) -> Sample:
        c0 = time.thread_time()
        rss, cpu, pids = tree_reading(self._root)
        gpu = None
        if self._gpu is not None:
            try:
                gpu = self._gpu(pids)
            except Exception as exc:  # a flaky NVML reading must not stop the benchmark
                log.debug("GPU reading failed: %s", exc)
        with self._lock:
            s = Sample(time.perf_counter(), rss, cpu - self._own_cpu_s, gpu)
            self.samples.append(s)
            if in_thread:
                self._own_cpu_s += time.thread_time() - c0
        return s

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._take(in_thread=True)

    def start(self) -> "ResourceSampler":
        self._take(in_thread=False)
        self._thread = threading.Thread(target=self._loop, name="echoseg-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.mark()

    def mark(self) -> float:
        """Take a sample now (a window boundary) and return its time."""
        return self._take(in_thread=False).t

    def __enter__(self) -> "ResourceSampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self, t0: float | None = None, t1: float | None = None) -> ResourceStats:
        with self._lock:
            samples = list(self.samples)
        return summarize(samples, self.cores, t0, t1, self.peak_window_s)


def summarize(samples: list[Sample], cores: int, t0: float | None = None, t1: float | None = None,
              peak_window_s: float = 0.25) -> ResourceStats:
    """Average/peak figures of the samples with t0 <= t <= t1 (all samples by default)."""
    win = [s for s in samples if (t0 is None or s.t >= t0) and (t1 is None or s.t <= t1)]
    if len(win) < 2:
        raise ValueError(f"need at least two samples in the window, got {len(win)}; mark() both ends")
    seconds = win[-1].t - win[0].t
    cpu_avg = 100.0 * max(win[-1].cpu_s - win[0].cpu_s, 0.0) / seconds if seconds > 0 else 0.0
    peak = 0.0
    j = 0
    for i in range(1, len(win)):  # busiest stretch at least peak_window_s long, ending at sample i
        while j + 1 < i and win[i].t - win[j + 1].t >= peak_window_s:
            j += 1
        dt = win[i].t - win[j].t
        if dt >= min(peak_window_s, seconds) * 0.999 and dt > 0:
            peak = max(peak, 100.0 * max(win[i].cpu_s - win[j].cpu_s, 0.0) / dt)
    rss = [s.rss_mb for s in win]
    out: dict[str, Any] = dict(
        seconds=seconds, samples=len(win), rss_mb_avg=_time_mean(win, rss), rss_mb_peak=max(rss),
        cpu_pct_avg=cpu_avg, cpu_pct_peak=max(peak, cpu_avg), cpu_machine_pct_avg=cpu_avg / cores,
        cores=cores,
    )
    gpu = [s for s in win if s.gpu is not None]
    if gpu:
        util = [s.gpu.util_pct for s in gpu]
        mem = [s.gpu.mem_mb for s in gpu]
        out.update(gpu_util_pct_avg=sum(util) / len(util), gpu_util_pct_peak=max(util),
                   gpu_mem_mb_avg=sum(mem) / len(mem), gpu_mem_mb_peak=max(mem),
                   gpu_mem_scope=gpu[-1].gpu.mem_scope)
    return ResourceStats(**out)


def _time_mean(win: list[Sample], values: list[float]) -> float:
    """Time-weighted mean (trapezoids), so irregular mark() samples do not skew it."""
    total = win[-1].t - win[0].t
    if total <= 0:
        return sum(values) / len(values)
    area = sum((win[i].t - win[i - 1].t) * (values[i] + values[i - 1]) / 2 for i in range(1, len(win)))
    return area / total

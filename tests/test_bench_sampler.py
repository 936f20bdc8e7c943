"""The resource sampler: RSS and CPU of a real process, the window arithmetic, and NVML paths."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from echoseg.bench.sampler import GpuSample, ResourceSampler, Sample, open_nvml, read_gpu, summarize

ALLOC_MB = 200

CHILD = textwrap.dedent(f"""
    import sys, time
    import numpy as np
    print("ready", flush=True)
    sys.stdin.readline()
    c0 = time.process_time()
    a = np.ones({ALLOC_MB} * 1024 * 1024 // 8)   # touched: resident
    end = time.perf_counter() + 1.0
    n = 0
    while time.perf_counter() < end:
        n += 1
    print(time.process_time() - c0, flush=True)
    sys.stdin.readline()
""")


def test_sampler_sees_allocation_and_cpu_of_a_child_process():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        sampler = ResourceSampler(pid=child.pid, interval_s=0.05, gpu_index=None).start()
        t0 = sampler.mark()
        base_mb = sampler.samples[-1].rss_mb
        child.stdin.write("go\n")
        child.stdin.flush()
        child_cpu_s = float(child.stdout.readline())
        t1 = sampler.mark()
        sampler.stop()
        st = sampler.stats(t0, t1)
    finally:
        child.stdin.write("bye\n")
        child.stdin.flush()
        child.wait(timeout=30)
    # the child's resident memory grew by the array it allocated
    assert ALLOC_MB * 0.92 < st.rss_mb_peak - base_mb < ALLOC_MB * 1.15
    assert base_mb <= st.rss_mb_avg <= st.rss_mb_peak
    # CPU-seconds seen by the sampler match what the child measured itself (one busy thread)
    sampled_cpu_s = st.cpu_pct_avg / 100.0 * st.seconds
    assert sampled_cpu_s == pytest.approx(child_cpu_s, abs=0.08 + 0.1 * child_cpu_s)
    # one busy thread is ~100% of a core; the 0.25 s peak window carries 10 ms clock-tick and
    # sample-timing jitter (seen up to ~116% on a loaded box, 132% once in a CI run on a 2-core
    # Xeon), still well below a double count (200%), which is what this bound is for
    assert st.cpu_pct_avg <= st.cpu_pct_peak <= 165.0
    assert st.cpu_machine_pct_avg == pytest.approx(st.cpu_pct_avg / st.cores)
    assert st.samples >= 15  # ~20 Hz over >= 1 s
    assert st.gpu_util_pct_avg is None and st.gpu_mem_scope is None


def _samples(rates, dt=0.05, rss=lambda t: 100.0, gpu=None):
    """Samples whose cumulative CPU grows at rates[i] CPU-s per s during interval i."""
    out, cpu, t = [Sample(0.0, rss(0.0), 0.0, gpu(0) if gpu else None)], 0.0, 0.0
    for i, r in enumerate(rates, 1):
        t, cpu = t + dt, cpu + r * dt
        out.append(Sample(round(t, 10), rss(t), cpu, gpu(i) if gpu else None))
    return out


def test_summarize_average_is_cpu_seconds_over_wall_and_peak_is_busiest_window():
    samples = _samples([0.5] * 10 + [1.0] * 10)  # 1 s: half a core, then a full core
    st = summarize(samples, cores=4, peak_window_s=0.25)
    assert st.seconds == pytest.approx(1.0)
    assert st.cpu_pct_avg == pytest.approx(75.0)
    assert st.cpu_pct_peak == pytest.approx(100.0)
    assert st.cpu_machine_pct_avg == pytest.approx(18.75)
    assert st.samples == 21


def test_summarize_window_limits_and_time_weighted_rss():
    samples = _samples([2.0] * 20, rss=lambda t: 100.0 + 100.0 * t)  # RSS ramps 100 -> 200 MB
    st = summarize(samples, cores=2)
    assert st.rss_mb_avg == pytest.approx(150.0)
    assert st.rss_mb_peak == pytest.approx(200.0)
    assert st.cpu_pct_avg == pytest.approx(200.0)  # two busy cores read 200 %, as top shows them
    half = summarize(samples, cores=2, t0=0.5)
    assert half.rss_mb_avg == pytest.approx(175.0) and half.samples == 11
    with pytest.raises(ValueError, match="two samples"):
        summarize(samples, cores=2, t0=0.98)


def test_summarize_gpu_figures_from_readings():
    samples = _samples([1.0] * 4, gpu=lambda i: GpuSample(float(10 * i), 500.0 + i, "process"))
    st = summarize(samples, cores=1)
    assert st.gpu_util_pct_avg == pytest.approx(20.0)  # 0, 10, 20, 30, 40
    assert st.gpu_util_pct_peak == pytest.approx(40.0)
    assert st.gpu_mem_mb_peak == pytest.approx(504.0)
    assert st.gpu_mem_scope == "process"


class _NVMLError(Exception):
    pass


def _fake_nvml(procs, used_bytes=3 * 1024 ** 3, fail_procs=False):
    def running(handle):
        if fail_procs:
            raise _NVMLError("not supported")
        return procs

    return SimpleNamespace(
        NVMLError=_NVMLError,
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=37, memory=5),
        nvmlDeviceGetComputeRunningProcesses=running,
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=used_bytes, total=16 * 1024 ** 3),
    )


def test_read_gpu_counts_only_our_processes():
    mb = 1024 * 1024
    procs = [SimpleNamespace(pid=10, usedGpuMemory=300 * mb), SimpleNamespace(pid=11, usedGpuMemory=200 * mb),
             SimpleNamespace(pid=99, usedGpuMemory=5000 * mb)]
    s = read_gpu(_fake_nvml(procs), "h", {10, 11})
    assert s == GpuSample(37.0, 500.0, "process")


def test_read_gpu_falls_back_to_device_memory():
    other = [SimpleNamespace(pid=99, usedGpuMemory=123)]
    assert read_gpu(_fake_nvml(other), "h", {10}) == GpuSample(37.0, 3072.0, "device")
    assert read_gpu(_fake_nvml([], fail_procs=True), "h", {10}) == GpuSample(37.0, 3072.0, "device")
    no_value = [SimpleNamespace(pid=10, usedGpuMemory=None)]  # e.g. WDDM: value not available
    assert read_gpu(_fake_nvml(no_value), "h", {10}).mem_scope == "device"


def test_open_nvml_is_none_without_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails as if not installed
    assert open_nvml(0) is None
    s = ResourceSampler(gpu_index=0)
    assert not s.has_gpu


def test_sampler_uses_gpu_reader_with_tree_pids():
    import os

    seen: list[set[int]] = []

    def reader(pids):
        seen.append(pids)
        return GpuSample(50.0, 10.0, "process")

    with ResourceSampler(interval_s=0.02, gpu_reader=reader) as s:
        t0 = s.mark()
        sum(range(200000))
        t1 = s.mark()
    st = s.stats(t0, t1)
    assert st.gpu_util_pct_avg == 50.0 and st.gpu_mem_mb_peak == 10.0
    assert all(os.getpid() in p for p in seen)


def _nvml_or_skip():
    opened = open_nvml(0)
    if opened is None:
        pytest.skip("no NVIDIA GPU with NVML (nvidia-ml-py) here")
    return opened


@pytest.mark.gpu
def test_real_nvml_reading_is_in_range():
    from echoseg.bench.sampler import gpu_description

    nvml, handle = _nvml_or_skip()
    s = read_gpu(nvml, handle, {os_pid()})
    total_mb = nvml.nvmlDeviceGetMemoryInfo(handle).total / 1024 ** 2
    assert 0.0 <= s.util_pct <= 100.0
    assert 0.0 <= s.mem_mb <= total_mb
    desc = gpu_description(0)
    assert desc["name"] and desc["driver"]


@pytest.mark.gpu
def test_real_sampler_reports_gpu_fields():
    _nvml_or_skip()
    with ResourceSampler(interval_s=0.02, gpu_index=0) as s:
        t0 = s.mark()
        sum(range(300000))
        t1 = s.mark()
    st = s.stats(t0, t1)
    assert st.gpu_util_pct_avg is not None and 0.0 <= st.gpu_util_pct_peak <= 100.0
    assert st.gpu_mem_scope in ("process", "device")


def os_pid() -> int:
    import os

    return os.getpid()

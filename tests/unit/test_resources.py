"""ResourceMonitor on the real test process and real child processes.

Assertions are lower bounds with wide margins on work the test itself controls (CPU time burnt,
bytes touched), never on how fast the machine is.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from types import SimpleNamespace

import psutil
import pytest

from loopwright.errors import InvalidInput
from loopwright.tracking.resources import ResourceMonitor, ResourceSummary

MB = 1024 * 1024
BASE_METRICS = {
    "system.wall_time_s",
    "system.cpu_seconds",
    "system.peak_memory_mb",
    "system.mean_cpu_percent",
}


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / MB


def lifetime_peak_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MB


def burn_cpu(seconds: float) -> None:
    """Burn a fixed amount of *CPU* time, however long a loaded machine takes to give it."""
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass


def touched(megabytes: int) -> bytes:
    """Really resident memory: ``bytearray(n)`` alone is calloc'ed and never paged in."""
    return b"\x01" * (megabytes * MB)


def wait_for_sample(monitor: ResourceMonitor, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(monitor._samples) < count and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend pynvml is not installed, so results do not depend on the test machine's GPU."""
    monkeypatch.setitem(sys.modules, "pynvml", None)


def test_sampled_peak_reflects_allocation() -> None:
    monitor = ResourceMonitor(interval_s=0.05)
    baseline = rss_mb()
    monitor.start()
    block = touched(200)
    wait_for_sample(monitor, len(monitor._samples) + 3)
    del block
    summary = monitor.stop()
    assert max(rss for _, rss, _ in summary.samples) >= baseline + 150
    assert summary.peak_rss_mb >= baseline + 150


def test_peak_between_samples_comes_from_rusage() -> None:
    """A spike that is gone before any sample is still reported, via ru_maxrss."""
    size = int(max(lifetime_peak_mb() - rss_mb(), 0)) + 200  # a new lifetime peak for sure
    monitor = ResourceMonitor(interval_s=3600)
    baseline = rss_mb()
    monitor.start()
    block = touched(size)
    del block
    summary = monitor.stop()
    assert summary.peak_rss_mb >= baseline + size - 50


def test_busy_loop_counts_cpu_seconds() -> None:
    monitor = ResourceMonitor(interval_s=0.05)
    monitor.start()
    burn_cpu(0.5)
    summary = monitor.stop()
    assert summary.cpu_seconds >= 0.4
    assert summary.mean_cpu_percent > 0
    assert summary.wall_time_s >= summary.cpu_seconds * 0.5  # one busy thread: wall ~ cpu


CHILD_BURN = "import time\nwhile time.process_time() < 0.6: pass\nprint('done', flush=True)\n"


def test_exited_child_cpu_is_counted() -> None:
    monitor = ResourceMonitor(interval_s=0.05)
    monitor.start()
    subprocess.run([sys.executable, "-c", CHILD_BURN], check=True, capture_output=True)
    summary = monitor.stop()
    assert summary.cpu_seconds >= 0.5


def test_live_grandchild_cpu_and_memory_are_counted() -> None:
    """A worker forked by a worker, still alive at stop(): its CPU and RSS belong to the run."""
    grandchild = CHILD_BURN + "data = b'x' * (150 * 1024 * 1024)\nprint('held', flush=True)\n"
    grandchild += "import sys\nsys.stdin.read()\n"
    child = (
        "import subprocess, sys\n"
        f"p = subprocess.Popen([sys.executable, '-c', {grandchild!r}], stdin=sys.stdin)\n"
        "p.wait()\n"
    )
    monitor = ResourceMonitor(interval_s=0.05)
    baseline = rss_mb()
    monitor.start()
    proc = subprocess.Popen(
        [sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "done"
        assert proc.stdout.readline().strip() == "held"
        wait_for_sample(monitor, len(monitor._samples) + 3)
        summary = monitor.stop()
    finally:
        proc.communicate(input="", timeout=30)
    assert summary.cpu_seconds >= 0.5
    assert max(rss for _, rss, _ in summary.samples) >= baseline + 120


def test_stop_is_idempotent_and_prompt() -> None:
    monitor = ResourceMonitor(interval_s=3600)
    monitor.start()
    started = time.monotonic()
    first = monitor.stop()
    assert time.monotonic() - started < 30  # an Event wakes the thread; a sleep would take 1 h
    assert monitor.stop() is first
    assert not monitor._thread or not monitor._thread.is_alive()


def test_summary_metrics_without_gpu() -> None:
    monitor = ResourceMonitor(interval_s=0.05)
    monitor.start()
    summary = monitor.stop()
    assert isinstance(summary, ResourceSummary)
    assert summary.gpu_peak_memory_mb is None
    assert summary.gpu_mean_utilization is None
    assert summary.as_metrics().keys() == BASE_METRICS
    assert all(isinstance(value, float) for value in summary.as_metrics().values())


def test_gpu_figures_when_nvml_is_present(monkeypatch: pytest.MonkeyPatch) -> None:
    handle_state = {0: (100, 50), 1: (300, 70)}  # (memory used MB, utilisation %) per device

    def memory(handle: int) -> SimpleNamespace:
        used, _ = handle_state[handle]
        return SimpleNamespace(used=used * MB)

    def utilization(handle: int) -> SimpleNamespace:
        _, util = handle_state[handle]
        return SimpleNamespace(gpu=util)

    fake = SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda index: index,
        nvmlDeviceGetMemoryInfo=memory,
        nvmlDeviceGetUtilizationRates=utilization,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monitor = ResourceMonitor(interval_s=3600)
    monitor.start()
    summary = monitor.stop()
    assert summary.gpu_peak_memory_mb == pytest.approx(400)
    assert summary.gpu_mean_utilization == pytest.approx(60)
    metrics = summary.as_metrics()
    assert metrics["system.gpu.1.peak_memory_mb"] == pytest.approx(300)
    assert metrics["system.gpu.0.mean_utilization"] == pytest.approx(50)


def test_broken_nvml_means_no_gpu_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", SimpleNamespace(nvmlInit=fail))
    monitor = ResourceMonitor(interval_s=3600)
    monitor.start()
    assert "system.gpu_peak_memory_mb" not in monitor.stop().as_metrics()


def test_monitoring_another_process_that_exits() -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD_BURN], stdout=subprocess.PIPE)
    monitor = ResourceMonitor(interval_s=0.05, pid=proc.pid)
    monitor.start()
    proc.communicate(timeout=60)
    summary = monitor.stop()
    assert summary.wall_time_s > 0
    assert summary.cpu_seconds >= 0


def test_misuse_is_reported() -> None:
    with pytest.raises(RuntimeError):
        ResourceMonitor().stop()
    monitor = ResourceMonitor(interval_s=3600)
    monitor.start()
    with pytest.raises(RuntimeError):
        monitor.start()
    monitor.stop()
    with pytest.raises(InvalidInput):
        ResourceMonitor(interval_s=0).start()
    with pytest.raises(InvalidInput):
        ResourceMonitor(pid=2**22 + 12345).start()  # above Linux's pid_max: never a live pid

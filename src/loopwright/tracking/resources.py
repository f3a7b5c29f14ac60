"""How much a run cost: wall time, CPU seconds, peak memory and GPU use, sampled in the background.

Training code forks (data-loader workers, ``multiprocessing`` pools), so every figure covers the
monitored process *and its descendants*: CPU time of live descendants is read directly and that
of exited ones through their reaper's ``children_*`` times; RSS is summed over the live tree
(shared pages of forked workers count once per process, like ``top`` shows them). GPU figures
come from ``pynvml`` (package ``nvidia-ml-py``) when it and a GPU are present, and are
device-wide: inside containers the driver cannot tell which pids are ours.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import psutil

from loopwright.errors import InvalidInput

__all__ = ["GpuSummary", "ResourceMonitor", "ResourceSummary"]

_MB = 1024.0 * 1024.0
# ru_maxrss is in kilobytes on Linux and in bytes on macOS.
_MAXRSS_UNIT = 1.0 if sys.platform == "darwin" else 1024.0

Sample = tuple[float, float, float]  # (elapsed_s, rss_mb, cpu_percent)


@dataclass(frozen=True, slots=True)
class GpuSummary:
    index: int
    peak_memory_mb: float
    mean_utilization: float  # percent


@dataclass(frozen=True, slots=True)
class ResourceSummary:
    """What a monitored span used. GPU fields are ``None`` when no GPU could be read."""

    wall_time_s: float
    cpu_seconds: float
    peak_rss_mb: float
    mean_cpu_percent: float  # over the whole span; above 100 when several cores were busy
    gpu_peak_memory_mb: float | None = None  # peak of the memory used summed over devices
    gpu_mean_utilization: float | None = None  # mean over samples of the mean over devices
    samples: list[Sample] = field(default_factory=list)
    gpus: list[GpuSummary] = field(default_factory=list)

    def as_metrics(self) -> dict[str, float]:
        """``system.*`` metrics to log on the run; GPU keys only when a GPU was read."""
        metrics = {
            "system.wall_time_s": self.wall_time_s,
            "system.cpu_seconds": self.cpu_seconds,
            "system.peak_memory_mb": self.peak_rss_mb,
            "system.mean_cpu_percent": self.mean_cpu_percent,
        }
        if self.gpu_peak_memory_mb is not None:
            metrics["system.gpu_peak_memory_mb"] = self.gpu_peak_memory_mb
        if self.gpu_mean_utilization is not None:
            metrics["system.gpu_mean_utilization"] = self.gpu_mean_utilization
        for gpu in self.gpus:
            metrics[f"system.gpu.{gpu.index}.peak_memory_mb"] = gpu.peak_memory_mb
            metrics[f"system.gpu.{gpu.index}.mean_utilization"] = gpu.mean_utilization
        return metrics


class _Gpus:
    """NVML access that switches itself off at the first error: no GPU is never a failure."""

    def __init__(self) -> None:
        self._nvml: ModuleType | None = None
        self._handles: list[Any] = []

    def open(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml if self._handles else None
        except Exception:  # ImportError, NVMLError (no driver), anything from a broken install
            self._nvml, self._handles = None, []

    def read(self) -> list[tuple[float, float]] | None:
        """(memory_used_mb, utilization_percent) per device, or ``None`` without NVML."""
        if self._nvml is None:
            return None
        try:
            return [self._read_one(handle) for handle in self._handles]
        except Exception:
            self.close()
            return None

    def _read_one(self, handle: Any) -> tuple[float, float]:
        assert self._nvml is not None
        memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
        utilization = self._nvml.nvmlDeviceGetUtilizationRates(handle)
        return memory.used / _MB, float(utilization.gpu)

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
        self._nvml, self._handles = None, []


def _tree_usage(root: psutil.Process) -> tuple[float, float]:
    """(cpu_seconds, rss_bytes) of ``root`` and its live descendants.

    Each process contributes its own time plus that of the children it has reaped, so CPU used
    by a worker that has already exited is still counted (once: by whoever waited for it).
    """
    cpu, rss = _process_usage(root, strict=True)
    for child in root.children(recursive=True):
        child_cpu, child_rss = _process_usage(child, strict=False)
        cpu += child_cpu
        rss += child_rss
    return cpu, rss


def _process_usage(proc: psutil.Process, *, strict: bool) -> tuple[float, float]:
    """``strict`` re-raises for the monitored process; a descendant may vanish at any moment."""
    try:
        with proc.oneshot():
            times = proc.cpu_times()
            rss = float(proc.memory_info().rss)
    except psutil.Error:
        if strict:
            raise
        return 0.0, 0.0
    reaped = getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
    return times.user + times.system + reaped, rss


def _rusage_peaks() -> tuple[int, int]:
    """Kernel-recorded peak RSS of this process and of its largest reaped child (raw units)."""
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )


def _new_rusage_peak_mb(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The kernel's peak, but only where it rose during the span.

    ``ru_maxrss`` is a lifetime figure: an unchanged value may be the peak of an earlier run in
    the same notebook process, so it says nothing about this span and is ignored.
    """
    risen = [peak for peak, start in zip(after, before, strict=True) if peak > start]
    return max(risen, default=0) * _MAXRSS_UNIT / _MB


class ResourceMonitor:
    """Samples a process tree every ``interval_s`` seconds on a daemon thread.

    ``pid`` defaults to the current process. A monitor is used once: ``start()``, then
    ``stop()``, which returns the summary (and returns the same summary when called again).
    """

    def __init__(self, interval_s: float = 1.0, pid: int | None = None) -> None:
        self.interval_s = interval_s
        self.pid = pid
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._summary: ResourceSummary | None = None
        self._root: psutil.Process | None = None
        self._gpus = _Gpus()
        self._samples: list[Sample] = []
        self._gpu_samples: list[list[tuple[float, float]]] = []
        self._rusage0: tuple[int, int] | None = None  # only when monitoring this very process
        self._t0 = self._last_t = 0.0
        self._cpu0 = self._last_cpu = self._peak_rss = 0.0

    def start(self) -> None:
        """Take the baseline and start sampling; the first sample comes after ``interval_s``."""
        if self._thread is not None:
            raise RuntimeError("a ResourceMonitor can be started only once")
        if not self.interval_s > 0:
            raise InvalidInput("interval_s must be positive", field="interval_s")
        try:
            self._root = psutil.Process(self.pid)
        except psutil.NoSuchProcess as exc:
            raise InvalidInput(f"no process with pid {self.pid}", field="pid") from exc
        self._t0 = self._last_t = time.monotonic()
        self._cpu0, self._peak_rss = _tree_usage(self._root)
        self._last_cpu = self._cpu0
        self._rusage0 = _rusage_peaks() if self._root.pid == os.getpid() else None
        self._gpus.open()
        self._thread = threading.Thread(target=self._run, name="loopwright-resources", daemon=True)
        self._thread.start()

    def stop(self) -> ResourceSummary:
        """Stop sampling, take a last sample and summarise; idempotent."""
        if self._thread is None:
            raise RuntimeError("ResourceMonitor.stop() called before start()")
        if self._summary is None:
            self._stop_event.set()
            self._thread.join()
            self._sample()
            self._gpus.close()
            self._summary = self._summarise(time.monotonic() - self._t0)
        return self._summary

    def _run(self) -> None:
        """Event.wait, not sleep: ``stop()`` wakes the thread at once, not an interval later."""
        while not self._stop_event.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        """One reading; only the sampling thread calls this until ``stop()`` has joined it."""
        assert self._root is not None
        now = time.monotonic()
        try:
            cpu, rss = _tree_usage(self._root)
        except psutil.Error:  # the monitored process exited: keep the figures read so far
            return
        interval = now - self._last_t
        percent = 100.0 * (cpu - self._last_cpu) / interval if interval > 0 else 0.0
        self._samples.append((now - self._t0, rss / _MB, max(percent, 0.0)))
        self._last_t, self._last_cpu = now, cpu
        self._peak_rss = max(self._peak_rss, rss)
        gpus = self._gpus.read()
        if gpus is not None:
            self._gpu_samples.append(gpus)

    def _summarise(self, wall: float) -> ResourceSummary:
        cpu_seconds = max(self._last_cpu - self._cpu0, 0.0)
        peak_mb = self._peak_rss / _MB
        if self._rusage0 is not None:  # the kernel saw peaks that fell between two samples
            peak_mb = max(peak_mb, _new_rusage_peak_mb(self._rusage0, _rusage_peaks()))
        return ResourceSummary(
            wall_time_s=wall,
            cpu_seconds=cpu_seconds,
            peak_rss_mb=peak_mb,
            mean_cpu_percent=100.0 * cpu_seconds / wall if wall > 0 else 0.0,
            samples=list(self._samples),
            **_gpu_summary(self._gpu_samples),
        )


def _gpu_summary(samples: Sequence[list[tuple[float, float]]]) -> dict[str, Any]:
    """Totals across devices plus one :class:`GpuSummary` per device; empty without samples."""
    if not samples:
        return {}
    per_device = list(zip(*samples, strict=False))
    gpus = [
        GpuSummary(
            index=index,
            peak_memory_mb=max(memory for memory, _ in readings),
            mean_utilization=sum(util for _, util in readings) / len(readings),
        )
        for index, readings in enumerate(per_device)
    ]
    return {
        "gpu_peak_memory_mb": max(sum(memory for memory, _ in sample) for sample in samples),
        "gpu_mean_utilization": sum(sum(u for _, u in s) / len(s) for s in samples) / len(samples),
        "gpus": gpus,
    }

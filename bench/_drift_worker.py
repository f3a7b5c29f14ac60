"""One measured drift computation in a fresh process, under loopwright's or Evidently's Python.

    python bench/_drift_worker.py TOOL --data DIR [--profile FILE] [--repeat K] [--cprofile FILE]

TOOL is ``lw-profile`` (profile the reference frame, write the profile JSON to ``--profile``),
``lw-window`` (load that profile and the current frame, compute the drift report), ``evidently``
(its data-drift preset over both frames) or ``naive`` (a NumPy/SciPy pass over both frames' raw
rows). Only the tool's own module is imported, so this file runs under either interpreter.

What is measured
    Inputs are read (Parquet through pyarrow, JSON) before any clock starts. Then, ``repeat``
    times: the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``), the computation runs
    under ``time.perf_counter``, and the new peak (``VmHWM``) is read. The peak therefore counts
    everything the process holds while it computes -- the interpreter, the libraries, the input
    frames the tool needs, and its own working memory -- and nothing from reading the files. Where
    the reset is refused, the lifetime ``ru_maxrss`` is reported instead (``peak_exact: false``).

Prints one ``RESULT {json}`` line: seconds of every repeat, peak and input RSS in bytes, the
verdict (drifted columns and, per column, the deciding method and value) and the versions.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

MODULES = {
    "lw-profile": "_drift_loopwright",
    "lw-window": "_drift_loopwright",
    "evidently": "_drift_evidently",
    "naive": "_drift_naive",
}


def status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def release() -> None:
    """Give back what reading the inputs left behind, so it does not count as the tool's."""
    gc.collect()
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except Exception:
        pass
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("tool", choices=sorted(MODULES))
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--profile", type=Path)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--cprofile", type=Path, help="also profile one extra run, write pstats here")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    side = importlib.import_module(MODULES[args.tool])
    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    inputs = side.load(args.tool, args.data, args.profile)
    load_s = time.perf_counter() - t0
    release()

    seconds: list[float] = []
    cpu: list[float] = []
    peaks: list[int] = []
    inputs_rss: list[int] = []
    exact = True
    result: Any = None
    for _ in range(max(1, args.repeat)):
        result = None
        release()
        exact = reset_peak() and exact
        inputs_rss.append(status_kb("VmRSS") * 1024)
        start, cpu0 = time.perf_counter(), time.process_time()
        result = side.compute(args.tool, inputs)
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu0)
        peaks.append(status_kb("VmHWM") * 1024)
    if not exact:
        peaks = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024]
    verdict = side.verdict(args.tool, result, inputs, args.profile)

    hot: list[dict[str, Any]] = []
    if args.cprofile is not None:
        hot = _cprofile(side, args.tool, inputs, args.cprofile)

    out = {
        "tool": args.tool,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "loadavg": os.getloadavg()[0],
        "peak_rss": max(peaks),
        "inputs_rss": min(inputs_rss),
        "peak_exact": exact,
        "lifetime_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "import_s": import_s,
        "load_s": load_s,
        "verdict": verdict,
        "versions": {"python": platform.python_version(), **side.versions()},
        "hot": hot,
    }
    sys.stdout.write("RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


def _cprofile(side: Any, tool: str, inputs: Any, path: Path) -> list[dict[str, Any]]:
    """One more run under cProfile (single-threaded: it sees one thread); the top 25 by own time."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    side.compute(tool, inputs, profiling=True)
    prof.disable()
    prof.dump_stats(str(path))
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"func": f"{Path(file).name}:{line}({func})", "calls": nc, "tottime": tt,
                     "cumtime": ct})  # fmt: skip
    rows.sort(key=lambda r: -r["tottime"])
    return rows[:25]


if __name__ == "__main__":
    sys.exit(main())

"""Load generation for ``bench/serving.py``: wrk with a Lua script, and the in-process limit.

wrk posts one fixed JSON body per request over kept-alive connections (``-c`` connections, one
thread: on a 2-core machine a second wrk thread only steals CPU from the server). The script's
``done`` callback prints one ``WRK_JSON {...}`` line with the request count, the errors and the
latency percentiles (wrk keeps them in microseconds), which :func:`run_wrk` parses. Every run is
bounded: wrk's own ``-d`` plus a subprocess timeout, and a per-request ``--timeout``.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

WRK = shutil.which("wrk") or "/usr/bin/wrk"
REQUEST_TIMEOUT_S = 5
GRACE_S = 30.0

_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {body}

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


class LoadError(RuntimeError):
    """wrk failed, timed out or printed no summary."""


@dataclass(frozen=True)
class Point:
    """One measured point: throughput and latency (ms) at one concurrency."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    seconds: float
    unit: str = "req/s"
    cpu_us: float | None = None  # server CPU (every process of it) per request, microseconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lua_script(path: Path, body: bytes) -> Path:
    """Write the wrk script posting ``body`` (a Lua long string, so JSON needs no escaping)."""
    text = body.decode()
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    path.write_text(_LUA.format(body=f"[{eq}[{text}]{eq}]"))
    return path


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> Point:
    """``wrk -t1 -c N -d S`` against ``url``; the parsed summary of the ``done`` callback."""
    cmd = [WRK, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    cmd += [f"--timeout={REQUEST_TIMEOUT_S}s", "-s", str(script), url]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + GRACE_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise LoadError(f"wrk did not finish within {seconds + GRACE_S:.0f}s") from None
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if done.returncode or line is None:
        raise LoadError(f"wrk failed ({done.returncode}): {(done.stderr or done.stdout)[-400:]}")
    s = json.loads(line[len("WRK_JSON ") :])
    errors = sum(s[k] for k in ("connect", "read", "write", "status", "timeout"))
    secs = s["duration_us"] / 1e6
    return Point(
        rps=s["requests"] / secs if secs else 0.0,
        p50_ms=s["p50"] / 1000.0,
        p99_ms=s["p99"] / 1000.0,
        requests=int(s["requests"]),
        errors=int(errors),
        seconds=secs,
    )


def time_calls(fn: Callable[[], Any], seconds: float, rows: int = 1) -> Point:
    """Call ``fn`` back to back for ``seconds`` (after a short warm-up): calls/s or rows/s."""
    warm_until = time.perf_counter() + min(1.0, seconds / 5)
    while time.perf_counter() < warm_until:
        fn()
    laps: list[float] = []
    started = time.perf_counter()
    end = started + seconds
    now = started
    while now < end:
        fn()
        after = time.perf_counter()
        laps.append(after - now)
        now = after
    elapsed = now - started
    cuts = statistics.quantiles(laps, n=100, method="inclusive")
    return Point(
        rps=len(laps) * rows / elapsed,
        p50_ms=statistics.median(laps) * 1000.0,
        p99_ms=cuts[98] * 1000.0,
        requests=len(laps),
        errors=0,
        seconds=elapsed,
        unit="rows/s" if rows > 1 else "calls/s",
    )

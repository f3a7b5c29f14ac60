"""Processes the bench starts: tracking servers on 127.0.0.1 and the MLflow worker.

Every process is started in its own session, so stopping it (``SIGTERM``, then ``SIGKILL`` after a
grace period) reaches the server's worker processes too, and only those. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

MLFLOW_PYTHON = Path(
    os.environ.get("LOOPWRIGHT_BENCH_MLFLOW_PYTHON", "/work/.mlflow-venv/bin/python")
)
WORKER = Path(__file__).with_name("_mlflow_worker.py")
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "PYTHONUNBUFFERED": "1"}
HEALTH_TIMEOUT_S = 90.0
IDLE_TIMEOUT_S = 60.0
IDLE_CPU = 0.05  # cores: below this over one second, the server has finished starting up
STOP_GRACE_S = 10.0


class BenchError(RuntimeError):
    """A server would not start or a worker failed; the message carries its log's tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- servers -----------------------------------------------------------------------------------


def loopwright_server_cmd(
    db: Path, artifacts: Path, port: int, workers: int
) -> tuple[list[str], str]:
    """The ``loopwright server`` CLI when it exists, else uvicorn on the app factory."""
    exe = Path(sys.executable).with_name("loopwright")
    if exe.exists() and importlib.util.find_spec("loopwright.cli.main") is not None:
        cmd = [str(exe), "server", "--store-uri", f"sqlite:///{db}", "--artifacts-uri"]
        cmd += [str(artifacts), "--host", "127.0.0.1", "--port", str(port)]
        return [*cmd, "--workers", str(workers)], "loopwright server (CLI)"
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "loopwright.server.main:app_from_env"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return cmd, "uvicorn --factory loopwright.server.main:app_from_env"


def mlflow_server_cmd(db: Path, artifacts: Path, port: int, workers: int) -> list[str]:
    mlflow = MLFLOW_PYTHON.with_name("mlflow")
    return [
        str(mlflow), "server", "--backend-store-uri", f"sqlite:///{db}",
        "--artifacts-destination", str(artifacts), "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


@contextlib.contextmanager
def server(
    cmd: list[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Start ``cmd``, wait until ``/health`` answers 200, yield its URL, always stop it."""
    full_env = {**os.environ, **QUIET_ENV, **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=log.parent,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, log)
        wait_idle(proc.pid)
        yield url
    finally:
        stop(proc)


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited with {proc.returncode}:\n{tail(log)}")
        try:
            if httpx.get(url + "/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise BenchError(f"server at {url} not healthy after {HEALTH_TIMEOUT_S:.0f}s:\n{tail(log)}")


def wait_idle(session: int) -> float:
    """Wait (bounded) until the server's processes stop burning CPU; returns the seconds waited.

    ``mlflow server`` answers ``/health`` while its job runner and huey consumers are still
    importing; on a small machine they would steal the CPU from the first workload measured.
    """
    t0 = time.monotonic()
    before = session_cpu_s(session)
    while time.monotonic() - t0 < IDLE_TIMEOUT_S:
        time.sleep(1.0)
        now = session_cpu_s(session)
        if now - before < IDLE_CPU:
            break
        before = now
    return time.monotonic() - t0


def session_cpu_s(session: int) -> float:
    """CPU seconds (user + system) used so far by every live process of a session (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[3]) == session:  # fields after "pid (comm)": state ppid pgrp session ...
            total += int(fields[11]) + int(fields[12])
    return total / tick


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we created, SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_GRACE_S)


# -- the MLflow worker -------------------------------------------------------------------------


def run_worker(
    workloads: list[str],
    uri: str,
    options: dict[str, int],
    workdir: Path,
    on_result: Callable[[dict[str, Any]], None],
    timeout_s: float,
) -> None:
    """Run ``_mlflow_worker.py`` and hand each ``RESULT`` line to ``on_result`` as it arrives."""
    cmd = [str(MLFLOW_PYTHON), str(WORKER), ",".join(workloads), "--uri", uri]
    for name, value in options.items():
        cmd += [f"--{name.replace('_', '-')}", str(value)]
    log = workdir / f"mlflow-worker-{time.time_ns()}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, env={**os.environ, **QUIET_ENV},
            cwd=workdir, start_new_session=True,
        )  # fmt: skip
    lines: queue.Queue[bytes | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc, lines), daemon=True).start()
    deadline = time.monotonic() + timeout_s
    try:
        while (line := lines.get(timeout=max(0.1, deadline - time.monotonic()))) is not None:
            if line.startswith(b"RESULT "):
                on_result(json.loads(line[7:]))
    except queue.Empty:
        raise BenchError(f"MLflow worker {workloads} timed out after {timeout_s:.0f}s") from None
    finally:
        stop(proc)
    if proc.returncode:
        raise BenchError(f"MLflow worker {workloads} failed ({proc.returncode}):\n{tail(log)}")


def _pump(proc: subprocess.Popen[bytes], lines: queue.Queue[bytes | None]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line)
    proc.wait()
    lines.put(None)
